//! GGML block formats and our interleaved ("packed") layout.
//!
//! Every supported quantized format is described by one [`Layout`]: a block of `block` weights
//! (32 or 256) is `w = d·sc·(q − bias) − dmin·mi` with unsigned integer quants `q`, integer
//! sub-block scales `sc` and mins `mi` (one per `sub` weights; `sc = 1, mi = 0` for the `_0`
//! formats, `mi = 1` with `dmin = −m` for the `_1` formats) and f16 `d`, `dmin`. Parsing a GGML
//! block yields an [`Unpacked`] block in that form; [`pack_rows`] writes 8 rows' blocks into one
//! record whose byte order lets a 256-bit register hold "4 consecutive quants of each of the 8
//! rows" (one 32-bit lane per row), which is what the integer dot-product instructions want.
//!
//! Record of one group of 8 rows × one block (offsets from [`Layout`]):
//! - `d[8]` (f16 bits), then `dmin[8]` if the format has mins;
//! - K formats: scales, then mins, each `sub_blocks·8` bytes in order `[pair p][row j][2]`
//!   (so `cvtepi8_epi16` of 16 bytes gives lane j = (s[2p], s[2p+1]) as i16);
//! - per run of 32 quants: 8-bit: 8 × 32 bytes, byte `t·32 + 4j + i` = q[4t+i] of row j;
//!   4/5/6-bit: 4 × 32 bytes of nibbles, byte `u·32 + 4j + i` = q[4u+i] (low) | q[16+4u+i]
//!   (high), so that "nibble vector" t (t<4: low of load t, t≥4: high of load t−4) holds
//!   positions 4t..4t+3; then the high bits: 5-bit: 32 bytes, byte `4j+i` bit t = bit 4 of
//!   q[4t+i]; 6-bit: 2 × 32 bytes, byte `h·32+4j+i` bits 2s..2s+1 = bits 4..5 of q[4(4h+s)+i].

use half::f16;

use super::GgmlDType;

/// Rows interleaved per record: one 32-bit lane per row in a 256-bit register.
pub(crate) const GROUP: usize = 8;

/// How a block's mins are represented.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mins {
    /// `_0` formats and Q6_K: no min term.
    None,
    /// `_1` formats: one min per block (`dmin = −m`, `mi = 1`).
    Block,
    /// Q4_K/Q5_K: 6-bit min per 32-sub-block, scaled by `dmin`.
    Sub,
}

/// Shape of one GGML format in the unified `d·sc·(q − bias) − dmin·mi` form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub dtype: GgmlDType,
    /// Weights per block (32 or 256); activations are quantized with the same block size.
    pub block: usize,
    /// Weights per scale: `block` for the 32-formats, 32 for Q4_K/Q5_K, 16 for Q6_K.
    pub sub: usize,
    /// Bits per quant: 4, 5, 6 or 8.
    pub bits: u32,
    /// Constant subtracted from the unsigned quants (Q8_0 is stored as `q + 128`).
    pub bias: i32,
    pub mins: Mins,
}

impl Layout {
    pub const fn for_dtype(dtype: GgmlDType) -> Option<Layout> {
        const fn l(dtype: GgmlDType, block: usize, sub: usize, bits: u32, bias: i32, mins: Mins) -> Option<Layout> {
            Some(Layout { dtype, block, sub, bits, bias, mins })
        }
        match dtype {
            GgmlDType::Q4_0 => l(dtype, 32, 32, 4, 8, Mins::None),
            GgmlDType::Q4_1 => l(dtype, 32, 32, 4, 0, Mins::Block),
            GgmlDType::Q5_0 => l(dtype, 32, 32, 5, 16, Mins::None),
            GgmlDType::Q5_1 => l(dtype, 32, 32, 5, 0, Mins::Block),
            GgmlDType::Q8_0 => l(dtype, 32, 32, 8, 128, Mins::None),
            GgmlDType::Q4K => l(dtype, 256, 32, 4, 0, Mins::Sub),
            GgmlDType::Q5K => l(dtype, 256, 32, 5, 0, Mins::Sub),
            GgmlDType::Q6K => l(dtype, 256, 16, 6, 32, Mins::None),
            _ => None,
        }
    }
    /// Scales per block (1 means "implicit scale 1", nothing stored).
    pub const fn n_sub(&self) -> usize {
        self.block / self.sub
    }
    pub const fn dmin_off(&self) -> usize {
        2 * GROUP
    }
    pub const fn sc_off(&self) -> usize {
        2 * GROUP * if matches!(self.mins, Mins::None) { 1 } else { 2 }
    }
    const fn sc_bytes(&self) -> usize {
        if self.n_sub() > 1 {
            self.n_sub() * GROUP
        } else {
            0
        }
    }
    pub const fn min_off(&self) -> usize {
        self.sc_off() + self.sc_bytes()
    }
    pub const fn qs_off(&self) -> usize {
        self.min_off() + if matches!(self.mins, Mins::Sub) { self.sc_bytes() } else { 0 }
    }
    /// Bytes of one run of 32 quants for 8 rows.
    pub const fn run_bytes(&self) -> usize {
        if self.bits == 8 {
            256
        } else {
            128 + 32 * (self.bits as usize - 4)
        }
    }
    /// Bytes of one record (8 rows × one block).
    pub const fn record_bytes(&self) -> usize {
        self.qs_off() + self.block / 32 * self.run_bytes()
    }
}

/// The formats with our own kernels, in the order of the kernels' `F` index.
pub(crate) const PACKED: [GgmlDType; 8] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// Layout of `PACKED[i]` (a `const fn` so kernels get it as a compile-time constant).
pub(crate) const fn packed_layout(i: usize) -> Layout {
    match Layout::for_dtype(PACKED[i]) {
        Some(l) => l,
        None => panic!("PACKED lists only formats with a layout"),
    }
}

/// One block of one row in the unified form (only the first `block` quants are meaningful).
#[derive(Clone)]
pub(crate) struct Unpacked {
    pub q: [u8; 256],
    pub sc: [i8; 16],
    pub mi: [u8; 16],
    pub d: u16,
    pub dmin: u16,
}

impl Default for Unpacked {
    fn default() -> Self {
        Unpacked { q: [0; 256], sc: [1; 16], mi: [0; 16], d: 0, dmin: 0 }
    }
}

impl Unpacked {
    /// Dequantizes into `out` (length `layout.block`) with the same f32 operation order as
    /// candle/ggml (`(d·sc)·(q − bias) − dmin·mi`), so results are bit-identical.
    pub fn dequantize(&self, l: &Layout, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        let dmin = f16::from_bits(self.dmin).to_f32();
        for (s, out) in out.chunks_exact_mut(l.sub).enumerate() {
            let scale = d * f32::from(self.sc[s]);
            let min = dmin * f32::from(self.mi[s]);
            for (o, &q) in out.iter_mut().zip(&self.q[s * l.sub..]) {
                *o = scale * (i32::from(q) - l.bias) as f32 - min;
            }
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// 6-bit scale and min `j` of a Q4_K/Q5_K 12-byte scales array (GGML's packing).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Parses one GGML block (`l.dtype`'s `type_size` bytes) into the unified form.
pub(crate) fn parse_block(l: &Layout, b: &[u8], u: &mut Unpacked) {
    *u = Unpacked::default();
    // `_0`/`_1` 32-blocks: d, [m], [qh u32], 16 bytes of nibbles (low = q[j], high = q[j+16]).
    let nibbles32 = |u: &mut Unpacked, qs: &[u8], qh: u32| {
        let hi = |bit: usize| (((qh >> bit) & 1) << 4) as u8;
        for (j, &b) in qs.iter().enumerate() {
            u.q[j] = (b & 0xF) | hi(j);
            u.q[j + 16] = (b >> 4) | hi(j + 16);
        }
    };
    match l.dtype {
        GgmlDType::Q4_0 => {
            u.d = le16(b, 0);
            nibbles32(u, &b[2..18], 0);
        }
        GgmlDType::Q5_0 => {
            u.d = le16(b, 0);
            nibbles32(u, &b[6..22], u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
        }
        GgmlDType::Q4_1 | GgmlDType::Q5_1 => {
            u.d = le16(b, 0);
            u.dmin = le16(b, 2) ^ 0x8000; // dmin = −m: exact sign flip
            u.mi[0] = 1;
            if l.bits == 4 {
                nibbles32(u, &b[4..20], 0);
            } else {
                nibbles32(u, &b[8..24], u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
            }
        }
        GgmlDType::Q8_0 => {
            u.d = le16(b, 0);
            for (q, &v) in u.q.iter_mut().zip(&b[2..34]) {
                *q = v ^ 0x80; // i8 → u8 with bias 128
            }
        }
        GgmlDType::Q4K | GgmlDType::Q5K => {
            u.d = le16(b, 0);
            u.dmin = le16(b, 2);
            let scales = &b[4..16];
            let (qh, qs) = if l.bits == 5 { (&b[16..48], &b[48..176]) } else { (&b[..0], &b[16..144]) };
            for s in 0..8 {
                let (sc, m) = scale_min_k4(s, scales);
                u.sc[s] = sc as i8; // ≤ 63
                u.mi[s] = m;
                let chunk = &qs[32 * (s / 2)..32 * (s / 2) + 32];
                for l_ in 0..32 {
                    let nib = if s % 2 == 0 { chunk[l_] & 0xF } else { chunk[l_] >> 4 };
                    let hi = if qh.is_empty() { 0 } else { ((qh[l_] >> s) & 1) << 4 };
                    u.q[32 * s + l_] = nib | hi;
                }
            }
        }
        GgmlDType::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            u.d = le16(b, 208);
            for (dst, &s) in u.sc.iter_mut().zip(sc) {
                *dst = s as i8;
            }
            for half in 0..2 {
                let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                for l_ in 0..32 {
                    let base = 128 * half + l_;
                    u.q[base] = (ql[l_] & 0xF) | ((qh[l_] & 3) << 4);
                    u.q[base + 32] = (ql[l_ + 32] & 0xF) | (((qh[l_] >> 2) & 3) << 4);
                    u.q[base + 64] = (ql[l_] >> 4) | (((qh[l_] >> 4) & 3) << 4);
                    u.q[base + 96] = (ql[l_ + 32] >> 4) | (((qh[l_] >> 6) & 3) << 4);
                }
            }
        }
        _ => unreachable!("Layout::for_dtype only returns packable formats"),
    }
}

/// Writes row `j`'s block `u` into record `rec` (see the module docs for the byte order).
fn write_record(l: &Layout, rec: &mut [u8], j: usize, u: &Unpacked) {
    rec[2 * j..2 * j + 2].copy_from_slice(&u.d.to_le_bytes());
    if l.mins != Mins::None {
        let o = l.dmin_off() + 2 * j;
        rec[o..o + 2].copy_from_slice(&u.dmin.to_le_bytes());
    }
    if l.n_sub() > 1 {
        for s in 0..l.n_sub() {
            let o = (s / 2) * 16 + 2 * j + s % 2;
            rec[l.sc_off() + o] = u.sc[s] as u8;
            if l.mins == Mins::Sub {
                rec[l.min_off() + o] = u.mi[s];
            }
        }
    }
    for run in 0..l.block / 32 {
        let r = &mut rec[l.qs_off() + run * l.run_bytes()..][..l.run_bytes()];
        let q = &u.q[32 * run..32 * run + 32];
        for t in 0..8 {
            for i in 0..4 {
                let v = q[4 * t + i];
                let lane = 4 * j + i;
                if l.bits == 8 {
                    r[32 * t + lane] = v;
                    continue;
                }
                r[32 * (t % 4) + lane] |= (v & 0xF) << (4 * (t / 4));
                match l.bits {
                    5 => r[128 + lane] |= (v >> 4) << t,
                    6 => r[128 + 32 * (t / 4) + lane] |= (v >> 4) << (2 * (t % 4)),
                    _ => {}
                }
            }
        }
    }
}

/// Reads row `j`'s block back from record `rec` (inverse of `write_record`).
pub(crate) fn read_record(l: &Layout, rec: &[u8], j: usize, u: &mut Unpacked) {
    *u = Unpacked::default();
    u.d = le16(rec, 2 * j);
    if l.mins != Mins::None {
        u.dmin = le16(rec, l.dmin_off() + 2 * j);
    }
    if l.mins == Mins::Block {
        u.mi[0] = 1;
    }
    if l.n_sub() > 1 {
        for s in 0..l.n_sub() {
            let o = (s / 2) * 16 + 2 * j + s % 2;
            u.sc[s] = rec[l.sc_off() + o] as i8;
            if l.mins == Mins::Sub {
                u.mi[s] = rec[l.min_off() + o];
            }
        }
    }
    for run in 0..l.block / 32 {
        let r = &rec[l.qs_off() + run * l.run_bytes()..][..l.run_bytes()];
        for t in 0..8 {
            for i in 0..4 {
                let lane = 4 * j + i;
                u.q[32 * run + 4 * t + i] = if l.bits == 8 {
                    r[32 * t + lane]
                } else {
                    let lo = (r[32 * (t % 4) + lane] >> (4 * (t / 4))) & 0xF;
                    let hi = match l.bits {
                        5 => (r[128 + lane] >> t) & 1,
                        6 => (r[128 + 32 * (t / 4) + lane] >> (2 * (t % 4))) & 3,
                        _ => 0,
                    };
                    lo | (hi << 4)
                };
            }
        }
    }
}

/// Repacks consecutive rows of raw GGML blocks (`k` weights each), the first being row `row0`
/// (a multiple of [`GROUP`]), into their groups of records in `out`, the packed matrix. Rows
/// missing from the last group stay as `out` has them: zero (d = 0, so they contribute nothing).
pub(crate) fn pack_rows(l: &Layout, k: usize, row0: usize, data: &[u8], out: &mut [u8]) {
    debug_assert!(row0.is_multiple_of(GROUP), "pack_rows: row {row0} starts no group");
    let blocks = k / l.block;
    let ts = l.dtype.type_size();
    let group_bytes = blocks * l.record_bytes();
    if group_bytes == 0 {
        return;
    }
    let mut u = Unpacked::default();
    for (r, row) in data.chunks_exact(blocks * ts).enumerate() {
        let (g, j) = ((row0 + r) / GROUP, r % GROUP);
        for (b, rec) in out[g * group_bytes..][..group_bytes].chunks_exact_mut(l.record_bytes()).enumerate() {
            parse_block(l, &row[b * ts..(b + 1) * ts], &mut u);
            write_record(l, rec, j, &u);
        }
    }
}
