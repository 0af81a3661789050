//! Image resizing that reproduces Pillow's `Image.resize` (its C resampler) bit for bit, for
//! 8-bit RGB.
//!
//! Why Pillow's algorithm and not any good resampler: the models' reference preprocessing
//! (transformers' PIL image processors, LLaMA Factory's plugins) resizes with Pillow, and the
//! vision encoder sees the resized pixels directly. A resampler that differs by one unit in a few
//! pixels moves `pixel_values` by up to 1/255/std ≈ 0.015, far above the 1e-5 the reference
//! comparison allows; so this module follows Pillow's arithmetic exactly:
//!
//! * separable: one pass per axis through an 8-bit intermediate, horizontal first unless the
//!   height shrinks while the width does not (Pillow's order since its PR #9549; older Pillow
//!   always went horizontal first, and gives different pixels for those sizes); a pass is
//!   skipped when its dimension does not change (and an unchanged size returns a copy);
//! * per output pixel, the input window is centred at `(i + 0.5) * scale`, with the filter's
//!   support widened by `scale` when downsampling (so the filter also low-passes), its bounds
//!   rounded as `(int)(center ± support + 0.5)` and clamped to the image;
//! * the window's weights, evaluated in f64 at `(x - center + 0.5) / max(scale, 1)`, are normalised
//!   to sum 1, then turned into 22-bit fixed point (rounded half away from zero);
//! * each channel accumulates in integers starting from `1 << 21` (so the final shift rounds), and
//!   the result is clipped to 0..=255 after `>> 22`.
//!
//! Only the filters the supported processors use are here: bicubic (Keys, a = -0.5; Pillow's
//! `BICUBIC`, resample 3) and bilinear (triangle; `BILINEAR`, resample 2).

/// Fixed-point fraction bits of the weights (Pillow: 32 - 8 - 2, leaving room for 8-bit values
/// times weights a little above 1 plus sign).
const PRECISION_BITS: u32 = 22;

/// A Pillow resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR` (resample 2): triangle, support 1.
    Bilinear,
    /// `Image.BICUBIC` (resample 3): cubic convolution with a = -0.5, support 2.
    Bicubic,
}

impl Filter {
    /// The filter for a PIL `resample` number, when implemented here.
    pub fn from_pil(resample: i64) -> Option<Filter> {
        match resample {
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                // Written in the same operation order as Pillow: the weights are quantised after
                // normalising, and a different rounding of an intermediate could flip a unit.
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Resampling weights for one axis: output pixel `i` reads `count[i]` inputs from `start[i]`
/// with weights `weights[i * ksize..][..count[i]]`.
struct Coefficients {
    ksize: usize,
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    // Pillow computes the scale from float box coordinates; the conversion is exact for any
    // size a decoded image can have (< 2^24), so f64 from usize gives the same value.
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut count = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut window = vec![0f64; ksize];
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        let inv = 1.0 / filterscale;
        // `as i64` truncates toward zero, as C's (int) cast does.
        let lo = ((center - support + 0.5) as i64).max(0);
        let hi = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (hi - lo).max(0) as usize;
        let mut total = 0.0;
        for (x, w) in window.iter_mut().enumerate().take(n) {
            *w = filter.eval(((x as i64 + lo) as f64 - center + 0.5) * inv);
            total += *w;
        }
        let row = &mut weights[i * ksize..][..ksize];
        for (fixed, &w) in row.iter_mut().zip(&window).take(n) {
            let w = if total != 0.0 { w / total } else { w };
            let scaled = w * (1u32 << PRECISION_BITS) as f64;
            *fixed = if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
        }
        start.push(lo as usize);
        count.push(n);
    }
    Coefficients { ksize, start, count, weights }
}

#[inline]
fn clip8(acc: i64) -> u8 {
    if acc >= 1 << (PRECISION_BITS + 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Resizes row-major RGB8 `src` (`width * height * 3` bytes) to `out_width x out_height` exactly as
/// Pillow's `Image.resize((out_width, out_height), filter)` does for an RGB image.
///
/// Panics when a size is 0 or `src.len()` is not `width * height * 3` (a caller bug: [`super::Image`]
/// guarantees both).
pub fn resize_rgb8(src: &[u8], width: usize, height: usize, out_width: usize, out_height: usize, filter: Filter) -> Vec<u8> {
    assert!(width > 0 && height > 0 && out_width > 0 && out_height > 0, "resize of an empty image");
    assert_eq!(src.len(), width * height * 3, "RGB8 buffer of the wrong length");
    let need_horizontal = out_width != width;
    let need_vertical = out_height != height;
    if !need_horizontal && !need_vertical {
        return src.to_vec();
    }
    let horizontal = need_horizontal.then(|| coefficients(width, out_width, filter));
    let vertical = need_vertical.then(|| coefficients(height, out_height, filter));
    // Pass order, which changes the 8-bit intermediate and so the result: Pillow runs the
    // horizontal pass first, except (since its PR #9549, "if height is being scaled down, but not
    // width, resize vertically first") when the height shrinks and the width does not.
    let vertical_first = out_width >= width && out_height < height;
    match (horizontal, vertical) {
        (Some(h), None) => horizontal_pass(src, width, 0..height, &h, out_width),
        (None, Some(v)) => vertical_pass(src, width, &v, 0),
        (Some(h), Some(v)) if vertical_first => {
            let mid = vertical_pass(src, width, &v, 0);
            horizontal_pass(&mid, width, 0..out_height, &h, out_width)
        }
        (Some(h), Some(v)) => {
            // The horizontal pass only computes the input rows the vertical pass reads.
            let first = v.start[0];
            let last = v.start[out_height - 1] + v.count[out_height - 1];
            let mid = horizontal_pass(src, width, first..last, &h, out_width);
            vertical_pass(&mid, out_width, &v, first)
        }
        (None, None) => unreachable!("handled above"),
    }
}

/// Resamples rows `rows` of `src` (`width` pixels wide) to `out_width` pixels.
fn horizontal_pass(src: &[u8], width: usize, rows: std::ops::Range<usize>, c: &Coefficients, out_width: usize) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * out_width * 3];
    for (y, out_row) in rows.zip(out.chunks_exact_mut(out_width * 3)) {
        let in_row = &src[y * width * 3..][..width * 3];
        for (x, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let k = &c.weights[x * c.ksize..][..c.count[x]];
            let inputs = in_row[c.start[x] * 3..].chunks_exact(3);
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (&w, px) in k.iter().zip(inputs) {
                for ch in 0..3 {
                    acc[ch] += px[ch] as i64 * w as i64;
                }
            }
            for ch in 0..3 {
                out_px[ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

/// Resamples the columns of `src` (`width` pixels wide, its first row being input row
/// `row_offset`) to the output height of `c`.
fn vertical_pass(src: &[u8], width: usize, c: &Coefficients, row_offset: usize) -> Vec<u8> {
    let row_len = width * 3;
    let out_height = c.start.len();
    let mut out = vec![0u8; out_height * row_len];
    for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let k = &c.weights[y * c.ksize..][..c.count[y]];
        let first = c.start[y] - row_offset;
        for (i, out_value) in out_row.iter_mut().enumerate() {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (j, &w) in k.iter().enumerate() {
                acc += src[(first + j) * row_len + i] as i64 * w as i64;
            }
            *out_value = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(values: &[u8]) -> Vec<u8> {
        values.iter().flat_map(|&v| [v, v, v]).collect()
    }

    fn first_channel(rgb: &[u8]) -> Vec<u8> {
        rgb.chunks(3).map(|p| p[0]).collect()
    }

    #[test]
    fn unchanged_size_is_identity() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_rgb8(&src, 5, 4, 5, 4, Filter::Bicubic), src);
    }

    #[test]
    fn bicubic_downscale_by_two_hand_computed() {
        // 4 -> 2 wide: scale 2, support 4. Output 0 centres at 1.0 and reads inputs 0..4 at
        // distances (x - 0.5) / 2 = -0.25, 0.25, 0.75, 1.25: cubic weights 0.8671875, 0.8671875,
        // 0.2265625, -0.0703125 (sum 1.890625). With inputs 0, 100, 200, 255:
        //   (0.8671875*100 + 0.2265625*200 - 0.0703125*255) / 1.890625 = 60.35 -> 60.
        // Output 1 (centre 3.0) mirrors it: (0.2265625*100 + 0.8671875*455 - 0) / 1.890625 = 220.68 -> 221.
        let out = resize_rgb8(&grey(&[0, 100, 200, 255]), 4, 1, 2, 1, Filter::Bicubic);
        assert_eq!(out, grey(&[60, 221]));
        // Same along the other axis (the vertical pass).
        let out = resize_rgb8(&grey(&[0, 100, 200, 255]), 1, 4, 1, 2, Filter::Bicubic);
        assert_eq!(out, grey(&[60, 221]));
    }

    #[test]
    fn bicubic_upscale_hand_computed() {
        // 2 -> 4: scale 0.5, support 2. Centres 0.25, 0.75, 1.25, 1.75; windows clamp to inputs 0..2.
        //   out0: weights at 0.25, 1.25 -> 0.8671875, -0.0703125: (86.71875 - 14.0625) / 0.796875 = 91.18 -> 91
        //   out1: at -0.25, 0.75 -> 0.8671875, 0.2265625: (86.71875 + 45.3125) / 1.09375 = 120.71 -> 121
        //   out2, out3 mirror: 179.29 -> 179, 208.82 -> 209.
        let out = resize_rgb8(&grey(&[100, 200]), 2, 1, 4, 1, Filter::Bicubic);
        assert_eq!(first_channel(&out), [91, 121, 179, 209]);
        // Overshoot below 0 clips: out0 = (0 - 200*0.0703125) / 0.796875 < 0.
        let out = resize_rgb8(&grey(&[0, 200]), 2, 1, 4, 1, Filter::Bicubic);
        assert_eq!(out[0], 0);
    }

    #[test]
    fn channels_are_independent_and_both_passes_compose() {
        let (w, h) = (7, 5);
        let src: Vec<u8> = (0..w * h).flat_map(|i| [(i * 9) as u8, 128, 255 - (i * 9) as u8]).collect();
        let out = resize_rgb8(&src, w, h, 3, 9, Filter::Bicubic);
        assert_eq!(out.len(), 3 * 9 * 3);
        assert!(out.chunks(3).all(|p| p[1] == 128), "a constant channel stays constant");
        // Horizontal then vertical equals doing the two resizes one after the other.
        let wide = resize_rgb8(&src, w, h, 3, h, Filter::Bicubic);
        assert_eq!(resize_rgb8(&wide, 3, h, 3, 9, Filter::Bicubic), out);
    }

    #[test]
    fn pass_order_follows_pillow() {
        // Height shrinks, width does not: vertical pass first. Otherwise horizontal first. The two
        // orders round the intermediate differently, so the sizes below tell them apart.
        let (w, h) = (9, 13);
        let src: Vec<u8> = (0..w * h).flat_map(|i| [((i * 97) % 256) as u8, ((i * 31) % 256) as u8, ((i * 7) % 256) as u8]).collect();
        let vertical_first = |ow: usize, oh: usize| {
            let tall = resize_rgb8(&src, w, h, w, oh, Filter::Bicubic);
            resize_rgb8(&tall, w, oh, ow, oh, Filter::Bicubic)
        };
        let horizontal_first = |ow: usize, oh: usize| {
            let wide = resize_rgb8(&src, w, h, ow, h, Filter::Bicubic);
            resize_rgb8(&wide, ow, h, ow, oh, Filter::Bicubic)
        };
        for (ow, oh) in [(14, 10), (9 + 1, 12)] {
            assert_eq!(resize_rgb8(&src, w, h, ow, oh, Filter::Bicubic), vertical_first(ow, oh), "{ow}x{oh}");
            assert_ne!(vertical_first(ow, oh), horizontal_first(ow, oh), "{ow}x{oh}: the orders must differ for this test to mean anything");
        }
        for (ow, oh) in [(5, 20), (5, 7), (14, 20)] {
            assert_eq!(resize_rgb8(&src, w, h, ow, oh, Filter::Bicubic), horizontal_first(ow, oh), "{ow}x{oh}");
        }
    }

    #[test]
    fn bilinear_hand_computed() {
        // 2 -> 4 triangle: out0 centre 0.25 reads input 0 at 0.25 (w 0.75) and input 1 at 1.25
        // (w 0): 100. out1 centre 0.75: 0.75*100 + 0.25*200 = 125.
        let out = resize_rgb8(&grey(&[100, 200]), 2, 1, 4, 1, Filter::Bilinear);
        assert_eq!(first_channel(&out), [100, 125, 175, 200]);
    }
}
