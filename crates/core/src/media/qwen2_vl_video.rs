//! Qwen2-VL / Qwen2.5-VL video preprocessing: LLaMA Factory's frame regularisation, then
//! transformers' `Qwen2VLVideoProcessor`.
//!
//! Per video ([`Qwen2VlVideoProcessor::process`]):
//! 1. LLaMA Factory (`_regularize_videos` → `_preprocess_image`, Qwen2-VL plugin): every frame
//!    above `video_max_pixels` is scaled by √(max / (w·h)), below `video_min_pixels` by
//!    √(min / (w·h)), sides truncated; a side under 28 becomes 28; an aspect ratio over 200
//!    becomes 180. Each step is a Pillow bicubic resize. An odd frame count gets its last frame
//!    repeated (transformers pads the same way: the temporal patch is 2 frames).
//! 2. transformers: one [`super::smart_resize`] size for the video (from the frame size, with
//!    the processor's `min_pixels` / `max_pixels`), every frame resized to it (Pillow bicubic;
//!    the fixture's torchvision path agrees within 2.4e-7), rescaled, normalised, and cut into
//!    patches with the image layout ([`super::qwen2_vl`]): rows (grid_t, h/merge block,
//!    w/merge block, row and column in the merge group), each row (channel, frame of the
//!    temporal pair, pixel row, pixel column). `grid_thw = [frames / 2, h / 14, w / 14]`, and
//!    the prompt holds `grid_t · grid_h · grid_w / merge²` `<|video_pad|>` tokens.

use std::path::Path;

use serde_json::Value;

use super::qwen2_vl::read_json;
use super::resize::{resize_rgb8, Filter};
use super::{Image, Media, MediaError, MediaProcessor, Processed, Qwen2VlImageProcessor, Video};

/// transformers' `Qwen2VLVideoProcessor` defaults for `size` (used when the config gives none).
const DEFAULT_MIN_PIXELS: usize = 128 * 28 * 28;
const DEFAULT_MAX_PIXELS: usize = 28 * 28 * 768;

/// LLaMA Factory's `video_min_pixels` / `video_max_pixels` defaults.
pub const DEFAULT_VIDEO_MIN_PIXELS: usize = 16 * 16;
pub const DEFAULT_VIDEO_MAX_PIXELS: usize = 256 * 256;

/// Frames' smallest side after LLaMA Factory's Qwen2-VL regularisation.
const MIN_SIDE: usize = 28;

/// The video preprocessing of a Qwen2-VL or Qwen2.5-VL checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlVideoProcessor {
    /// transformers' per-frame settings (`min_pixels` / `max_pixels` bound the smart_resize).
    pub frame: Qwen2VlImageProcessor,
    /// LLaMA Factory's `video_min_pixels`: frames are first scaled up to at least this.
    pub video_min_pixels: usize,
    /// LLaMA Factory's `video_max_pixels`: frames are first scaled down to at most this.
    pub video_max_pixels: usize,
}

impl Default for Qwen2VlVideoProcessor {
    fn default() -> Self {
        let frame = Qwen2VlImageProcessor { min_pixels: DEFAULT_MIN_PIXELS, max_pixels: DEFAULT_MAX_PIXELS, ..Default::default() };
        Qwen2VlVideoProcessor { frame, video_min_pixels: DEFAULT_VIDEO_MIN_PIXELS, video_max_pixels: DEFAULT_VIDEO_MAX_PIXELS }
    }
}

impl Qwen2VlVideoProcessor {
    /// The processor a checkpoint directory describes, as transformers finds it:
    /// `video_preprocessor_config.json`, else `preprocessor_config.json` (the same keys), else
    /// the `video_processor` or `image_processor` object of `processor_config.json`; `None`
    /// when there is none. Without size keys the video defaults apply (min 128·28², max
    /// 768·28²). LLaMA Factory's bounds start at their defaults.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, MediaError> {
        for file in ["video_preprocessor_config.json", "preprocessor_config.json"] {
            let path = dir.join(file);
            if path.exists() {
                return Self::from_config(&read_json(&path)?, &path).map(Some);
            }
        }
        let path = dir.join("processor_config.json");
        if path.exists() {
            let value = read_json(&path)?;
            if let Some(nested) = value.get("video_processor").or_else(|| value.get("image_processor")) {
                return Self::from_config(nested, &path).map(Some);
            }
        }
        Ok(None)
    }

    /// Builds the processor from a parsed config; `path` names it in errors.
    pub fn from_config(config: &Value, path: &Path) -> Result<Self, MediaError> {
        let mut frame = Qwen2VlImageProcessor::from_config(config, path)?;
        let has = |key: &str| config.get(key).is_some_and(|v| !v.is_null());
        if !has("size") && !has("min_pixels") {
            frame.min_pixels = DEFAULT_MIN_PIXELS;
        }
        if !has("size") && !has("max_pixels") {
            frame.max_pixels = DEFAULT_MAX_PIXELS;
        }
        Ok(Qwen2VlVideoProcessor { frame, ..Default::default() })
    }

    /// The encoder input of `video` (see the module documentation).
    pub fn process_video(&self, video: &Video) -> Result<Processed, MediaError> {
        let mut frames = video
            .frames()
            .iter()
            .map(|f| self.regularize(f, video.source()))
            .collect::<Result<Vec<_>, _>>()?;
        let tps = self.frame.temporal_patch_size;
        while !frames.len().is_multiple_of(tps) {
            frames.push(frames[frames.len() - 1].clone());
        }
        let (out_h, out_w) = self.frame.target_size(&frames[0])?;
        let mut out: Option<Processed> = None;
        // One temporal patch at a time: its frames' planes are all that is held besides the output.
        for group in frames.chunks_exact(tps) {
            let planes: Vec<Vec<f32>> = group.iter().map(|f| self.frame.normalized_planes(f, out_h, out_w)).collect();
            let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
            let part = self.frame.patchify(&refs, out_h, out_w);
            match &mut out {
                None => out = Some(part),
                Some(all) => {
                    all.pixel_values.extend_from_slice(&part.pixel_values);
                    all.rows += part.rows;
                    all.grid_thw[0] += part.grid_thw[0];
                }
            }
        }
        out.ok_or_else(|| MediaError::Geometry { origin: video.source().to_string(), detail: "the video has no frames".into() })
    }

    /// LLaMA Factory's per-frame regularisation (step 1 of the module documentation): each
    /// resize it makes, replayed.
    fn regularize(&self, frame: &Image, video: &str) -> Result<Image, MediaError> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let mut current = frame.clone();
        for (tw, th) in regularize_steps(w, h, self.video_min_pixels, self.video_max_pixels) {
            let too_small = |detail: String| MediaError::Geometry { origin: video.to_string(), detail };
            if tw == 0 || th == 0 {
                return Err(too_small(format!(
                    "a {w}x{h} frame scales to {tw}x{th} within video_min_pixels {} / video_max_pixels {}",
                    self.video_min_pixels, self.video_max_pixels
                )));
            }
            let (cw, ch) = (current.width() as usize, current.height() as usize);
            let rgb = resize_rgb8(current.rgb(), cw, ch, tw, th, Filter::Bicubic);
            current = Image::from_rgb8(tw as u32, th as u32, rgb, frame.source())
                .ok_or_else(|| too_small(format!("a {w}x{h} frame resizes to {tw}x{th}, too large")))?;
        }
        Ok(current)
    }
}

/// The (width, height) of each resize LLaMA Factory makes to a `w`×`h` frame, in order (none
/// when the frame is left as it is). A side may come out 0 (then the caller refuses it).
fn regularize_steps(w: usize, h: usize, min_pixels: usize, max_pixels: usize) -> Vec<(usize, usize)> {
    let mut steps: Vec<(usize, usize)> = Vec::new();
    let mut size = (w, h);
    let scale = |(w, h): (usize, usize), target: usize| {
        let factor = (target as f64 / (w * h) as f64).sqrt();
        ((w as f64 * factor) as usize, (h as f64 * factor) as usize)
    };
    if size.0 * size.1 > max_pixels {
        size = scale(size, max_pixels);
        steps.push(size);
    }
    if size.0 * size.1 < min_pixels && size.0 * size.1 > 0 {
        size = scale(size, min_pixels);
        steps.push(size);
    }
    if size.0.min(size.1) < MIN_SIDE && size.0.min(size.1) > 0 {
        size = (size.0.max(MIN_SIDE), size.1.max(MIN_SIDE));
        steps.push(size);
    }
    // `w / h > 200` in Python's float division; for integers that is `w > 200 h`.
    if size.0 > 200 * size.1 && size.1 > 0 {
        size = (size.1 * 180, size.1);
        steps.push(size);
    }
    if size.1 > 200 * size.0 && size.0 > 0 {
        size = (size.0, size.0 * 180);
        steps.push(size);
    }
    steps
}

impl MediaProcessor for Qwen2VlVideoProcessor {
    fn process(&self, media: &Media) -> Result<Processed, MediaError> {
        match media {
            Media::Video(video) => self.process_video(video),
            other => Err(MediaError::WrongModality { origin: other.source().to_string(), expected: "videos", got: other.kind_name() }),
        }
    }

    fn placeholder_tokens(&self, p: &Processed) -> usize {
        self.frame.placeholder_tokens(p)
    }

    /// Sets LLaMA Factory's `video_min_pixels` / `video_max_pixels` (the first scaling of
    /// every frame); the smart_resize bounds stay the checkpoint's.
    fn set_pixel_limits(&mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Result<(), MediaError> {
        let (min, max) = (min_pixels.unwrap_or(self.video_min_pixels), max_pixels.unwrap_or(self.video_max_pixels));
        if max == 0 || min > max {
            return Err(MediaError::Geometry {
                origin: "video_min_pixels / video_max_pixels".into(),
                detail: format!("min {min} and max {max} pixels leave no size: max must be positive and not below min"),
            });
        }
        (self.video_min_pixels, self.video_max_pixels) = (min, max);
        Ok(())
    }

    fn second_per_grid_t(&self, media: &Media) -> Option<f32> {
        match media {
            Media::Video(video) => Some(video.second_per_grid_t(self.frame.temporal_patch_size)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regularize_steps_follow_llama_factory() {
        // Values from LLaMA Factory 0.9.5's `_preprocess_image` (base + Qwen2-VL plugin), by hand.
        let (min, max) = (DEFAULT_VIDEO_MIN_PIXELS, DEFAULT_VIDEO_MAX_PIXELS);
        assert!(regularize_steps(56, 42, min, max).is_empty(), "the fixture's frames stay as they are");
        // sqrt(65536 / 2073600) = 0.17778: 1920 -> 341, 1080 -> 192.
        assert_eq!(regularize_steps(1920, 1080, min, max), [(341, 192)]);
        // Up to 256 pixels, then the 28-pixel side.
        assert_eq!(regularize_steps(10, 10, min, max), [(16, 16), (28, 28)]);
        // Down, the short side up to 28, then the aspect ratio cut to 180.
        assert_eq!(regularize_steps(10000, 10, min, max), [(8095, 8), (8095, 28), (5040, 28)]);
        assert_eq!(regularize_steps(7, 3000, min, max), [(28, 3000)]);
    }

    fn frame(w: u32, h: u32, seed: u32) -> Image {
        let rgb = (0..w * h * 3).map(|i| ((i * 7 + seed * 31) % 251) as u8).collect();
        Image::from_rgb8(w, h, rgb, &format!("frame {seed}")).expect("frame")
    }

    #[test]
    fn an_odd_frame_count_repeats_the_last_frame() {
        let p = Qwen2VlVideoProcessor::default();
        let three: Vec<Image> = (0..3).map(|s| frame(60, 40, s)).collect();
        let mut four = three.clone();
        four.push(three[2].clone());
        let odd = p.process(&Media::Video(Video::from_frames(three, "odd", 2.0).expect("video"))).expect("odd");
        let even = p.process(&Media::Video(Video::from_frames(four, "even", 2.0).expect("video"))).expect("even");
        assert_eq!(odd, even);
        // smart_resize scales 60x40 up to min 128·28² pixels: 392x280, 28x20 patches; the
        // temporal side is the pair count.
        assert_eq!(odd.grid_thw, [2, 20, 28]);
        assert_eq!(p.placeholder_tokens(&odd), odd.rows / 4);
    }

    #[test]
    fn temporal_pairs_hold_consecutive_frames() {
        // No resizing or normalisation, two different frames: each row's first half is frame 0's
        // patch, its second half frame 1's (per channel), rows as for images.
        let p = Qwen2VlVideoProcessor {
            frame: Qwen2VlImageProcessor { do_resize: false, do_rescale: false, do_normalize: false, ..Default::default() },
            ..Default::default()
        };
        let (a, b) = (frame(28, 28, 1), frame(28, 28, 2));
        let out = p.process(&Media::Video(Video::from_frames(vec![a.clone(), b.clone()], "pair", 2.0).expect("video"))).expect("process");
        assert_eq!(out.grid_thw, [1, 2, 2]);
        let patch = 14 * 14;
        for row in 0..4 {
            let (y0, x0) = ((row / 2) * 14, (row % 2) * 14);
            for c in 0..3 {
                for (t, img) in [&a, &b].into_iter().enumerate() {
                    let got = &out.pixel_values[row * 1176 + (c * 2 + t) * patch..][..patch];
                    let want: Vec<f32> =
                        (0..patch).map(|i| img.rgb()[((y0 + i / 14) * 28 + x0 + i % 14) * 3 + c] as f32).collect();
                    assert_eq!(got, &want[..], "row {row} channel {c} frame {t}");
                }
            }
        }
    }

    #[test]
    fn config_defaults_and_limits() {
        let path = Path::new("dir/preprocessor_config.json");
        let p = Qwen2VlVideoProcessor::from_config(&serde_json::json!({}), path).expect("empty");
        assert_eq!((p.frame.min_pixels, p.frame.max_pixels), (128 * 28 * 28, 28 * 28 * 768));
        assert_eq!(p, Qwen2VlVideoProcessor::default());
        let p = Qwen2VlVideoProcessor::from_config(&serde_json::json!({"min_pixels": 3136, "max_pixels": 12544}), path).expect("keys");
        assert_eq!((p.frame.min_pixels, p.frame.max_pixels), (3136, 12544));
        let dir = ingot_testkit::fixtures_dir().join("tiny-qwen2-vl");
        let p = Qwen2VlVideoProcessor::from_dir(&dir).expect("fixture").expect("present");
        assert_eq!((p.frame.min_pixels, p.frame.max_pixels, p.frame.temporal_patch_size), (3136, 12544, 2));
        assert_eq!((p.video_min_pixels, p.video_max_pixels), (256, 65536));
        let mut p = p;
        p.set_pixel_limits(Some(1000), Some(5000)).expect("limits");
        assert_eq!((p.video_min_pixels, p.video_max_pixels), (1000, 5000));
        let err = p.set_pixel_limits(Some(6000), None).expect_err("min over max");
        assert!(err.to_string().starts_with("video_min_pixels / video_max_pixels: "), "{err}");
        assert_eq!((p.video_min_pixels, p.video_max_pixels), (1000, 5000), "unchanged after an error");
    }

    #[test]
    fn images_are_the_wrong_modality() {
        let err = Qwen2VlVideoProcessor::default().process(&Media::Image(frame(28, 28, 0))).expect_err("image");
        assert_eq!(err.to_string(), "frame 0: this processor takes videos, not image");
        let video = Video::from_frames(vec![frame(28, 28, 0)], "clip", 2.0).expect("video");
        let err = Qwen2VlImageProcessor::default().process(&Media::Video(video)).expect_err("video");
        assert_eq!(err.to_string(), "clip: this processor takes images, not video");
    }
}
