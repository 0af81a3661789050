//! Per-sequence key/value cache, owned by whoever schedules sequences (not by the model).
//!
//! This is our own code rather than candle's `KvCache`: the model is called with a batch of
//! independent sequences at different positions, each bringing its own cache, and a
//! sequence's cache can be truncated (to drop a rejected continuation) or reused for a new
//! request without reallocating.
//!
//! Layout per layer: `[position][kv_head][head_dim]`, f32, contiguous. Invariant: every
//! layer holds exactly `len` positions once a forward pass has returned.

use crate::config::ModelConfig;

#[derive(Debug, Clone)]
pub struct SeqCache {
    kv_dim: usize,
    len: usize,
    /// Per layer: keys, then values, each `capacity * kv_dim` long.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl SeqCache {
    pub fn new(cfg: &ModelConfig) -> Self {
        let layers = cfg.num_layers();
        Self { kv_dim: cfg.kv_dim(), len: 0, keys: vec![Vec::new(); layers], values: vec![Vec::new(); layers] }
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
        self.keys.iter().chain(self.values.iter()).map(|b| b.capacity() * 4).sum()
    }

    /// Bytes one cached position takes over all layers (keys and values, f32).
    pub fn bytes_per_position(cfg: &ModelConfig) -> usize {
        cfg.num_layers() * cfg.kv_dim() * 2 * std::mem::size_of::<f32>()
    }

    /// Makes room for `positions` positions in all, so appending up to there never
    /// reallocates (a scheduler reserves a sequence's whole budget at admission).
    pub fn reserve_positions(&mut self, positions: usize) {
        let want = positions * self.kv_dim;
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.reserve_exact(want.saturating_sub(buf.len()));
        }
    }

    /// Returns memory beyond the cached positions (for caches kept only for their prefix).
    pub fn shrink_to_fit(&mut self) {
        for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
            buf.shrink_to_fit();
        }
    }

    /// Appends `k`/`v` rows (each `n * kv_dim`) to `layer`. The model calls this for every
    /// layer in order, then [`SeqCache::commit`].
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(self.keys[layer].len(), self.len * self.kv_dim, "layer appended twice");
        self.keys[layer].extend_from_slice(k);
        self.values[layer].extend_from_slice(v);
    }

    /// Keys and values of `layer` for positions `0..upto`.
    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    /// Marks `n` appended positions as part of the sequence.
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.keys.iter().all(|k| k.len() == self.len * self.kv_dim));
    }
}
