//! Unmerged LoRA adapters, applied per sequence inside one forward pass.
//!
//! A [`LoraAdapter`] holds, for each adapted projection of each layer (q, k, v, o, gate, up,
//! down), PEFT's `A [r, k]` and `B [n, r]` in f32 and the adapter's scale (`lora_alpha / r`, or
//! `lora_alpha / √r` with rsLoRA). [`Model::forward_with_adapters`](super::Model::forward_with_adapters)
//! takes one optional adapter per sequence; after each base projection `y = x·Wᵀ`, the rows of
//! the sequences sharing an adapter are gathered and get `scale · (x·Aᵀ)·Bᵀ` added, one pair
//! of small matmuls per adapter and projection, so one step mixes adapters and plain
//! sequences. Sequences without an adapter cost nothing extra, and a step where none has one
//! does no LoRA work at all.
//!
//! Invariants:
//! - An adapter is checked against the model it is loaded for ([`LoraAdapter::load`]): every
//!   adapted module is one of the seven projections of an existing layer and `A`/`B` fit its
//!   weight; the forward pass refuses an adapter built for a model of other dimensions.
//! - Each row's update is computed from that row alone (the dense kernels accumulate every row
//!   independently), so a sequence's result does not depend on what else is in the batch.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Model, Span};
use crate::kernels::QMatrix;
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
    /// `[r, k]`.
    a: QMatrix,
    /// `[n, r]`.
    b: QMatrix,
    scale: f32,
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
            let w = model.layers[li].projection(p);
            let bad = |e| LoadError::from_kernel(&adapter.path, weight, e);
            let a = QMatrix::from_f32(pair.r, w.k(), &pair.a).map_err(bad)?;
            let b = QMatrix::from_f32(w.n(), pair.r, &pair.b).map_err(bad)?;
            layers[li][p] = Some(Delta { a, b, scale: pair.scale });
        }
        Ok(Self { path: adapter.path, layers, dims: dims(model) })
    }

    /// The adapter's weights file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes held (the f32 `A` and `B` matrices).
    pub fn size_in_bytes(&self) -> usize {
        self.layers.iter().flatten().flatten().map(|d| d.a.size_in_bytes() + d.b.size_in_bytes()).sum()
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
            let (k, n, r) = (delta.a.k(), delta.b.n(), delta.a.n());
            let m: usize = ranges.iter().map(|rows| rows.len()).sum();
            // A single sequence's rows are contiguous already; several are gathered.
            let gathered;
            let xg = match ranges.as_slice() {
                [rows] => &x[rows.start * k..rows.end * k],
                _ => {
                    gathered = ranges.iter().flat_map(|rows| &x[rows.start * k..rows.end * k]).copied().collect::<Vec<f32>>();
                    &gathered
                }
            };
            let mut low = vec![0f32; m * r];
            delta.a.matmul(xg, m, &mut low);
            low.iter_mut().for_each(|v| *v *= delta.scale);
            let mut up = vec![0f32; m * n];
            delta.b.matmul(&low, m, &mut up);
            let mut up_rows = up.chunks_exact(n);
            for rows in ranges {
                for (dst, src) in y[rows.start * n..rows.end * n].chunks_exact_mut(n).zip(&mut up_rows) {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
            }
        }
    }
}
