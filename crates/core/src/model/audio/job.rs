//! The audio encoder as an [`EncodeJob`]: the stages of [`AudioEncoder::encode`] (see the
//! parent module) one bounded slice at a time, so 30 s of audio need not stall running
//! streams.
//!
//! Stages, each over rows in order: conv1's outputs, conv2's outputs plus the positions; per
//! layer, LayerNorm → q, k, v (what every position's attention needs), then attention →
//! out_proj, residual, LayerNorm → fc1 → GELU → fc2, residual; then per audio token the
//! average pool, the final LayerNorm and the projector. Per-row costs in multiply-adds come
//! from the shapes.

use std::borrow::Cow;

use super::{audio_tokens, encoder_positions, AudioEncoder, NORM_EPS};
use crate::model::encode_job::{self, Budget, EncodeJob, Rows, Slice, Stages};
use crate::model::vision::span_attention;
use crate::model::ops;

/// Where an [`AudioJob`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Conv1,
    Conv2,
    /// Layer `i`'s queries, keys and values.
    Qkv(usize),
    /// Layer `i`'s attention and feed-forward.
    Mix(usize),
    /// Pool, final norm and projector, per audio token.
    Project,
}

/// One clip's encoding in progress; made by [`AudioEncoder::start`] (which checked the input).
pub struct AudioJob<'a> {
    enc: &'a AudioEncoder,
    /// `[num_mel_bins, frames]`, dropped after conv1.
    features: Cow<'a, [f32]>,
    frames: usize,
    /// Encoder positions computed and attended to (`L'`).
    n: usize,
    /// conv1's outputs `[n1, d_model]`: what conv2's first `n` outputs read.
    x1: Vec<f32>,
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `[audio tokens, hidden_size]`.
    out: Vec<f32>,
    stage: Stage,
    rows: Rows,
}

impl<'a> AudioJob<'a> {
    pub(super) fn new(enc: &'a AudioEncoder, features: Cow<'a, [f32]>, frames: usize, valid_frames: usize) -> Self {
        let (d, n) = (enc.cfg.d_model, encoder_positions(valid_frames));
        // conv1 outputs 0..2n (what conv2's first n outputs read), from the whole input.
        let n1 = (2 * n).min(frames);
        Self {
            enc,
            features,
            frames,
            n,
            x1: vec![0f32; n1 * d],
            x: vec![0f32; n * d],
            q: vec![0f32; n * d],
            k: vec![0f32; n * d],
            v: vec![0f32; n * d],
            out: vec![0f32; audio_tokens(valid_frames) * enc.cfg.hidden_size],
            stage: Stage::Conv1,
            rows: Rows::new(n1),
        }
    }
}

impl Stages for AudioJob<'_> {

    /// Multiply-adds of one row of the current stage.
    fn row_cost(&self) -> u64 {
        let cfg = &self.enc.cfg;
        let (d, ffn) = (cfg.d_model as u64, cfg.encoder_ffn_dim as u64);
        match self.stage {
            Stage::Conv1 => 3 * cfg.num_mel_bins as u64 * d,
            Stage::Conv2 => 3 * d * d,
            Stage::Qkv(_) => 3 * d * d,
            Stage::Mix(_) => d * d + 2 * d * ffn + 2 * self.n as u64 * d,
            Stage::Project => d * cfg.hidden_size as u64,
        }
    }

    fn rows(&mut self) -> &mut Rows {
        &mut self.rows
    }

    /// Runs `chunk` of the current stage's rows.
    fn run(&mut self, chunk: std::ops::Range<usize>) {
        let cfg = &self.enc.cfg;
        let d = cfg.d_model;
        let rows = chunk.len();
        let span = 0..self.n;
        let range = chunk.start * d..chunk.end * d;
        match self.stage {
            Stage::Conv1 => {
                let (features, frames) = (&self.features, self.frames);
                let at = |c: usize, t: i64| if (0..frames as i64).contains(&t) { features[c * frames + t as usize] } else { 0.0 };
                self.x1[range].copy_from_slice(&self.enc.conv1.forward(at, cfg.num_mel_bins, chunk));
            }
            Stage::Conv2 => {
                let (x1, n1) = (&self.x1, self.x1.len() / d);
                // Its inputs past n1 are never read: 2(n - 1) + 1 < n1, or n1 = frames (padding).
                let at = |c: usize, t: i64| if (0..n1 as i64).contains(&t) { x1[t as usize * d + c] } else { 0.0 };
                let out = self.enc.conv2.forward(at, d, chunk);
                self.x[range.clone()].iter_mut().zip(out.iter().zip(&self.enc.positions[range])).for_each(|(a, (o, p))| *a = o + p);
            }
            Stage::Qkv(i) => {
                let layer = &self.enc.layers[i];
                let mut h = self.x[range.clone()].to_vec();
                ops::layer_norm(&mut h, &layer.attn_norm.0, &layer.attn_norm.1, NORM_EPS);
                // span_attention applies the head_dim^-½ scale to q·k.
                self.q[range.clone()].copy_from_slice(&layer.q.forward(&h, rows));
                layer.k.matmul(&h, rows, &mut self.k[range.clone()]);
                self.v[range].copy_from_slice(&layer.v.forward(&h, rows));
            }
            Stage::Mix(i) => {
                let layer = &self.enc.layers[i];
                // One span: every valid position attends to every other (the padding is not computed).
                let attn = span_attention(&self.q, &self.k, &self.v, [d, cfg.encoder_attention_heads], std::slice::from_ref(&span), chunk);
                let x = &mut self.x[range];
                let out = layer.out.forward(&attn, rows);
                x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
                let mut h = x.to_vec();
                ops::layer_norm(&mut h, &layer.ffn_norm.0, &layer.ffn_norm.1, NORM_EPS);
                let mut mid = layer.fc1.forward(&h, rows);
                mid.iter_mut().for_each(|v| *v = ops::gelu_erf(*v));
                let out = layer.fc2.forward(&mid, rows);
                x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
            }
            Stage::Project => {
                let x = &self.x;
                let mut pooled: Vec<f32> = chunk
                    .clone()
                    .flat_map(|t| (0..d).map(move |c| (t, c)))
                    .map(|(t, c)| (x[2 * t * d + c] + x[(2 * t + 1) * d + c]) / 2.0)
                    .collect();
                ops::layer_norm(&mut pooled, &self.enc.final_norm.0, &self.enc.final_norm.1, NORM_EPS);
                let hs = cfg.hidden_size;
                self.out[chunk.start * hs..chunk.end * hs].copy_from_slice(&self.enc.projector.forward(&pooled, rows));
            }
        }
    }

    /// Moves to the stage after a finished one.
    fn next_stage(&mut self) -> bool {
        let depth = self.enc.layers.len();
        let tokens = self.out.len() / self.enc.cfg.hidden_size;
        (self.stage, self.rows) = match self.stage {
            Stage::Conv1 => {
                self.features = Cow::Borrowed(&[]);
                (Stage::Conv2, Rows::new(self.n))
            }
            Stage::Conv2 => (Stage::Qkv(0), Rows::new(self.n)),
            Stage::Qkv(i) => (Stage::Mix(i), Rows::new(self.n)),
            Stage::Mix(i) if i + 1 < depth => (Stage::Qkv(i + 1), Rows::new(self.n)),
            Stage::Mix(_) => (Stage::Project, Rows::new(tokens)),
            Stage::Project => return false,
        };
        true
    }

    fn output(self: Box<Self>) -> Vec<f32> {
        self.out
    }
}

impl<'a> EncodeJob<'a> for AudioJob<'a> {
    fn advance(self: Box<Self>, budget: &mut Budget) -> Slice<'a> {
        encode_job::advance(self, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::audio::AudioConfig;
    use crate::weights::random::RandomWeights;

    #[test]
    fn slices_give_the_one_shot_rows_bit_for_bit() {
        let cfg = AudioConfig {
            num_mel_bins: 8,
            d_model: 16,
            encoder_layers: 2,
            encoder_attention_heads: 2,
            encoder_ffn_dim: 24,
            max_source_positions: 50,
            hidden_size: 12,
        };
        let enc = AudioEncoder::load(&RandomWeights { seed: 5 }, cfg).expect("random encoder");
        let frames = 100;
        let features: Vec<f32> = (0..8 * frames).map(|i| ((i * 4099 % 997) as f32 / 500.0) - 1.0).collect();
        // A clip filling the window and one padded (41 valid frames: 21 positions, 10 tokens).
        for valid in [frames, 41] {
            let whole = enc.encode(&features, frames, valid).expect("one shot");
            assert_eq!(whole.len(), audio_tokens(valid) * 12);
            for macs in [0, 5_000, u64::MAX] {
                let (rows, slices) = encode_job::in_slices(Box::new(enc.start(Cow::Borrowed(&features), frames, valid).expect("valid")), macs);
                assert!(rows == whole, "{valid} valid frames, {macs} MACs per slice: the rows differ");
                if macs == 0 {
                    let n = encoder_positions(valid);
                    // conv1 (2n rows, or all frames), conv2, 2 layers × 2 stages, the tokens.
                    assert_eq!(slices, (2 * n).min(frames) + n + 4 * n + audio_tokens(valid));
                }
            }
        }
        assert!(matches!(enc.start(Cow::Borrowed(&features), frames, 2), Err(crate::model::ForwardError::AudioFeatures { .. })));
    }
}
