//! Attention's reads of the f16 KV cache: `q·k` and `y += p·v` with `k`, `v` f16 rows and
//! `q`, `y`, `p` f32. The f16→f32 conversion is fused into the loads (F16C `vcvtph2ps`), so
//! attention never makes an f32 copy of the cache.
//!
//! Dispatched by [`Backend`] like the quantized kernels: AVX-512 (16 lanes), AVX2+FMA+F16C
//! (8 lanes), or portable scalar code. Invariant: a result depends only on the inputs and the
//! backend, never on where the rows sit in a batch, so attention stays batch-invariant.

use half::f16;

use crate::kernels::Backend;

type DotsFn = fn(&[f32], &[f16], usize, f32, &mut [f32]);
type SumFn = fn(&mut [f32], &[f32], &[f16], usize);

/// Whether `count` rows of `len` values, `stride` apart, fit in `rows`.
fn rows_fit(rows: &[f16], count: usize, stride: usize, len: usize) -> bool {
    count == 0 || (count - 1).checked_mul(stride).and_then(|o| o.checked_add(len)).is_some_and(|end| end <= rows.len())
}

/// Attention scores of one query head: `out[j] = scale · (q · k_j)` with `k_j` the `q.len()`
/// values at `rows[j·stride..]`. Each dot is the same arithmetic whatever `out.len()`, so a
/// row's scores do not depend on how many keys one call covers.
pub fn dots(q: &[f32], rows: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    assert!(rows_fit(rows, out.len(), stride, q.len()), "f16 attention: {} key rows of {} (stride {stride}) overrun {} values", out.len(), q.len(), rows.len());
    (detected().0)(q, rows, stride, scale, out)
}

/// `y ← y + Σ_j w[j]·v_j` with `v_j` the `y.len()` values at `rows[j·stride..]`: every element
/// of `y` takes one fused multiply-add per row in order of `j`, so the result is the same bits
/// as an axpy per row, and splitting the rows over several calls changes nothing. The
/// accumulator stays in registers across rows instead of going through memory for each.
pub fn weighted_sum(y: &mut [f32], w: &[f32], rows: &[f16], stride: usize) {
    assert!(rows_fit(rows, w.len(), stride, y.len()), "f16 attention: {} value rows of {} (stride {stride}) overrun {} values", w.len(), y.len(), rows.len());
    if !w.is_empty() {
        (detected().1)(y, w, rows, stride)
    }
}

/// The functions of [`Backend::detected`], resolved once so the hot loop pays one indirect call.
fn detected() -> &'static (DotsFn, SumFn) {
    static FNS: std::sync::OnceLock<(DotsFn, SumFn)> = std::sync::OnceLock::new();
    FNS.get_or_init(|| fns(Backend::detected()))
}

/// The dots and weighted sum of `backend`. Panics if this CPU cannot run it.
fn fns(backend: Backend) -> (DotsFn, SumFn) {
    assert!(backend.is_available(), "f16 attention: backend {backend:?} is not available on this CPU");
    match backend {
        Backend::Scalar => (dots_scalar, weighted_sum_scalar),
        // SAFETY (both arms): `backend.is_available()` above checked avx2, fma and f16c, and
        // for Avx512Vnni also avx512f; the public callers checked that the rows fit.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => (
            |q, r, s, c, o| unsafe { x86::dots_avx2(q, r, s, c, o) },
            |y, w, r, s| unsafe { x86::weighted_sum_avx2(y, w, r, s) },
        ),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512Vnni => (
            |q, r, s, c, o| unsafe { x86::dots_avx512(q, r, s, c, o) },
            |y, w, r, s| unsafe { x86::weighted_sum_avx512(y, w, r, s) },
        ),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only Scalar is available off x86-64"),
    }
}

/// Eight partial sums, as the SIMD paths keep them, so the reference is close to them.
fn dot_scalar(q: &[f32], k: &[f16]) -> f32 {
    let mut acc = [0f32; 8];
    let (cq, ck) = (q.chunks_exact(8), k.chunks_exact(8));
    let tail: f32 = cq.remainder().iter().zip(ck.remainder()).map(|(a, b)| a * b.to_f32()).sum();
    for (a, b) in cq.zip(ck) {
        for i in 0..8 {
            acc[i] += a[i] * b[i].to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dots_scalar(q: &[f32], rows: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_scalar(q, &rows[j * stride..][..q.len()]) * scale;
    }
}

fn weighted_sum_scalar(y: &mut [f32], w: &[f32], rows: &[f16], stride: usize) {
    let n = y.len();
    for (j, &a) in w.iter().enumerate() {
        for (o, b) in y.iter_mut().zip(&rows[j * stride..][..n]) {
            *o = a.mul_add(b.to_f32(), *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Callers guarantee that the rows fit (checked in `dots`/`weighted_sum`); every load
    //! stays inside them. Tails shorter than a register go through scalar code.

    use std::arch::x86_64::*;

    use half::f16;

    /// Eight f16 at `p` as f32 lanes.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller keeps `p..p+8` inside its slice; f16 is a transparent u16.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    /// Sixteen f16 at `p` as f32 lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: the caller keeps `p..p+16` inside its slice.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// The 8 lane sums of `q·k` over the first `n - n % 16` elements, with the element index
    /// they stop at. The AVX-512 dot's arithmetic on 8-lane registers: its two 16-lane
    /// accumulators held as four halves, every lane fed the same products in the same order,
    /// and the halves added as it adds them, so with the same reduction tree the result is
    /// the same bits on AVX2-only and AVX-512 CPUs (a model's output then does not depend on
    /// which kind of machine runs it; Gemma's greedy answers flip on a reordered sum).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn lanes256(qp: *const f32, kp: *const f16, n: usize) -> (__m256, usize) {
        let mut acc = [_mm256_setzero_ps(); 4];
        // `acc[h] += q·k` over 8 elements from `at` (SAFETY, all loads: at + 8 <= n).
        let fma = |acc: &mut __m256, at: usize| *acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(at)), load8(kp.add(at)), *acc) };
        let mut i = 0;
        while i + 32 <= n {
            for (h, acc) in acc.iter_mut().enumerate() {
                fma(acc, i + 8 * h);
            }
            i += 32;
        }
        if i + 16 <= n {
            fma(&mut acc[0], i);
            fma(&mut acc[1], i + 8);
            i += 16;
        }
        let [lo0, hi0, lo1, hi1] = acc;
        (_mm256_add_ps(_mm256_add_ps(lo0, lo1), _mm256_add_ps(hi0, hi1)), i)
    }

    /// The end of a dot past its 16-element runs: an 8-lane product, then scalar products.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_tail(q: &[f32], k: &[f16], mut i: usize, mut sum: f32) -> f32 {
        if i + 8 <= q.len() {
            // SAFETY: i + 8 <= q.len() = k.len().
            sum += hsum256(unsafe { _mm256_mul_ps(_mm256_loadu_ps(q.as_ptr().add(i)), load8(k.as_ptr().add(i))) });
            i += 8;
        }
        sum + q[i..].iter().zip(&k[i..]).map(|(a, b)| a * b.to_f32()).sum::<f32>()
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_avx2(q: &[f32], k: &[f16]) -> f32 {
        // SAFETY: q.len() == k.len() (callers).
        unsafe {
            let (t, i) = lanes256(q.as_ptr(), k.as_ptr(), q.len());
            dot_tail(q, k, i, hsum256(t))
        }
    }

    /// The 16 lane sums of `q·k` over the first `n - n % 16` elements (see [`lanes256`]).
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[inline]
    unsafe fn lanes512(qp: *const f32, kp: *const f16, n: usize) -> (__m512, usize) {
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): i + width <= n.
        while i + 32 <= n {
            unsafe {
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i)), load16(kp.add(i)), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i + 16)), load16(kp.add(i + 16)), a1);
            }
            i += 32;
        }
        if i + 16 <= n {
            unsafe { a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i)), load16(kp.add(i)), a0) };
            i += 16;
        }
        (_mm512_add_ps(a0, a1), i)
    }

    /// `lanes256`'s sums from `lanes512`'s: lane i plus lane i + 8.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[inline]
    fn fold512(s: __m512) -> __m256 {
        _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s))))
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_avx512(q: &[f32], k: &[f16]) -> f32 {
        // SAFETY: q.len() == k.len() (callers). Reduced as `dot_avx2` reduces (not
        // `_mm512_reduce_add_ps`, whose order is not ours to rely on).
        unsafe {
            let (s, i) = lanes512(q.as_ptr(), k.as_ptr(), q.len());
            dot_tail(q, k, i, hsum256(fold512(s)))
        }
    }

    /// `hsum256` of four registers at once (lane j of the result for register j): the same
    /// additions in the same order, the shuffles shared.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum4_256([a, b, c, d]: [__m256; 4]) -> __m128 {
        // Each register's 128-bit halves added, two registers per result.
        let halves = |x, y| _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(x, y), _mm256_permute2f128_ps::<0x31>(x, y));
        // Then elements 0 + 2 and 1 + 3, then those two: lane 0 of each 128-bit half.
        let pairs = |s| {
            let v = _mm256_add_ps(s, _mm256_shuffle_ps::<0xEE>(s, s));
            _mm256_add_ps(v, _mm256_movehdup_ps(v))
        };
        let x = _mm256_unpacklo_ps(pairs(halves(a, b)), pairs(halves(c, d)));
        _mm_unpacklo_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x))
    }

    /// `hsum256(fold512(s))` of four registers at once, as `hsum4_256`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[inline]
    fn hsum4_512([a, b, c, d]: [__m512; 4]) -> __m128 {
        // `fold512` of two registers in one: 128-bit quarters 0 + 2 and 1 + 3 of each.
        let fold = |x, y| _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(x, y), _mm512_shuffle_f32x4::<0xEE>(x, y));
        let (ab, cd) = (fold(a, b), fold(c, d));
        // Each register's 128-bit halves added: one quarter per register.
        let u = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(ab, cd), _mm512_shuffle_f32x4::<0xDD>(ab, cd));
        let v = _mm512_add_ps(u, _mm512_shuffle_ps::<0xEE>(u, u));
        let r = _mm512_add_ps(v, _mm512_movehdup_ps(v));
        _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), r))
    }

    /// `out[j] = scale · dot(q, row j)`. Heads of a multiple of 16 values (all common ones)
    /// take four rows at a time through `four` (lane sums of each row reduced together), the
    /// rest one at a time through `one`; both give the same bits.
    #[inline(always)]
    fn dots_with(q: &[f32], rows: &[f16], stride: usize, scale: f32, out: &mut [f32], four: impl Fn([*const f16; 4]) -> __m128, one: impl Fn(&[f16]) -> f32) {
        let n = q.len();
        let mut j = 0;
        if n.is_multiple_of(16) {
            while j + 4 <= out.len() {
                // SAFETY: the caller checked that `out.len()` rows of n fit; j + 4 <= out.len().
                unsafe {
                    let sums = four(std::array::from_fn(|r| rows.as_ptr().add((j + r) * stride)));
                    _mm_storeu_ps(out.as_mut_ptr().add(j), _mm_mul_ps(sums, _mm_set1_ps(scale)));
                }
                j += 4;
            }
        }
        for (j, o) in out.iter_mut().enumerate().skip(j) {
            // SAFETY: as above.
            *o = one(unsafe { rows.get_unchecked(j * stride..j * stride + n) }) * scale;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots_avx2(q: &[f32], rows: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
        let n = q.len();
        // SAFETY (both): `dots_with` passes rows of n values inside `rows`.
        let four = |p: [*const f16; 4]| hsum4_256(p.map(|p| unsafe { lanes256(q.as_ptr(), p, n) }.0));
        dots_with(q, rows, stride, scale, out, four, |k| unsafe { dot_avx2(q, k) });
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dots_avx512(q: &[f32], rows: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
        let n = q.len();
        // SAFETY (both): as in `dots_avx2`.
        let four = |p: [*const f16; 4]| hsum4_512(p.map(|p| unsafe { lanes512(q.as_ptr(), p, n) }.0));
        dots_with(q, rows, stride, scale, out, four, |k| unsafe { dot_avx512(q, k) });
    }

    /// `R` 8-lane registers of `y` from `at`, accumulated over all rows, then stored.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn sum_run8<const R: usize>(y: &mut [f32], at: usize, w: &[f32], rows: &[f16], stride: usize) {
        let (yp, vp) = (y.as_mut_ptr(), rows.as_ptr());
        // SAFETY (all accesses): at + 8R <= y.len(), and row j's values at..at + 8R lie inside
        // `rows` (checked by the public caller).
        unsafe {
            let mut acc: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(yp.add(at + 8 * r)));
            for (j, &a) in w.iter().enumerate() {
                let (a, p) = (_mm256_set1_ps(a), vp.add(j * stride + at));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(a, load8(p.add(8 * r)), *acc);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(yp.add(at + 8 * r), *acc);
            }
        }
    }

    /// The same per element as [`sum_run8`], on 16-lane registers.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[inline]
    unsafe fn sum_run16<const R: usize>(y: &mut [f32], at: usize, w: &[f32], rows: &[f16], stride: usize) {
        let (yp, vp) = (y.as_mut_ptr(), rows.as_ptr());
        // SAFETY: as in `sum_run8`, with at + 16R <= y.len().
        unsafe {
            let mut acc: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(yp.add(at + 16 * r)));
            for (j, &a) in w.iter().enumerate() {
                let (a, p) = (_mm512_set1_ps(a), vp.add(j * stride + at));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(a, load16(p.add(16 * r)), *acc);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(yp.add(at + 16 * r), *acc);
            }
        }
    }

    /// Runs of 64 and 8 lanes, then the scalar sum for the tail: each element takes
    /// `fma(w_j, v_j, y)` in order of `j` on every path, so AVX2 and AVX-512 give the same bits.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum_avx2(y: &mut [f32], w: &[f32], rows: &[f16], stride: usize) {
        let n = y.len();
        let mut i = 0;
        // SAFETY (both loops): the runs stay below n.
        while i + 64 <= n {
            unsafe { sum_run8::<8>(y, i, w, rows, stride) };
            i += 64;
        }
        while i + 8 <= n {
            unsafe { sum_run8::<1>(y, i, w, rows, stride) };
            i += 8;
        }
        if i < n {
            // The same fused multiply-add per row as the runs.
            super::weighted_sum_scalar(&mut y[i..], w, &rows[i..], stride);
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn weighted_sum_avx512(y: &mut [f32], w: &[f32], rows: &[f16], stride: usize) {
        let n = y.len();
        let mut i = 0;
        // SAFETY (all runs): they stay below n.
        while i + 128 <= n {
            unsafe { sum_run16::<8>(y, i, w, rows, stride) };
            i += 128;
        }
        if i + 64 <= n {
            unsafe { sum_run16::<4>(y, i, w, rows, stride) };
            i += 64;
        }
        while i + 16 <= n {
            unsafe { sum_run16::<1>(y, i, w, rows, stride) };
            i += 16;
        }
        if i < n {
            // SAFETY: the same rows, from element i.
            unsafe { weighted_sum_avx2(&mut y[i..], w, &rows[i..], stride) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<Backend> {
        [Backend::Scalar, Backend::Avx2, Backend::Avx512Vnni].into_iter().filter(|b| b.is_available()).collect()
    }

    fn rows(n: usize) -> (Vec<f32>, Vec<f16>) {
        let q = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let k = (0..n).map(|i| f16::from_f32((i as f32 * 0.11).cos() * 20.0)).collect();
        (q, k)
    }

    /// Head sizes that exercise each register width and tail.
    const LENS: [usize; 15] = [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 67, 128, 255, 256];

    /// Rows of `n` values, `n + 5` apart, as a KV head's rows sit in a cache row: enough for
    /// the four-row path and a remainder.
    const ROWS: usize = 7;
    fn cache_rows(n: usize) -> Vec<f16> {
        (0..ROWS * (n + 5)).map(|i| f16::from_f32((i as f32 * 0.23).sin() * 7.0)).collect()
    }

    #[test]
    fn dots_match_f64_reference_on_every_path() {
        for n in LENS {
            let (q, _) = rows(n);
            let keys = cache_rows(n);
            for b in backends() {
                let mut out = [0f32; ROWS];
                (fns(b).0)(&q, &keys, n + 5, 0.5, &mut out);
                for (j, got) in out.iter().enumerate() {
                    let k = &keys[j * (n + 5)..][..n];
                    let exact: f64 = 0.5 * q.iter().zip(k).map(|(a, b)| *a as f64 * b.to_f64()).sum::<f64>();
                    let scale: f64 = q.iter().zip(k).map(|(a, b)| (*a as f64 * b.to_f64()).abs()).sum::<f64>().max(1.0);
                    assert!((*got as f64 - exact).abs() <= 1e-6 * scale, "{b:?} n={n} row {j}: {got} vs {exact}");
                }
            }
        }
    }

    /// Per element, a fused multiply-add per row in row order, whatever the path, and whether
    /// the rows come in one call or several.
    #[test]
    fn weighted_sums_are_one_fma_per_row_on_every_path() {
        let w = [0.625f32, -1.5, 0.03125];
        for n in LENS {
            let (y0, _) = rows(n);
            let values = cache_rows(n);
            let mut want = y0.clone();
            for (j, a) in w.iter().enumerate() {
                for (o, v) in want.iter_mut().zip(&values[j * (n + 5)..][..n]) {
                    *o = a.mul_add(v.to_f32(), *o);
                }
            }
            for b in backends() {
                let mut y = y0.clone();
                (fns(b).1)(&mut y, &w, &values, n + 5);
                assert_eq!(y, want, "{b:?} n={n}");
                let mut split = y0.clone();
                (fns(b).1)(&mut split, &w[..1], &values, n + 5);
                (fns(b).1)(&mut split, &w[1..], &values[n + 5..], n + 5);
                assert_eq!(split, want, "{b:?} n={n}, rows split over two calls");
            }
        }
    }

    /// On every SIMD path, rows reduced four at a time give the bits of rows reduced one at a
    /// time; where both paths run (AVX-512 CPUs), AVX2 and AVX-512 give the same bits (see
    /// `lanes256`).
    #[test]
    fn dots_give_the_same_bits_however_rows_are_grouped_and_on_both_simd_paths() {
        let simd: Vec<Backend> = backends().into_iter().filter(|b| *b != Backend::Scalar).collect();
        for n in [8, 16, 24, 32, 40, 48, 64, 72, 128, 200, 256] {
            let (q, _) = rows(n);
            let keys = cache_rows(n);
            let outs: Vec<[f32; ROWS]> = simd
                .iter()
                .map(|&b| {
                    let mut out = [0f32; ROWS];
                    (fns(b).0)(&q, &keys, n + 5, 0.125, &mut out);
                    for (j, want) in out.iter().enumerate() {
                        let mut one = [0f32];
                        (fns(b).0)(&q, &keys[j * (n + 5)..], n + 5, 0.125, &mut one);
                        assert_eq!(one[0].to_bits(), want.to_bits(), "{b:?} n={n} row {j}");
                    }
                    out
                })
                .collect();
            for (b, out) in simd.iter().zip(&outs).skip(1) {
                assert_eq!(out.map(f32::to_bits), outs[0].map(f32::to_bits), "{b:?} against {:?}, n={n}", simd[0]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "overrun")]
    fn rows_past_the_end_are_refused() {
        dots(&[1.0, 2.0], &[f16::ONE; 4], 3, 1.0, &mut [0.0; 2]);
    }
}
