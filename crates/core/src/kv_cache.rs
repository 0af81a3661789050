//! Per-sequence key/value cache, owned by whoever schedules sequences (not by the model).
//!
//! This is our own code rather than candle's `KvCache`: the model is called with a batch of
//! independent sequences at different positions, each bringing its own cache, and a
//! sequence's cache can be truncated (to drop a rejected continuation) or reused for a new
//! request without reallocating.
//!
//! Layout per layer: `[position][kv_head][head_dim]`, contiguous, in the model's [`KvType`].
//! Invariant: every layer holds exactly `len` positions once a forward pass has returned.
//!
//! f16 is the default, as llama.cpp keeps its cache: half the memory of f32, so twice the
//! sequences fit a `--kv-cache-mb` budget, and half the bytes attention streams per step.
//! Keys and values are rounded to nearest once, when appended; attention reads the f16 rows
//! directly (`model::ops_f16`). f32 stays for exactness: the tiny-model tests compare logits
//! with transformers' f32 cache to 1e-3, which f16 rounding (up to ~6e-2 there) cannot meet.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::config::{KvType, ModelConfig};

/// One layer's keys or values, in the cache's element type.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Rows {
    fn new(kind: KvType) -> Self {
        match kind {
            KvType::F16 => Rows::F16(Vec::new()),
            KvType::F32 => Rows::F32(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::F16(v) => v.len(),
            Rows::F32(v) => v.len(),
        }
    }

    fn capacity_bytes(&self) -> usize {
        match self {
            Rows::F16(v) => v.capacity() * std::mem::size_of::<f16>(),
            Rows::F32(v) => v.capacity() * std::mem::size_of::<f32>(),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.truncate(n),
            Rows::F32(v) => v.truncate(n),
        }
    }

    fn reserve_total(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.reserve_exact(n.saturating_sub(v.len())),
            Rows::F32(v) => v.reserve_exact(n.saturating_sub(v.len())),
        }
    }

    fn shrink_to_fit(&mut self) {
        match self {
            Rows::F16(v) => v.shrink_to_fit(),
            Rows::F32(v) => v.shrink_to_fit(),
        }
    }

    fn extend(&mut self, rows: &[f32]) {
        match self {
            Rows::F16(v) => {
                let at = v.len();
                v.resize(at + rows.len(), f16::ZERO);
                // half converts with F16C when the CPU has it (round to nearest even either way).
                v[at..].convert_from_f32_slice(rows);
            }
            Rows::F32(v) => v.extend_from_slice(rows),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SeqCache {
    kv_dim: usize,
    len: usize,
    /// Per layer: keys, then values, each `capacity * kv_dim` long.
    keys: Vec<Rows>,
    values: Vec<Rows>,
}

impl SeqCache {
    /// An empty cache holding keys and values as `cfg.kv_type`.
    pub fn new(cfg: &ModelConfig) -> Self {
        let layers = cfg.num_layers();
        let empty = || (0..layers).map(|_| Rows::new(cfg.kv_type)).collect();
        Self { kv_dim: cfg.kv_dim(), len: 0, keys: empty(), values: empty() }
    }

    /// Positions cached so far (the position the next token will take).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything after the first `len` positions (no-op when already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.truncate(self.len * self.kv_dim);
        }
    }

    /// Empties the cache, keeping its memory for reuse.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Bytes held (allocated capacity).
    pub fn size_in_bytes(&self) -> usize {
        self.keys.iter().chain(self.values.iter()).map(Rows::capacity_bytes).sum()
    }

    /// Bytes one cached position takes over all layers (keys and values, in `cfg.kv_type`).
    pub fn bytes_per_position(cfg: &ModelConfig) -> usize {
        cfg.num_layers() * cfg.kv_dim() * 2 * cfg.kv_type.bytes()
    }

    /// Makes room for `positions` positions in all, so appending up to there never
    /// reallocates (a scheduler reserves a sequence's whole budget at admission).
    pub fn reserve_positions(&mut self, positions: usize) {
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.reserve_total(positions * self.kv_dim);
        }
    }

    /// Returns memory beyond the cached positions (for caches kept only for their prefix).
    pub fn shrink_to_fit(&mut self) {
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.shrink_to_fit();
        }
    }

    /// Appends `k`/`v` rows (each `n * kv_dim`) to `layer`, rounded to the cache's type. The
    /// model calls this for every layer in order, then [`SeqCache::commit`].
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(self.keys[layer].len(), self.len * self.kv_dim, "layer appended twice");
        self.keys[layer].extend(k);
        self.values[layer].extend(v);
    }

    /// Keys and values of `layer`, all cached (and just appended) positions.
    pub(crate) fn layer(&self, layer: usize) -> (&Rows, &Rows) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Marks `n` appended positions as part of the sequence.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.keys.iter().all(|k| k.len() == self.len * self.kv_dim));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rows_round_once_and_take_half_the_bytes() {
        let mut rows = Rows::new(KvType::F16);
        rows.extend(&[1.0, 0.1, -65504.0]);
        let Rows::F16(v) = &rows else { panic!("f16 rows expected") };
        assert_eq!(v.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), [1.0, f16::from_f32(0.1).to_f32(), -65504.0]);
        rows.reserve_total(100);
        let mut wide = Rows::new(KvType::F32);
        wide.reserve_total(100);
        assert!(rows.capacity_bytes() >= 200 && wide.capacity_bytes() >= 400);
        assert_eq!(rows.capacity_bytes() * 2, wide.capacity_bytes());
    }
}
