//! CPU matrix kernels: the hot path of every forward pass.
//!
//! A [`QMatrix`] is a weight matrix `W[n, k]` (n output features, k inputs, rows contiguous)
//! stored in one of GGML's block formats (or dense f32/f16/bf16). `matmul` computes
//! `y[m, n] = x[m, k] · Wᵀ` for f32 activations, running on the current rayon pool.
//!
//! BASELINE: this version delegates to candle's `QuantizedType::matmul_t`. It is correct and
//! is kept as the reference the fast kernels are tested against.

use std::borrow::Cow;

pub use candle_core::quantized::GgmlDType;
use candle_core::quantized::QuantizedType;

/// Why a weight matrix could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("weight type {0:?} is not supported")]
    Unsupported(GgmlDType),
    #[error("a {dtype:?} matrix of {n}x{k} needs {expected} bytes, got {got}")]
    BadSize { dtype: GgmlDType, n: usize, k: usize, expected: usize, got: usize },
    #[error("k = {k} is not a multiple of the {dtype:?} block size {block}")]
    BadK { dtype: GgmlDType, k: usize, block: usize },
}

/// Bytes a `n x k` matrix takes in `dtype`'s block layout.
pub fn byte_size(dtype: GgmlDType, n: usize, k: usize) -> usize {
    n * k / dtype.block_size() * dtype.type_size()
}

/// A weight matrix `W[n, k]`, row `i` holding the weights of output feature `i`.
pub struct QMatrix {
    dtype: GgmlDType,
    n: usize,
    k: usize,
    data: Box<dyn QuantizedType>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({:?}, {}x{})", self.dtype, self.n, self.k)
    }
}

impl QMatrix {
    /// Builds a matrix from raw GGML block bytes (as stored in a GGUF file), rows contiguous.
    pub fn from_ggml(dtype: GgmlDType, n: usize, k: usize, data: &[u8]) -> Result<Self, KernelError> {
        let block = dtype.block_size();
        if k % block != 0 {
            return Err(KernelError::BadK { dtype, k, block });
        }
        let expected = byte_size(dtype, n, k);
        if data.len() != expected {
            return Err(KernelError::BadSize { dtype, n, k, expected, got: data.len() });
        }
        Ok(Self { dtype, n, k, data: dtype.from_data(Cow::Borrowed(data)) })
    }

    /// Builds a dense f32 matrix from row-major values.
    pub fn from_f32(n: usize, k: usize, values: &[f32]) -> Result<Self, KernelError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_ggml(GgmlDType::F32, n, k, &bytes)
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
    pub fn size_in_bytes(&self) -> usize {
        self.data.storage_size_in_bytes()
    }

    /// `y[m, n] = x[m, k] · Wᵀ`. Panics if the slice lengths do not match (a caller bug).
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "matmul: x has the wrong length");
        assert_eq!(y.len(), m * self.n, "matmul: y has the wrong length");
        self.data
            .matmul_t((m, self.k, self.n), x, y)
            .expect("matmul on validated shapes cannot fail");
    }

    /// Writes row `row` of `W` as f32 into `out` (length k): embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.n, "dequantize_row: row {row} out of {}", self.n);
        let storage = self
            .data
            .embedding(&[row as u32], self.n, self.k)
            .expect("embedding on validated shapes cannot fail");
        match storage {
            candle_core::CpuStorage::F32(v) => out.copy_from_slice(&v),
            _ => unreachable!("candle dequantizes embeddings to f32"),
        }
    }
}
