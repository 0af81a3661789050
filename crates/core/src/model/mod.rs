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
mod ops_f16;

use rayon::prelude::*;

use lora::{LoraAdapter, Proj, Routing};

use crate::config::{KvType, LayerKind, ModelConfig};
use crate::kernels::QMatrix;
use crate::kv_cache::{Rows, SeqCache};
use crate::weights::{expect_shape, expect_vector, LoadError, WeightSource};

pub mod audio;
pub mod lora;
pub mod encode_job;
pub mod mrope;
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

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
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
    /// A LoRA adapter loaded for a model of other dimensions.
    #[error("LoRA adapter {path} was loaded for another model")]
    AdapterMismatch { path: std::path::PathBuf },
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

impl Layer {
    /// Projection `p` in [`Proj`] order (q, k, v, o, gate, up, down).
    fn projection(&self, p: usize) -> &QMatrix {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down][p]
    }
}

/// Where one sequence's new tokens are in a forward pass.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// First row of the sequence in the stacked `[tokens, hidden]` matrix.
    row0: usize,
    /// Number of new tokens (rows).
    len: usize,
    /// Cache position of the first new token.
    start: usize,
}

/// Cos and sin of every (new token, frequency), as [`Rope::tables`] makes them.
type CosSin = (Vec<f32>, Vec<f32>);

/// RoPE tables of one forward pass's new tokens.
struct RopeTables<'m> {
    global: CosSin,
    /// Sliding layers' own RoPE and its tables, when they have one.
    local: Option<(&'m Rope, CosSin)>,
}

/// Per-step work buffers, sized for the step's `t` stacked rows and reused by every layer.
struct Scratch {
    /// The normed residual stream, input of the projections.
    hbuf: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    /// Output of the attention and MLP output projections.
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Scratch {
    fn new(cfg: &ModelConfig, t: usize) -> Self {
        let (h, q_dim, kv_dim, ffn) = (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.kv_dim(), cfg.intermediate_size);
        Self {
            hbuf: vec![0f32; t * h],
            q: vec![0f32; t * q_dim],
            k: vec![0f32; t * kv_dim],
            v: vec![0f32; t * kv_dim],
            attn: vec![0f32; t * q_dim],
            proj: vec![0f32; t * h],
            gate: vec![0f32; t * ffn],
            up: vec![0f32; t * ffn],
        }
    }
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

    /// Chooses how caches made from now on for this model hold keys and values (f16 unless
    /// changed). Caches already made keep their type.
    pub fn set_kv_type(&mut self, kv_type: KvType) {
        self.cfg.kv_type = kv_type;
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
        self.forward_with_adapters(batch, &[])
    }

    /// [`forward`](Self::forward) with sequence `i`'s rows going through `adapters[i]`'s LoRA
    /// updates as well (none for `None`, or past the end of `adapters`); see [`lora`].
    pub fn forward_with_adapters(
        &self,
        batch: &mut [SeqInput<'_>],
        adapters: &[Option<&LoraAdapter>],
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        if let Some(a) = adapters.iter().flatten().find(|a| !a.fits(self)) {
            return Err(ForwardError::AdapterMismatch { path: a.path().to_path_buf() });
        }
        let (spans, positions) = self.layout(batch)?;
        let t = positions.len();
        if t == 0 {
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }
        let mut x = self.embed(batch, &spans, t);
        let tables = self.rope_tables(batch, &spans, &positions);
        let mut scratch = Scratch::new(&self.cfg, t);
        let lora = Routing::new(adapters, &spans);
        for li in 0..self.layers.len() {
            self.attention_block(li, batch, &spans, &tables, &lora, &mut x, &mut scratch);
            self.mlp_block(li, &lora, &mut x, &mut scratch);
        }
        for (s, span) in batch.iter_mut().zip(&spans) {
            s.cache.commit(span.len);
        }
        Ok(self.outputs(batch, &spans, &x))
    }

    /// Checks every sequence's input, and lays out where its rows live in the stacked
    /// `[tokens, hidden]` matrix. Returns the spans and every new token's cache position.
    /// Nothing is touched before this passes, which is what makes a failed forward leave the
    /// caches as they were.
    fn layout(&self, batch: &[SeqInput<'_>]) -> Result<(Vec<Span>, Vec<usize>), ForwardError> {
        let cfg = &self.cfg;
        let h = cfg.hidden_size;
        let mut positions = Vec::new();
        let mut spans = Vec::with_capacity(batch.len());
        for s in batch {
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
            spans.push(Span { row0: positions.len(), len: s.tokens.len(), start });
            positions.extend(start..end);
        }
        Ok((spans, positions))
    }

    /// The stacked input rows `[t, hidden]`: each new token's embedding, scaled, or the row
    /// its sequence gives for it.
    fn embed(&self, batch: &[SeqInput<'_>], spans: &[Span], t: usize) -> Vec<f32> {
        let h = self.cfg.hidden_size;
        let mut x = vec![0f32; t * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(batch.iter().flat_map(|s| s.tokens.iter())) {
            self.embed.dequantize_row(id as usize, row);
            if let Some(scale) = self.cfg.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        // Vision features (or any given rows) replace their tokens' embeddings, after the
        // embedding scale: they are already in the model's input space.
        for (s, span) in batch.iter().zip(spans) {
            for e in s.embeds {
                x[(span.row0 + e.at) * h..][..e.rows.len()].copy_from_slice(e.rows);
            }
        }
        x
    }

    /// RoPE's cos/sin tables for every new token, for the global base and (when sliding layers
    /// have their own) the local one.
    fn rope_tables(&self, batch: &[SeqInput<'_>], spans: &[Span], positions: &[usize]) -> RopeTables<'_> {
        // Explicit positions (M-RoPE) only when some sequence brings them: plain text keeps the
        // one-axis tables, which equal M-RoPE's when all three axes are the cache position.
        let explicit = batch.iter().any(|s| s.positions.is_some()).then(|| {
            let mut pos3 = Vec::with_capacity(positions.len());
            for (s, span) in batch.iter().zip(spans) {
                match s.positions {
                    Some(p) => pos3.extend_from_slice(p),
                    None => pos3.extend((span.start..span.start + span.len).map(|p| [p as u32; 3])),
                }
            }
            pos3
        });
        let tables = |rope: &Rope| match (&explicit, self.cfg.mrope_section) {
            (None, _) => rope.tables(positions),
            (Some(pos3), Some(section)) => rope.tables_mrope(pos3, section),
            (Some(pos3), None) => rope.tables(&pos3.iter().map(|p| p[0] as usize).collect::<Vec<_>>()),
        };
        // Only models with a separate local base need a second table.
        RopeTables { global: tables(&self.rope_global), local: self.rope_local.as_ref().map(|r| (r, tables(r))) }
    }

    /// Layer `li`'s attention half: norm, q/k/v projections (biases, q/k norms, RoPE), the new
    /// keys and values appended to the caches, attention, output projection and its optional
    /// post-norm, added into the residual stream `x`. Every projection gets its rows' LoRA
    /// updates (`lora`) right after the base matmul, as PEFT adds them to the layer's output.
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        li: usize,
        batch: &mut [SeqInput<'_>],
        spans: &[Span],
        tables: &RopeTables<'_>,
        lora: &Routing<'_>,
        x: &mut [f32],
        sc: &mut Scratch,
    ) {
        let (cfg, layer) = (&self.cfg, &self.layers[li]);
        let kv_dim = cfg.kv_dim();
        let t = x.len() / cfg.hidden_size;
        ops::rms_norm_into(x, &layer.attn_norm, cfg.rms_norm_eps, &mut sc.hbuf);
        // One activation quantization for all three projections.
        QMatrix::matmul_many(&[&layer.q, &layer.k, &layer.v], &sc.hbuf, t, &mut [&mut sc.q, &mut sc.k, &mut sc.v]);
        lora.apply(li, Proj::Q, &sc.hbuf, &mut sc.q);
        lora.apply(li, Proj::K, &sc.hbuf, &mut sc.k);
        lora.apply(li, Proj::V, &sc.hbuf, &mut sc.v);
        for (buf, bias) in [(&mut sc.q, &layer.q_bias), (&mut sc.k, &layer.k_bias), (&mut sc.v, &layer.v_bias)] {
            if let Some(b) = bias {
                ops::add_bias(buf, b);
            }
        }
        if let Some(w) = &layer.q_norm {
            ops::rms_norm(&mut sc.q, w, cfg.rms_norm_eps);
        }
        if let Some(w) = &layer.k_norm {
            ops::rms_norm(&mut sc.k, w, cfg.rms_norm_eps);
        }
        let (rope, (cos, sin)) = match (layer.kind, &tables.local) {
            (LayerKind::Sliding, Some((r, local))) => (*r, local),
            _ => (&self.rope_global, &tables.global),
        };
        rope.apply(&mut sc.q, cfg.head_dim, cos, sin);
        rope.apply(&mut sc.k, cfg.head_dim, cos, sin);

        for (s, span) in batch.iter_mut().zip(spans) {
            let rows = span.row0 * kv_dim..(span.row0 + span.len) * kv_dim;
            s.cache.append(li, &sc.k[rows.clone()], &sc.v[rows]);
        }
        let window = match layer.kind {
            LayerKind::Full => None,
            LayerKind::Sliding => cfg.sliding_window,
        };
        self.attention(batch, spans, li, &sc.q, window, &mut sc.attn);

        layer.o.matmul(&sc.attn, t, &mut sc.proj);
        lora.apply(li, Proj::O, &sc.attn, &mut sc.proj);
        if let Some(w) = &layer.post_attn_norm {
            ops::rms_norm(&mut sc.proj, w, cfg.rms_norm_eps);
        }
        x.iter_mut().zip(&sc.proj).for_each(|(a, b)| *a += b);
    }

    /// Layer `li`'s MLP half: norm, gated activation of gate/up, down projection and its
    /// optional post-norm, added into the residual stream `x`; LoRA updates as in
    /// [`attention_block`](Self::attention_block).
    fn mlp_block(&self, li: usize, lora: &Routing<'_>, x: &mut [f32], sc: &mut Scratch) {
        let (cfg, layer) = (&self.cfg, &self.layers[li]);
        let t = x.len() / cfg.hidden_size;
        ops::rms_norm_into(x, &layer.ffn_norm, cfg.rms_norm_eps, &mut sc.hbuf);
        QMatrix::matmul_many(&[&layer.gate, &layer.up], &sc.hbuf, t, &mut [&mut sc.gate, &mut sc.up]);
        lora.apply(li, Proj::Gate, &sc.hbuf, &mut sc.gate);
        lora.apply(li, Proj::Up, &sc.hbuf, &mut sc.up);
        ops::gated_activation(&mut sc.gate, &sc.up, cfg.activation);
        layer.down.matmul(&sc.gate, t, &mut sc.proj);
        lora.apply(li, Proj::Down, &sc.gate, &mut sc.proj);
        if let Some(w) = &layer.post_ffn_norm {
            ops::rms_norm(&mut sc.proj, w, cfg.rms_norm_eps);
        }
        x.iter_mut().zip(&sc.proj).for_each(|(a, b)| *a += b);
    }

    /// What each sequence asked for from the final residual stream `x`: the final norm and LM
    /// head, only for the rows someone asked for; `Hidden` stops after the norm.
    fn outputs(&self, batch: &[SeqInput<'_>], spans: &[Span], x: &[f32]) -> Vec<Vec<f32>> {
        let cfg = &self.cfg;
        let h = cfg.hidden_size;
        let wanted: Vec<std::ops::Range<usize>> = batch
            .iter()
            .zip(spans)
            .map(|(s, span)| match s.logits {
                Logits::None => 0..0,
                Logits::Last | Logits::Hidden => span.row0 + span.len - 1..span.row0 + span.len,
                Logits::All => span.row0..span.row0 + span.len,
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
        let logits = self.lm_head(&head_rows);
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
        out
    }

    /// Logits `[rows][vocab]` of normed rows `[rows][hidden]`, soft-capped when the model
    /// caps them. Every sequence's rows go through the LM head in one matmul: on a large
    /// vocabulary it is the biggest matrix, and batched decode must read it once per step, not
    /// once per sequence.
    fn lm_head(&self, rows: &[f32]) -> Vec<f32> {
        let m = rows.len() / self.cfg.hidden_size;
        let mut logits = vec![0f32; m * self.cfg.vocab_size];
        if m > 0 {
            self.lm_head.as_ref().unwrap_or(&self.embed).matmul(rows, m, &mut logits);
            if let Some(cap) = self.cfg.final_logit_softcap {
                logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
            }
        }
        logits
    }

    /// Causal (optionally sliding-window) attention of every sequence's new queries against
    /// its cache. Writes `[t][num_heads * head_dim]` into `out`.
    ///
    /// One task per (sequence, KV head, chunk of query rows): the query heads sharing a KV head
    /// (GQA) go through its keys and values one after the other while they are in cache, and a
    /// decoding batch makes a few dozen tasks rather than one per head.
    /// Each (row, head) is computed exactly as on its own (same dot, softmax and accumulation
    /// order), so results do not depend on the batch or the chunking.
    fn attention(
        &self,
        batch: &[SeqInput<'_>],
        spans: &[Span],
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
        let q_dim = nh * hd;
        let group = nh / nkv;
        let mut tasks = Vec::new();
        for (si, &Span { len: n, .. }) in spans.iter().enumerate() {
            for kvh in 0..nkv {
                tasks.extend((0..n).step_by(ROWS).map(|r| (si, kvh, r..(r + ROWS).min(n))));
            }
        }
        // Per task: its rows × the group's heads × head_dim, row-major.
        let results: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|(si, kvh, rows)| {
                let Span { row0, start, .. } = spans[*si];
                let task = Task { q, row0, start, rows: rows.clone(), kv_off: kvh * hd, q_off: kvh * group * hd, window };
                match batch[*si].cache.layer(layer) {
                    (Rows::F16(k), Rows::F16(v)) => self.attend(&task, k, v),
                    (Rows::F32(k), Rows::F32(v)) => self.attend(&task, k, v),
                    _ => unreachable!("a cache's keys and values share one type"),
                }
            })
            .collect();
        for ((si, kvh, rows), res) in tasks.iter().zip(results) {
            let row0 = spans[*si].row0;
            for (ri, i) in rows.clone().enumerate() {
                out[(row0 + i) * q_dim + kvh * group * hd..][..group * hd]
                    .copy_from_slice(&res[ri * group * hd..(ri + 1) * group * hd]);
            }
        }
    }

    /// One attention task: its query rows × the group's heads against keys and values of one
    /// KV head, `[row][group][head_dim]`. The same arithmetic whatever the batch or chunking.
    fn attend<E: KvElem>(&self, t: &Task<'_>, keys: &[E], values: &[E]) -> Vec<f32> {
        let cfg = &self.cfg;
        let (hd, kv_dim, q_dim) = (cfg.head_dim, cfg.kv_dim(), cfg.num_heads * cfg.head_dim);
        let group = cfg.num_heads / cfg.num_kv_heads;
        let mut res = vec![0f32; t.rows.len() * group * hd];
        let last = t.start + t.rows.end - 1;
        let mut scores = vec![0f32; last + 1];
        for (ri, i) in t.rows.clone().enumerate() {
            let pos = t.start + i;
            let first = t.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let len = pos + 1 - first;
            let qrow = &t.q[(t.row0 + i) * q_dim + t.q_off..][..group * hd];
            let (keys, values) = (&keys[first * kv_dim + t.kv_off..], &values[first * kv_dim + t.kv_off..]);
            let o = &mut res[ri * group * hd..(ri + 1) * group * hd];
            let s = &mut scores[..len];
            for (q, o) in qrow.chunks_exact(hd).zip(o.chunks_exact_mut(hd)) {
                E::dots(q, keys, kv_dim, cfg.attn_scale, s);
                ops::softmax(s);
                E::weighted_sum(o, s, values, kv_dim);
            }
        }
        res
    }
}

/// What one attention task covers (see [`Model::attention`]).
struct Task<'a> {
    /// All new query rows of the batch, `[t][num_heads * head_dim]`.
    q: &'a [f32],
    /// The sequence's first row in `q` and the cache position of that row.
    row0: usize,
    start: usize,
    /// The task's rows, relative to `row0`.
    rows: std::ops::Range<usize>,
    /// Offsets of the KV head in a cache row and of its query group in a query row.
    kv_off: usize,
    q_off: usize,
    window: Option<usize>,
}

/// A KV cache element type attention can read directly: the keys or values of one KV head
/// are `hd` elements every `stride` (a cache row) from the slice's start.
trait KvElem: Sized + Sync {
    /// `out[j] = scale · (q · key j)`.
    fn dots(q: &[f32], keys: &[Self], stride: usize, scale: f32, out: &mut [f32]);
    /// `y ← y + Σ_j w[j]·value j`, in order of `j`.
    fn weighted_sum(y: &mut [f32], w: &[f32], values: &[Self], stride: usize);
}

impl KvElem for f32 {
    fn dots(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = ops::dot(q, &keys[j * stride..][..q.len()]) * scale;
        }
    }
    fn weighted_sum(y: &mut [f32], w: &[f32], values: &[f32], stride: usize) {
        for (j, &a) in w.iter().enumerate() {
            ops::axpy(y, a, &values[j * stride..][..y.len()]);
        }
    }
}

impl KvElem for half::f16 {
    fn dots(q: &[f32], keys: &[half::f16], stride: usize, scale: f32, out: &mut [f32]) {
        ops_f16::dots(q, keys, stride, scale, out)
    }
    fn weighted_sum(y: &mut [f32], w: &[f32], values: &[half::f16], stride: usize) {
        ops_f16::weighted_sum(y, w, values, stride)
    }
}
