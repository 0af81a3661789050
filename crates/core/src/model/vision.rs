//! The vision encoders of Qwen2-VL and Qwen2.5-VL, and the prompt bookkeeping that places
//! their output.
//!
//! An image reaches the model as `pixel_values` (made by the image processor, not here): one
//! row of `in_channels · temporal_patch_size · patch_size²` values (1176 for both) per patch,
//! ordered (channel, frame, pixel row, pixel column), and the patches ordered (frame, h/merge
//! block, w/merge block, row inside the merge×merge group, column inside it), so each merge
//! group (a "merge unit", one future language-model token) is m² consecutive rows.
//! `grid_thw` gives the patch grid (frames, rows, columns). [`VisionModel::encode`] runs:
//!
//! 1. patch embedding, a Conv3d whose kernel equals its stride, i.e. one matmul of each patch
//!    row with the kernel flattened to `[embed_dim, patch_len]` (no bias);
//! 2. `depth` pre-norm ViT blocks: norm1 → qkv → attention → proj, residual; norm2 → MLP,
//!    residual. Attention is bidirectional within a span of patches and rotates q/k with a 2-D
//!    RoPE: of each head's head_dim/2 frequency pairs (Halves style), the first half turn with
//!    the patch's row, the second with its column (base 10000), as transformers'
//!    `VisionRotaryEmbedding`;
//! 3. the merger: norm `ln_q`, then each merge unit's m² rows concatenated into one row,
//!    Linear → exact GELU → Linear to the language model's width. So one image gives
//!    `t·h·w / merge²` rows, one per `<|image_pad|>`.
//!
//! The two generations ([`VisionArch`]) share all of that and differ only in:
//!
//! | | Qwen2-VL | Qwen2.5-VL |
//! |---|---|---|
//! | norms (norm1, norm2, ln_q) | LayerNorm, eps 1e-6 | RMSNorm (no bias), eps 1e-6 |
//! | block MLP | fc1 → act → fc2 | down(act(gate(x)) · up(x)), all with biases |
//! | attention span | the patch's frame | its window, or its frame in `fullatt_block_indexes` |
//!
//! Qwen2.5-VL's windows (transformers' `get_window_index`) tile each frame's merged grid into
//! squares of `window_size / (patch_size · merge)` merge units, the last row and column of
//! windows cut short when the grid is not a multiple. Before the blocks the merge units (and
//! their rotary angles, which stay those of the unit's place in the image) are reordered
//! window by window, so every window — and every frame — is one contiguous span; after the
//! merger the inverse permutation puts the rows back in pad-token order. For Qwen2-VL that
//! order is the identity and there are no windows.
//!
//! Those rows replace the image pad tokens' embeddings in the language model
//! ([`super::Embeds`]), whose M-RoPE positions [`super::mrope::rope_index`] computes (the same for both
//! generations' images): text tokens advance all three axes together; an image's tokens take
//! (t, row, column) over its merged grid, offset by the position it starts at; text after it
//! resumes at the largest position so far plus one. Decoding continues at
//! `cache position + rope_delta` on every axis.
//!
//! Invariants: weights are held unquantized ([`WeightSource::matrix_unquantized`]); every shape
//! is checked at load, every config value at load ([`VisionConfig::validate`]), every input at
//! `encode`, so none of them panics on bad data.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::encode_job;
use super::{ops, ForwardError};
use crate::config::vision::{VisionActivation, VisionArch, VisionConfig};
use crate::kernels::QMatrix;
use crate::weights::{CheckedWeights, LoadError};

mod job;

pub use job::VisionJob;

/// RoPE base of the vision encoder (fixed in both generations, not in their configs).
const VISION_ROPE_THETA: f32 = 10_000.0;
/// Epsilon of every vision norm (fixed in both generations).
const NORM_EPS: f32 = 1e-6;

// The activation's arithmetic belongs with the encoder's other kernels ([`ops`]); the enum
// itself is configuration ([`crate::config::vision`]).
impl VisionActivation {
    fn apply(self, x: &mut [f32]) {
        let f: fn(f32) -> f32 = match self {
            Self::QuickGelu => ops::quick_gelu,
            Self::Gelu => ops::gelu_erf,
            Self::GeluTanh => ops::gelu_tanh,
            Self::Silu => |v| v / (1.0 + (-v).exp()),
        };
        x.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// A linear layer with bias (shared with the audio encoder).
pub(super) struct Linear {
    pub(super) w: QMatrix,
    pub(super) b: Vec<f32>,
}

impl Linear {
    /// `{prefix}.weight` `[n, k]`, unquantized, and `{prefix}.bias` `[n]`.
    pub(super) fn load(src: &(impl CheckedWeights + ?Sized), prefix: &str, n: usize, k: usize) -> Result<Self, LoadError> {
        Ok(Linear { w: src.checked_matrix(&format!("{prefix}.weight"), n, k)?, b: src.checked_vector(&format!("{prefix}.bias"), n)? })
    }

    pub(super) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.w.n()];
        self.w.matmul(x, m, &mut y);
        ops::add_bias(&mut y, &self.b);
        y
    }
}

/// norm1, norm2 and the merger's ln_q.
enum Norm {
    Layer { w: Vec<f32>, b: Vec<f32> },
    Rms { w: Vec<f32> },
}

impl Norm {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        match self {
            Self::Layer { w, b } => ops::layer_norm(&mut y, w, b, NORM_EPS),
            Self::Rms { w } => ops::rms_norm(&mut y, w, NORM_EPS),
        }
        y
    }
}

/// The block MLP.
enum Mlp {
    /// `fc2(act(fc1(x)))`.
    Plain { fc1: Linear, fc2: Linear },
    /// `down(act(gate(x)) · up(x))`.
    Gated { gate: Linear, up: Linear, down: Linear },
}

impl Mlp {
    fn forward(&self, x: &[f32], n: usize, act: VisionActivation) -> Vec<f32> {
        match self {
            Self::Plain { fc1, fc2 } => {
                let mut mid = fc1.forward(x, n);
                act.apply(&mut mid);
                fc2.forward(&mid, n)
            }
            Self::Gated { gate, up, down } => {
                let mut mid = gate.forward(x, n);
                act.apply(&mut mid);
                mid.iter_mut().zip(up.forward(x, n)).for_each(|(g, u)| *g *= u);
                down.forward(&mid, n)
            }
        }
    }

    fn linears(&self) -> Vec<&Linear> {
        match self {
            Self::Plain { fc1, fc2 } => vec![fc1, fc2],
            Self::Gated { gate, up, down } => vec![gate, up, down],
        }
    }
}

struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    norm2: Norm,
    mlp: Mlp,
}

/// Where one image's rows go through the blocks: the merge units in processing order and the
/// spans attention runs over, in rows of that order.
struct Layout {
    /// `order[i]` is the merge unit (in pad-token order) processed `i`-th; `None` is the
    /// identity.
    order: Option<Vec<usize>>,
    /// One span per frame.
    frames: Vec<Range<usize>>,
    /// One span per window (Qwen2.5-VL); empty for Qwen2-VL.
    windows: Vec<Range<usize>>,
}

/// The merge units of one image window by window, as transformers' `get_window_index`: per
/// frame, windows of `side`×`side` units row-major over the merged grid (cut short at the
/// bottom and right edges), the units inside a window row-major. Returns the unit order and
/// each window's unit count (never zero).
fn window_order(grid_thw: [usize; 3], merge: usize, side: usize) -> (Vec<usize>, Vec<usize>) {
    let (lt, lh, lw) = (grid_thw[0], grid_thw[1] / merge, grid_thw[2] / merge);
    let mut order = Vec::with_capacity(lt * lh * lw);
    let mut lens = Vec::new();
    for t in 0..lt {
        for r0 in (0..lh).step_by(side) {
            for c0 in (0..lw).step_by(side) {
                let start = order.len();
                for r in r0..(r0 + side).min(lh) {
                    order.extend((c0..(c0 + side).min(lw)).map(|c| (t * lh + r) * lw + c));
                }
                lens.push(order.len() - start);
            }
        }
    }
    (order, lens)
}

/// The vision transformer and patch merger (weights `visual.*`) of either generation.
pub struct VisionModel {
    cfg: VisionConfig,
    /// The Conv3d kernel as `[embed_dim, patch_len]`.
    patch_embed: QMatrix,
    blocks: Vec<Block>,
    ln_q: Norm,
    merge_fc1: Linear,
    merge_fc2: Linear,
    /// head_dim/4 frequencies, shared by the row and the column halves.
    inv_freq: Vec<f32>,
}

impl std::fmt::Debug for VisionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionModel").field("cfg", &self.cfg).finish()
    }
}

impl VisionModel {
    /// Builds the encoder from the `visual.*` weights, checking every shape against `cfg`.
    pub fn load(src: &(impl CheckedWeights + ?Sized), cfg: VisionConfig) -> Result<Self, LoadError> {
        cfg.validate().map_err(|problem| LoadError::Invalid { path: src.origin().display().to_string(), problem })?;
        let matrix = |name: &str, n: usize, k: usize| src.checked_matrix(name, n, k);
        let vector = |name: &str, len: usize| src.checked_vector(name, len);
        let linear = |prefix: &str, n: usize, k: usize| Linear::load(src, prefix, n, k);
        let rms = matches!(cfg.arch, VisionArch::Qwen25Vl { .. });
        let norm = |prefix: &str, len: usize| -> Result<Norm, LoadError> {
            let w = vector(&format!("{prefix}.weight"), len)?;
            Ok(if rms { Norm::Rms { w } } else { Norm::Layer { w, b: vector(&format!("{prefix}.bias"), len)? } })
        };
        let (e, ffn) = (cfg.embed_dim, cfg.intermediate_size);
        let blocks = (0..cfg.depth)
            .map(|i| {
                let p = |s: &str| format!("visual.blocks.{i}.{s}");
                let mlp = match cfg.arch {
                    VisionArch::Qwen2Vl => Mlp::Plain { fc1: linear(&p("mlp.fc1"), ffn, e)?, fc2: linear(&p("mlp.fc2"), e, ffn)? },
                    VisionArch::Qwen25Vl { .. } => Mlp::Gated {
                        gate: linear(&p("mlp.gate_proj"), ffn, e)?,
                        up: linear(&p("mlp.up_proj"), ffn, e)?,
                        down: linear(&p("mlp.down_proj"), e, ffn)?,
                    },
                };
                Ok(Block {
                    norm1: norm(&p("norm1"), e)?,
                    qkv: linear(&p("attn.qkv"), 3 * e, e)?,
                    proj: linear(&p("attn.proj"), e, e)?,
                    norm2: norm(&p("norm2"), e)?,
                    mlp,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        let merged = e * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let rotary = cfg.head_dim() / 2;
        let inv_freq =
            (0..rotary / 2).map(|j| 1.0 / VISION_ROPE_THETA.powf((2 * j) as f32 / rotary as f32)).collect();
        Ok(Self {
            patch_embed: matrix("visual.patch_embed.proj.weight", e, cfg.patch_len())?,
            blocks,
            ln_q: norm("visual.merger.ln_q", e)?,
            merge_fc1: linear("visual.merger.mlp.0", merged, merged)?,
            merge_fc2: linear("visual.merger.mlp.2", cfg.hidden_size, merged)?,
            inv_freq,
            cfg,
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Bytes of weights held in memory.
    pub fn weights_size_in_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| b.mlp.linears().into_iter().chain([&b.qkv, &b.proj]).map(|l| l.w.size_in_bytes()).sum::<usize>())
            .sum();
        blocks + self.patch_embed.size_in_bytes() + self.merge_fc1.w.size_in_bytes() + self.merge_fc2.w.size_in_bytes()
    }

    /// The rows one image (or video) gives the language model: `[t·h·w / merge², hidden_size]`
    /// row-major, in the order of its pad tokens. `pixel_values` is `[t·h·w, patch_len]`.
    /// The whole of a [`VisionJob`] in one call.
    pub fn encode(&self, pixel_values: &[f32], grid_thw: [usize; 3]) -> Result<Vec<f32>, ForwardError> {
        Ok(encode_job::finish(Box::new(self.start(Cow::Borrowed(pixel_values), grid_thw)?)))
    }

    /// An encoding of one image (or video) to advance a bounded slice at a time
    /// ([`encode_job::EncodeJob`]); its output is [`encode`](Self::encode)'s. Checks the input here.
    pub fn start<'a>(&'a self, pixel_values: Cow<'a, [f32]>, grid_thw: [usize; 3]) -> Result<VisionJob<'a>, ForwardError> {
        VisionJob::new(self, pixel_values, grid_thw)
    }

    /// The processing order and attention spans of one image of a checked grid.
    fn layout(&self, grid_thw: [usize; 3]) -> Layout {
        let unit = self.cfg.spatial_merge_size * self.cfg.spatial_merge_size;
        let frame = grid_thw[1] * grid_thw[2];
        let frames = (0..grid_thw[0]).map(|t| t * frame..(t + 1) * frame).collect();
        let Some(side) = self.cfg.window_units() else { return Layout { order: None, frames, windows: Vec::new() } };
        let (order, lens) = window_order(grid_thw, self.cfg.spatial_merge_size, side);
        let mut start = 0;
        let windows = lens
            .iter()
            .map(|&len| {
                start += len * unit;
                start - len * unit..start
            })
            .collect();
        Layout { order: Some(order), frames, windows }
    }

    /// cos/sin of one frame's patches, `[h·w][head_dim/2]` in patch order: the first
    /// head_dim/4 angles are row · inv_freq, the rest column · inv_freq.
    fn rotary_tables(&self, gh: usize, gw: usize) -> (Vec<f32>, Vec<f32>) {
        let m = self.cfg.spatial_merge_size;
        let quarter = self.inv_freq.len();
        let mut cos = Vec::with_capacity(gh * gw * 2 * quarter);
        let mut sin = Vec::with_capacity(gh * gw * 2 * quarter);
        for idx in 0..gh * gw {
            // idx = ((block_row · (w/m) + block_col) · m + r) · m + c
            let (c, r, block) = (idx % m, (idx / m) % m, idx / (m * m));
            let (row, col) = ((block / (gw / m)) * m + r, (block % (gw / m)) * m + c);
            for pos in [row, col] {
                for &f in &self.inv_freq {
                    let (s, co) = (pos as f32 * f).sin_cos();
                    cos.push(co);
                    sin.push(s);
                }
            }
        }
        (cos, sin)
    }
}

/// Bidirectional attention of the query rows `rows` against the rows of their spans (frames
/// or windows; the spans tile all rows), all heads; returns `[rows.len(), e]`. Rows of q, k and
/// v are `e = heads · head_dim` wide, `[heads][head_dim]`, and k and v hold every row. A row's
/// result does not depend on which other rows are computed with it, so an encoder may attend
/// its rows in slices. Tasks are (span, head, chunk of query rows), in parallel on the current
/// pool. Shared with the audio encoder (one span).
pub(super) fn span_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [e, nh]: [usize; 2],
    spans: &[Range<usize>],
    rows: Range<usize>,
) -> Vec<f32> {
    const ROWS: usize = 32;
    let hd = e / nh;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut tasks = Vec::new();
    for span in spans {
        let (lo, hi) = (span.start.max(rows.start), span.end.min(rows.end));
        for head in 0..nh {
            tasks.extend((lo..hi).step_by(ROWS).map(|r| (span.clone(), head, r..(r + ROWS).min(hi))));
        }
    }
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|(span, head, chunk)| {
            let off = head * hd;
            let mut res = vec![0f32; chunk.len() * hd];
            let mut scores = vec![0f32; span.len()];
            for (ri, i) in chunk.clone().enumerate() {
                let qrow = &q[i * e + off..][..hd];
                for (s, j) in scores.iter_mut().zip(span.clone()) {
                    *s = ops::dot(qrow, &k[j * e + off..][..hd]) * scale;
                }
                ops::softmax(&mut scores);
                let o = &mut res[ri * hd..(ri + 1) * hd];
                for (&s, j) in scores.iter().zip(span.clone()) {
                    ops::axpy(o, s, &v[j * e + off..][..hd]);
                }
            }
            res
        })
        .collect();
    let mut out = vec![0f32; rows.len() * e];
    for ((_, head, chunk), res) in tasks.iter().zip(results) {
        for (ri, i) in chunk.clone().enumerate() {
            out[(i - rows.start) * e + head * hd..][..hd].copy_from_slice(&res[ri * hd..(ri + 1) * hd]);
        }
    }
    out
}

/// Halves-style rotation of every head of every row of `x` (`[rows][heads][head_dim]`); row
/// `r` uses table row `table_rows[r]`.
fn rotate_halves(x: &mut [f32], head_dim: usize, row_width: usize, table_rows: &[usize], cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (row, &tr) in x.chunks_exact_mut(row_width).zip(table_rows) {
        let t = tr * half;
        let (c, s) = (&cos[t..t + half], &sin[t..t + half]);
        for head in row.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * c[i] - x1 * s[i];
                b[i] = x1 * c[i] + x0 * s[i];
            }
        }
    }
}

fn bad_grid(grid: [usize; 3], problem: String) -> ForwardError {
    ForwardError::BadGrid { grid, problem }
}

/// A grid the encoder and the prompt layout can take: non-empty, rows and columns whole merge
/// groups.
pub(super) fn check_grid(grid: [usize; 3], merge: usize) -> Result<(), ForwardError> {
    if grid.contains(&0) {
        return Err(bad_grid(grid, "empty grid".into()));
    }
    if merge == 0 || !grid[1].is_multiple_of(merge) || !grid[2].is_multiple_of(merge) {
        return Err(bad_grid(grid, format!("height and width must be multiples of the spatial merge size {merge}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vision::MultimodalTokens;
    use crate::model::mrope::rope_index;

    const MM: MultimodalTokens =
        MultimodalTokens { image_token_id: 9, video_token_id: Some(8), vision_start_token_id: 6, vision_end_token_id: 7, spatial_merge_size: 2, tokens_per_second: None };

    #[test]
    fn rope_index_lays_out_images() {
        // text, start, 2×3 merged image, end, text
        let ids = [1, 6, 9, 9, 9, 9, 9, 9, 7, 2];
        let (pos, delta) = rope_index(&ids, &[[1, 4, 6]], &MM).expect("valid");
        let t: Vec<u32> = pos.iter().map(|p| p[0]).collect();
        let h: Vec<u32> = pos.iter().map(|p| p[1]).collect();
        let w: Vec<u32> = pos.iter().map(|p| p[2]).collect();
        assert_eq!(t, [0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(h, [0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(w, [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(delta, 7 - 10);
        // Text only: ordinary positions.
        assert_eq!(rope_index(&[1, 2, 3], &[], &MM).expect("text"), (vec![[0; 3], [1; 3], [2; 3]], 0));
    }

    #[test]
    fn windows_follow_get_window_index() {
        // A 3×3 merged grid in 2×2 windows: one whole window, two cut short, one single unit.
        let (order, lens) = window_order([1, 6, 6], 2, 2);
        assert_eq!(order, [0, 1, 3, 4, 2, 5, 6, 7, 8]);
        assert_eq!(lens, [4, 2, 2, 1]);
        // Frames are windowed separately; a grid that is a multiple has only whole windows.
        let (order, lens) = window_order([2, 4, 4], 2, 2);
        assert_eq!(order, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(lens, [4, 4]);
        let (order, lens) = window_order([1, 4, 8], 2, 2);
        assert_eq!(order, [0, 1, 4, 5, 2, 3, 6, 7]);
        assert_eq!(lens, [4, 4]);
    }

    #[test]
    fn rope_index_rejects_mismatches() {
        let ids = [1, 6, 9, 9, 9, 9, 7];
        for (grids, what) in [
            (vec![], "only 0 image grid"),
            (vec![[1, 4, 6]], "needs 6 tokens"),
            (vec![[1, 4, 4], [1, 2, 2]], "2 image grid(s) given"),
        ] {
            let err = rope_index(&ids, &grids, &MM).expect_err(what);
            assert!(err.to_string().contains(what), "{err} should contain {what}");
        }
        assert!(matches!(rope_index(&ids, &[[1, 3, 4]], &MM), Err(ForwardError::BadGrid { .. })));
        assert!(matches!(rope_index(&ids, &[[0, 4, 4]], &MM), Err(ForwardError::BadGrid { .. })));
        assert!(matches!(rope_index(&[1, 8, 2], &[], &MM), Err(ForwardError::ImageTokens { .. })));
    }
}
