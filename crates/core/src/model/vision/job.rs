//! The vision encoder as an [`EncodeJob`]: the stages of [`VisionModel::encode`] (see the
//! parent module) one bounded slice at a time. Images and videos share it (a video is a grid
//! of several frames).
//!
//! Stages, each over rows in order: the patch embedding (then the window reordering, a copy);
//! per block, norm1 → qkv → rotation of q and k (the keys and values every row's attention
//! needs), then attention → proj, residual, norm2 → MLP, residual; the merger per merge unit
//! (then the inverse reordering). Per-row costs in multiply-adds come from the shapes.

use std::borrow::Cow;

use super::{check_grid, ops, rotate_halves, span_attention, Layout, VisionModel};
use crate::model::encode_job::{self, Budget, EncodeJob, Rows, Slice, Stages};
use crate::model::ForwardError;

/// Where a [`VisionJob`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Embed,
    /// Block `i`'s keys, queries and values.
    Qkv(usize),
    /// Block `i`'s attention and MLP.
    Mix(usize),
    Merge,
}

/// One image's (or video's) encoding in progress; made by [`VisionModel::start`].
pub struct VisionJob<'a> {
    model: &'a VisionModel,
    /// The input rows, dropped after the patch embedding.
    pixels: Cow<'a, [f32]>,
    n: usize,
    layout: Layout,
    /// Row r of the blocks is patch `table_rows[r]` of its frame, whose angles it keeps.
    table_rows: Vec<usize>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// The hidden states `[n, embed_dim]`, in processing order after the embedding.
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The merger's rows `[n / merge², hidden_size]`, in processing order.
    out: Vec<f32>,
    stage: Stage,
    rows: Rows,
}

impl<'a> VisionJob<'a> {
    pub(super) fn new(model: &'a VisionModel, pixels: Cow<'a, [f32]>, grid_thw: [usize; 3]) -> Result<Self, ForwardError> {
        let cfg = &model.cfg;
        let m = cfg.spatial_merge_size;
        let unit = m * m;
        check_grid(grid_thw, m)?;
        let [gt, gh, gw] = grid_thw;
        let frame = gh * gw;
        let too_many = || ForwardError::BadGrid { grid: grid_thw, problem: "too many patches".into() };
        let n = gt.checked_mul(frame).ok_or_else(too_many)?;
        let expected = n.checked_mul(cfg.patch_len()).ok_or_else(too_many)?;
        if pixels.len() != expected {
            return Err(ForwardError::PixelValuesLength { got: pixels.len(), expected });
        }
        let layout = model.layout(grid_thw);
        let table_rows: Vec<usize> = match &layout.order {
            None => (0..n).map(|r| r % frame).collect(),
            Some(order) => order.iter().flat_map(|&u| (u * unit..(u + 1) * unit).map(|p| p % frame)).collect(),
        };
        let (cos, sin) = model.rotary_tables(gh, gw);
        let e = cfg.embed_dim;
        Ok(Self {
            model,
            pixels,
            n,
            layout,
            table_rows,
            cos,
            sin,
            x: vec![0f32; n * e],
            q: vec![0f32; n * e],
            k: vec![0f32; n * e],
            v: vec![0f32; n * e],
            out: vec![0f32; n / unit * cfg.hidden_size],
            stage: Stage::Embed,
            rows: Rows::new(n),
        })
    }

    fn spans(&self, block: usize) -> &[std::ops::Range<usize>] {
        if self.model.cfg.full_attention(block) {
            &self.layout.frames
        } else {
            &self.layout.windows
        }
    }

    /// Puts the embedded rows in processing order (window by window).
    fn reorder(&mut self) {
        let Some(order) = &self.layout.order else { return };
        let width = self.model.cfg.spatial_merge_size.pow(2) * self.model.cfg.embed_dim;
        let mut permuted = vec![0f32; self.x.len()];
        for (dst, &src) in permuted.chunks_exact_mut(width).zip(order) {
            dst.copy_from_slice(&self.x[src * width..(src + 1) * width]);
        }
        self.x = permuted;
    }
}

impl Stages for VisionJob<'_> {
    /// Multiply-adds of one row of the current stage (one merge unit for the merger).
    fn row_cost(&self) -> u64 {
        let cfg = &self.model.cfg;
        let (e, ffn) = (cfg.embed_dim as u64, cfg.intermediate_size as u64);
        let merged = (cfg.spatial_merge_size * cfg.spatial_merge_size) as u64 * e;
        match self.stage {
            Stage::Embed => cfg.patch_len() as u64 * e,
            Stage::Qkv(_) => 3 * e * e,
            Stage::Mix(i) => {
                let span = self.spans(i).iter().map(|s| s.len()).max().unwrap_or(0) as u64;
                let mlp = self.model.blocks[i].mlp.linears().len() as u64 * e * ffn;
                e * e + mlp + 2 * span * e
            }
            Stage::Merge => merged * merged + merged * cfg.hidden_size as u64,
        }
    }

    fn rows(&mut self) -> &mut Rows {
        &mut self.rows
    }

    /// Runs `chunk` of the current stage's rows.
    fn run(&mut self, chunk: std::ops::Range<usize>) {
        let cfg = &self.model.cfg;
        let e = cfg.embed_dim;
        let rows = chunk.len();
        let block = |i: usize| &self.model.blocks[i];
        match self.stage {
            Stage::Embed => {
                let pl = cfg.patch_len();
                let input = &self.pixels[chunk.start * pl..chunk.end * pl];
                self.model.patch_embed.matmul(input, rows, &mut self.x[chunk.start * e..chunk.end * e]);
            }
            Stage::Qkv(i) => {
                let h = block(i).norm1.forward(&self.x[chunk.start * e..chunk.end * e]);
                let qkv = block(i).qkv.forward(&h, rows);
                // qkv rows are (q | k | v), each `[heads][head_dim]`.
                for (r, row) in chunk.clone().zip(qkv.chunks_exact(3 * e)) {
                    self.q[r * e..(r + 1) * e].copy_from_slice(&row[..e]);
                    self.k[r * e..(r + 1) * e].copy_from_slice(&row[e..2 * e]);
                    self.v[r * e..(r + 1) * e].copy_from_slice(&row[2 * e..]);
                }
                let (hd, table) = (cfg.head_dim(), &self.table_rows[chunk.clone()]);
                let range = chunk.start * e..chunk.end * e;
                rotate_halves(&mut self.q[range.clone()], hd, e, table, &self.cos, &self.sin);
                rotate_halves(&mut self.k[range], hd, e, table, &self.cos, &self.sin);
            }
            Stage::Mix(i) => {
                let attn = span_attention(&self.q, &self.k, &self.v, [e, cfg.num_heads], self.spans(i), chunk.clone());
                let x = &mut self.x[chunk.start * e..chunk.end * e];
                let out = block(i).proj.forward(&attn, rows);
                x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
                let h = block(i).norm2.forward(x);
                let out = block(i).mlp.forward(&h, rows, cfg.hidden_act);
                x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
            }
            Stage::Merge => {
                // Merge units are consecutive rows, so `[n, e]` read as `[n/m², m²·e]` is the merge.
                let unit = cfg.spatial_merge_size * cfg.spatial_merge_size;
                let merged = self.model.ln_q.forward(&self.x[chunk.start * unit * e..chunk.end * unit * e]);
                let mut mid = self.model.merge_fc1.forward(&merged, rows);
                mid.iter_mut().for_each(|v| *v = ops::gelu_erf(*v));
                let hs = cfg.hidden_size;
                self.out[chunk.start * hs..chunk.end * hs].copy_from_slice(&self.model.merge_fc2.forward(&mid, rows));
            }
        }
    }

    /// Moves to the stage after a finished one.
    fn next_stage(&mut self) -> bool {
        let depth = self.model.blocks.len();
        let unit = self.model.cfg.spatial_merge_size * self.model.cfg.spatial_merge_size;
        self.stage = match self.stage {
            Stage::Embed => {
                self.pixels = Cow::Borrowed(&[]);
                self.reorder();
                Stage::Qkv(0)
            }
            Stage::Qkv(i) => Stage::Mix(i),
            Stage::Mix(i) if i + 1 < depth => Stage::Qkv(i + 1),
            Stage::Mix(_) => Stage::Merge,
            Stage::Merge => return false,
        };
        self.rows = Rows::new(if self.stage == Stage::Merge { self.n / unit } else { self.n });
        true
    }

    /// The merger's rows back in pad-token order.
    fn output(self: Box<Self>) -> Vec<f32> {
        let job = *self;
        let Some(order) = job.layout.order else { return job.out };
        let hs = job.model.cfg.hidden_size;
        let mut restored = vec![0f32; job.out.len()];
        for (row, &u) in job.out.chunks_exact(hs).zip(&order) {
            restored[u * hs..(u + 1) * hs].copy_from_slice(row);
        }
        restored
    }
}

impl<'a> EncodeJob<'a> for VisionJob<'a> {
    fn advance(self: Box<Self>, budget: &mut Budget) -> Slice<'a> {
        encode_job::advance(self, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vision::{VisionActivation, VisionArch, VisionConfig};
    use crate::weights::random::RandomWeights;

    fn tower(arch: VisionArch) -> VisionModel {
        let cfg = VisionConfig {
            arch,
            depth: 3,
            embed_dim: 32,
            num_heads: 4,
            intermediate_size: 48,
            hidden_act: VisionActivation::QuickGelu,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            in_channels: 3,
            hidden_size: 24,
        };
        VisionModel::load(&RandomWeights { seed: 3 }, cfg).expect("random tower")
    }

    /// Deterministic pixel rows for a grid.
    fn pixels(model: &VisionModel, grid: [usize; 3]) -> Vec<f32> {
        let len = grid.iter().product::<usize>() * model.cfg.patch_len();
        (0..len).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
    }

    #[test]
    fn slices_give_the_one_shot_rows_bit_for_bit() {
        let windowed = VisionArch::Qwen25Vl { window_size: 56, fullatt_block_indexes: vec![1] };
        // An image, a 4-frame video, and a grid whose windows are cut short at the edges.
        for (arch, grid) in [(VisionArch::Qwen2Vl, [1, 6, 8]), (VisionArch::Qwen2Vl, [2, 4, 4]), (windowed.clone(), [1, 6, 10]), (windowed, [2, 8, 4])] {
            let model = tower(arch);
            let input = pixels(&model, grid);
            let whole = model.encode(&input, grid).expect("one shot");
            assert_eq!(whole.len(), grid.iter().product::<usize>() / 4 * 24);
            // One row per slice, a few rows, and everything at once.
            for macs in [0, 20_000, u64::MAX] {
                let job = Box::new(model.start(Cow::Borrowed(&input), grid).expect("valid"));
                let (rows, slices) = encode_job::in_slices(job, macs);
                assert!(rows == whole, "grid {grid:?}, {macs} MACs per slice: the rows differ");
                if macs == 0 {
                    // Every row of every stage alone: embed + 3 blocks × 2 stages + merge.
                    let n = grid.iter().product::<usize>();
                    assert_eq!(slices, n * 7 + n / 4);
                }
            }
        }
    }

    #[test]
    fn bad_input_is_refused_at_the_start() {
        let model = tower(VisionArch::Qwen2Vl);
        assert!(matches!(model.start(Cow::Owned(vec![0.0; 5]), [1, 2, 2]), Err(ForwardError::PixelValuesLength { .. })));
        assert!(matches!(model.start(Cow::Owned(Vec::new()), [1, 3, 2]), Err(ForwardError::BadGrid { .. })));
    }
}
