//! Unmerged LoRA adapters, applied per sequence inside one forward pass.
//!
//! A [`LoraAdapter`] holds, for each adapted projection of each layer (q, k, v, o, gate, up,
//! down), PEFT's `A [r, k]` and `B [n, r]` in f32 and the adapter's scale (`lora_alpha / r`, or
//! `lora_alpha / √r` with rsLoRA). [`Model::forward_with_adapters`](super::Model::forward_with_adapters)
//! takes one optional adapter per sequence; after each base projection `y = x·Wᵀ`, the rows of
//! the sequences sharing an adapter (grouped once per forward pass) get `scale · (x·Aᵀ)·Bᵀ`
//! added, so one step mixes adapters and plain sequences. Sequences without an adapter cost
//! nothing extra, and a step where none has one does no LoRA work at all.
//!
//! Cost: the update is about `r·(k+n)` multiply-adds per row and projection, ~1% of the base
//! matmul at r 8, so it runs as plain SIMD loops (r dots of `x` with A's rows, then r scaled
//! adds of Bᵀ's rows) on the calling thread; only a group of many rows (a prompt chunk) is
//! split over the pool. A kernel matmul per (adapter, projection) would cost a fork/join each,
//! hundreds per decode step, which on a busy machine outweighs the arithmetic.
//!
//! Invariants:
//! - An adapter is checked against the model it is loaded for ([`LoraAdapter::load`]): every
//!   adapted module is one of the seven projections of an existing layer and `A`/`B` fit its
//!   weight; the forward pass refuses an adapter built for a model of other dimensions.
//! - Each row's update is computed from that row alone, the same way whatever the grouping or
//!   threading, so a sequence's result does not depend on what else is in the batch.

use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{ops, Model, Span};
use crate::weights::lora::Adapter;
use crate::weights::LoadError;

/// The adapted projections, in [`Proj`] order, by their Hugging Face module names.
const PROJ_NAMES: [&str; 7] =
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

/// A layer's linear projection a LoRA update can apply to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// One projection's update: `y += scale · (x·Aᵀ)·Bᵀ`.
struct Delta {
    /// `A`, `[r, k]` row-major.
    a: Vec<f32>,
    /// `Bᵀ`, `[r, n]` row-major (B transposed at load, so each rank's column is contiguous).
    bt: Vec<f32>,
    r: usize,
    scale: f32,
}

/// Rows at or above which a group's update is split over the pool.
const PARALLEL_ROWS: usize = 16;

impl Delta {
    /// Adds the update of one input row `x` (`[k]`) to its output row `y` (`[n]`).
    fn add_row(&self, x: &[f32], y: &mut [f32]) {
        let (k, n) = (x.len(), y.len());
        for (a_row, bt_row) in self.a.chunks_exact(k).zip(self.bt.chunks_exact(n)) {
            ops::axpy(y, self.scale * ops::dot(x, a_row), bt_row);
        }
    }
}

/// A PEFT LoRA adapter held unmerged, for one model.
pub struct LoraAdapter {
    /// The adapter's weights file, for messages.
    path: PathBuf,
    /// Per layer, per [`Proj`]: its update, if the adapter adapts it.
    layers: Vec<[Option<Delta>; 7]>,
    /// The model dimensions the adapter was checked against (layers, hidden, q, kv, ffn).
    dims: [usize; 5],
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter").field("path", &self.path).finish()
    }
}

/// The dimensions an adapter must agree with.
fn dims(model: &Model) -> [usize; 5] {
    let c = &model.cfg;
    [model.layers.len(), c.hidden_size, c.num_heads * c.head_dim, c.kv_dim(), c.intermediate_size]
}

impl LoraAdapter {
    /// Reads the PEFT adapter in `dir` (`adapter_config.json`, `adapter_model.safetensors`) and
    /// checks it against `model`. Errors name the adapter file and the setting or tensor.
    pub fn load(dir: &Path, model: &Model) -> Result<Self, LoadError> {
        let adapter = Adapter::open(dir)?;
        let locate = |weight: &str| -> Option<(usize, usize)> {
            let rest = weight.strip_prefix("model.layers.")?.strip_suffix(".weight")?;
            let (layer, module) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let proj = PROJ_NAMES.iter().position(|&p| p == module)?;
            (layer < model.layers.len()).then_some((layer, proj))
        };
        adapter.check_against(|weight| {
            Ok(locate(weight).map(|(li, p)| {
                let w = model.layers[li].projection(p);
                [w.n(), w.k()]
            }))
        })?;
        let mut layers: Vec<[Option<Delta>; 7]> = (0..model.layers.len()).map(|_| Default::default()).collect();
        for (weight, pair) in &adapter.pairs {
            // Every weight was located by `check_against` above.
            let Some((li, p)) = locate(weight) else { continue };
            // Shapes were checked above: `a` is [r, k] and `b` is [n, r].
            let (r, n) = (pair.r, pair.b.len() / pair.r);
            let bt = (0..r).flat_map(|j| (0..n).map(move |i| pair.b[i * r + j])).collect();
            layers[li][p] = Some(Delta { a: pair.a.clone(), bt, r, scale: pair.scale });
        }
        Ok(Self { path: adapter.path, layers, dims: dims(model) })
    }

    /// The adapter's weights file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes held (the f32 `A` and `B` matrices).
    pub fn size_in_bytes(&self) -> usize {
        self.layers.iter().flatten().flatten().map(|d| 4 * (d.a.len() + d.bt.len())).sum()
    }

    /// Whether the adapter was checked against a model of `model`'s dimensions.
    pub(super) fn fits(&self, model: &Model) -> bool {
        self.dims == dims(model)
    }
}

/// Which stacked rows of a forward pass get which adapter: one group per distinct adapter, in
/// order of first appearance, with its sequences' row ranges. Empty when no sequence has one.
pub(super) struct Routing<'a> {
    groups: Vec<(&'a LoraAdapter, Vec<Range<usize>>)>,
}

impl<'a> Routing<'a> {
    /// Groups the sequences' rows (`spans`) by their adapter (`adapters[i]` for sequence `i`;
    /// a shorter list leaves the rest without one).
    pub(super) fn new(adapters: &[Option<&'a LoraAdapter>], spans: &[Span]) -> Self {
        let mut groups: Vec<(&'a LoraAdapter, Vec<Range<usize>>)> = Vec::new();
        for (adapter, span) in adapters.iter().zip(spans) {
            let (Some(adapter), true) = (adapter, span.len > 0) else { continue };
            let rows = span.row0..span.row0 + span.len;
            match groups.iter_mut().find(|(a, _)| std::ptr::eq(*a, *adapter)) {
                Some((_, ranges)) => ranges.push(rows),
                None => groups.push((adapter, vec![rows])),
            }
        }
        Self { groups }
    }

    /// Adds each group's update of projection `proj` of layer `li` to `y` (`[t, n]`), whose
    /// input was `x` (`[t, k]`).
    pub(super) fn apply(&self, li: usize, proj: Proj, x: &[f32], y: &mut [f32]) {
        for (adapter, ranges) in &self.groups {
            let Some(delta) = &adapter.layers[li][proj as usize] else { continue };
            let k = delta.a.len() / delta.r;
            let n = delta.bt.len() / delta.r;
            for rows in ranges {
                let (xs, ys) = (&x[rows.start * k..rows.end * k], &mut y[rows.start * n..rows.end * n]);
                if rows.len() >= PARALLEL_ROWS {
                    ys.par_chunks_exact_mut(n).zip(xs.par_chunks_exact(k)).for_each(|(yr, xr)| delta.add_row(xr, yr));
                } else {
                    ys.chunks_exact_mut(n).zip(xs.chunks_exact(k)).for_each(|(yr, xr)| delta.add_row(xr, yr));
                }
            }
        }
    }
}
