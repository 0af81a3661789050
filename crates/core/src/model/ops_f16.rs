//! Attention's reads of the f16 KV cache: `q·k` and `y += p·v` with `k`, `v` f16 rows and
//! `q`, `y`, `p` f32. The f16→f32 conversion is fused into the loads (F16C `vcvtph2ps`), so
//! attention never makes an f32 copy of the cache.
//!
//! Dispatched by [`Backend`] like the quantized kernels: AVX-512 (16 lanes), AVX2+FMA+F16C
//! (8 lanes), or portable scalar code. Invariant: a result depends only on the inputs and the
//! backend, never on where the rows sit in a batch, so attention stays batch-invariant.

use half::f16;

use crate::kernels::Backend;

type DotFn = fn(&[f32], &[f16]) -> f32;
type AxpyFn = fn(&mut [f32], f32, &[f16]);

/// Σ q·k over one head.
#[inline]
pub fn dot(q: &[f32], k: &[f16]) -> f32 {
    assert_eq!(q.len(), k.len(), "q and k rows differ in length");
    (detected().0)(q, k)
}

/// `y ← y + alpha·v` over one head.
#[inline]
pub fn axpy(y: &mut [f32], alpha: f32, v: &[f16]) {
    assert_eq!(y.len(), v.len(), "y and v rows differ in length");
    (detected().1)(y, alpha, v)
}

/// The functions of [`Backend::detected`], resolved once so the hot loop pays one indirect call.
fn detected() -> &'static (DotFn, AxpyFn) {
    static FNS: std::sync::OnceLock<(DotFn, AxpyFn)> = std::sync::OnceLock::new();
    FNS.get_or_init(|| fns(Backend::detected()))
}

/// The dot and axpy of `backend`. Panics if this CPU cannot run it.
fn fns(backend: Backend) -> (DotFn, AxpyFn) {
    assert!(backend.is_available(), "f16 attention: backend {backend:?} is not available on this CPU");
    match backend {
        Backend::Scalar => (dot_scalar, axpy_scalar),
        // SAFETY (both arms): `backend.is_available()` above checked avx2, fma and f16c, and
        // for Avx512Vnni also avx512f; lengths are checked by the public callers.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => (|q, k| unsafe { x86::dot_avx2(q, k) }, |y, a, v| unsafe { x86::axpy_avx2(y, a, v) }),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512Vnni => (|q, k| unsafe { x86::dot_avx512(q, k) }, |y, a, v| unsafe { x86::axpy_avx512(y, a, v) }),
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

fn axpy_scalar(y: &mut [f32], alpha: f32, v: &[f16]) {
    for (o, b) in y.iter_mut().zip(v) {
        *o += alpha * b.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Callers guarantee equal lengths (checked in `dot`/`axpy`); every load stays
    //! below that length. Tails shorter than a register go through scalar code.

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

    /// The AVX-512 dot's arithmetic on 8-lane registers: its two 16-lane accumulators held as
    /// four halves, every lane fed the same products in the same order, and the same reduction
    /// tree, so the result is the same bits on AVX2-only and AVX-512 CPUs (a model's output
    /// then does not depend on which kind of machine runs it; Gemma's greedy answers are
    /// sensitive enough to flip on a reordered sum).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_avx2(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len();
        let (qp, kp) = (q.as_ptr(), k.as_ptr());
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
        let mut sum = hsum256(_mm256_add_ps(_mm256_add_ps(lo0, lo1), _mm256_add_ps(hi0, hi1)));
        if i + 8 <= n {
            // SAFETY: as above.
            sum += hsum256(unsafe { _mm256_mul_ps(_mm256_loadu_ps(qp.add(i)), load8(kp.add(i))) });
            i += 8;
        }
        sum + q[i..].iter().zip(&k[i..]).map(|(a, b)| a * b.to_f32()).sum::<f32>()
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_avx2(y: &mut [f32], alpha: f32, v: &[f16]) {
        let n = y.len();
        let (yp, vp) = (y.as_mut_ptr(), v.as_ptr());
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n = y.len() = v.len().
            unsafe { _mm256_storeu_ps(yp.add(i), _mm256_fmadd_ps(a, load8(vp.add(i)), _mm256_loadu_ps(yp.add(i)))) };
            i += 8;
        }
        for (o, b) in y[i..].iter_mut().zip(&v[i..]) {
            *o = alpha.mul_add(b.to_f32(), *o);
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_avx512(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len();
        let (qp, kp) = (q.as_ptr(), k.as_ptr());
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): i + width <= n = q.len() = k.len().
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
        // Reduced as `dot_avx2` reduces its halves (not `_mm512_reduce_add_ps`, whose order
        // is not ours to rely on).
        let s = _mm512_add_ps(a0, a1);
        let mut sum = hsum256(_mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)))));
        if i + 8 <= n {
            // SAFETY: as above.
            sum += hsum256(unsafe { _mm256_mul_ps(_mm256_loadu_ps(qp.add(i)), load8(kp.add(i))) });
            i += 8;
        }
        sum + q[i..].iter().zip(&k[i..]).map(|(a, b)| a * b.to_f32()).sum::<f32>()
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn axpy_avx512(y: &mut [f32], alpha: f32, v: &[f16]) {
        let n = y.len();
        let (yp, vp) = (y.as_mut_ptr(), v.as_ptr());
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n = y.len() = v.len().
            unsafe { _mm512_storeu_ps(yp.add(i), _mm512_fmadd_ps(a, load16(vp.add(i)), _mm512_loadu_ps(yp.add(i)))) };
            i += 16;
        }
        // SAFETY: the 8-lane and scalar tails have the same requirements.
        unsafe { axpy_avx2(&mut y[i..], alpha, &v[i..]) }
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

    /// Every available path, at lengths that exercise each register width and tail.
    #[test]
    fn dot_matches_f64_reference_on_every_path() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 67, 128, 255, 256] {
            let (q, k) = rows(n);
            let exact: f64 = q.iter().zip(&k).map(|(a, b)| *a as f64 * b.to_f64()).sum();
            let scale: f64 = q.iter().zip(&k).map(|(a, b)| (*a as f64 * b.to_f64()).abs()).sum::<f64>().max(1.0);
            for b in backends() {
                let got = (fns(b).0)(&q, &k) as f64;
                assert!((got - exact).abs() <= 1e-6 * scale, "{b:?} n={n}: {got} vs {exact}");
            }
        }
    }

    /// The AVX2 and AVX-512 paths give the same bits (see `dot_avx2`).
    #[test]
    fn simd_paths_agree_bit_for_bit() {
        if !Backend::Avx512Vnni.is_available() {
            return;
        }
        for n in [8, 16, 24, 32, 40, 48, 64, 72, 128, 200, 256] {
            let (q, k) = rows(n);
            let (a, b) = ((fns(Backend::Avx2).0)(&q, &k), (fns(Backend::Avx512Vnni).0)(&q, &k));
            assert_eq!(a.to_bits(), b.to_bits(), "n={n}: {a} vs {b}");
            let (mut ya, mut yb) = (q.clone(), q.clone());
            (fns(Backend::Avx2).1)(&mut ya, 0.625, &k);
            (fns(Backend::Avx512Vnni).1)(&mut yb, 0.625, &k);
            assert_eq!(ya, yb, "axpy n={n}");
        }
    }

    #[test]
    fn axpy_matches_scalar_on_every_path() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 67, 128, 255, 256] {
            let (y0, v) = rows(n);
            let mut want = y0.clone();
            axpy_scalar(&mut want, 0.625, &v);
            for b in backends() {
                let mut y = y0.clone();
                (fns(b).1)(&mut y, 0.625, &v);
                for (i, (g, w)) in y.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{b:?} n={n} i={i}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn mismatched_rows_are_refused() {
        dot(&[1.0, 2.0], &[f16::ONE]);
    }
}
