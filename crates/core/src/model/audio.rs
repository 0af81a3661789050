//! Qwen2-Audio's audio side: the Whisper-style encoder (`audio_tower.*`) and the projector
//! (`multi_modal_projector.linear`) whose rows replace the `<|AUDIO|>` tokens' embeddings.
//!
//! Input: log-mel features `[num_mel_bins, frames]` (frames = 3000 for the 30 s chunk) and the
//! number of valid frames `L` (transformers' `feature_attention_mask.sum()`). The encoder runs:
//!
//! 1. conv1 (num_mel_bins → d_model, kernel 3, padding 1) + exact GELU, conv2 (kernel 3,
//!    stride 2, padding 1) + GELU: `frames` → `frames / 2` positions;
//! 2. `+ embed_positions.weight` (stored; sinusoidal in the published checkpoints);
//! 3. `encoder_layers` pre-LayerNorm blocks: LN → self-attention (q and v with biases, k
//!    without; scale head_dim^-½) → out_proj, residual; LN → fc1 → GELU → fc2, residual;
//! 4. AvgPool1d(2, 2), then the final `layer_norm`; then the projector Linear(d_model → hidden).
//!
//! transformers masks the attention keys of padded positions: only the first
//! `L' = (L - 1) // 2 + 1` positions are attended to, and only the first
//! `(L' - 2) // 2 + 1` pooled rows are used ([`audio_tokens`]). Those rows depend on nothing
//! but the first `L'` positions, which depend on the first `2L' + 1` frames; so this encoder
//! computes exactly those (the cost follows the clip's length, not the 30 s window) and gives
//! the same numbers as the full padded pass.
//!
//! The language model is the ordinary Qwen2 decoder with plain 1-D RoPE (positions 0..len-1);
//! `scale_embedding` is not read because transformers' encoder forward does not apply it.
//! Weights are held unquantized, as the vision encoder's.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::encode_job;
use super::vision::Linear;
use super::{ops, ForwardError};
use crate::kernels::QMatrix;
use crate::weights::{CheckedWeights, LoadError};

mod job;

pub use job::AudioJob;

/// Epsilon of the encoder's LayerNorms (torch's default).
const NORM_EPS: f32 = 1e-5;

/// `audio_config` of a Qwen2-Audio checkpoint, plus the projector's output width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    pub num_mel_bins: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    /// Positions of `embed_positions` (1500: 3000 frames after the stride-2 conv).
    pub max_source_positions: usize,
    /// The language model's hidden size, the projector's output.
    pub hidden_size: usize,
}

impl AudioConfig {
    /// Checks what the encoder relies on; the message names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        crate::config::require_positive(&[
            ("num_mel_bins", self.num_mel_bins),
            ("d_model", self.d_model),
            ("encoder_layers", self.encoder_layers),
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("max_source_positions", self.max_source_positions),
        ])?;
        if !self.d_model.is_multiple_of(self.encoder_attention_heads) {
            return Err(format!(
                "d_model ({}) must be a multiple of encoder_attention_heads ({})",
                self.d_model, self.encoder_attention_heads
            ));
        }
        Ok(())
    }
}

/// The number of `<|AUDIO|>` tokens for a clip with `valid_frames` feature frames: transformers'
/// `_get_feat_extract_output_lengths`, `L' = (L - 1) // 2 + 1`, then `(L' - 2) // 2 + 1`
/// (Python's floor division). 0 for clips of 2 frames or fewer.
pub fn audio_tokens(valid_frames: usize) -> usize {
    let l = valid_frames as i64;
    let after_conv = (l - 1).div_euclid(2) + 1;
    ((after_conv - 2).div_euclid(2) + 1).max(0) as usize
}

/// Encoder positions attended to for `valid_frames` frames (`L'` above).
fn encoder_positions(valid_frames: usize) -> usize {
    ((valid_frames as i64 - 1).div_euclid(2) + 1).max(0) as usize
}

/// A 1-D convolution with kernel 3 and padding 1, as `[out, in·3]` (torch's `[out, in, 3]`).
struct Conv {
    w: QMatrix,
    b: Vec<f32>,
    stride: usize,
}

impl Conv {
    /// `x` is `[channels_in][len]` read through `at(c, t)` (zero outside `0..len`); returns
    /// the outputs `outs` as rows `[outs.len()][channels_out]`, after GELU.
    fn forward(&self, at: impl Fn(usize, i64) -> f32 + Sync, channels_in: usize, outs: Range<usize>) -> Vec<f32> {
        let n_out = outs.len();
        let cols: Vec<f32> = outs
            .into_par_iter()
            .flat_map_iter(|o| {
                let centre = (o * self.stride) as i64;
                let at = &at;
                (0..channels_in).flat_map(move |c| (-1..=1).map(move |j| at(c, centre + j)))
            })
            .collect();
        let mut y = vec![0f32; n_out * self.w.n()];
        self.w.matmul(&cols, n_out, &mut y);
        ops::add_bias(&mut y, &self.b);
        y.iter_mut().for_each(|v| *v = ops::gelu_erf(*v));
        y
    }
}

struct Layer {
    attn_norm: (Vec<f32>, Vec<f32>),
    q: Linear,
    /// No bias in Whisper's attention.
    k: QMatrix,
    v: Linear,
    out: Linear,
    ffn_norm: (Vec<f32>, Vec<f32>),
    fc1: Linear,
    fc2: Linear,
}

/// The encoder and the projector of a Qwen2-Audio checkpoint.
pub struct AudioEncoder {
    cfg: AudioConfig,
    conv1: Conv,
    conv2: Conv,
    positions: Vec<f32>,
    layers: Vec<Layer>,
    final_norm: (Vec<f32>, Vec<f32>),
    projector: Linear,
}

impl std::fmt::Debug for AudioEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioEncoder").field("cfg", &self.cfg).finish()
    }
}

impl AudioEncoder {
    /// Builds the encoder from `audio_tower.*` and `multi_modal_projector.linear.*`, checking
    /// every shape against `cfg`.
    pub fn load(src: &(impl CheckedWeights + ?Sized), cfg: AudioConfig) -> Result<Self, LoadError> {
        cfg.validate().map_err(|problem| LoadError::Invalid { path: src.origin().display().to_string(), problem })?;
        let matrix = |name: &str, n: usize, k: usize| src.checked_matrix(name, n, k);
        let vector = |name: &str, len: usize| src.checked_vector(name, len);
        let linear = |prefix: &str, n: usize, k: usize| Linear::load(src, prefix, n, k);
        let norm = |prefix: &str| -> Result<(Vec<f32>, Vec<f32>), LoadError> {
            Ok((vector(&format!("{prefix}.weight"), cfg.d_model)?, vector(&format!("{prefix}.bias"), cfg.d_model)?))
        };
        let (d, ffn) = (cfg.d_model, cfg.encoder_ffn_dim);
        let conv = |name: &str, k_in: usize, stride: usize| -> Result<Conv, LoadError> {
            Ok(Conv { w: matrix(&format!("{name}.weight"), d, k_in * 3)?, b: vector(&format!("{name}.bias"), d)?, stride })
        };
        let layers = (0..cfg.encoder_layers)
            .map(|i| {
                let p = |s: &str| format!("audio_tower.layers.{i}.{s}");
                Ok(Layer {
                    attn_norm: norm(&p("self_attn_layer_norm"))?,
                    q: linear(&p("self_attn.q_proj"), d, d)?,
                    k: matrix(&p("self_attn.k_proj.weight"), d, d)?,
                    v: linear(&p("self_attn.v_proj"), d, d)?,
                    out: linear(&p("self_attn.out_proj"), d, d)?,
                    ffn_norm: norm(&p("final_layer_norm"))?,
                    fc1: linear(&p("fc1"), ffn, d)?,
                    fc2: linear(&p("fc2"), d, ffn)?,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        let positions = matrix("audio_tower.embed_positions.weight", cfg.max_source_positions, d)?;
        let mut table = vec![0f32; cfg.max_source_positions * d];
        for (r, row) in table.chunks_exact_mut(d).enumerate() {
            positions.dequantize_row(r, row);
        }
        Ok(Self {
            conv1: conv("audio_tower.conv1", cfg.num_mel_bins, 1)?,
            conv2: conv("audio_tower.conv2", d, 2)?,
            positions: table,
            layers,
            final_norm: norm("audio_tower.layer_norm")?,
            projector: linear("multi_modal_projector.linear", cfg.hidden_size, d)?,
            cfg,
        })
    }

    pub fn config(&self) -> &AudioConfig {
        &self.cfg
    }

    /// The rows one clip gives the language model: `[audio_tokens(valid_frames), hidden_size]`
    /// row-major, one per `<|AUDIO|>` token in order. `features` is `[num_mel_bins, frames]`.
    /// The whole of an [`AudioJob`] in one call.
    pub fn encode(&self, features: &[f32], frames: usize, valid_frames: usize) -> Result<Vec<f32>, ForwardError> {
        Ok(encode_job::finish(Box::new(self.start(Cow::Borrowed(features), frames, valid_frames)?)))
    }

    /// An encoding of one clip to advance a bounded slice at a time
    /// ([`encode_job::EncodeJob`]); its output is [`encode`](Self::encode)'s. Checks the input
    /// here.
    pub fn start<'a>(&'a self, features: Cow<'a, [f32]>, frames: usize, valid_frames: usize) -> Result<AudioJob<'a>, ForwardError> {
        let cfg = &self.cfg;
        let bad = |problem: String| ForwardError::AudioFeatures { problem };
        if frames.checked_mul(cfg.num_mel_bins) != Some(features.len()) {
            return Err(bad(format!("{} values are not {} mel bins × {frames} frames", features.len(), cfg.num_mel_bins)));
        }
        if valid_frames > frames {
            return Err(bad(format!("{valid_frames} valid frames of {frames}")));
        }
        if audio_tokens(valid_frames) == 0 {
            return Err(bad(format!("{valid_frames} frames are too short for one audio token (3 or more are needed)")));
        }
        let n = encoder_positions(valid_frames);
        let conv_len = frames.div_ceil(2);
        if n > cfg.max_source_positions || n > conv_len {
            return Err(bad(format!("{n} encoder positions, over the maximum of {}", cfg.max_source_positions.min(conv_len))));
        }
        Ok(AudioJob::new(self, features, frames, valid_frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_follow_transformers() {
        // (L, L', tokens): 150 frames (1.5 s) → 75 → 37, the fixture's; 3000 → 1500 → 750.
        for (l, positions, tokens) in [(150, 75, 37), (3000, 1500, 750), (151, 76, 38), (1, 1, 0), (2, 1, 0), (3, 2, 1), (0, 0, 0)] {
            assert_eq!((encoder_positions(l), audio_tokens(l)), (positions, tokens), "L = {l}");
        }
    }
}
