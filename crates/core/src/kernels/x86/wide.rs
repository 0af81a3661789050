//! AVX-512 VNNI kernel on 512-bit registers: the records of two adjacent 8-row weight groups
//! side by side (lanes 0–7 hold group g's rows, lanes 8–15 group g + 1's), so one `vpdpbusd`
//! does 64 products instead of 32 and every decode instruction serves 16 rows.
//!
//! On CPUs with two 512-bit integer units (Xeon Scalable) this doubles the multiply rate of
//! the 256-bit VNNI kernel it extends; the packed layout is unchanged (two records are loaded
//! with one 256-bit insert each), so scalar, AVX2 and 256-bit VNNI read the same bytes. A
//! chunk with an odd number of groups ends with one group on the 256-bit kernel. The integer
//! sums are exactly the 256-bit kernel's, so results agree with it bit for bit apart from
//! float rounding order (none: the same operations per lane).
//!
//! Every `unsafe fn` here has `#[target_feature]`; its safety requirements are those of the
//! parent module: the CPU has AVX-512 F/BW/VL/VNNI, and pointers stay inside the buffers.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::act::QuantAct;
use super::super::formats::{packed_layout, Layout, Mins};

/// Prefetch distance in bytes for each of the two weight streams.
const PREFETCH: usize = 4096;

/// 32 bytes at offset `o` of both records: low half from `p0`, high half from `p1`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn ld2(p0: *const u8, p1: *const u8, o: usize) -> __m512i {
    // SAFETY: 32 readable bytes at `o` of both records (caller).
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(p0.add(o).cast())), _mm256_loadu_si256(p1.add(o).cast())) }
}

/// 16 bytes at offset `o` of both records as one 256-bit register (low half from `p0`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn ld2_half(p0: *const u8, p1: *const u8, o: usize) -> __m256i {
    // SAFETY: 16 readable bytes at `o` of both records (caller).
    unsafe { _mm256_set_m128i(_mm_loadu_si128(p1.add(o).cast()), _mm_loadu_si128(p0.add(o).cast())) }
}

/// Decodes one run (32 quants × 16 rows) to unsigned bytes; register t = quants 4t..4t+3 of
/// every row (the 256-bit kernel's `decode_run` on both records at once). Written out again
/// rather than shared: intrinsics only inline into functions with their target features, so a
/// width-generic helper would cost a call per instruction.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn decode_run(l: &Layout, p0: *const u8, p1: *const u8) -> [__m512i; 8] {
    // SAFETY: both records hold a run of `l.run_bytes()` bytes at `p0`/`p1` (caller).
    unsafe {
        let ld = |o: usize| ld2(p0, p1, o);
        let mut w = [_mm512_setzero_si512(); 8];
        if l.bits == 8 {
            for (t, w) in w.iter_mut().enumerate() {
                *w = ld(32 * t);
            }
            return w;
        }
        let m4 = _mm512_set1_epi8(0x0F);
        for u in 0..4 {
            let v = ld(32 * u);
            w[u] = _mm512_and_si512(v, m4);
            w[u + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
        }
        // High bits to bit 4 with one 16-bit shift; bits crossing into a neighbour byte land
        // outside the mask (as in the 256-bit kernel).
        let hi = |h: __m512i, from: i32, mask: i8| {
            let v = if from <= 4 {
                _mm512_sll_epi16(h, _mm_cvtsi32_si128(4 - from))
            } else {
                _mm512_srl_epi16(h, _mm_cvtsi32_si128(from - 4))
            };
            _mm512_and_si512(v, _mm512_set1_epi8(mask))
        };
        if l.bits == 5 {
            let h = ld(128);
            for (t, w) in w.iter_mut().enumerate() {
                *w = _mm512_or_si512(*w, hi(h, t as i32, 0x10));
            }
        } else if l.bits == 6 {
            for (t, w) in w.iter_mut().enumerate() {
                *w = _mm512_or_si512(*w, hi(ld(128 + 32 * (t / 4)), 2 * (t % 4) as i32, 0x30));
            }
        }
        w
    }
}

/// `acc + Σ_{t∈ts} w[t]·a[4t..4t+4]` per row lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn dot_run(mut acc: __m512i, w: &[__m512i; 8], a: *const i8, ts: Range<usize>) -> __m512i {
    for t in ts {
        // SAFETY: `a` points at 32 activation quants (caller) and t < 8.
        let av = _mm512_set1_epi32(unsafe { a.add(4 * t).cast::<i32>().read_unaligned() });
        acc = _mm512_dpbusd_epi32(acc, w[t], av);
    }
    acc
}

/// Sign-extended `[pair][row][2]` scales of both records: lane j = (s[2p], s[2p+1]) as i16.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn scale_pairs(p0: *const u8, p1: *const u8, o: usize) -> __m512i {
    // SAFETY: 16 bytes at `o` of both records (caller).
    _mm512_cvtepi8_epi16(unsafe { ld2_half(p0, p1, o) })
}

/// Output features of groups g, g + 1 (records at `g0`, `g1`) for activation rows `r0..r0+R`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn tile<const F: usize, const R: usize>(g0: *const u8, g1: *const u8, act: &QuantAct, r0: usize) -> [[f32; 16]; R] {
    let l = const { packed_layout(F) };
    let (k, nblk) = (act.k, act.k / l.block);
    let mut accf = [_mm512_setzero_ps(); R];
    // SAFETY: both groups hold `nblk` records and rows r0..r0+R exist in `act` (caller); every
    // offset below stays inside the record / activation row it names.
    unsafe {
        for b in 0..nblk {
            let (p0, p1) = (g0.add(b * l.record_bytes()), g1.add(b * l.record_bytes()));
            for line in (0..l.record_bytes()).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(p0.wrapping_add(PREFETCH + line).cast());
                _mm_prefetch::<_MM_HINT_T0>(p1.wrapping_add(PREFETCH + line).cast());
            }
            let dw = _mm512_cvtph_ps(ld2_half(p0, p1, 0));
            let dmin = _mm512_cvtph_ps(ld2_half(p0, p1, l.dmin_off()));
            let da = |r: usize| _mm512_set1_ps(act.d[(r0 + r) * nblk + b]);
            let aq = |r: usize| act.qs.as_ptr().add((r0 + r) * k + b * l.block);
            if l.block == 32 {
                let w = decode_run(&l, p0.add(l.qs_off()), p1.add(l.qs_off()));
                for (r, accf) in accf.iter_mut().enumerate() {
                    let s = i32::from(act.s32[(r0 + r) * (k / 32) + b]);
                    let acc = dot_run(_mm512_set1_epi32(-l.bias * s), &w, aq(r), 0..8);
                    *accf = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(dw, da(r)), *accf);
                    if l.mins == Mins::Block {
                        let ms = _mm512_set1_ps(act.d[(r0 + r) * nblk + b] * s as f32);
                        *accf = _mm512_fnmadd_ps(dmin, ms, *accf);
                    }
                }
                continue;
            }
            let mut acci = [_mm512_setzero_si512(); R];
            for run in 0..l.block / 32 {
                let off = l.qs_off() + run * l.run_bytes();
                let w = decode_run(&l, p0.add(off), p1.add(off));
                let pairs = scale_pairs(p0, p1, l.sc_off() + 16 * (run * 32 / l.sub / 2));
                let even = _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(pairs));
                let odd = _mm512_srai_epi32::<16>(pairs);
                for (r, acci) in acci.iter_mut().enumerate() {
                    let a = aq(r).add(32 * run);
                    let init = |sub: usize| {
                        let s = if l.sub == 16 {
                            act.s16[(r0 + r) * (k / 16) + b * (l.block / 16) + sub]
                        } else {
                            act.s32[(r0 + r) * (k / 32) + b * (l.block / 32) + sub]
                        };
                        _mm512_set1_epi32(-l.bias * i32::from(s))
                    };
                    let sum = if l.sub == 32 {
                        _mm512_mullo_epi32(dot_run(init(run), &w, a, 0..8), if run % 2 == 0 { even } else { odd })
                    } else {
                        let lo = _mm512_mullo_epi32(dot_run(init(2 * run), &w, a, 0..4), even);
                        _mm512_add_epi32(lo, _mm512_mullo_epi32(dot_run(init(2 * run + 1), &w, a, 4..8), odd))
                    };
                    *acci = _mm512_add_epi32(*acci, sum);
                }
            }
            for (r, accf) in accf.iter_mut().enumerate() {
                *accf = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acci[r]), _mm512_mul_ps(dw, da(r)), *accf);
                if l.mins == Mins::Sub {
                    let s32 = act.s32.as_ptr().add((r0 + r) * (k / 32) + b * (l.block / 32));
                    let mut ms = _mm512_setzero_si512();
                    for p in 0..l.n_sub() / 2 {
                        let sums = _mm512_set1_epi32(s32.add(2 * p).cast::<i32>().read_unaligned());
                        ms = _mm512_add_epi32(ms, _mm512_madd_epi16(scale_pairs(p0, p1, l.min_off() + 16 * p), sums));
                    }
                    *accf = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_mul_ps(dmin, da(r)), *accf);
                }
            }
        }
        let mut out = [[0f32; 16]; R];
        for (o, a) in out.iter_mut().zip(&accf) {
            _mm512_storeu_ps(o.as_mut_ptr(), *a);
        }
        out
    }
}
