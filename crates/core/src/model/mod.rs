//! The decoder-only transformer: one implementation for every supported architecture.
//!
//! Llama, Mistral, Qwen2/2.5, Qwen3 and Gemma 3 differ only in switches that
//! [`ModelConfig`] carries (RoPE style and bases, sliding layers, activation, embedding
//! scale) and in optional tensors the loader finds or not (q/k/v biases, q/k norms, Gemma's
//! post-norms). Weights are asked for by Hugging Face name through [`WeightSource`].
//!
//! Design choice (ours, written down as the brief asks): activations are plain row-major
//! `f32` buffers rather than candle tensors. A batch is a set of independent sequences at
//! different positions, each with its own [`SeqCache`]; all their new tokens are stacked
//! into one `[tokens, hidden]` matrix for the linear layers (so a decode step for many
//! sequences is one GEMM), and attention then runs per sequence against that sequence's
//! cache. candle's CPU tensor ops would allocate per op, concatenate caches every step and
//! cannot express ragged batches; here the whole step is a handful of kernel calls. candle
//! stays the file reader and the reference the kernels are tested against.
//!
//! `forward` is pure with respect to the model (`&self`): all mutable state is in the caches.
//! Parallelism comes from the current rayon pool (the caller decides the thread count).

mod ops;

use rayon::prelude::*;

use crate::config::{LayerKind, ModelConfig};
use crate::kernels::QMatrix;
use crate::kv_cache::SeqCache;
use crate::weights::{expect_shape, expect_vector, LoadError, WeightSource};

pub mod audio;
pub mod vision;

pub use ops::{softmax, Rope};

/// Which logits a sequence wants back from a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: a prompt chunk that is not the last one.
    None,
    /// Only for the last new token (the usual prefill / decode case).
    Last,
    /// For every new token (scoring, tests).
    All,
    /// No logits: the last new token's hidden state after the final norm (`[hidden]`), the
    /// input of a reward model's value head.
    Hidden,
}

/// One sequence's part of a batch: new tokens, appended after what its cache holds.
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    pub logits: Logits,
    /// M-RoPE position ids (t, h, w) of each new token. None: every axis is the token's cache
    /// position (plain text). A model without M-RoPE uses axis 0 (t) only.
    ///
    /// Only RoPE reads these: attention stays causal over cache order whatever they say.
    pub positions: Option<&'a [[u32; 3]]>,
    /// Rows replacing some new tokens' embeddings (vision features at image pad tokens).
    pub embeds: &'a [Embeds<'a>],
}

/// Embedding rows given directly instead of looked up: `rows` (`n × hidden`, row-major)
/// replace the embeddings of `tokens[at..at + n]` of the [`SeqInput`] they belong to.
#[derive(Debug, Clone, Copy)]
pub struct Embeds<'a> {
    /// Index into the input's `tokens`.
    pub at: usize,
    pub rows: &'a [f32],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForwardError {
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("position {pos} is beyond the model's context of {max} tokens")]
    ContextOverflow { pos: usize, max: usize },
    #[error("{positions} position ids for {tokens} new tokens")]
    PositionsLength { positions: usize, tokens: usize },
    #[error("embedding rows of length {len} are not a whole number of rows of width {hidden}")]
    EmbedsWidth { len: usize, hidden: usize },
    #[error("{rows} embedding rows at token {at} run past the {tokens} new tokens")]
    EmbedsOutOfRange { at: usize, rows: usize, tokens: usize },
    /// An image's patch grid the vision encoder cannot take.
    #[error("image grid (t, h, w) = {grid:?}: {problem}")]
    BadGrid { grid: [usize; 3], problem: String },
    #[error("pixel values have {got} values, expected {expected} for the grid")]
    PixelValuesLength { got: usize, expected: usize },
    /// Audio features the audio encoder cannot take.
    #[error("audio features: {problem}")]
    AudioFeatures { problem: String },
    /// The image tokens of a prompt do not match the images given with it.
    #[error("image tokens do not match the images: {problem}")]
    ImageTokens { problem: String },
}

struct Layer {
    kind: LayerKind,
    attn_norm: Vec<f32>,
    q: QMatrix,
    k: QMatrix,
    v: QMatrix,
    o: QMatrix,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
    post_ffn_norm: Option<Vec<f32>>,
}

pub struct Model {
    cfg: ModelConfig,
    embed: QMatrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None` when tied to `embed`.
    lm_head: Option<QMatrix>,
    rope_global: Rope,
    /// Sliding layers' own RoPE (Gemma 3's local base); `None` when they share the global one.
    rope_local: Option<Rope>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("arch", &self.cfg.arch).field("layers", &self.layers.len()).finish()
    }
}

impl Model {
    /// Builds the model from named weights, checking every shape against `cfg`.
    pub fn load(src: &dyn WeightSource, cfg: ModelConfig) -> Result<Self, LoadError> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_dim, kv_dim, ffn) = (cfg.num_heads * hd, cfg.kv_dim(), cfg.intermediate_size);
        let matrix = |name: &str, n: usize, k: usize| expect_shape(src, name, src.matrix(name)?, n, k);
        let vector = |name: &str, len: usize| expect_vector(src, name, len);
        let optional = |name: &str, len: usize| -> Result<Option<Vec<f32>>, LoadError> {
            if src.has(name) { vector(name, len).map(Some) } else { Ok(None) }
        };
        let gemma_norms = cfg.arch == crate::config::Arch::Gemma3;
        let mut layers = Vec::with_capacity(cfg.num_layers());
        for (i, &kind) in cfg.layer_types.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let (ffn_norm, post_attn_norm, post_ffn_norm) = if gemma_norms {
                (
                    vector(&p("pre_feedforward_layernorm.weight"), h)?,
                    Some(vector(&p("post_attention_layernorm.weight"), h)?),
                    Some(vector(&p("post_feedforward_layernorm.weight"), h)?),
                )
            } else {
                (vector(&p("post_attention_layernorm.weight"), h)?, None, None)
            };
            layers.push(Layer {
                kind,
                attn_norm: vector(&p("input_layernorm.weight"), h)?,
                q: matrix(&p("self_attn.q_proj.weight"), q_dim, h)?,
                k: matrix(&p("self_attn.k_proj.weight"), kv_dim, h)?,
                v: matrix(&p("self_attn.v_proj.weight"), kv_dim, h)?,
                o: matrix(&p("self_attn.o_proj.weight"), h, q_dim)?,
                q_bias: optional(&p("self_attn.q_proj.bias"), q_dim)?,
                k_bias: optional(&p("self_attn.k_proj.bias"), kv_dim)?,
                v_bias: optional(&p("self_attn.v_proj.bias"), kv_dim)?,
                q_norm: optional(&p("self_attn.q_norm.weight"), hd)?,
                k_norm: optional(&p("self_attn.k_norm.weight"), hd)?,
                post_attn_norm,
                ffn_norm,
                gate: matrix(&p("mlp.gate_proj.weight"), ffn, h)?,
                up: matrix(&p("mlp.up_proj.weight"), ffn, h)?,
                down: matrix(&p("mlp.down_proj.weight"), h, ffn)?,
                post_ffn_norm,
            });
        }
        let embed = matrix("model.embed_tokens.weight", cfg.vocab_size, h)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(matrix("lm_head.weight", cfg.vocab_size, h)?) };
        let rope_global = Rope::new(hd, cfg.rope_theta, cfg.rope_scaling.as_ref(), cfg.rope_style);
        // Gemma 3 scales only its global layers' RoPE; local layers keep the plain base.
        let rope_local = cfg.rope_local_theta.map(|theta| Rope::new(hd, theta, None, cfg.rope_style));
        Ok(Self { norm: vector("model.norm.weight", h)?, cfg, embed, layers, lm_head, rope_global, rope_local })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Bytes of weights held in memory.
    pub fn weights_size_in_bytes(&self) -> usize {
        let layer_bytes: usize = self
            .layers
            .iter()
            .map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|m| m.size_in_bytes()).sum::<usize>())
            .sum();
        layer_bytes + self.embed.size_in_bytes() + self.lm_head.as_ref().map_or(0, |m| m.size_in_bytes())
    }

    /// Runs the new tokens of every sequence through the model, appending their keys and
    /// values to each sequence's cache. Returns, per sequence, the requested logits
    /// (`[rows][vocab]` flattened; empty for [`Logits::None`]; `[hidden]` for [`Logits::Hidden`]).
    ///
    /// On error nothing has been appended to any cache.
    pub fn forward(&self, batch: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>, ForwardError> {
        let cfg = &self.cfg;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.num_heads * hd, cfg.kv_dim());

        // Validate, and lay out where each sequence's rows live in the stacked matrix.
        let mut positions = Vec::new();
        let mut spans = Vec::with_capacity(batch.len());
        for s in batch.iter() {
            if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return Err(ForwardError::TokenOutOfRange { id, vocab: cfg.vocab_size });
            }
            if let Some(p) = s.positions {
                if p.len() != s.tokens.len() {
                    return Err(ForwardError::PositionsLength { positions: p.len(), tokens: s.tokens.len() });
                }
            }
            for e in s.embeds {
                if !e.rows.len().is_multiple_of(h) {
                    return Err(ForwardError::EmbedsWidth { len: e.rows.len(), hidden: h });
                }
                let rows = e.rows.len() / h;
                if e.at.checked_add(rows).is_none_or(|end| end > s.tokens.len()) {
                    return Err(ForwardError::EmbedsOutOfRange { at: e.at, rows, tokens: s.tokens.len() });
                }
            }
            let start = s.cache.len();
            let end = start + s.tokens.len();
            if end > cfg.max_position_embeddings {
                return Err(ForwardError::ContextOverflow { pos: end, max: cfg.max_position_embeddings });
            }
            spans.push((positions.len(), s.tokens.len(), start));
            positions.extend(start..end);
        }
        let t = positions.len();
        if t == 0 {
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }

        let mut x = vec![0f32; t * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(batch.iter().flat_map(|s| s.tokens.iter())) {
            self.embed.dequantize_row(id as usize, row);
            if let Some(scale) = cfg.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        // Vision features (or any given rows) replace their tokens' embeddings, after the
        // embedding scale: they are already in the model's input space.
        for (s, &(row0, _, _)) in batch.iter().zip(&spans) {
            for e in s.embeds {
                x[(row0 + e.at) * h..][..e.rows.len()].copy_from_slice(e.rows);
            }
        }
        // Explicit positions (M-RoPE) only when some sequence brings them: plain text keeps the
        // one-axis tables, which equal M-RoPE's when all three axes are the cache position.
        let explicit = batch.iter().any(|s| s.positions.is_some()).then(|| {
            let mut pos3 = Vec::with_capacity(t);
            for (s, &(_, n, start)) in batch.iter().zip(&spans) {
                match s.positions {
                    Some(p) => pos3.extend_from_slice(p),
                    None => pos3.extend((start..start + n).map(|p| [p as u32; 3])),
                }
            }
            pos3
        });
        let tables = |rope: &Rope| match (&explicit, cfg.mrope_section) {
            (None, _) => rope.tables(&positions),
            (Some(pos3), Some(section)) => rope.tables_mrope(pos3, section),
            (Some(pos3), None) => rope.tables(&pos3.iter().map(|p| p[0] as usize).collect::<Vec<_>>()),
        };
        let (cos_g, sin_g) = tables(&self.rope_global);
        // Only models with a separate local base need a second table.
        let local = self.rope_local.as_ref().map(|r| (r, tables(r)));

        let mut hbuf = vec![0f32; t * h];
        let mut q = vec![0f32; t * q_dim];
        let mut k = vec![0f32; t * kv_dim];
        let mut v = vec![0f32; t * kv_dim];
        let mut attn = vec![0f32; t * q_dim];
        let mut proj = vec![0f32; t * h];
        let mut gate = vec![0f32; t * cfg.intermediate_size];
        let mut up = vec![0f32; t * cfg.intermediate_size];

        for (li, layer) in self.layers.iter().enumerate() {
            ops::rms_norm_into(&x, &layer.attn_norm, cfg.rms_norm_eps, &mut hbuf);
            // One activation quantization for all three projections.
            QMatrix::matmul_many(&[&layer.q, &layer.k, &layer.v], &hbuf, t, &mut [&mut q, &mut k, &mut v]);
            for (buf, bias) in [(&mut q, &layer.q_bias), (&mut k, &layer.k_bias), (&mut v, &layer.v_bias)] {
                if let Some(b) = bias {
                    ops::add_bias(buf, b);
                }
            }
            if let Some(w) = &layer.q_norm {
                ops::rms_norm(&mut q, w, cfg.rms_norm_eps);
            }
            if let Some(w) = &layer.k_norm {
                ops::rms_norm(&mut k, w, cfg.rms_norm_eps);
            }
            let (rope, cos, sin) = match (layer.kind, &local) {
                (LayerKind::Sliding, Some((r, (cos_l, sin_l)))) => (*r, cos_l, sin_l),
                _ => (&self.rope_global, &cos_g, &sin_g),
            };
            rope.apply(&mut q, hd, cos, sin);
            rope.apply(&mut k, hd, cos, sin);

            for (s, &(row0, n, _)) in batch.iter_mut().zip(&spans) {
                s.cache.append(li, &k[row0 * kv_dim..(row0 + n) * kv_dim], &v[row0 * kv_dim..(row0 + n) * kv_dim]);
            }
            let window = match layer.kind {
                LayerKind::Full => None,
                LayerKind::Sliding => cfg.sliding_window,
            };
            self.attention(batch, &spans, li, &q, window, &mut attn);

            layer.o.matmul(&attn, t, &mut proj);
            if let Some(w) = &layer.post_attn_norm {
                ops::rms_norm(&mut proj, w, cfg.rms_norm_eps);
            }
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            ops::rms_norm_into(&x, &layer.ffn_norm, cfg.rms_norm_eps, &mut hbuf);
            QMatrix::matmul_many(&[&layer.gate, &layer.up], &hbuf, t, &mut [&mut gate, &mut up]);
            ops::gated_activation(&mut gate, &up, cfg.activation);
            layer.down.matmul(&gate, t, &mut proj);
            if let Some(w) = &layer.post_ffn_norm {
                ops::rms_norm(&mut proj, w, cfg.rms_norm_eps);
            }
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        }
        for (s, &(_, n, _)) in batch.iter_mut().zip(&spans) {
            s.cache.commit(n);
        }

        // Final norm and LM head, only for the rows someone asked for; `Hidden` stops after the
        // norm. Every sequence's logit rows go through the LM head in one matmul: on a large
        // vocabulary it is the biggest matrix, and batched decode must read it once per step,
        // not once per sequence.
        let wanted: Vec<std::ops::Range<usize>> = batch
            .iter()
            .zip(&spans)
            .map(|(s, &(row0, n, _))| match s.logits {
                Logits::None => 0..0,
                Logits::Last | Logits::Hidden => row0 + n - 1..row0 + n,
                Logits::All => row0..row0 + n,
            })
            .collect();
        let mut hidden = Vec::with_capacity(wanted.iter().map(|r| r.len()).sum::<usize>() * h);
        for rows in &wanted {
            hidden.extend_from_slice(&x[rows.start * h..rows.end * h]);
        }
        ops::rms_norm(&mut hidden, &self.norm, cfg.rms_norm_eps);
        // The normed rows that need logits, in batch order (`hidden` minus the `Hidden` ones).
        let mut head_rows = Vec::with_capacity(hidden.len());
        let mut at = 0;
        for (s, rows) in batch.iter().zip(&wanted) {
            let part = &hidden[at * h..(at + rows.len()) * h];
            if matches!(s.logits, Logits::Last | Logits::All) {
                head_rows.extend_from_slice(part);
            }
            at += rows.len();
        }
        let m = head_rows.len() / h;
        let mut logits = vec![0f32; m * cfg.vocab_size];
        if m > 0 {
            self.lm_head.as_ref().unwrap_or(&self.embed).matmul(&head_rows, m, &mut logits);
            if let Some(cap) = cfg.final_logit_softcap {
                logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
            }
        }
        let (mut hidden_at, mut logits_at) = (0, 0);
        let mut out = Vec::with_capacity(batch.len());
        for (s, rows) in batch.iter().zip(&wanted) {
            let n = rows.len();
            let part = match s.logits {
                Logits::None => Vec::new(),
                Logits::Hidden => hidden[hidden_at * h..(hidden_at + n) * h].to_vec(),
                Logits::Last | Logits::All => {
                    let part = logits[logits_at * cfg.vocab_size..(logits_at + n) * cfg.vocab_size].to_vec();
                    logits_at += n;
                    part
                }
            };
            hidden_at += n;
            out.push(part);
        }
        Ok(out)
    }

    /// Causal (optionally sliding-window) attention of every sequence's new queries against
    /// its cache. Writes `[t][num_heads * head_dim]` into `out`.
    ///
    /// One task per (sequence, KV head, chunk of query rows): the query heads sharing a KV head
    /// (GQA) go through its keys and values together, so each key/value row is loaded once for
    /// the whole group, and a decoding batch makes a few dozen tasks rather than one per head.
    /// Each (row, head) is computed exactly as on its own (same dot, softmax and accumulation
    /// order), so results do not depend on the batch or the chunking.
    fn attention(
        &self,
        batch: &[SeqInput<'_>],
        spans: &[(usize, usize, usize)],
        layer: usize,
        q: &[f32],
        window: Option<usize>,
        out: &mut [f32],
    ) {
        /// Query rows per task: enough work to amortise a task, small enough to spread a
        /// prefill chunk over the threads.
        const ROWS: usize = 16;
        let cfg = &self.cfg;
        let (hd, nh, nkv) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let (q_dim, kv_dim) = (nh * hd, cfg.kv_dim());
        let group = nh / nkv;
        let mut tasks = Vec::new();
        for (si, &(_, n, _)) in spans.iter().enumerate() {
            for kvh in 0..nkv {
                tasks.extend((0..n).step_by(ROWS).map(|r| (si, kvh, r..(r + ROWS).min(n))));
            }
        }
        // Per task: its rows × the group's heads × head_dim, row-major.
        let results: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|(si, kvh, rows)| {
                let (row0, _, start) = spans[*si];
                let (keys, values) = batch[*si].cache.layer(layer);
                let kv_off = kvh * hd;
                let mut res = vec![0f32; rows.len() * group * hd];
                let last = start + rows.end - 1;
                let mut scores = vec![0f32; group * (last + 1)];
                for (ri, i) in rows.clone().enumerate() {
                    let pos = start + i;
                    let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    let len = pos + 1 - first;
                    let qrow = &q[(row0 + i) * q_dim + kvh * group * hd..][..group * hd];
                    for (j, p) in (first..=pos).enumerate() {
                        let key = &keys[p * kv_dim + kv_off..][..hd];
                        for g in 0..group {
                            scores[g * len + j] = ops::dot(&qrow[g * hd..][..hd], key) * cfg.attn_scale;
                        }
                    }
                    for g in 0..group {
                        ops::softmax(&mut scores[g * len..(g + 1) * len]);
                    }
                    let o = &mut res[ri * group * hd..(ri + 1) * group * hd];
                    for (j, p) in (first..=pos).enumerate() {
                        let value = &values[p * kv_dim + kv_off..][..hd];
                        for g in 0..group {
                            ops::axpy(&mut o[g * hd..(g + 1) * hd], scores[g * len + j], value);
                        }
                    }
                }
                res
            })
            .collect();
        for ((si, kvh, rows), res) in tasks.iter().zip(results) {
            let row0 = spans[*si].0;
            for (ri, i) in rows.clone().enumerate() {
                out[(row0 + i) * q_dim + kvh * group * hd..][..group * hd]
                    .copy_from_slice(&res[ri * group * hd..(ri + 1) * group * hd]);
            }
        }
    }
}
