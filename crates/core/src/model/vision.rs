//! Qwen2-VL's vision encoder, and the prompt bookkeeping that places its output.
//!
//! An image reaches the model as `pixel_values` (made by the image processor, not here): one
//! row of `in_channels · temporal_patch_size · patch_size²` values (1176 for Qwen2-VL) per
//! patch, ordered (channel, frame, pixel row, pixel column), and the patches ordered
//! (frame, h/merge block, w/merge block, row inside the merge×merge group, column inside it).
//! `grid_thw` gives the patch grid (frames, rows, columns). [`VisionModel::encode`] runs:
//!
//! 1. patch embedding, a Conv3d whose kernel equals its stride, i.e. one matmul of each patch
//!    row with the kernel flattened to `[embed_dim, patch_len]` (no bias);
//! 2. `depth` pre-norm ViT blocks: LayerNorm → qkv → attention → proj, residual; LayerNorm →
//!    fc1 → quick_gelu → fc2, residual. Attention is bidirectional within each frame (a video's
//!    frames do not see each other) and rotates q/k with a 2-D RoPE: of each head's
//!    head_dim/2 frequency pairs (Halves style), the first half turn with the patch's row, the
//!    second with its column (base 10000), as transformers' `VisionRotaryEmbedding`;
//! 3. the merger: LayerNorm `ln_q`, then each merge² consecutive rows (one merge group, thanks
//!    to the patch order above) concatenated into one row, Linear → exact GELU → Linear to the
//!    language model's width. So one image gives `t·h·w / merge²` rows, one per `<|image_pad|>`.
//!
//! Those rows replace the image pad tokens' embeddings in the language model
//! ([`super::Embeds`]), whose M-RoPE positions [`rope_index`] computes: text tokens advance all
//! three axes together; an image's tokens take (t, row, column) over its merged grid, offset by
//! the position it starts at; text after it resumes at the largest position so far plus one.
//! Decoding continues at `cache position + rope_delta` on every axis.
//!
//! Invariants: weights are held unquantized ([`WeightSource::matrix_unquantized`]); every shape
//! is checked at load, every input at `encode`, so neither panics on bad data.

use rayon::prelude::*;

use super::{ops, ForwardError};
use crate::kernels::QMatrix;
use crate::weights::{expect_shape, expect_vector, LoadError, WeightSource};

/// RoPE base of the vision encoder (fixed in Qwen2-VL, not in its config).
const VISION_ROPE_THETA: f32 = 10_000.0;
/// LayerNorm epsilon of every vision norm (fixed in Qwen2-VL).
const LN_EPS: f32 = 1e-6;

/// The vision MLP's activation (`vision_config.hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionActivation {
    /// `x · sigmoid(1.702 x)`, Qwen2-VL's.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
}

impl VisionActivation {
    /// transformers' `ACT2FN` names.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "quick_gelu" => Self::QuickGelu,
            "gelu" => Self::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Self::GeluTanh,
            _ => return None,
        })
    }

    fn apply(self, x: &mut [f32]) {
        let f: fn(f32) -> f32 = match self {
            Self::QuickGelu => ops::quick_gelu,
            Self::Gelu => ops::gelu_erf,
            Self::GeluTanh => ops::gelu_tanh,
        };
        x.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// `vision_config` of a Qwen2-VL checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    /// fc1 width = `embed_dim · mlp_ratio` (truncated, as transformers' `int()`).
    pub mlp_ratio: f64,
    pub hidden_act: VisionActivation,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub in_channels: usize,
    /// The merger's output width: the language model's hidden size.
    pub hidden_size: usize,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }

    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Values per row of `pixel_values`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Checks what the encoder relies on; the message names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("depth", self.depth),
            ("embed_dim", self.embed_dim),
            ("num_heads", self.num_heads),
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("mlp width (embed_dim * mlp_ratio)", self.mlp_hidden()),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!("embed_dim ({}) must be a multiple of num_heads ({})", self.embed_dim, self.num_heads));
        }
        // Two rotary halves (rows, columns), each a whole number of frequency pairs.
        if !self.head_dim().is_multiple_of(4) {
            return Err(format!("head dim {} must be a multiple of 4 for the 2-D rotary embedding", self.head_dim()));
        }
        Ok(())
    }
}

/// Special token ids of a multimodal prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultimodalTokens {
    /// `<|image_pad|>`: one per merged image patch, replaced by the encoder's rows.
    pub image_token_id: u32,
    pub video_token_id: Option<u32>,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub spatial_merge_size: usize,
}

impl MultimodalTokens {
    /// How many image pad tokens an image of patch grid `grid_thw` takes in the prompt.
    pub fn image_tokens(&self, grid_thw: [usize; 3]) -> usize {
        let m2 = (self.spatial_merge_size * self.spatial_merge_size).max(1);
        grid_thw[0] * grid_thw[1] * grid_thw[2] / m2
    }
}

/// A linear layer with bias.
struct Linear {
    w: QMatrix,
    b: Vec<f32>,
}

impl Linear {
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.w.n()];
        self.w.matmul(x, m, &mut y);
        ops::add_bias(&mut y, &self.b);
        y
    }
}

struct LayerNorm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl LayerNorm {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        ops::layer_norm(&mut y, &self.w, &self.b, LN_EPS);
        y
    }
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Qwen2-VL's vision transformer and patch merger (weights `visual.*`).
pub struct VisionModel {
    cfg: VisionConfig,
    /// The Conv3d kernel as `[embed_dim, patch_len]`.
    patch_embed: QMatrix,
    blocks: Vec<Block>,
    ln_q: LayerNorm,
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
    pub fn load(src: &dyn WeightSource, cfg: VisionConfig) -> Result<Self, LoadError> {
        cfg.validate().map_err(|problem| LoadError::Invalid { path: src.path().display().to_string(), problem })?;
        let matrix = |name: &str, n: usize, k: usize| expect_shape(src, name, src.matrix_unquantized(name)?, n, k);
        let vector = |name: &str, len: usize| expect_vector(src, name, len);
        let linear = |prefix: &str, n: usize, k: usize| -> Result<Linear, LoadError> {
            Ok(Linear { w: matrix(&format!("{prefix}.weight"), n, k)?, b: vector(&format!("{prefix}.bias"), n)? })
        };
        let norm = |prefix: &str, len: usize| -> Result<LayerNorm, LoadError> {
            Ok(LayerNorm { w: vector(&format!("{prefix}.weight"), len)?, b: vector(&format!("{prefix}.bias"), len)? })
        };
        let (e, ffn) = (cfg.embed_dim, cfg.mlp_hidden());
        let blocks = (0..cfg.depth)
            .map(|i| {
                let p = |s: &str| format!("visual.blocks.{i}.{s}");
                Ok(Block {
                    norm1: norm(&p("norm1"), e)?,
                    qkv: linear(&p("attn.qkv"), 3 * e, e)?,
                    proj: linear(&p("attn.proj"), e, e)?,
                    norm2: norm(&p("norm2"), e)?,
                    fc1: linear(&p("mlp.fc1"), ffn, e)?,
                    fc2: linear(&p("mlp.fc2"), e, ffn)?,
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
            .map(|b| [&b.qkv, &b.proj, &b.fc1, &b.fc2].iter().map(|l| l.w.size_in_bytes()).sum::<usize>())
            .sum();
        blocks + self.patch_embed.size_in_bytes() + self.merge_fc1.w.size_in_bytes() + self.merge_fc2.w.size_in_bytes()
    }

    /// The rows one image (or video) gives the language model: `[t·h·w / merge², hidden_size]`
    /// row-major, in the order of its pad tokens. `pixel_values` is `[t·h·w, patch_len]`.
    pub fn encode(&self, pixel_values: &[f32], grid_thw: [usize; 3]) -> Result<Vec<f32>, ForwardError> {
        let cfg = &self.cfg;
        let m = cfg.spatial_merge_size;
        check_grid(grid_thw, m)?;
        let [gt, gh, gw] = grid_thw;
        let frame = gh * gw;
        let n = gt.checked_mul(frame).ok_or_else(|| bad_grid(grid_thw, "too many patches".into()))?;
        let expected = n.checked_mul(cfg.patch_len()).ok_or_else(|| bad_grid(grid_thw, "too many patches".into()))?;
        if pixel_values.len() != expected {
            return Err(ForwardError::PixelValuesLength { got: pixel_values.len(), expected });
        }
        let e = cfg.embed_dim;
        let mut x = vec![0f32; n * e];
        self.patch_embed.matmul(pixel_values, n, &mut x);
        let (cos, sin) = self.rotary_tables(gh, gw);

        let mut q = vec![0f32; n * e];
        let mut k = vec![0f32; n * e];
        let mut v = vec![0f32; n * e];
        for block in &self.blocks {
            let h = block.norm1.forward(&x);
            let qkv = block.qkv.forward(&h, n);
            // qkv rows are (q | k | v), each `[heads][head_dim]`.
            for (r, row) in qkv.chunks_exact(3 * e).enumerate() {
                q[r * e..(r + 1) * e].copy_from_slice(&row[..e]);
                k[r * e..(r + 1) * e].copy_from_slice(&row[e..2 * e]);
                v[r * e..(r + 1) * e].copy_from_slice(&row[2 * e..]);
            }
            let hd = cfg.head_dim();
            rotate_halves(&mut q, hd, e, frame, &cos, &sin);
            rotate_halves(&mut k, hd, e, frame, &cos, &sin);
            let attn = self.attention(&q, &k, &v, n, frame);
            let out = block.proj.forward(&attn, n);
            x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);

            let h = block.norm2.forward(&x);
            let mut mid = block.fc1.forward(&h, n);
            cfg.hidden_act.apply(&mut mid);
            let out = block.fc2.forward(&mid, n);
            x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
        }

        // Merge groups are consecutive rows, so `[n, e]` read as `[n/m², m²·e]` is the merge.
        let merged = self.ln_q.forward(&x);
        let groups = n / (m * m);
        let mut mid = self.merge_fc1.forward(&merged, groups);
        mid.iter_mut().for_each(|v| *v = ops::gelu_erf(*v));
        Ok(self.merge_fc2.forward(&mid, groups))
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

    /// Bidirectional attention of every patch against the patches of its own frame, all
    /// heads. Tasks are (frame, head, chunk of query rows), in parallel on the current pool.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], n: usize, frame: usize) -> Vec<f32> {
        const ROWS: usize = 32;
        let (e, nh, hd) = (self.cfg.embed_dim, self.cfg.num_heads, self.cfg.head_dim());
        let scale = 1.0 / (hd as f32).sqrt();
        let mut tasks = Vec::new();
        for f0 in (0..n).step_by(frame) {
            for head in 0..nh {
                tasks.extend((f0..f0 + frame).step_by(ROWS).map(|r| (f0, head, r..(r + ROWS).min(f0 + frame))));
            }
        }
        let results: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|(f0, head, rows)| {
                let off = head * hd;
                let mut res = vec![0f32; rows.len() * hd];
                let mut scores = vec![0f32; frame];
                for (ri, i) in rows.clone().enumerate() {
                    let qrow = &q[i * e + off..][..hd];
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s = ops::dot(qrow, &k[(f0 + j) * e + off..][..hd]) * scale;
                    }
                    ops::softmax(&mut scores);
                    let o = &mut res[ri * hd..(ri + 1) * hd];
                    for (j, &s) in scores.iter().enumerate() {
                        ops::axpy(o, s, &v[(f0 + j) * e + off..][..hd]);
                    }
                }
                res
            })
            .collect();
        let mut out = vec![0f32; n * e];
        for ((_, head, rows), res) in tasks.iter().zip(results) {
            for (ri, i) in rows.clone().enumerate() {
                out[i * e + head * hd..][..hd].copy_from_slice(&res[ri * hd..(ri + 1) * hd]);
            }
        }
        out
    }
}

/// Halves-style rotation of every head of every row of `x` (`[rows][heads][head_dim]`); row
/// `r` uses table row `r % frame` (each frame has the same patch layout).
fn rotate_halves(x: &mut [f32], head_dim: usize, row_width: usize, frame: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for (r, row) in x.chunks_exact_mut(row_width).enumerate() {
        let t = (r % frame) * half;
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
fn check_grid(grid: [usize; 3], merge: usize) -> Result<(), ForwardError> {
    if grid.contains(&0) {
        return Err(bad_grid(grid, "empty grid".into()));
    }
    if merge == 0 || !grid[1].is_multiple_of(merge) || !grid[2].is_multiple_of(merge) {
        return Err(bad_grid(grid, format!("height and width must be multiples of the spatial merge size {merge}")));
    }
    Ok(())
}

/// M-RoPE position ids (t, h, w) of a prompt with images, and its rope delta, as transformers'
/// Qwen2-VL `get_rope_index` computes them for images.
///
/// Each maximal run of `image_token_id` holds the images of `image_grids`, in order, each
/// `t·h·w / merge²` tokens; text tokens take `p` on every axis, where `p` is one past the
/// largest position so far; an image starting at `p` gives its token (t, row, col) of the
/// merged grid the positions `(p + t, p + row, p + col)`. The delta is `max position + 1 -
/// ids.len()`: a token appended at cache position `i` takes `i + delta` on every axis.
///
/// Errors (never panics) when the image tokens and the grids do not match, a grid is not whole
/// merge groups, or the prompt has video tokens (not handled here).
pub fn rope_index(ids: &[u32], image_grids: &[[usize; 3]], mm: &MultimodalTokens) -> Result<(Vec<[u32; 3]>, i64), ForwardError> {
    let m = mm.spatial_merge_size;
    let mismatch = |problem: String| ForwardError::ImageTokens { problem };
    let mut out = Vec::with_capacity(ids.len());
    let mut grids = image_grids.iter().enumerate();
    // One past the largest position given so far.
    let mut next: u64 = 0;
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        if Some(id) == mm.video_token_id {
            return Err(mismatch(format!("video token {id} at {i}: videos are not supported here")));
        }
        if id != mm.image_token_id {
            out.push([position(next)?; 3]);
            next += 1;
            i += 1;
            continue;
        }
        let run = ids[i..].iter().take_while(|&&x| x == mm.image_token_id).count();
        let Some((n, &grid)) = grids.next() else {
            return Err(mismatch(format!(
                "image tokens at {i} but only {} image grid(s) given",
                image_grids.len()
            )));
        };
        check_grid(grid, m)?;
        let (lt, lh, lw) = (grid[0], grid[1] / m, grid[2] / m);
        let count = lt.checked_mul(lh).and_then(|x| x.checked_mul(lw)).filter(|&c| c <= run).ok_or_else(|| {
            mismatch(format!("image {n} (grid {grid:?}) needs {} tokens, the prompt has {run} at {i}", mm.image_tokens(grid)))
        })?;
        for t in 0..lt {
            for r in 0..lh {
                for c in 0..lw {
                    out.push([position(next + t as u64)?, position(next + r as u64)?, position(next + c as u64)?]);
                }
            }
        }
        next += lt.max(lh).max(lw) as u64;
        i += count;
    }
    if let Some((n, _)) = grids.next() {
        return Err(mismatch(format!("{} image grid(s) given, the prompt has image tokens for {n}", image_grids.len())));
    }
    Ok((out, next as i64 - ids.len() as i64))
}

fn position(p: u64) -> Result<u32, ForwardError> {
    u32::try_from(p).map_err(|_| ForwardError::ImageTokens { problem: format!("position {p} does not fit in u32") })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MM: MultimodalTokens =
        MultimodalTokens { image_token_id: 9, video_token_id: Some(8), vision_start_token_id: 6, vision_end_token_id: 7, spatial_merge_size: 2 };

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
