//! Reading weights and configuration out of model files: GGUF files ([`gguf`]) and Hugging
//! Face checkpoint directories ([`hf_config`] for `config.json`, [`safetensors`] for weights),
//! plus PEFT LoRA adapters merged into a checkpoint's weights at load ([`lora`]), and the
//! precision a checkpoint's matrices are held in ([`WeightDType`], [`Quantization`]).
//! The media encoders ask through [`CheckedWeights`], which a file answers checked against the
//! expected shape and [`random::RandomWeights`] answers with generated values (encoders made to
//! measure compute, whose cost does not depend on the weights' values).
//!
//! The model asks for tensors by their Hugging Face names (`model.layers.3.self_attn.q_proj.weight`)
//! through [`WeightSource`]; each file format maps those names onto its own. So one model
//! implementation serves every format.
//!
//! This module sits below [`crate::model`] and [`crate::load`] and names neither: the model
//! reads weights through [`WeightSource`], and loading picks the source and its precision.
//!
//! Invariant: vectors returned for norm weights are the *effective* multipliers (Gemma's
//! `1 + w` already applied), so the model never needs to know which convention a file used.

pub mod gguf;
pub mod hf_config;
pub mod lora;
pub mod random;
pub mod safetensors;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::InvalidConfig;
use crate::kernels::{GgmlDType, KernelError, QMatrix};

/// Why a model file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid GGUF file: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("{path}: not a valid safetensors file: {problem}")]
    CorruptSafetensors { path: PathBuf, problem: String },
    /// A header field past a limit on untrusted files ([`gguf::header`], [`safetensors::MAX_HEADER_BYTES`]),
    /// refused before allocating for it.
    #[error("{path}: header refused: {source}")]
    OverLimit { path: PathBuf, source: gguf::header::OverLimit },
    #[error("{path}: unsupported architecture '{arch}' (supported: {})", supported.join(", "))]
    UnsupportedArch { path: PathBuf, arch: String, supported: Vec<String> },
    /// A GGUF metadata key or a config.json key.
    #[error("{path}: missing key '{key}'")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}': {problem}")]
    BadTensor { path: PathBuf, name: String, problem: String },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
    #[error(transparent)]
    Adapter(#[from] lora::AdapterError),
    #[error("{path}: tokenizer: {source}")]
    Tokenizer { path: PathBuf, source: crate::tokenizer::TokenizerError },
}

impl LoadError {
    pub(crate) fn bad_tensor(path: &Path, name: &str, problem: impl ToString) -> Self {
        Self::BadTensor { path: path.to_path_buf(), name: name.to_string(), problem: problem.to_string() }
    }

    pub(crate) fn from_kernel(path: &Path, name: &str, e: KernelError) -> Self {
        Self::bad_tensor(path, name, e)
    }
}

impl From<InvalidConfig> for LoadError {
    fn from(e: InvalidConfig) -> Self {
        Self::Invalid { path: e.path, problem: e.problem }
    }
}

/// Precision a checkpoint's (unquantized) weight matrices are held in (`--dtype`).
///
/// Compute is always f32: this engine's kernels widen 16-bit weights to f32 as they read them,
/// and the CPUs it targets have no faster native bf16/f16 arithmetic. So `auto` picks f32
/// (exact, twice the memory of a 16-bit checkpoint); `bf16`/`f16` halve memory and round
/// f32-stored weights to that type. Norms and biases are always f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightDType {
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

/// Quantization applied to a checkpoint's weight matrices at load (`--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    Q8_0,
    Q4K,
}

impl Quantization {
    pub fn ggml_dtype(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4K => GgmlDType::Q4K,
        }
    }
}

/// A `--dtype` or `--quantize` value that is not one of the accepted names.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} '{value}' (expected one of: {expected})")]
pub struct ParseOptionError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for WeightDType {
    type Err = ParseOptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "f32" | "float32" => Self::F32,
            "bf16" | "bfloat16" => Self::Bf16,
            "f16" | "float16" => Self::F16,
            _ => return Err(ParseOptionError { what: "dtype", value: s.into(), expected: "auto, f32, bf16, f16" }),
        })
    }
}

impl FromStr for Quantization {
    type Err = ParseOptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "q8_0" => Self::Q8_0,
            "q4_k" => Self::Q4K,
            _ => return Err(ParseOptionError { what: "quantization", value: s.into(), expected: "q8_0, q4_k" }),
        })
    }
}

/// Named tensors of one model, addressed by Hugging Face names.
pub trait WeightSource {
    /// The file or directory the weights come from, for messages.
    fn path(&self) -> &Path;
    fn has(&self, name: &str) -> bool;
    /// A 2-D weight `[n, k]` (out features × in features): GGUF in the file's own precision,
    /// checkpoints in the precision the load options ask for.
    fn matrix(&self, name: &str) -> Result<QMatrix, LoadError>;
    /// A 1-D tensor (norm weight, bias) as f32.
    fn vector(&self, name: &str) -> Result<Vec<f32>, LoadError>;
    /// A weight of rank 2 or more as the matrix `[shape[0], product of the other dims]`
    /// (a convolution kernel `[out, in, kt, kh, kw]` becomes `[out, in·kt·kh·kw]`), never
    /// quantized: for the vision encoder, whose few weights are not worth quantization's
    /// error. Sources without such tensors answer as [`WeightSource::matrix`].
    fn matrix_unquantized(&self, name: &str) -> Result<QMatrix, LoadError> {
        self.matrix(name)
    }
}

/// Checks a loaded matrix against the shape `[n, k]` the model expects; the error names
/// the tensor and both shapes.
pub(crate) fn expect_shape(src: &dyn WeightSource, name: &str, m: QMatrix, n: usize, k: usize) -> Result<QMatrix, LoadError> {
    check_shape(src.path(), name, m, n, k)
}

fn check_shape(path: &Path, name: &str, m: QMatrix, n: usize, k: usize) -> Result<QMatrix, LoadError> {
    if (m.n(), m.k()) != (n, k) {
        return Err(LoadError::bad_tensor(path, name, format!("shape [{}, {}], expected [{n}, {k}]", m.n(), m.k())));
    }
    Ok(m)
}

/// A 1-D tensor of exactly `len` values.
pub(crate) fn expect_vector(src: &dyn WeightSource, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
    check_len(src.path(), name, src.vector(name)?, len)
}

fn check_len(path: &Path, name: &str, v: Vec<f32>, len: usize) -> Result<Vec<f32>, LoadError> {
    if v.len() != len {
        return Err(LoadError::bad_tensor(path, name, format!("length {}, expected {len}", v.len())));
    }
    Ok(v)
}

/// Unquantized weights asked for by name and shape, as the media encoders load theirs: a
/// [`WeightSource`] checks what its file holds against the shape (the error names the tensor),
/// [`random::RandomWeights`] generates it.
pub trait CheckedWeights {
    /// The file or directory the weights come from, for messages.
    fn origin(&self) -> &Path;
    /// `name` as an unquantized `[n, k]` matrix.
    fn checked_matrix(&self, name: &str, n: usize, k: usize) -> Result<QMatrix, LoadError>;
    /// `name` as a vector of exactly `len` values.
    fn checked_vector(&self, name: &str, len: usize) -> Result<Vec<f32>, LoadError>;
}

impl<S: WeightSource + ?Sized> CheckedWeights for S {
    fn origin(&self) -> &Path {
        self.path()
    }

    fn checked_matrix(&self, name: &str, n: usize, k: usize) -> Result<QMatrix, LoadError> {
        check_shape(self.path(), name, self.matrix_unquantized(name)?, n, k)
    }

    fn checked_vector(&self, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
        check_len(self.path(), name, self.vector(name)?, len)
    }
}

/// A [`WeightSource`] whose matrices can be edited in f32 before it converts them to the
/// precision it holds them in: what merging a LoRA adapter needs.
pub trait MergeSource: WeightSource {
    /// `[n, k]` of a 2-D weight, without reading it.
    fn matrix_shape(&self, name: &str) -> Result<[usize; 2], LoadError>;
    /// A 2-D weight's values as stored, in f32, row-major, before any load-time conversion.
    fn matrix_f32(&self, name: &str) -> Result<Vec<f32>, LoadError>;
    /// Converts f32 values `[n, k]` to the precision [`WeightSource::matrix`] would return.
    fn hold(&self, name: &str, n: usize, k: usize, values: &[f32]) -> Result<QMatrix, LoadError>;
}
