//! Portable kernels: the fallback on CPUs without AVX2 and the reference the SIMD paths are
//! tested against. Same arithmetic as the SIMD kernels (integer block sums, then
//! `d_w·d_a·Σ − dmin·d_a·Σmins`), only without vectors.

use std::ops::Range;

use super::act::QuantAct;
use super::formats::{read_record, Layout, Unpacked, GROUP};
use super::OutPtr;

/// Packed weights: groups `groups` (8 rows each) for all activation rows.
pub(crate) fn packed(l: &Layout, data: &[u8], act: &QuantAct, groups: Range<usize>, n: usize, out: &OutPtr) {
    let nblk = act.k / l.block;
    let gbytes = nblk * l.record_bytes();
    let mut u = Unpacked::default();
    let mut acc = vec![0f32; act.m];
    for g in groups {
        for j in 0..GROUP.min(n - g * GROUP) {
            acc.fill(0.0);
            for b in 0..nblk {
                read_record(l, &data[g * gbytes + b * l.record_bytes()..], j, &mut u);
                let (dw, dmin) = (half::f16::from_bits(u.d).to_f32(), half::f16::from_bits(u.dmin).to_f32());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = &act.qs[r * act.k + b * l.block..][..l.block];
                    let (mut isum, mut msum) = (0i32, 0i32);
                    for (s, (q, a)) in u.q.chunks_exact(l.sub).zip(a.chunks_exact(l.sub)).enumerate() {
                        let dot: i32 = q.iter().zip(a).map(|(&q, &a)| i32::from(q) * i32::from(a)).sum();
                        let asum: i32 = a.iter().map(|&a| i32::from(a)).sum();
                        isum += i32::from(u.sc[s]) * (dot - l.bias * asum);
                        msum += i32::from(u.mi[s]) * asum;
                    }
                    let da = act.d[r * nblk + b];
                    *acc += dw * da * isum as f32 - dmin * da * msum as f32;
                }
            }
            for (r, &v) in acc.iter().enumerate() {
                out.write(r, g * GROUP + j, &[v]);
            }
        }
    }
}

/// Dense rows `rows` of `w` (`to_f32` converts one element) times all rows of `x`.
pub(crate) fn dense<T: Copy>(w: &[T], to_f32: impl Fn(T) -> f32, x: &[f32], m: usize, k: usize, rows: Range<usize>, out: &OutPtr) {
    for i in rows {
        let wr = &w[i * k..(i + 1) * k];
        for r in 0..m {
            // Eight partial sums: fewer dependent adds, and lets the compiler vectorize.
            let mut s = [0f32; 8];
            for (c, (&wv, &xv)) in wr.iter().zip(&x[r * k..(r + 1) * k]).enumerate() {
                s[c % 8] += to_f32(wv) * xv;
            }
            out.write(r, i, &[s.iter().sum()]);
        }
    }
}
