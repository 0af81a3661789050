//! Qwen2-VL image preprocessing: transformers' `Qwen2VLImageProcessor` with the PIL backend
//! (`Qwen2VLImageProcessorPil`), which is what `preprocessor_config.json` describes.
//!
//! Per image: [`smart_resize`] picks a size that is a multiple of `patch_size * merge_size` with
//! a pixel count in `[min_pixels, max_pixels]`; Pillow's resize ([`super::resize`]) scales to it;
//! values become `(x * rescale_factor - mean) / std` in f32; the single frame is repeated to
//! `temporal_patch_size` frames; the frames are cut into `patch_size` squares.
//!
//! Layout of [`Processed::pixel_values`] (the invariant the vision encoder relies on): one row per
//! patch, rows ordered (grid_t, h / merge block, w / merge block, row inside the merge group,
//! column inside it), so each merge group's patches are adjacent; each row holds
//! `3 * temporal_patch_size * patch_size²` values ordered (channel, frame, pixel row, pixel column).

use std::path::Path;

use serde_json::Value;

use super::resize::{resize_rgb8, Filter};
use super::{Media, MediaError, MediaProcessor, Processed};

/// OpenAI CLIP's normalisation, transformers' default for Qwen2-VL.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Why [`smart_resize`] rejects a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmartResizeError {
    /// transformers raises for `max(h, w) / min(h, w) > 200`.
    #[error("the image is {width}x{height}: its aspect ratio {ratio:.1} is over the maximum of 200", ratio = *.height.max(.width) as f64 / *.height.min(.width) as f64)]
    AspectRatio { height: usize, width: usize },
    /// A side of 0, or a configuration whose result has a side of 0 (only when `min_pixels` is 0
    /// and a side rounds down to nothing: transformers would then fail while reshaping).
    #[error("the image is {width}x{height}, which resizes to {out_width}x{out_height} (factor {factor}, min_pixels {min_pixels})")]
    Empty { height: usize, width: usize, out_height: usize, out_width: usize, factor: usize, min_pixels: usize },
}

/// transformers' Qwen2-VL `smart_resize`: the (height, width) to resize to.
///
/// Both sides become multiples of `factor` (rounded half to even, as Python's `round`); when the
/// product exceeds `max_pixels` both scale down by √(h·w / max) and round down (never below one
/// `factor`); when it is under `min_pixels` both scale up by √(min / h·w) and round up. Sides smaller
/// than `factor` are fine (transformers once rejected them; current versions scale them up, and so
/// does this). The float steps are the same IEEE operations as the Python, so results match it.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), SmartResizeError> {
    let empty = |out_height, out_width| SmartResizeError::Empty { height, width, out_height, out_width, factor, min_pixels };
    if height == 0 || width == 0 || factor == 0 {
        return Err(empty(0, 0));
    }
    if height.max(width) as f64 / height.min(width) as f64 > 200.0 {
        return Err(SmartResizeError::AspectRatio { height, width });
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    if h_bar == 0 || w_bar == 0 {
        return Err(empty(h_bar, w_bar));
    }
    Ok((h_bar, w_bar))
}

/// transformers' `Qwen2VLImageProcessor` (PIL backend). Fields mirror `preprocessor_config.json`;
/// [`Default`] is transformers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlImageProcessor {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    pub resample: Filter,
}

impl Default for Qwen2VlImageProcessor {
    fn default() -> Self {
        Qwen2VlImageProcessor {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            resample: Filter::Bicubic,
        }
    }
}

impl Qwen2VlImageProcessor {
    /// The processor a checkpoint directory describes: `preprocessor_config.json`, or (newer
    /// transformers layout) the `image_processor` object of `processor_config.json`. `None` when
    /// neither exists. Keys left out take transformers' defaults; `min_pixels`/`max_pixels` win
    /// over `size: {shortest_edge, longest_edge}`, as in transformers. Errors name the file and key.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, MediaError> {
        let preprocessor = dir.join("preprocessor_config.json");
        if preprocessor.exists() {
            let value = read_json(&preprocessor)?;
            return Self::from_config(&value, &preprocessor).map(Some);
        }
        let processor = dir.join("processor_config.json");
        if processor.exists() {
            if let Some(nested) = read_json(&processor)?.get("image_processor") {
                return Self::from_config(nested, &processor).map(Some);
            }
        }
        Ok(None)
    }

    /// Builds the processor from a parsed `preprocessor_config.json`; `path` names it in errors.
    pub fn from_config(config: &Value, path: &Path) -> Result<Self, MediaError> {
        let err = |key: &str, detail: String| MediaError::Config { path: path.to_path_buf(), detail: format!("key `{key}`: {detail}") };
        let Some(obj) = config.as_object() else {
            return Err(MediaError::Config { path: path.to_path_buf(), detail: "not a JSON object".to_string() });
        };
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let count = |key: &str, v: &Value| -> Result<usize, MediaError> {
            v.as_u64().map(|n| n as usize).ok_or_else(|| err(key, format!("expected a non-negative integer, got {v}")))
        };
        let positive = |key: &str, v: &Value| -> Result<usize, MediaError> {
            match count(key, v)? {
                0 => Err(err(key, "must be at least 1".to_string())),
                n => Ok(n),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, MediaError> {
            get(key).map_or(Ok(default), |v| v.as_bool().ok_or_else(|| err(key, format!("expected true or false, got {v}"))))
        };
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], MediaError> {
            let Some(v) = get(key) else { return Ok(default) };
            // transformers also accepts one number for all channels.
            if let Some(x) = v.as_f64() {
                return Ok([x as f32; 3]);
            }
            let items = v.as_array().filter(|a| a.len() == 3).ok_or_else(|| err(key, format!("expected 3 numbers, got {v}")))?;
            let mut out = [0f32; 3];
            for (o, item) in out.iter_mut().zip(items) {
                *o = item.as_f64().ok_or_else(|| err(key, format!("expected 3 numbers, got {v}")))? as f32;
            }
            Ok(out)
        };

        let mut p = Qwen2VlImageProcessor::default();
        if let Some(size) = get("size") {
            let size_obj = size.as_object().ok_or_else(|| err("size", format!("expected an object, got {size}")))?;
            for (key, slot) in [("shortest_edge", &mut p.min_pixels), ("longest_edge", &mut p.max_pixels)] {
                let v = size_obj.get(key).ok_or_else(|| err("size", format!("missing `{key}`")))?;
                *slot = count(&format!("size.{key}"), v)?;
            }
        }
        if let Some(v) = get("min_pixels") {
            p.min_pixels = count("min_pixels", v)?;
        }
        if let Some(v) = get("max_pixels") {
            p.max_pixels = count("max_pixels", v)?;
        }
        if let Some(v) = get("patch_size") {
            p.patch_size = positive("patch_size", v)?;
        }
        if let Some(v) = get("temporal_patch_size") {
            p.temporal_patch_size = positive("temporal_patch_size", v)?;
        }
        if let Some(v) = get("merge_size") {
            p.merge_size = positive("merge_size", v)?;
        }
        p.image_mean = triple("image_mean", p.image_mean)?;
        p.image_std = triple("image_std", p.image_std)?;
        if p.image_std.contains(&0.0) {
            return Err(err("image_std", "a standard deviation of 0".to_string()));
        }
        if let Some(v) = get("rescale_factor") {
            p.rescale_factor = v.as_f64().ok_or_else(|| err("rescale_factor", format!("expected a number, got {v}")))?;
        }
        p.do_resize = flag("do_resize", p.do_resize)?;
        p.do_rescale = flag("do_rescale", p.do_rescale)?;
        p.do_normalize = flag("do_normalize", p.do_normalize)?;
        if !flag("do_convert_rgb", true)? {
            // Decoded images are always RGB here; a config asking otherwise cannot be honoured.
            return Err(err("do_convert_rgb", "false is not supported (images are always converted to RGB)".to_string()));
        }
        if let Some(v) = get("resample") {
            let n = v.as_i64().ok_or_else(|| err("resample", format!("expected a PIL resampling number, got {v}")))?;
            p.resample = Filter::from_pil(n)
                .ok_or_else(|| err("resample", format!("PIL filter {n} is not supported (2 = bilinear, 3 = bicubic)")))?;
        }
        Ok(p)
    }

    /// Overrides the pixel bounds (LLaMA Factory's `image_min_pixels` / `image_max_pixels`);
    /// `None` keeps the configured value.
    pub fn with_pixel_limits(mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Self {
        if let Some(min) = min_pixels {
            self.min_pixels = min;
        }
        if let Some(max) = max_pixels {
            self.max_pixels = max;
        }
        self
    }

    /// `patch_size * merge_size`: the unit both resized sides are multiples of.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    fn process_image(&self, image: &super::Image) -> Result<Processed, MediaError> {
        let geometry = |detail: String| MediaError::Geometry { origin: image.source().to_string(), detail };
        let (width, height) = (image.width() as usize, image.height() as usize);
        let (out_h, out_w, pixels) = if self.do_resize {
            let (h, w) = smart_resize(height, width, self.factor(), self.min_pixels, self.max_pixels)
                .map_err(|e| geometry(e.to_string()))?;
            (h, w, resize_rgb8(image.rgb(), width, height, w, h, self.resample))
        } else {
            if height % self.factor() != 0 || width % self.factor() != 0 {
                return Err(geometry(format!(
                    "do_resize is false and the image is {width}x{height}, not a multiple of {} on both sides",
                    self.factor()
                )));
            }
            (height, width, image.rgb().to_vec())
        };

        // Channel planes in f32, as transformers: rescale in f64 then cast, normalise in f32.
        let plane = out_h * out_w;
        let mut planes = vec![0f32; 3 * plane];
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut v = if self.do_rescale { (px[c] as f64 * self.rescale_factor) as f32 } else { px[c] as f32 };
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                planes[c * plane + i] = v;
            }
        }

        let (p, m, tps) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (grid_h, grid_w) = (out_h / p, out_w / p);
        let rows = grid_h * grid_w;
        let row_len = 3 * tps * p * p;
        let mut pixel_values = Vec::with_capacity(rows * row_len);
        for block_y in 0..grid_h / m {
            for block_x in 0..grid_w / m {
                for in_y in 0..m {
                    for in_x in 0..m {
                        let (y0, x0) = ((block_y * m + in_y) * p, (block_x * m + in_x) * p);
                        for c in 0..3 {
                            let src = &planes[c * plane..][..plane];
                            // One still image is `tps` identical frames.
                            for _frame in 0..tps {
                                for y in y0..y0 + p {
                                    pixel_values.extend_from_slice(&src[y * out_w + x0..][..p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        debug_assert_eq!(pixel_values.len(), rows * row_len);
        Ok(Processed { pixel_values, rows, row_len, grid_thw: [1, grid_h, grid_w] })
    }
}

impl MediaProcessor for Qwen2VlImageProcessor {
    fn process(&self, media: &Media) -> Result<Processed, MediaError> {
        match media {
            Media::Image(image) => self.process_image(image),
            Media::Audio(audio) => {
                Err(MediaError::WrongModality { origin: audio.source().to_string(), expected: "images", got: "audio" })
            }
        }
    }

    fn placeholder_tokens(&self, p: &Processed) -> usize {
        p.grid_thw.iter().product::<usize>() / (self.merge_size * self.merge_size)
    }

    fn set_pixel_limits(&mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Result<(), MediaError> {
        let next = self.clone().with_pixel_limits(min_pixels, max_pixels);
        let unit = next.factor() * next.factor();
        if next.max_pixels < unit || next.min_pixels > next.max_pixels {
            return Err(MediaError::Geometry {
                origin: "image_min_pixels / image_max_pixels".into(),
                detail: format!(
                    "min {} and max {} pixels leave no size: max must be at least {unit} (one {f}x{f} patch group) and not below min",
                    next.min_pixels,
                    next.max_pixels,
                    f = next.factor()
                ),
            });
        }
        *self = next;
        Ok(())
    }
}

fn read_json(path: &Path) -> Result<Value, MediaError> {
    let text = std::fs::read_to_string(path).map_err(|error| MediaError::Io { path: path.to_path_buf(), error })?;
    serde_json::from_str(&text).map_err(|e| MediaError::Config { path: path.to_path_buf(), detail: format!("invalid JSON: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Image, MediaLimits};
    use std::path::PathBuf;

    fn fixture_dir() -> PathBuf {
        crate::testing::fixtures_dir().join("tiny-qwen2-vl")
    }

    #[test]
    fn smart_resize_cases() {
        // The fixture's images (factor 28, 4..16 merge groups of 28x28).
        assert_eq!(smart_resize(48, 64, 28, 3136, 12544), Ok((56, 56)));
        assert_eq!(smart_resize(90, 40, 28, 3136, 12544), Ok((84, 56)));
        // In range: only rounding, half to even (42 / 28 = 1.5 -> 2, 70 / 28 = 2.5 -> 2).
        assert_eq!(smart_resize(42, 70, 28, 0, 1 << 30), Ok((56, 56)));
        assert_eq!(smart_resize(1080, 1920, 28, 3136, 28 * 28 * 16384), Ok((1092, 1932)));
        // Above: beta = sqrt(1080*1920 / 1003520) = 1.4375; 1080/beta/28 = 26.8 -> 728, 1920/beta/28 = 47.7 -> 1316.
        assert_eq!(smart_resize(1080, 1920, 28, 3136, 28 * 28 * 1280), Ok((728, 1316)));
        // Above max_pixels: scale down by sqrt(h*w/max) and floor.
        // beta = sqrt(1080*1920 / 12544) = 12.8; 1080/12.8/28 = 3.01 -> 84; 1920/12.8/28 = 5.36 -> 140.
        assert_eq!(smart_resize(1080, 1920, 28, 3136, 12544), Ok((84, 140)));
        // ... never below one factor, even when that leaves the product above max_pixels (as in
        // transformers): beta = sqrt(150000 / 3136) = 6.92; 30/beta/28 = 0.15 -> 0 -> 28;
        // 5000/beta/28 = 25.8 -> 700.
        assert_eq!(smart_resize(30, 5000, 28, 0, 28 * 28 * 4), Ok((28, 700)));
        // Below min_pixels: scale up by sqrt(min/(h*w)) and ceil.
        // beta = sqrt(3136 / 100) = 5.6; 10*5.6/28 = 2 -> 56 (the product lands exactly on min).
        assert_eq!(smart_resize(10, 10, 28, 3136, 12544), Ok((56, 56)));
        // beta = sqrt(3136 / 1200) = 1.617; 30*beta/28 = 1.73 -> 56, 40*beta/28 = 2.31 -> 84.
        assert_eq!(smart_resize(30, 40, 28, 3136, 12544), Ok((56, 84)));
        // A side smaller than the factor scales up instead of failing.
        assert_eq!(smart_resize(5, 40, 28, 3136, 12544), Ok((28, 168)));
        // Aspect ratio: 200 is allowed, above is an error.
        assert!(smart_resize(10, 2000, 28, 3136, 28 * 28 * 1280).is_ok());
        let err = smart_resize(10, 2001, 28, 3136, 28 * 28 * 1280).expect_err("ratio");
        assert_eq!(err, SmartResizeError::AspectRatio { height: 10, width: 2001 });
        assert!(err.to_string().contains("2001x10") && err.to_string().contains("200.1"), "{err}");
        // min_pixels 0 lets a side round to nothing: a clear error, not an empty tensor.
        assert!(matches!(smart_resize(10, 10, 28, 0, 12544), Err(SmartResizeError::Empty { .. })));
        assert!(matches!(smart_resize(0, 10, 28, 3136, 12544), Err(SmartResizeError::Empty { .. })));
    }

    #[test]
    fn config_from_the_fixture() {
        let p = Qwen2VlImageProcessor::from_dir(&fixture_dir()).expect("config").expect("present");
        assert_eq!((p.min_pixels, p.max_pixels), (3136, 12544));
        assert_eq!((p.patch_size, p.temporal_patch_size, p.merge_size), (14, 2, 2));
        assert_eq!(p.image_mean, CLIP_MEAN);
        assert_eq!(p.resample, Filter::Bicubic);
        let p = p.with_pixel_limits(Some(100), None);
        assert_eq!((p.min_pixels, p.max_pixels), (100, 12544));
        // A directory without the file has no processor.
        let dir = crate::testing::scratch_dir("qwen2vl-none");
        assert_eq!(Qwen2VlImageProcessor::from_dir(&dir).expect("no error"), None);
    }

    #[test]
    fn config_size_keys_and_errors() {
        let path = Path::new("dir/preprocessor_config.json");
        let cfg = serde_json::json!({"size": {"shortest_edge": 1000, "longest_edge": 2000}});
        let p = Qwen2VlImageProcessor::from_config(&cfg, path).expect("size");
        assert_eq!((p.min_pixels, p.max_pixels), (1000, 2000));
        let cfg = serde_json::json!({"size": {"shortest_edge": 1000, "longest_edge": 2000}, "max_pixels": 3000});
        let p = Qwen2VlImageProcessor::from_config(&cfg, path).expect("size");
        assert_eq!((p.min_pixels, p.max_pixels), (1000, 3000));
        assert_eq!(Qwen2VlImageProcessor::from_config(&serde_json::json!({}), path).expect("empty"), Qwen2VlImageProcessor::default());

        for (cfg, key) in [
            (serde_json::json!({"min_pixels": "many"}), "min_pixels"),
            (serde_json::json!({"patch_size": 0}), "patch_size"),
            (serde_json::json!({"image_mean": [0.5, 0.5]}), "image_mean"),
            (serde_json::json!({"resample": 0}), "resample"),
            (serde_json::json!({"size": {"height": 224, "width": 224}}), "size"),
            (serde_json::json!({"do_normalize": "yes"}), "do_normalize"),
        ] {
            let err = Qwen2VlImageProcessor::from_config(&cfg, path).expect_err("bad config");
            let msg = err.to_string();
            assert!(msg.starts_with("dir/preprocessor_config.json: key `"), "{msg}");
            assert!(msg.contains(&format!("`{key}")), "{msg}");
        }

        let dir = crate::testing::scratch_dir("qwen2vl-badjson");
        std::fs::write(dir.join("preprocessor_config.json"), "{not json").expect("write");
        let err = Qwen2VlImageProcessor::from_dir(&dir).expect_err("bad json");
        assert!(err.to_string().contains("preprocessor_config.json: invalid JSON"), "{err}");
    }

    #[test]
    fn processor_config_json_layout() {
        let dir = crate::testing::scratch_dir("qwen2vl-processor-config");
        let cfg = serde_json::json!({"image_processor": {"min_pixels": 784, "max_pixels": 3136}, "processor_class": "Qwen2VLProcessor"});
        std::fs::write(dir.join("processor_config.json"), cfg.to_string()).expect("write");
        let p = Qwen2VlImageProcessor::from_dir(&dir).expect("ok").expect("present");
        assert_eq!((p.min_pixels, p.max_pixels), (784, 3136));
    }

    fn read_reference(case: &str) -> (Vec<f32>, Vec<usize>, Vec<i64>) {
        let bytes = std::fs::read(fixture_dir().join("reference_tensors.safetensors")).expect("reference tensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let pv = st.tensor(&format!("{case}.pixel_values")).expect("pixel_values");
        assert_eq!(pv.dtype(), safetensors::Dtype::F32);
        let values = pv.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let grid = st.tensor(&format!("{case}.image_grid_thw")).expect("grid");
        assert_eq!(grid.dtype(), safetensors::Dtype::I64);
        let grid_values = grid
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (values, pv.shape().to_vec(), grid_values)
    }

    #[test]
    fn matches_transformers_pil_backend_on_the_fixture_images() {
        let dir = fixture_dir();
        let processor = Qwen2VlImageProcessor::from_dir(&dir).expect("config").expect("present");
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference.json")).expect("json");
        let cases = reference["cases"].as_array().or_else(|| reference.as_array()).expect("cases");
        let mut seen = Vec::new();
        for case in cases {
            let name = case["name"].as_str().expect("name");
            let file = case["image"].as_str().expect("image");
            let path = dir.join(file);
            let bytes = std::fs::read(&path).expect("image");
            let image = Image::decode(&bytes, &path.display().to_string(), &MediaLimits::default()).expect("decode");
            let out = processor.process(&Media::Image(image)).expect("process");

            let (want, shape, grid) = read_reference(name);
            assert_eq!(shape, [out.rows, out.row_len], "{name}: shape");
            assert_eq!(grid, out.grid_thw.map(|g| g as i64), "{name}: image_grid_thw");
            let want_grid: Vec<usize> = case["image_grid_thw"][0].as_array().expect("grid").iter().map(|v| v.as_u64().expect("n") as usize).collect();
            assert_eq!(want_grid, out.grid_thw, "{name}: reference.json grid");
            assert_eq!(out.pixel_values.len(), want.len());
            let (worst, at) = out
                .pixel_values
                .iter()
                .zip(&want)
                .enumerate()
                .map(|(i, (a, b))| ((a - b).abs(), i))
                .fold((0f32, 0), |acc, x| if x.0 > acc.0 { x } else { acc });
            assert!(worst <= 1e-5, "{name}: max |diff| {worst} at {at} (row {}, col {})", at / out.row_len, at % out.row_len);
            assert_eq!(
                processor.placeholder_tokens(&out),
                case["num_image_pad_tokens"].as_u64().expect("pad tokens") as usize,
                "{name}: placeholder tokens"
            );
            seen.push((name.to_string(), out.grid_thw));
        }
        assert_eq!(
            seen,
            [("image1_describe".to_string(), [1, 4, 4]), ("image2_system_question".to_string(), [1, 6, 4])]
        );
    }

    #[test]
    fn patch_layout() {
        // A 56x28 image with distinct values per pixel, no resize, no normalisation: every value
        // is traceable to its (channel, y, x).
        let (w, h) = (56usize, 28usize);
        let rgb: Vec<u8> = (0..h * w).flat_map(|i| [(i % 251) as u8, ((i / 7) % 256) as u8, 3]).collect();
        let image = Image::from_rgb8(w as u32, h as u32, rgb.clone(), "pattern").expect("image");
        let processor = Qwen2VlImageProcessor { do_resize: false, do_rescale: false, do_normalize: false, ..Default::default() };
        let out = processor.process(&Media::Image(image)).expect("process");
        assert_eq!(out.grid_thw, [1, 2, 4]);
        assert_eq!((out.rows, out.row_len), (8, 1176));
        assert_eq!(processor.placeholder_tokens(&out), 2);
        let (p, m) = (14, 2);
        let mut row = 0;
        for by in 0..1 {
            for bx in 0..2 {
                for iy in 0..m {
                    for ix in 0..m {
                        let (y0, x0) = ((by * m + iy) * p, (bx * m + ix) * p);
                        let values = &out.pixel_values[row * 1176..][..1176];
                        for c in 0..3 {
                            for t in 0..2 {
                                for y in 0..p {
                                    for x in 0..p {
                                        let got = values[((c * 2 + t) * p + y) * p + x];
                                        let want = rgb[((y0 + y) * w + x0 + x) * 3 + c] as f32;
                                        assert_eq!(got, want, "row {row} c {c} t {t} y {y} x {x}");
                                    }
                                }
                            }
                        }
                        row += 1;
                    }
                }
            }
        }
        // Not a multiple of the factor without resizing: a clear error.
        let odd = Image::from_rgb8(30, 28, vec![0; 30 * 28 * 3], "odd").expect("image");
        let err = processor.process(&Media::Image(odd)).expect_err("odd size");
        assert!(err.to_string().starts_with("odd: cannot be preprocessed: do_resize is false"), "{err}");
    }

    #[test]
    fn extreme_aspect_ratio_is_an_error_naming_the_image() {
        let image = Image::from_rgb8(201, 1, vec![0; 201 * 3], "image 3 of the request").expect("image");
        let err = Qwen2VlImageProcessor::default().process(&Media::Image(image)).expect_err("ratio");
        assert!(matches!(err, MediaError::Geometry { .. }));
        let msg = err.to_string();
        assert!(msg.starts_with("image 3 of the request: cannot be preprocessed: the image is 201x1"), "{msg}");
        assert!(msg.contains("over the maximum of 200"), "{msg}");
    }
}

