//! x86-64 SIMD kernels. One 256-bit kernel source, instantiated twice by `backend!`:
//! - `avx2`: `avx2,fma,f16c`, integer dot via `vpmaddubsw` + `vpmaddwd`;
//! - `vnni`: additionally `avx512vnni,avx512vl`, integer dot via 256-bit `vpdpbusd` (one
//!   instruction instead of three, and ymm16–31 for more accumulators);
//!
//! and [`wide`], the same VNNI kernel on 512-bit registers holding two weight groups, which
//! [`packed`] uses for all but an odd last group on AVX-512 machines.
//!
//! Micro-kernel: one record (8 weight rows × one block) is decoded once into eight registers of
//! unsigned quants, lane j = 4 consecutive quants of row j; each of up to 4 (AVX2) or 8
//! (VNNI) activation rows then broadcasts its 4 matching quants and accumulates `u8·i8`
//! products per lane, so one register holds the dot products of 8 output features and no
//! horizontal sums are needed. Weights are decoded once per tile of activation rows (register
//! reuse for prefill); for decode (m = 1) the same kernel streams the weights once.
//!
//! Every `unsafe fn` here has `#[target_feature]`; its only safety requirement is that the CPU
//! supports those features (checked once by [`super::Backend::detected`]) and that pointers
//! stay inside the buffers, which the callers guarantee from validated shapes.

use std::arch::x86_64::*;
use std::ops::Range;

use super::act::QuantAct;
use super::formats::{self, GROUP};

mod wide;

/// AVX2 integer primitives. `vpmaddubsw` saturates at ±32767: fine for ≤ 6-bit weights
/// (2·63·128), not for full 8-bit ones, which the tile handles as |q|·(a·sign q).
mod ops_avx2 {
    use std::arch::x86_64::*;

    /// Whether `dot_run` sums several `vpmaddubsw` results in 16 bits before widening (see
    /// [`super::i16_terms`]).
    pub const I16_SUMS: bool = true;

    /// Per 32-bit lane: `acc + Σ₄ w·a` (w unsigned ≤ 63, a signed).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1)))
    }
}

/// AVX-512 VNNI primitives (256-bit forms): `vpdpbusd` accumulates u8·i8 in 32 bits without
/// saturation, so 8-bit weights use the `q + 128` form directly and the kernel removes the
/// bias as `128·Σa` from the block's activation sum.
mod ops_vnni {
    use std::arch::x86_64::*;

    /// `vpdpbusd` already multiplies and accumulates in one instruction.
    pub const I16_SUMS: bool = false;

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    #[inline]
    pub fn dot(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, w, a)
    }
}

/// How many `vpmaddubsw` results of `bits`-bit weights may be added in 16 bits without
/// overflow: each is at most 2·(2^bits − 1)·128 per lane, and the sum must stay ≤ 32767
/// (4-bit: 8 × 3840, 5-bit: 4 × 7936, 6-bit: 2 × 16128). Widening once per group instead of
/// once per product halves (6-bit) to nearly a ninth (4-bit) the `vpmaddwd`s, which share the
/// integer multiplier with `vpmaddubsw`: on AVX2-only CPUs (one such port on AMD Zen 2) the
/// multiplies, not the memory, bound batched decode and prefill.
const fn i16_terms(bits: u32) -> usize {
    match bits {
        4 => 8,
        5 => 4,
        _ => 2,
    }
}

macro_rules! backend {
    ($name:ident, $ops:ident, $feat:literal) => {
        pub(crate) mod $name {
            use std::arch::x86_64::*;

            use super::super::act::QuantAct;
            use super::super::formats::{packed_layout, Layout, Mins};
            use super::$ops as ops;

            /// Prefetch distance in bytes for the weight stream.
            const PREFETCH: usize = 4096;

            /// Decodes half `h` of one run (32 quants × 8 rows): register u = quants
            /// 4(4h+u)..4(4h+u)+3 of every row (see `formats` for the byte order), unsigned,
            /// except 8-bit weights on AVX2, which come back as signed q (see `dot_half`).
            /// Halves keep 4 weight registers live instead of 8, leaving room for 8 rows'
            /// accumulators in AVX2's 16 registers.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn decode_half(l: &Layout, p: *const u8, h: usize) -> [__m256i; 4] {
                // SAFETY: `p` points at a run of `l.run_bytes()` bytes (caller).
                unsafe {
                    let ld = |o: usize| _mm256_loadu_si256(p.add(o).cast());
                    let mut w = [_mm256_setzero_si256(); 4];
                    if l.bits == 8 {
                        for (u, w) in w.iter_mut().enumerate() {
                            *w = ld(32 * (4 * h + u));
                            if ops::I16_SUMS {
                                *w = _mm256_xor_si256(*w, _mm256_set1_epi8(-128));
                            }
                        }
                        return w;
                    }
                    let m4 = _mm256_set1_epi8(0x0F);
                    for (u, w) in w.iter_mut().enumerate() {
                        let v = if h == 0 { ld(32 * u) } else { _mm256_srli_epi16::<4>(ld(32 * u)) };
                        *w = _mm256_and_si256(v, m4);
                    }
                    // High bits: move bit `from` (and `from + 1` for 6-bit) of every byte to bit
                    // 4 with one 16-bit shift (constant after unrolling); the bits that cross
                    // into a neighbouring byte land outside the mask.
                    let hi = |hv: __m256i, from: i32, mask: i8| {
                        let v = if from <= 4 {
                            _mm256_sll_epi16(hv, _mm_cvtsi32_si128(4 - from))
                        } else {
                            _mm256_srl_epi16(hv, _mm_cvtsi32_si128(from - 4))
                        };
                        _mm256_and_si256(v, _mm256_set1_epi8(mask))
                    };
                    if l.bits == 5 {
                        let hv = ld(128);
                        for (u, w) in w.iter_mut().enumerate() {
                            *w = _mm256_or_si256(*w, hi(hv, (4 * h + u) as i32, 0x10));
                        }
                    } else if l.bits == 6 {
                        let hv = ld(128 + 32 * h);
                        for (u, w) in w.iter_mut().enumerate() {
                            *w = _mm256_or_si256(*w, hi(hv, 2 * u as i32, 0x30));
                        }
                    }
                    w
                }
            }

            /// `acc + Σ_u w[u]·a[4(4h+u)..+4]` per row lane over half `h` of a run (`a`: the
            /// run's 32 activation quants). On AVX2 the `vpmaddubsw` products are summed in 16
            /// bits (at most [`super::i16_terms`] at a time) and widened by `vpmaddwd` with
            /// `by`: ones, or a sub-block scale in both halves of each lane (a half never
            /// straddles two sub-blocks). 8-bit weights (signed q here) go as
            /// |q|·(a·sign q), which cannot saturate.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn dot_half(l: &Layout, mut acc: __m256i, w: &[__m256i; 4], a: *const i8, h: usize, by: __m256i) -> __m256i {
                // SAFETY: `a` points at 32 activation quants (caller) and 4h + u < 8.
                let av = |u: usize| _mm256_set1_epi32(unsafe { a.add(4 * (4 * h + u)).cast::<i32>().read_unaligned() });
                if !ops::I16_SUMS {
                    for (u, w) in w.iter().enumerate() {
                        acc = ops::dot(acc, *w, av(u));
                    }
                    return acc;
                }
                if l.bits == 8 {
                    for (u, q) in w.iter().enumerate() {
                        let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(*q), _mm256_sign_epi8(av(u), *q));
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(prod, by));
                    }
                    return acc;
                }
                let group = super::i16_terms(l.bits).min(4);
                for g in (0..4).step_by(group) {
                    let mut sum = _mm256_maddubs_epi16(w[g], av(g));
                    for u in g + 1..g + group {
                        sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(w[u], av(u)));
                    }
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(sum, by));
                }
                acc
            }

            /// Sign-extends 16 bytes of `[pair][row][2]` scales: lane j = (s[2p], s[2p+1]) as i16.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn scale_pairs(p: *const u8) -> __m256i {
                // SAFETY: 16 readable bytes (caller).
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(p.cast()) })
            }

            /// `Σ_p pairs(p)·(s[2p], s[2p+1])` per lane: a per-row dot of the mins with
            /// activation block sums (`s` = i16 sums).
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn scaled_sums(pairs: *const u8, s: *const i16, n_pairs: usize) -> __m256i {
                let mut acc = _mm256_setzero_si256();
                for p in 0..n_pairs {
                    // SAFETY: 16·n_pairs scale bytes and 2·n_pairs sums are readable (caller).
                    let (sc, sums) = unsafe { (scale_pairs(pairs.add(16 * p)), s.add(2 * p).cast::<i32>().read_unaligned()) };
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(sc, _mm256_set1_epi32(sums)));
                }
                acc
            }

            /// Adds run `run` of K-quant record `rec` (block `b`) to each row's integer
            /// accumulator: sub-block sums times their integer scales.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn kquant_run<const F: usize, const R: usize>(rec: *const u8, run: usize, act: &QuantAct, r0: usize, b: usize, acci: &mut [__m256i; R]) {
                let l = const { packed_layout(F) };
                let k = act.k;
                // SAFETY: `rec` is a whole record and rows r0..r0+R exist in `act` (caller).
                unsafe {
                    let aq = |r: usize| act.qs.as_ptr().add((r0 + r) * k + b * l.block);
                    let ones = _mm256_set1_epi16(1);
                    let p = rec.add(l.qs_off() + run * l.run_bytes());
                    // Scales of this run: sub-block `run` (32-subs) or `2run, 2run+1`.
                    let pairs = scale_pairs(rec.add(l.sc_off() + 16 * (run * 32 / l.sub / 2)));
                    if ops::I16_SUMS {
                        // AVX2: the widening `vpmaddwd` multiplies by the scale, in both
                        // halves of each lane (no `vpmulld`, which costs AVX2-only CPUs
                        // two multiplier slots); Q6_K's bias goes once per block, in `tile`.
                        let even = _mm256_shufflehi_epi16::<0xA0>(_mm256_shufflelo_epi16::<0xA0>(pairs));
                        let odd = _mm256_shufflehi_epi16::<0xF5>(_mm256_shufflelo_epi16::<0xF5>(pairs));
                        for h in 0..2 {
                            let w = decode_half(&l, p, h);
                            let by = if (if l.sub == 32 { run } else { h }) % 2 == 0 { even } else { odd };
                            for (r, acci) in acci.iter_mut().enumerate() {
                                *acci = dot_half(&l, *acci, &w, aq(r).add(32 * run), h, by);
                            }
                        }
                        return;
                    }
                    // VNNI: 32-bit sub-block sums, each started at −bias·Σa so the scale
                    // multiplies Σ (q − bias)·a (Q6_K; zero for the other K-quants).
                    let even = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(pairs));
                    let odd = _mm256_srai_epi32::<16>(pairs);
                    let init = |r: usize, sub: usize| {
                        let s = if l.sub == 16 {
                            act.s16[(r0 + r) * (k / 16) + b * (l.block / 16) + sub]
                        } else {
                            act.s32[(r0 + r) * (k / 32) + b * (l.block / 32) + sub]
                        };
                        _mm256_set1_epi32(-l.bias * i32::from(s))
                    };
                    let mut sums = [_mm256_setzero_si256(); R];
                    for h in 0..2 {
                        let w = decode_half(&l, p, h);
                        for (r, (sum, acci)) in sums.iter_mut().zip(acci.iter_mut()).enumerate() {
                            let a = aq(r).add(32 * run);
                            if l.sub == 16 {
                                let scale = if h == 0 { even } else { odd };
                                *acci = _mm256_add_epi32(*acci, _mm256_mullo_epi32(dot_half(&l, init(r, 2 * run + h), &w, a, h, ones), scale));
                            } else {
                                *sum = dot_half(&l, if h == 0 { init(r, run) } else { *sum }, &w, a, h, ones);
                            }
                        }
                    }
                    if l.sub == 32 {
                        let scale = if run % 2 == 0 { even } else { odd };
                        for (sum, acci) in sums.iter().zip(acci.iter_mut()) {
                            *acci = _mm256_add_epi32(*acci, _mm256_mullo_epi32(*sum, scale));
                        }
                    }
                }
            }

            /// Output features of group `grp` (8 rows × all blocks) for activation rows
            /// `r0..r0+R`.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn tile<const F: usize, const R: usize>(grp: *const u8, act: &QuantAct, r0: usize) -> [[f32; 8]; R] {
                let l = const { packed_layout(F) };
                let (k, nblk) = (act.k, act.k / l.block);
                let mut accf = [_mm256_setzero_ps(); R];
                // SAFETY: `grp` holds `nblk` records and rows r0..r0+R exist in `act` (caller);
                // every offset below stays inside the record / activation row it names.
                unsafe {
                    for b in 0..nblk {
                        let rec = grp.add(b * l.record_bytes());
                        // Decode streams the weights from DRAM once per step; the hardware
                        // prefetcher alone leaves the integer units idle part of the time, so
                        // ask for the data a few KiB ahead (prefetches never fault;
                        // `wrapping_add` since the address may lie past the buffer). Batched
                        // decode (several rows) gains as much: measured 70 → 60 ms per 8-row step.
                        for line in (0..l.record_bytes()).step_by(64) {
                            _mm_prefetch::<_MM_HINT_T0>(rec.wrapping_add(PREFETCH + line).cast());
                        }
                        let dw = _mm256_cvtph_ps(_mm_loadu_si128(rec.cast()));
                        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(l.dmin_off()).cast()));
                        let da = |r: usize| _mm256_set1_ps(act.d[(r0 + r) * nblk + b]);
                        let aq = |r: usize| act.qs.as_ptr().add((r0 + r) * k + b * l.block);
                        let ones = _mm256_set1_epi16(1);
                        if l.block == 32 {
                            // One scale per block: integer sum (bias removed via the activation
                            // sum; AVX2's 8-bit path has none), then one FMA per row lane.
                            let bias = if ops::I16_SUMS && l.bits == 8 { 0 } else { l.bias };
                            let mut acc = [_mm256_setzero_si256(); R];
                            for (r, acc) in acc.iter_mut().enumerate() {
                                *acc = _mm256_set1_epi32(-bias * i32::from(act.s32[(r0 + r) * (k / 32) + b]));
                            }
                            for h in 0..2 {
                                let w = decode_half(&l, rec.add(l.qs_off()), h);
                                for (r, acc) in acc.iter_mut().enumerate() {
                                    *acc = dot_half(&l, *acc, &w, aq(r), h, ones);
                                }
                            }
                            for (r, accf) in accf.iter_mut().enumerate() {
                                *accf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_mul_ps(dw, da(r)), *accf);
                                if l.mins == Mins::Block {
                                    let s = f32::from(act.s32[(r0 + r) * (k / 32) + b]);
                                    *accf = _mm256_fnmadd_ps(dmin, _mm256_set1_ps(act.d[(r0 + r) * nblk + b] * s), *accf);
                                }
                            }
                            continue;
                        }
                        // K-quants: integer sub-block sums times integer scales, accumulated
                        // over the 256-block, converted to float once.
                        let mut acci = [_mm256_setzero_si256(); R];
                        for run in 0..l.block / 32 {
                            kquant_run::<F, R>(rec, run, act, r0, b, &mut acci);
                        }
                        if ops::I16_SUMS && l.bias != 0 {
                            // Σ_sub sc·Σ (q − bias)·a = Σ_sub sc·Σ q·a − bias·Σ_sub sc·Σa (16-subs:
                            // Q6_K is the only K-quant with a bias).
                            for (r, acci) in acci.iter_mut().enumerate() {
                                let s16 = act.s16.as_ptr().add((r0 + r) * (k / 16) + b * (l.block / 16));
                                let corr = _mm256_mullo_epi32(scaled_sums(rec.add(l.sc_off()), s16, l.n_sub() / 2), _mm256_set1_epi32(l.bias));
                                *acci = _mm256_sub_epi32(*acci, corr);
                            }
                        }
                        for (r, accf) in accf.iter_mut().enumerate() {
                            *accf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acci[r]), _mm256_mul_ps(dw, da(r)), *accf);
                            if l.mins == Mins::Sub {
                                let s32 = act.s32.as_ptr().add((r0 + r) * (k / 32) + b * (l.block / 32));
                                let ms = scaled_sums(rec.add(l.min_off()), s32, l.n_sub() / 2);
                                *accf = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_mul_ps(dmin, da(r)), *accf);
                            }
                        }
                    }
                    let mut out = [[0f32; 8]; R];
                    for (o, a) in out.iter_mut().zip(&accf) {
                        _mm256_storeu_ps(o.as_mut_ptr(), *a);
                    }
                    out
                }
            }
        }
    };
}

// 16 ymm registers: 4 weights (half runs) + 8 rows' integer accumulators + temporaries; the
// rows' float accumulators are touched once per block and may live in memory.
backend!(avx2, ops_avx2, "avx2,fma,f16c");
// 32 ymm registers with AVX-512VL: everything in registers.
backend!(vnni, ops_vnni, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

/// The integer kernel paths [`packed`] drives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// 256-bit `vpmaddubsw` tiles of 8 weight rows × up to 4 activation rows.
    Avx2,
    /// 512-bit `vpdpbusd` tiles of 16 weight rows (two groups, see [`wide`]) × up to 8
    /// activation rows; an odd last group on the 256-bit VNNI tile.
    Avx512Vnni,
}

/// Packed format `F`, weight groups `groups`, all activation rows, on `path`.
///
/// # Safety
/// The CPU must support `path`'s target features; `data` and `act` must have the shapes of
/// one validated matrix (`n` rows, `act.k` columns).
pub(crate) unsafe fn packed<const F: usize>(path: Path, data: &[u8], act: &QuantAct, groups: Range<usize>, n: usize, out: &super::OutPtr) {
    let l = formats::packed_layout(F);
    let gbytes = act.k / l.block * l.record_bytes();
    assert!(groups.end * gbytes <= data.len() && act.qs.len() >= act.m * act.k);
    let wide = path == Path::Avx512Vnni;
    let mr = 8;
    let grp = |g: usize| data[g * gbytes..].as_ptr();
    // Runs `$body` with `$r` bound to the compile-time row count `$rows` (one of `$($n)+`).
    macro_rules! by_rows {
        ($rows:expr, $r:ident => $body:expr, [$($n:literal),+]) => {
            match $rows {
                $($n => { const $r: usize = $n; $body })+
                _ => unreachable!("rows ≤ the tile's row count"),
            }
        };
    }
    let mut r0 = 0;
    while r0 < act.m {
        let rows = (act.m - r0).min(mr);
        let mut g = groups.start;
        while g < groups.end {
            let put = |r: usize, v: &[f32]| out.write(r0 + r, g * GROUP, &v[..v.len().min(n - g * GROUP)]);
            // SAFETY: features per this fn's contract; groups g (and g + 1 when paired) lie
            // below `groups.end`, whose records the assert above checked.
            unsafe {
                if wide && g + 1 < groups.end {
                    by_rows!(rows, R => for (r, v) in wide::tile::<F, R>(grp(g), grp(g + 1), act, r0).iter().enumerate() {
                        put(r, v)
                    }, [1, 2, 3, 4, 5, 6, 7, 8]);
                    g += 2;
                    continue;
                }
                if wide {
                    by_rows!(rows, R => for (r, v) in vnni::tile::<F, R>(grp(g), act, r0).iter().enumerate() {
                        put(r, v)
                    }, [1, 2, 3, 4, 5, 6, 7, 8]);
                } else {
                    by_rows!(rows, R => for (r, v) in avx2::tile::<F, R>(grp(g), act, r0).iter().enumerate() {
                        put(r, v)
                    }, [1, 2, 3, 4, 5, 6, 7, 8]);
                }
            }
            g += 1;
        }
        r0 += rows;
    }
}

/// Element types of dense weights: the `ELEM` parameter of [`dense`].
pub(crate) const DENSE_F32: u8 = 0;
pub(crate) const DENSE_F16: u8 = 1;
pub(crate) const DENSE_BF16: u8 = 2;

/// Dense f32/f16/bf16 weights (`ELEM`, one of the `DENSE_*`): rows `rows` of `w` times all rows of `x`, in
/// tiles of 4 weight rows × 2 activation rows: 8 independent FMA chains hide FMA latency
/// (one chain per row was latency-bound) and each loaded vector is used 2–4 times.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` holds `rows.end` rows of `k` elements of
/// 4 (f32) or 2 (f16, bf16) bytes and `x` holds `m × k` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dense<const ELEM: u8>(w: *const u8, x: &[f32], m: usize, k: usize, rows: std::ops::Range<usize>, out: &super::OutPtr) {
    assert!(x.len() >= m * k);
    let mut i = rows.start;
    while i < rows.end {
        let nw = if rows.end - i >= 4 { 4 } else { 1 };
        let mut r0 = 0;
        while r0 < m {
            let nx = if m - r0 >= 2 { 2 } else { 1 };
            // SAFETY: rows i..i+nw of `w` and r0..r0+nx of `x` exist (contract, loop bounds).
            unsafe {
                match (nw, nx) {
                    (4, 2) => dense_tile::<ELEM, 4, 2>(w, x, k, i, r0, out),
                    (4, _) => dense_tile::<ELEM, 4, 1>(w, x, k, i, r0, out),
                    (_, 2) => dense_tile::<ELEM, 1, 2>(w, x, k, i, r0, out),
                    _ => dense_tile::<ELEM, 1, 1>(w, x, k, i, r0, out),
                }
            }
            r0 += nx;
        }
        i += nw;
    }
}

/// One `NW × NX` tile of [`dense`]; same safety contract for rows `i..i+NW`, `r0..r0+NX`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dense_tile<const ELEM: u8, const NW: usize, const NX: usize>(w: *const u8, x: &[f32], k: usize, i: usize, r0: usize, out: &super::OutPtr) {
    let esize = if ELEM == DENSE_F32 { 4 } else { 2 };
    // SAFETY: row i+q < i+NW of `w` exists (contract), so its start is inside the buffer.
    let wrow = |q: usize| unsafe { w.add((i + q) * k * esize) };
    // SAFETY: row r0+r < r0+NX of `x` exists (contract).
    let xrow = |r: usize| unsafe { x.as_ptr().add((r0 + r) * k) };
    let mut acc = [[_mm256_setzero_ps(); NX]; NW];
    let mut c = 0;
    while c + 8 <= k {
        for (q, acc) in acc.iter_mut().enumerate() {
            // SAFETY: c + 8 ≤ k: the 8 elements from c lie inside row q.
            let p = unsafe { wrow(q).add(c * esize) };
            // SAFETY: 8 elements (32 or 16 bytes) readable at `p` (above); the CPU has
            // AVX2/FMA/F16C (this fn's target features, the caller's contract).
            let wv = unsafe {
                match ELEM {
                    DENSE_F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                    // bf16 is the top half of an f32: widen to 32 bits and shift into place.
                    DENSE_BF16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())))),
                    _ => _mm256_loadu_ps(p.cast()),
                }
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: c + 8 ≤ k: 8 floats of activation row r from c.
                *acc = _mm256_fmadd_ps(wv, unsafe { _mm256_loadu_ps(xrow(r).add(c)) }, *acc);
            }
        }
        c += 8;
    }
    for (q, acc) in acc.iter().enumerate() {
        for (r, acc) in acc.iter().enumerate() {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds the 8 floats stored.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
            let tail: f32 = (c..k)
                // SAFETY: c < k: one element of weight row q and activation row r.
                .map(|c| unsafe {
                    let p = wrow(q).add(c * esize);
                    let wv = match ELEM {
                        DENSE_F16 => half::f16::from_bits(p.cast::<u16>().read_unaligned()).to_f32(),
                        DENSE_BF16 => half::bf16::from_bits(p.cast::<u16>().read_unaligned()).to_f32(),
                        _ => p.cast::<f32>().read_unaligned(),
                    };
                    wv * *xrow(r).add(c)
                })
                .sum();
            out.write(r0 + r, i + q, &[lanes.iter().sum::<f32>() + tail]);
        }
    }
}
