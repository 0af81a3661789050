//! CPU matrix kernels: the hot path of every forward pass.
//!
//! A [`QMatrix`] is a weight matrix `W[n, k]` (n output features, k inputs) loaded from one of
//! GGML's block formats (or dense f32/f16/bf16). [`QMatrix::matmul`] computes
//! `y[m, n] = x[m, k] · Wᵀ` for f32 activations, running on the current rayon pool.
//!
//! These kernels are our own rather than candle's because candle has no SIMD Q5_0 dot product
//! (≈4 GOP/s on the Q5_0 tensors that make up most of our models) and no quantized GEMM for
//! prompt processing; both are where the time goes.
//!
//! # How a matmul runs
//! - **Layout** (built once, in [`QMatrix::read_ggml`], a chunk of rows at a time): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
//!   Q5_K and Q6_K are repacked into records of 8 rows × one block, interleaved so a 256-bit
//!   register holds 4 consecutive quants of each of 8 rows (see `formats`); rows are padded
//!   to a multiple of 8 with zero rows. Size is the GGML size (+3% for K-quants, whose 6-bit
//!   scales are stored unpacked). F32, F16 and BF16 stay dense; every other dtype candle
//!   can read (Q2_K, Q3_K, Q8_1, Q8_K) is dequantized to f32 at load.
//! - **Activations**: each call quantizes `x` once, like ggml (Q8_0-style 32-blocks for the
//!   `_0`/`_1` formats, Q8_K-style 256-blocks for K-quants; see `act`), into a thread-local
//!   scratch buffer, so decode does not allocate.
//! - **Kernels**: integer dot products of 8 weight rows × up to 4 activation rows per
//!   micro-kernel (weights decoded once per 4 activation rows), picked once per process by
//!   [`Backend::detected`]: AVX-512 VNNI (256-bit `vpdpbusd`) if present, else AVX2+FMA+F16C
//!   (`vpmaddubsw`), else portable scalar code. Dense f32/f16/bf16 use an FMA kernel (AVX2) or
//!   scalar.
//! - **Threads**: output features are split into contiguous chunks of 8-row groups, several
//!   chunks per rayon thread for balance and, for prefill, small enough that a chunk's weights
//!   stay in L2 while every activation row passes over them. Chunks write disjoint columns
//!   of `y`. Nothing is spawned: work runs on the pool the caller `install`ed.
//!   [`QMatrix::matmul_many`] runs the chunks of several matrices sharing `x` (q/k/v,
//!   gate/up) in one parallel loop over one quantization of `x`.

mod act;
mod formats;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::OnceLock;

pub use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

use formats::{Unpacked, GROUP, PACKED};

/// Why a weight matrix could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("weight type {0:?} is not supported")]
    Unsupported(GgmlDType),
    #[error("a {dtype:?} matrix of {n}x{k} needs {expected} bytes, got {got}")]
    BadSize { dtype: GgmlDType, n: usize, k: usize, expected: usize, got: usize },
    #[error("k = {k} is not a multiple of the {dtype:?} block size {block}")]
    BadK { dtype: GgmlDType, k: usize, block: usize },
    #[error("reading the weights: {0}")]
    Read(#[from] std::io::Error),
    #[error("INGOT_KERNELS={name} names no kernel path (scalar, avx2, avx512-vnni)")]
    UnknownBackend { name: String },
    #[error("INGOT_KERNELS={name}: this CPU cannot run that kernel path")]
    BackendUnavailable { name: &'static str },
}

/// Bytes of raw weights [`QMatrix::read_ggml`] asks for at a time (rounded down to whole
/// groups of 8 rows, at least one group).
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Bytes a `n x k` matrix takes in `dtype`'s block layout.
pub fn byte_size(dtype: GgmlDType, n: usize, k: usize) -> usize {
    n * k / dtype.block_size() * dtype.type_size()
}

/// Instruction-set paths of the kernels. [`QMatrix::matmul`] uses [`Backend::detected`];
/// [`QMatrix::matmul_with`] lets tests and benchmarks pick one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Portable Rust, any CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 + FMA + F16C + AVX-512 VNNI/VL (256-bit `vpdpbusd`); dense weights use
    /// the AVX2 kernel.
    Avx512Vnni,
}

impl Backend {
    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            match self {
                Backend::Scalar => true,
                Backend::Avx2 => avx2,
                Backend::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Backend::Scalar
        }
    }

    /// Every backend, fastest first.
    pub const ALL: [Backend; 3] = [Backend::Avx512Vnni, Backend::Avx2, Backend::Scalar];

    /// The name `INGOT_KERNELS` takes and `bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Avx2 => "avx2",
            Backend::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The backend the `INGOT_KERNELS` environment variable asks for (`None` when unset or
    /// empty): a way to run, say, the AVX2 path on an AVX-512 machine to see what an AVX2-only
    /// CPU gets. An unknown name or a path this CPU cannot run is an error.
    pub fn requested() -> Result<Option<Backend>, KernelError> {
        let Some(name) = std::env::var_os("INGOT_KERNELS").filter(|v| !v.is_empty()) else { return Ok(None) };
        let name = name.to_string_lossy().to_ascii_lowercase();
        let backend = Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| KernelError::UnknownBackend { name: name.clone() })?;
        if !backend.is_available() {
            return Err(KernelError::BackendUnavailable { name: backend.name() });
        }
        Ok(Some(backend))
    }

    /// The backend every matmul uses: `INGOT_KERNELS`' when it names one this CPU runs, else
    /// the fastest available (decided once per process; front ends check
    /// [`requested`](Self::requested) at start so a bad value is reported, not ignored).
    pub fn detected() -> Backend {
        static BEST: OnceLock<Backend> = OnceLock::new();
        *BEST.get_or_init(|| {
            Self::requested()
                .ok()
                .flatten()
                .unwrap_or_else(|| Self::ALL.into_iter().find(|b| b.is_available()).unwrap_or(Backend::Scalar))
        })
    }
}

/// `y` shared by the parallel chunks of one matmul. Each chunk writes only its own columns.
struct OutPtr {
    ptr: *mut f32,
    n: usize,
    len: usize,
}

// SAFETY: chunks write disjoint elements (their own output columns), and the `&mut [f32]` it was
// made from outlives the parallel loop.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn new(y: &mut [f32], n: usize) -> Self {
        OutPtr { ptr: y.as_mut_ptr(), n, len: y.len() }
    }
    /// `y[row, col0..col0 + vals.len()] = vals`; callers only write columns of their chunk.
    fn write(&self, row: usize, col0: usize, vals: &[f32]) {
        let at = row * self.n + col0;
        assert!(col0 + vals.len() <= self.n && at + vals.len() <= self.len, "output index out of range");
        // SAFETY: in bounds (checked above); no other chunk writes these columns.
        unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), self.ptr.add(at), vals.len()) };
    }
}

/// How a matrix is stored internally.
enum Storage {
    /// Interleaved 8-row records of `PACKED[format]`.
    Packed { format: usize, data: Vec<u8> },
    F32(Vec<f32>),
    /// f16 bits.
    F16(Vec<u16>),
    /// bf16 bits.
    BF16(Vec<u16>),
}

/// A weight matrix `W[n, k]`, row `i` holding the weights of output feature `i`.
pub struct QMatrix {
    dtype: GgmlDType,
    n: usize,
    k: usize,
    storage: Storage,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({:?}, {}x{})", self.dtype, self.n, self.k)
    }
}

/// Runs `$body` with `$f` bound to the compile-time format index `$i` (kernels are
/// monomorphized per format so layout constants fold away).
macro_rules! with_format {
    ($i:expr, $f:ident => $body:expr) => {
        match $i {
            0 => { const $f: usize = 0; $body }
            1 => { const $f: usize = 1; $body }
            2 => { const $f: usize = 2; $body }
            3 => { const $f: usize = 3; $body }
            4 => { const $f: usize = 4; $body }
            5 => { const $f: usize = 5; $body }
            6 => { const $f: usize = 6; $body }
            7 => { const $f: usize = 7; $body }
            _ => unreachable!("PACKED has 8 formats"),
        }
    };
}

impl QMatrix {
    /// Builds a matrix from raw GGML block bytes (as stored in a GGUF file), rows contiguous.
    /// Any dtype candle can read loads; those without own kernels are dequantized to f32.
    pub fn from_ggml(dtype: GgmlDType, n: usize, k: usize, data: &[u8]) -> Result<Self, KernelError> {
        let block = dtype.block_size();
        if !k.is_multiple_of(block) {
            return Err(KernelError::BadK { dtype, k, block });
        }
        let expected = byte_size(dtype, n, k);
        if data.len() != expected {
            return Err(KernelError::BadSize { dtype, n, k, expected, got: data.len() });
        }
        Self::read_ggml(dtype, n, k, |offset, chunk| {
            chunk.copy_from_slice(&data[offset..offset + chunk.len()]);
            Ok(())
        })
    }

    /// [`from_ggml`](Self::from_ggml) of the `byte_size(dtype, n, k)` bytes that
    /// `read(offset, chunk)` fills (`offset` from the matrix's first byte), asked for in order,
    /// a chunk of rows at a time: loading holds the matrix's own storage and one chunk (about
    /// 1 MiB), never a whole raw copy beside it. Errors of `read` are [`KernelError::Read`].
    pub fn read_ggml(
        dtype: GgmlDType,
        n: usize,
        k: usize,
        read: impl FnMut(usize, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<Self, KernelError> {
        Self::read_ggml_chunked(dtype, n, k, READ_CHUNK_BYTES, read)
    }

    /// [`read_ggml`](Self::read_ggml) asking for about `chunk_bytes` at a time.
    fn read_ggml_chunked(
        dtype: GgmlDType,
        n: usize,
        k: usize,
        chunk_bytes: usize,
        mut read: impl FnMut(usize, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<Self, KernelError> {
        let block = dtype.block_size();
        if !k.is_multiple_of(block) {
            return Err(KernelError::BadK { dtype, k, block });
        }
        let mut storage = match PACKED.iter().position(|&d| d == dtype) {
            Some(format) => {
                let l = formats::packed_layout(format);
                Storage::Packed { format, data: vec![0; n.div_ceil(GROUP) * (k / l.block) * l.record_bytes()] }
            }
            None => match dtype {
                GgmlDType::F16 => Storage::F16(Vec::with_capacity(n * k)),
                GgmlDType::BF16 => Storage::BF16(Vec::with_capacity(n * k)),
                _ => Storage::F32(Vec::with_capacity(n * k)),
            },
        };
        let row_bytes = byte_size(dtype, 1, k);
        // Whole groups of rows per chunk, so that packing never splits a group.
        let rows_per_chunk = (chunk_bytes / row_bytes.max(1) / GROUP * GROUP).max(GROUP);
        let mut buf = vec![0u8; rows_per_chunk.min(n) * row_bytes];
        for row0 in (0..n).step_by(rows_per_chunk).filter(|_| row_bytes > 0) {
            let rows = rows_per_chunk.min(n - row0);
            let chunk = &mut buf[..rows * row_bytes];
            read(row0 * row_bytes, chunk)?;
            let le = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
            match &mut storage {
                Storage::Packed { format, data } => formats::pack_rows(&formats::packed_layout(*format), k, row0, chunk, data),
                Storage::F16(v) | Storage::BF16(v) => v.extend(chunk.chunks_exact(2).map(le)),
                Storage::F32(v) if dtype == GgmlDType::F32 => {
                    v.extend(chunk.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                }
                Storage::F32(v) => v.extend(dequantize_with_candle(dtype, rows * k, chunk)?),
            }
        }
        Ok(Self { dtype, n, k, storage })
    }

    /// Builds a dense f32 matrix from row-major values.
    pub fn from_f32(n: usize, k: usize, values: &[f32]) -> Result<Self, KernelError> {
        if values.len() != n * k {
            let dtype = GgmlDType::F32;
            return Err(KernelError::BadSize { dtype, n, k, expected: 4 * n * k, got: 4 * values.len() });
        }
        Ok(Self { dtype: GgmlDType::F32, n, k, storage: Storage::F32(values.to_vec()) })
    }

    /// Quantizes row-major f32 `values` to `dtype` with candle's (= ggml's reference) quantizer,
    /// e.g. to load f16/f32 checkpoints as Q8_0 or Q4_K. `k` must be a multiple of the block size.
    pub fn quantize_f32(n: usize, k: usize, values: &[f32], dtype: GgmlDType) -> Result<Self, KernelError> {
        let block = dtype.block_size();
        if !k.is_multiple_of(block) {
            return Err(KernelError::BadK { dtype, k, block });
        }
        if values.len() != n * k {
            return Err(KernelError::BadSize { dtype: GgmlDType::F32, n, k, expected: 4 * n * k, got: 4 * values.len() });
        }
        if matches!(dtype, GgmlDType::F32) {
            return Self::from_f32(n, k, values);
        }
        let mut q = dtype.cpu_zeros(n * k);
        q.from_float(values);
        // SAFETY: `as_ptr` points at the `storage_size_in_bytes()` bytes of `q`'s blocks, alive
        // and unmodified while the slice is used.
        let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), q.storage_size_in_bytes()) };
        Self::from_ggml(dtype, n, k, bytes)
    }

    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }
    /// Output features (rows).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features (columns).
    pub fn k(&self) -> usize {
        self.k
    }
    /// Bytes of the internal representation.
    pub fn size_in_bytes(&self) -> usize {
        match &self.storage {
            Storage::Packed { data, .. } => data.len(),
            Storage::F32(v) => 4 * v.len(),
            Storage::F16(v) | Storage::BF16(v) => 2 * v.len(),
        }
    }

    /// `y[m, n] = x[m, k] · Wᵀ` with the fastest available kernels. Panics if the slice lengths
    /// do not match (a caller bug).
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        self.matmul_with(Backend::detected(), x, m, y)
    }

    /// [`matmul`](Self::matmul) on a chosen backend (tests, benchmarks). Panics if `backend`
    /// is not available on this CPU.
    pub fn matmul_with(&self, backend: Backend, x: &[f32], m: usize, y: &mut [f32]) {
        Self::matmul_many_with(backend, &[self], x, m, &mut [y])
    }

    /// Several matrices with the same `k` applied to the same activations, e.g. q/k/v or
    /// gate/up: `outs[i][m, mats[i].n] = x[m, k] · mats[i]ᵀ`. Quantizes `x` once (per
    /// activation block size needed) and spreads the rows of all matrices over the pool in one
    /// parallel loop, saving a quantization and a fork/join per extra matrix. Call as
    /// `QMatrix::matmul_many(&[&wq, &wk, &wv], &x, m, &mut [&mut q, &mut k, &mut v])`.
    /// Panics if the lengths or `k`s do not match.
    pub fn matmul_many(mats: &[&QMatrix], x: &[f32], m: usize, outs: &mut [&mut [f32]]) {
        Self::matmul_many_with(Backend::detected(), mats, x, m, outs)
    }

    /// [`matmul_many`](Self::matmul_many) on a chosen backend.
    pub fn matmul_many_with(backend: Backend, mats: &[&QMatrix], x: &[f32], m: usize, outs: &mut [&mut [f32]]) {
        assert_eq!(mats.len(), outs.len(), "matmul: one output per matrix");
        let k = mats.first().map_or(0, |w| w.k);
        assert_eq!(x.len(), m * k, "matmul: x has the wrong length");
        for (w, y) in mats.iter().zip(outs.iter()) {
            assert_eq!(w.k, k, "matmul_many: all matrices need the same k");
            assert_eq!(y.len(), m * w.n, "matmul: y has the wrong length");
        }
        assert!(backend.is_available(), "matmul: backend {backend:?} is not available on this CPU");
        if m == 0 {
            return;
        }
        if k == 0 {
            outs.iter_mut().for_each(|y| y.fill(0.0));
            return;
        }
        let quantized = |block| mats.iter().any(|w| w.act_block() == Some(block)).then(|| act::Scratch::quantize(x, m, k, block));
        let (a32, a256) = (quantized(32), quantized(256));
        let outs: Vec<OutPtr> = mats.iter().zip(outs.iter_mut()).map(|(w, y)| OutPtr::new(y, w.n)).collect();
        let plans: Vec<(usize, usize)> = mats.iter().map(|w| w.chunking(m)).collect();
        let total: usize = plans.iter().map(|&(units, per)| units.div_ceil(per)).sum();
        let run = |mut c: usize| {
            for (i, &(units, per)) in plans.iter().enumerate() {
                let chunks = units.div_ceil(per);
                if c < chunks {
                    let act = match mats[i].act_block() {
                        Some(32) => a32.as_deref(),
                        Some(_) => a256.as_deref(),
                        None => None,
                    };
                    return mats[i].run_chunk(backend, act, x, m, c * per..((c + 1) * per).min(units), &outs[i]);
                }
                c -= chunks;
            }
        };
        if total == 1 {
            run(0)
        } else {
            (0..total).into_par_iter().for_each(run)
        }
    }

    /// Activation block size of the packed formats (`None`: dense, f32 activations).
    fn act_block(&self) -> Option<usize> {
        match self.storage {
            Storage::Packed { format, .. } => Some(formats::packed_layout(format).block),
            _ => None,
        }
    }

    /// Work units (8-row groups or dense rows) and units per parallel chunk: ≥ 4 chunks per
    /// thread for load balance and, when several activation rows reuse them, ≤ 256 KiB of
    /// weights per chunk so they stay in L2 while every activation row passes over them.
    fn chunking(&self, m: usize) -> (usize, usize) {
        let (units, unit_bytes) = match &self.storage {
            Storage::Packed { format, .. } => {
                let l = formats::packed_layout(*format);
                (self.n.div_ceil(GROUP), self.k / l.block * l.record_bytes())
            }
            Storage::F32(_) => (self.n, 4 * self.k),
            Storage::F16(_) | Storage::BF16(_) => (self.n, 2 * self.k),
        };
        let mut per = units.div_ceil(4 * rayon::current_num_threads()).max(1);
        if m > 1 {
            per = per.min(((256 << 10) / unit_bytes.max(1)).max(1));
        }
        // An even number of 8-row groups per chunk: the 512-bit kernel takes them in pairs.
        if per > 1 {
            per += per % 2;
        }
        (units, per)
    }

    /// Output units `units` for all `m` activation rows (`act`: `x` quantized for packed formats).
    fn run_chunk(&self, backend: Backend, act: Option<&act::QuantAct>, x: &[f32], m: usize, units: std::ops::Range<usize>, out: &OutPtr) {
        let (n, k) = (self.n, self.k);
        match &self.storage {
            Storage::Packed { format, data } => {
                let l = formats::packed_layout(*format);
                let act = act.expect("packed formats get quantized activations");
                with_format!(*format, F => match backend {
                    Backend::Scalar => scalar::packed(&l, data, act, units, n, out),
                    // SAFETY: `backend.is_available()` was asserted; data/act come from this
                    // validated matrix and `x`.
                    #[cfg(target_arch = "x86_64")]
                    Backend::Avx2 => unsafe { x86::packed::<F>(x86::Path::Avx2, data, act, units, n, out) },
                    // SAFETY: as for AVX2 (AVX-512 VNNI/VL asserted available).
                    #[cfg(target_arch = "x86_64")]
                    Backend::Avx512Vnni => unsafe { x86::packed::<F>(x86::Path::Avx512Vnni, data, act, units, n, out) },
                    #[cfg(not(target_arch = "x86_64"))]
                    _ => unreachable!("only the scalar backend exists here"),
                })
            }
            Storage::F32(w) => match backend {
                Backend::Scalar => scalar::dense(w, |v| v, x, m, k, units, out),
                // SAFETY: AVX2/FMA/F16C are part of both SIMD backends (asserted available);
                // `w` holds n×k f32.
                #[cfg(target_arch = "x86_64")]
                _ => unsafe { x86::dense::<{ x86::DENSE_F32 }>(w.as_ptr().cast(), x, m, k, units, out) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("only the scalar backend exists here"),
            },
            Storage::F16(w) => match backend {
                Backend::Scalar => scalar::dense(w, |v| half::f16::from_bits(v).to_f32(), x, m, k, units, out),
                // SAFETY: as for F32; `w` holds n×k f16.
                #[cfg(target_arch = "x86_64")]
                _ => unsafe { x86::dense::<{ x86::DENSE_F16 }>(w.as_ptr().cast(), x, m, k, units, out) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("only the scalar backend exists here"),
            },
            Storage::BF16(w) => match backend {
                Backend::Scalar => scalar::dense(w, |v| half::bf16::from_bits(v).to_f32(), x, m, k, units, out),
                // SAFETY: as for F32; `w` holds n×k bf16.
                #[cfg(target_arch = "x86_64")]
                _ => unsafe { x86::dense::<{ x86::DENSE_BF16 }>(w.as_ptr().cast(), x, m, k, units, out) },
                #[cfg(not(target_arch = "x86_64"))]
                _ => unreachable!("only the scalar backend exists here"),
            },
        }
    }

    /// Writes row `row` of `W` as f32 into `out` (length k): embedding lookup. Bit-identical to
    /// candle's dequantization.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.n, "dequantize_row: row {row} out of {}", self.n);
        assert_eq!(out.len(), self.k, "dequantize_row: out has the wrong length");
        let k = self.k;
        match &self.storage {
            Storage::Packed { .. } if k == 0 => {}
            Storage::Packed { format, data } => {
                let l = formats::packed_layout(*format);
                let group = &data[row / GROUP * (k / l.block) * l.record_bytes()..];
                let mut u = Unpacked::default();
                for (rec, out) in group.chunks_exact(l.record_bytes()).zip(out.chunks_exact_mut(l.block)) {
                    formats::read_record(&l, rec, row % GROUP, &mut u);
                    u.dequantize(&l, out);
                }
            }
            Storage::F32(w) => out.copy_from_slice(&w[row * k..(row + 1) * k]),
            Storage::F16(w) => {
                for (o, &v) in out.iter_mut().zip(&w[row * k..(row + 1) * k]) {
                    *o = half::f16::from_bits(v).to_f32();
                }
            }
            Storage::BF16(w) => {
                for (o, &v) in out.iter_mut().zip(&w[row * k..(row + 1) * k]) {
                    *o = half::bf16::from_bits(v).to_f32();
                }
            }
        }
    }
}

/// Dequantizes a dtype without own kernels through candle (f32, row-major).
fn dequantize_with_candle(dtype: GgmlDType, elems: usize, data: &[u8]) -> Result<Vec<f32>, KernelError> {
    // candle reinterprets the bytes as blocks and asserts their alignment, which GGUF data need
    // not have: copy into an 8-aligned buffer first.
    let mut aligned = vec![0u64; data.len().div_ceil(8)];
    // SAFETY: `aligned` owns ≥ data.len() initialized bytes; u8 has no alignment or validity
    // requirements, and the mutable view is dropped before `aligned` is used again.
    unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), data.len()) }.copy_from_slice(data);
    // SAFETY: as above, a shared byte view of the initialized prefix.
    let bytes = unsafe { std::slice::from_raw_parts(aligned.as_ptr().cast::<u8>(), data.len()) };
    match dtype.from_data(Cow::Borrowed(bytes)).dequantize(elems) {
        Ok(candle_core::CpuStorage::F32(v)) => Ok(v),
        _ => Err(KernelError::Unsupported(dtype)),
    }
}
