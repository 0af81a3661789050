//! Element-wise and row-wise f32 operations of the forward pass (norms, RoPE, activations,
//! softmax, dot products).
//!
//! Our own code: activations are plain row-major `f32` buffers (see the `model` module doc),
//! and these loops are simple enough that the compiler vectorises them; `dot` and `axpy`,
//! the inner loops of attention, get an AVX2+FMA version picked at run time because the
//! portable baseline build only has SSE2.

use crate::config::{Activation, RopeScaling, RopeStyle};

/// `x ← x / rms(x) · w`, row by row (`w.len()` is the row width). The sum of squares is
/// accumulated in f64, as llama.cpp does, so long rows lose nothing to rounding.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let width = w.len();
    for row in x.chunks_exact_mut(width) {
        let sum: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((sum / width as f64) as f32 + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

/// `out ← rms_norm(x)` without touching `x`.
pub fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.copy_from_slice(x);
    rms_norm(out, w, eps);
}

/// Adds `bias` (one row) to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Element-wise work below this many values runs on the calling thread: for a decode step
/// the pool's wake-up costs more than the loop.
const PARALLEL_MIN: usize = 1 << 15;

/// `gate ← act(gate) · up`, the gated MLP's middle. Large inputs (prefill) are split across
/// the current rayon pool: the exponentials here cost as much as a small matmul.
pub fn gated_activation(gate: &mut [f32], up: &[f32], act: Activation) {
    if gate.len() < PARALLEL_MIN {
        return gated_activation_serial(gate, up, act);
    }
    use rayon::prelude::*;
    gate.par_chunks_mut(PARALLEL_MIN / 4)
        .zip(up.par_chunks(PARALLEL_MIN / 4))
        .for_each(|(g, u)| gated_activation_serial(g, u, act));
}

fn gated_activation_serial(gate: &mut [f32], up: &[f32], act: Activation) {
    match act {
        Activation::Silu => {
            for (g, u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        }
        Activation::GeluTanh => {
            for (g, u) in gate.iter_mut().zip(up) {
                *g = gelu_tanh(*g) * u;
            }
        }
        Activation::GeluTanhF16 => {
            let table = gelu_f16_table();
            for (g, u) in gate.iter_mut().zip(up) {
                let x = *g;
                // ggml saturates outside [-10, 10] and looks the rest up by the f16 bits of x.
                let y = if x <= -10.0 {
                    0.0
                } else if x >= 10.0 {
                    x
                } else {
                    half::f16::from_bits(table[half::f16::from_f32(x).to_bits() as usize]).to_f32()
                };
                *g = y * u;
            }
        }
    }
}

/// GELU of every f16 value, stored as f16 bits: ggml's table, built once (128 KiB).
fn gelu_f16_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX).map(|bits| half::f16::from_f32(gelu_tanh(half::f16::from_bits(bits).to_f32())).to_bits()).collect()
    })
}

/// GELU with the tanh approximation.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// Rotary embedding frequencies of one RoPE base (with scaling applied).
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    position_scale: f32,
    style: RopeStyle,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, scaling: Option<&RopeScaling>, style: RopeStyle) -> Self {
        let half = head_dim / 2;
        let mut inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut position_scale = 1.0;
        match scaling {
            None => {}
            Some(RopeScaling::FreqFactors(f)) => {
                for (v, d) in inv_freq.iter_mut().zip(f) {
                    *v /= d;
                }
            }
            Some(RopeScaling::Linear { factor }) => position_scale = 1.0 / factor,
            Some(&RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position }) => {
                // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the
                // band between blended smoothly.
                let low_wavelen = original_max_position as f32 / low_freq_factor;
                let high_wavelen = original_max_position as f32 / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (original_max_position as f32 / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        Self { inv_freq, position_scale, style }
    }

    /// cos/sin tables for the given positions: `[positions.len()][head_dim/2]` each.
    pub fn tables(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let p = p as f32 * self.position_scale;
            for &f in &self.inv_freq {
                let (s, c) = (p * f).sin_cos();
                cos.push(c);
                sin.push(s);
            }
        }
        (cos, sin)
    }

    /// cos/sin tables for M-RoPE positions (Qwen2-VL): frequency `i` turns with the temporal,
    /// height or width position according to the section of `section` it falls in (the first
    /// `section[0]` frequencies with t, the next `section[1]` with h, the rest with w).
    ///
    /// This is transformers' `apply_multimodal_rotary_pos_emb`: it splits a full-width cos
    /// table (the frequencies twice, once per half) into the sections repeated twice, so the
    /// dimensions `i` and `i + head_dim/2` that [`RopeStyle::Halves`] rotates together always
    /// take the same axis, and one half-width table per row says everything. With all three
    /// positions equal this is [`Rope::tables`] of that position.
    pub fn tables_mrope(&self, positions: &[[u32; 3]], section: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for pos in positions {
            for (i, &f) in self.inv_freq.iter().enumerate() {
                let axis = if i < section[0] {
                    0
                } else if i < section[0] + section[1] {
                    1
                } else {
                    2
                };
                let (s, c) = (pos[axis] as f32 * self.position_scale * f).sin_cos();
                cos.push(c);
                sin.push(s);
            }
        }
        (cos, sin)
    }

    /// Rotates every head of every row of `x` (`[rows][heads][head_dim]`); row `r` uses
    /// table row `r`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
        let half = head_dim / 2;
        let rows = cos.len() / half;
        let row_width = x.len() / rows.max(1);
        for (r, row) in x.chunks_exact_mut(row_width).enumerate() {
            let (c, s) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
            for head in row.chunks_exact_mut(head_dim) {
                match self.style {
                    RopeStyle::Halves => {
                        let (a, b) = head.split_at_mut(half);
                        for i in 0..half {
                            let (x0, x1) = (a[i], b[i]);
                            a[i] = x0 * c[i] - x1 * s[i];
                            b[i] = x0 * s[i] + x1 * c[i];
                        }
                    }
                    RopeStyle::Interleaved => {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (x0, x1) = (pair[0], pair[1]);
                            pair[0] = x0 * c[i] - x1 * s[i];
                            pair[1] = x0 * s[i] + x1 * c[i];
                        }
                    }
                }
            }
        }
    }
}

/// LayerNorm with bias, row by row (`w.len()` is the row width): `(x - mean) / sqrt(var + eps)
/// · w + b`, as torch computes it (biased variance). Statistics are accumulated in f64.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let width = w.len();
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
        let var = row.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / width as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, &g), &c) in row.iter_mut().zip(w).zip(b) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + c;
        }
    }
}

/// `x · sigmoid(1.702 x)` (CLIP's `quick_gelu`).
pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

/// Exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))` (torch's `GELU(approximate='none')`).
pub fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (2.0 - erfc(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere): the standard library has no `erf` on stable Rust, and this is well
/// inside f32 precision.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

type DotFn = fn(&[f32], &[f32]) -> f32;
type AxpyFn = fn(&mut [f32], f32, &[f32]);

fn simd_fns() -> &'static (DotFn, AxpyFn) {
    static FNS: std::sync::OnceLock<(DotFn, AxpyFn)> = std::sync::OnceLock::new();
    FNS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return (x86::dot as DotFn, x86::axpy as AxpyFn);
        }
        (dot_portable, axpy_portable)
    })
}

/// Σ a·b.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (simd_fns().0)(a, b)
}

/// `y ← y + alpha·x`.
#[inline]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    (simd_fns().1)(y, alpha, x)
}

/// Eight independent partial sums so the loop vectorises and pipelines. `FMA` selects fused
/// multiply-add, which is only fast when the target has it (otherwise it is a libm call).
#[inline(always)]
fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = if FMA { x[i].mul_add(y[i], acc[i]) } else { acc[i] + x[i] * y[i] };
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_body<const FMA: bool>(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (v, &u) in y.iter_mut().zip(x) {
        *v = if FMA { alpha.mul_add(u, *v) } else { *v + alpha * u };
    }
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_body::<false>(a, b)
}

fn axpy_portable(y: &mut [f32], alpha: f32, x: &[f32]) {
    axpy_body::<false>(y, alpha, x)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Safe wrappers: only installed by `simd_fns` after detecting AVX2 and FMA.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: `simd_fns` hands this out only when the CPU has avx2 and fma.
        unsafe { dot_avx2(a, b) }
    }
    pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        // SAFETY: as above.
        unsafe { axpy_avx2(y, alpha, x) }
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body::<true>(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn axpy_avx2(y: &mut [f32], alpha: f32, x: &[f32]) {
        super::axpy_body::<true>(y, alpha, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_naive() {
        let a: Vec<f32> = (0..67).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..67).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
        assert!((dot_portable(&a, &b) - naive).abs() < 1e-4);
        let mut y = b.clone();
        axpy(&mut y, 0.5, &a);
        for i in 0..67 {
            assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
        }
    }

    #[test]
    fn rms_norm_normalises() {
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / rms).abs() < 1e-6 && (x[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        // Position 0 is the identity; position 1 with head_dim 2 rotates by 1 radian.
        for style in [RopeStyle::Halves, RopeStyle::Interleaved] {
            let rope = Rope::new(2, 10_000.0, None, style);
            let (c, s) = rope.tables(&[0, 1]);
            let mut x = vec![1.0, 0.0, 1.0, 0.0];
            rope.apply(&mut x, 2, &c, &s);
            assert_eq!(&x[..2], &[1.0, 0.0]);
            assert!((x[2] - 1f32.cos()).abs() < 1e-6 && (x[3] - 1f32.sin()).abs() < 1e-6);
        }
        // head_dim 4: Halves pairs (0,2), Interleaved pairs (0,1).
        let (halves, inter) = (Rope::new(4, 1.0, None, RopeStyle::Halves), Rope::new(4, 1.0, None, RopeStyle::Interleaved));
        let (c, s) = halves.tables(&[1]);
        let mut a = vec![1.0, 0.0, 0.0, 0.0];
        halves.apply(&mut a, 4, &c, &s);
        assert!(a[1] == 0.0 && a[2] != 0.0);
        let mut b = vec![1.0, 0.0, 0.0, 0.0];
        inter.apply(&mut b, 4, &c, &s);
        assert!(b[1] != 0.0 && b[2] == 0.0);
    }

    #[test]
    fn mrope_with_equal_axes_is_plain_rope() {
        let rope = Rope::new(16, 1e6, None, RopeStyle::Halves);
        let plain = rope.tables(&[0, 5, 17]);
        let multi = rope.tables_mrope(&[[0; 3], [5; 3], [17; 3]], [2, 3, 3]);
        assert_eq!(plain, multi);
        // Frequencies 0-1 follow t, 2-4 h, 5-7 w.
        let (_, s) = rope.tables_mrope(&[[0, 0, 3]], [2, 3, 3]);
        assert!(s[..5].iter().all(|&v| v == 0.0) && s[5..].iter().all(|&v| v != 0.0));
    }

    #[test]
    fn gelu_erf_matches_known_values() {
        // x·Φ(x) at a few points (Φ from tables).
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_344_7), (-1.0, -0.158_655_25), (2.5, 2.484_475_8), (-3.0, -0.004_049_7)] {
            assert!((gelu_erf(x) - want).abs() < 1e-6, "{x}: {} vs {want}", gelu_erf(x));
        }
        assert!((quick_gelu(1.0) - 1.0 / (1.0 + (-1.702f32).exp())).abs() < 1e-7);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.5; 4], 0.0);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        assert!((x[3] - 0.5 - 1.5 / 1.25f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e30];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0 && x[2] > x[1]);
    }
}
