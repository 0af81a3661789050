//! Activation quantization: each matmul call turns its f32 rows into 8-bit blocks once, the
//! way ggml does, so the weight kernels can use integer dot products.
//!
//! - 32-blocks (for the `_0`/`_1` weights): `d = f16(amax/127)`, `q = round(x·127/amax)`
//!   (ggml's x86 Q8_0 path, including the f16 rounding of `d`).
//! - 256-blocks (for K-quant weights): ggml's Q8_K: `iscale = −127/max` where `max` is the
//!   element of largest magnitude, `q = min(127, round(iscale·x))`, `d = 1/iscale` (f32).
//!
//! Rounding is to nearest, ties to even (ggml's `nearest_int` and `_mm256_round_ps`).
//! Alongside the quants we keep integer sums per 16 and per 32 values, used to remove the
//! weights' integer bias and to apply per-sub-block mins without touching every quant.

use std::cell::RefCell;

use half::f16;
use rayon::prelude::*;

#[derive(Default)]
pub(crate) struct QuantAct {
    pub m: usize,
    pub k: usize,
    /// Block size the rows were quantized with (32 or 256).
    pub block: usize,
    /// `m × k` quants, row-major.
    pub qs: Vec<i8>,
    /// `m × k/block` scales.
    pub d: Vec<f32>,
    /// `m × k/16` sums of 16 consecutive quants.
    pub s16: Vec<i16>,
    /// `m × k/32` sums of 32 consecutive quants.
    pub s32: Vec<i16>,
}

/// Round to nearest, ties to even, for |v| < 2²²: adding 1.5·2²³ leaves the integer in the low
/// mantissa bits (ggml's `nearest_int`); plain arithmetic, so it vectorizes without SSE4.1.
fn nearest_int(v: f32) -> i32 {
    (v + 12_582_912.0).to_bits() as i32 - 0x4B40_0000
}

const ABS_MASK: u32 = 0x7FFF_FFFF;

/// The largest magnitude of `x`, as the bits of a non-negative f32. Non-negative floats order
/// like their bits, and an integer max reduction vectorizes where `f32::max` (NaN rules, a
/// 4-cycle dependency per element) does not: the scalar fold cost as much as a small matmul.
fn amax_bits(x: &[f32]) -> u32 {
    x.iter().fold(0, |a, v| a.max(v.to_bits() & ABS_MASK))
}

fn quantize_row(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], s16: &mut [i16], s32: &mut [i16]) {
    for ((x, q), d) in x.chunks_exact(block).zip(qs.chunks_exact_mut(block)).zip(d.iter_mut()) {
        if block == 32 {
            let amax = f32::from_bits(amax_bits(x));
            *d = f16::from_f32(amax / 127.0).to_f32();
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            for (q, &v) in q.iter_mut().zip(x) {
                *q = nearest_int(v * id) as i8;
            }
        } else {
            let amax = amax_bits(x);
            if amax == 0 {
                *d = 0.0;
                q.fill(0);
                continue;
            }
            // ggml takes the first element of largest magnitude, sign included (always found:
            // `amax` is one element's).
            let max = x.iter().copied().find(|v| v.to_bits() & ABS_MASK == amax).unwrap_or(1.0);
            let iscale = -127.0 / max;
            for (q, &v) in q.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
            }
            *d = 1.0 / iscale;
        }
    }
    for (s, q) in s16.iter_mut().zip(qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| i16::from(v)).sum();
    }
    for (s, p) in s32.iter_mut().zip(s16.chunks_exact(2)) {
        *s = p[0] + p[1];
    }
}

impl QuantAct {
    fn fill(&mut self, x: &[f32], m: usize, k: usize, block: usize) {
        debug_assert!(k.is_multiple_of(block) && block.is_multiple_of(32));
        let nb = k / block;
        (self.m, self.k, self.block) = (m, k, block);
        // `resize` keeps the capacity, so steady-state calls do not allocate.
        self.qs.resize(m * k, 0);
        self.d.resize(m * nb, 0.0);
        self.s16.resize(m * k / 16, 0);
        self.s32.resize(m * k / 32, 0);
        let rows = self
            .qs
            .par_chunks_mut(k)
            .zip(self.d.par_chunks_mut(nb))
            .zip(self.s16.par_chunks_mut(k / 16))
            .zip(self.s32.par_chunks_mut(k / 32))
            .zip(x.par_chunks(k));
        // One row is a few microseconds of work: only fan out when there are several.
        let min_len = if m < 4 { m } else { 1 };
        rows.with_min_len(min_len).for_each(|((((q, d), s16), s32), x)| quantize_row(x, block, q, d, s16, s32));
    }
}

thread_local! {
    /// Per-thread scratch, one per activation block size (32, 256), so decode does not allocate.
    static SCRATCH: RefCell<[QuantAct; 2]> = RefCell::new(Default::default());
}

/// Quantized activations borrowed from the calling thread's scratch; returned to it on drop.
/// While borrowed the slot is empty, so a nested call on the same thread (rayon work stealing)
/// just allocates a fresh buffer instead of aliasing this one.
pub(crate) struct Scratch {
    act: QuantAct,
    slot: usize,
}

impl Scratch {
    /// Quantizes `x[m, k]` in blocks of `block` (32 or 256).
    pub fn quantize(x: &[f32], m: usize, k: usize, block: usize) -> Scratch {
        let slot = usize::from(block != 32);
        let mut act = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot]));
        act.fill(x, m, k, block);
        Scratch { act, slot }
    }
}

impl std::ops::Deref for Scratch {
    type Target = QuantAct;
    fn deref(&self) -> &QuantAct {
        &self.act
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let act = std::mem::take(&mut self.act);
        // `try_with`: during thread teardown the thread-local may already be gone.
        let _ = SCRATCH.try_with(|s| s.borrow_mut()[self.slot] = act);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's Q8_K scale, written the plain way: from the first element of largest magnitude.
    fn q8k_scale(x: &[f32]) -> f32 {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        if amax == 0.0 { 0.0 } else { 1.0 / (-127.0 / max) }
    }

    #[test]
    fn scales_follow_the_largest_magnitude_and_its_sign() {
        let mut x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        // Ties in magnitude with opposite signs: the first one decides the sign of `d`.
        x[3] = -9.5;
        x[200] = 9.5;
        x[300] = 9.75;
        x[301] = -9.75;
        x[256..288].fill(0.0);
        for block in [32, 256] {
            let act = Scratch::quantize(&x, 2, 256, block);
            for (b, chunk) in x.chunks_exact(block).enumerate() {
                let want = if block == 32 {
                    let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
                    f16::from_f32(amax / 127.0).to_f32()
                } else {
                    q8k_scale(chunk)
                };
                assert_eq!(act.d[b].to_bits(), want.to_bits(), "block {block} #{b}");
            }
        }
    }
}
