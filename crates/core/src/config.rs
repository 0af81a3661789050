//! One description of a decoder-only transformer, whatever file it came from.
//!
//! Every architecture ingot runs (Llama, Mistral, Qwen2, Qwen3, Gemma 3) is the same
//! pre-norm decoder with a handful of switches; [`ModelConfig`] holds those switches so that
//! one model implementation serves them all. Loaders (GGUF metadata, a checkpoint's
//! `config.json`) fill it in and call [`ModelConfig::validate`], after which the model may trust it.
//! A vision-language checkpoint's encoder is described by [`vision`].
//!
//! Configuration is the bottom layer of the model side: it names no other module of the crate,
//! so the loaders that fill it in and the models that read it can both depend on it.

pub mod vision;

/// A configuration that breaks an invariant the model relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct InvalidConfig {
    /// The file the configuration came from.
    pub path: String,
    pub problem: String,
}

/// Architecture families. Only used for naming and for loader decisions; the forward pass
/// reads the individual switches below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    /// Names as used by GGUF's `general.architecture`.
    pub const SUPPORTED: &'static [&'static str] = &["llama", "mistral", "qwen2", "qwen3", "gemma3"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3" | "gemma3_text" => Self::Gemma3,
            _ => return None,
        })
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`), as Gemma uses.
    GeluTanh,
    /// The same GELU evaluated as ggml does, through an f16 table. GGUF models use it so
    /// that ingot reproduces llama.cpp's numbers on llama.cpp's own file format: Gemma 3's
    /// greedy continuations are sensitive enough for the rounding to decide tokens.
    GeluTanhF16,
}

/// How RoPE pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` rotates with `i + head_dim/2` (Hugging Face layout, GGUF qwen2/gemma3).
    Halves,
    /// Dimension `2i` rotates with `2i + 1`: GGUF llama files, whose q/k rows were permuted
    /// by the converter.
    Interleaved,
}

/// Frequency rescaling applied on top of the base RoPE frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1's rule, from `rope_scaling` in config.json.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position: usize },
    /// Per-frequency divisors given directly (GGUF `rope_freqs.weight`), length head_dim/2.
    FreqFactors(Vec<f32>),
    /// Positions divided by `factor` (linear interpolation).
    Linear { factor: f32 },
}

/// Attention span of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Full,
    /// Attends only to the last `window` positions (itself included), with the local RoPE base.
    Sliding,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// RoPE base of sliding layers (Gemma 3: `rope_local_base_freq`); `rope_theta` when None.
    pub rope_local_theta: Option<f32>,
    pub rope_scaling: Option<RopeScaling>,
    pub rope_style: RopeStyle,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Per-layer span; its length is the number of layers.
    pub layer_types: Vec<LayerKind>,
    pub sliding_window: Option<usize>,
    pub activation: Activation,
    /// Multiplier applied to token embeddings (Gemma: sqrt(hidden_size)).
    pub embed_scale: Option<f32>,
    /// Attention logit scale (1/sqrt(head_dim), or Gemma's query_pre_attn_scalar^-0.5).
    pub attn_scale: f32,
    pub final_logit_softcap: Option<f32>,
    /// M-RoPE (Qwen2-VL): how many of the head_dim/2 frequency pairs follow the temporal,
    /// height and width position axes, in that order (they sum to head_dim/2). `None`: one
    /// position axis, ordinary RoPE.
    pub mrope_section: Option<[usize; 3]>,
    /// How this model's [`SeqCache`](crate::kv_cache::SeqCache)s hold keys and values: a
    /// serving choice, not read from the file (loaders set [`KvType::F16`]).
    pub kv_type: KvType,
}

/// Element type of the KV cache (llama.cpp's `--cache-type-k/-v`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvType {
    /// Half the memory; llama.cpp's default.
    #[default]
    F16,
    /// Exact f32 keys and values, for comparisons with f32 references.
    F32,
}

impl KvType {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

impl ModelConfig {
    pub fn num_layers(&self) -> usize {
        self.layer_types.len()
    }

    /// Width of one position's keys (or values) in one layer.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks the invariants the model relies on; `source` names the file for messages.
    pub fn validate(&self, source: &str) -> Result<(), InvalidConfig> {
        let bad = |problem: String| Err(InvalidConfig { path: source.to_string(), problem });
        if let Err(problem) = require_positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("num_layers", self.layer_types.len()),
            ("max_position_embeddings", self.max_position_embeddings),
        ]) {
            return bad(problem);
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_heads ({}) must be a multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be even for RoPE", self.head_dim));
        }
        if self.layer_types.contains(&LayerKind::Sliding) && self.sliding_window.unwrap_or(0) == 0 {
            return bad("sliding layers need a positive sliding_window".into());
        }
        if let Some(RopeScaling::FreqFactors(f)) = &self.rope_scaling {
            if f.len() != self.head_dim / 2 {
                return bad(format!("rope frequency factors have {} entries, expected {}", f.len(), self.head_dim / 2));
            }
        }
        if let Some(section) = self.mrope_section {
            if section.iter().sum::<usize>() != self.head_dim / 2 {
                return bad(format!("mrope_section {section:?} must sum to head_dim/2 = {}", self.head_dim / 2));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("rms_norm_eps and rope_theta must be finite, rope_theta positive".into());
        }
        Ok(())
    }
}

/// Names the first of the named `values` that is zero: the first check of every configuration
/// here, since sizes of zero make empty matrices and divisions by zero downstream.
pub(crate) fn require_positive(values: &[(&str, usize)]) -> Result<(), String> {
    match values.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(format!("{name} must be positive")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn require_positive_names_the_first_zero() {
        assert_eq!(super::require_positive(&[("a", 1), ("b", 0), ("c", 0)]), Err("b must be positive".into()));
        assert_eq!(super::require_positive(&[("a", 1)]), Ok(()));
    }
}
