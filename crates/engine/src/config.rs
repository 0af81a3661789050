//! Engine-wide settings, given once at [`crate::start`].

use crate::GenParams;

/// [`EngineConfig::lookup`]'s default.
pub const DEFAULT_LOOKUP: usize = 4;
/// Largest [`EngineConfig::lookup`]: a draft adds its tokens to the step's batch, and a run
/// of accepted tokens is streamed at once.
pub const MAX_LOOKUP: usize = 64;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads for the model's kernels (0 = one per core).
    pub threads: usize,
    /// Sequences decoded together; further requests wait in the queue.
    pub max_seqs: usize,
    /// Requests waiting for a place in the batch beyond which new ones are refused
    /// ([`crate::EngineError::Overloaded`]).
    pub max_queue: usize,
    /// Refuse a new request at once ([`crate::EngineError::QueueWait`]) when its expected
    /// wait for a batch slot is over this (see `queue_wait`'s estimator). `None`: wait
    /// however long it takes (batch inference queues everything at once).
    pub max_queue_wait: Option<std::time::Duration>,
    /// Memory for KV caches, in MiB: running sequences' reservations (prompt plus
    /// `max_new_tokens` positions each) and the prefix pool together never exceed it.
    pub kv_cache_mb: usize,
    /// Keep finished sequences' caches so requests sharing a prefix skip recomputing it
    /// (off for benchmarks, which repeat the same prompt).
    pub prefix_cache: bool,
    /// A context shorter than the model's (llama.cpp's `--ctx-size`): prompts plus new tokens
    /// over it are refused. `None`: the model's.
    pub ctx_size: Option<usize>,
    /// A named chat template overriding the model's own (`--template`).
    pub template: Option<String>,
    /// System prompt used when a chat request has none.
    pub default_system: Option<String>,
    /// Template variables every chat request gets unless it sets them itself (e.g.
    /// `enable_thinking`, LLaMA Factory's model argument of that name).
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Generation settings the front end was given (flags, a config file): they fill what a
    /// request leaves unset and beat the model's `generation_config.json`. A token limit set
    /// here is as strict as one a request gives.
    pub params: GenParams,
    /// Generation defaults below the model's `generation_config.json`.
    pub defaults: GenParams,
    /// Largest `num_return_sequences` a request may ask for.
    pub max_n: usize,
    /// Bounds on an image's pixel count after resizing (LLaMA Factory's `image_min_pixels` /
    /// `image_max_pixels`), over the model's preprocessor config.
    pub image_min_pixels: Option<usize>,
    pub image_max_pixels: Option<usize>,
    /// LLaMA Factory's `video_min_pixels` / `video_max_pixels`: bounds every video frame is
    /// first scaled into (defaults 16·16 and 256·256).
    pub video_min_pixels: Option<usize>,
    pub video_max_pixels: Option<usize>,
    /// LLaMA Factory's `audio_sampling_rate`: the rate audio is resampled to before its
    /// features are taken. `None`: the model's feature extractor's (16 kHz for Qwen2-Audio).
    pub audio_sampling_rate: Option<u32>,
    /// LoRA adapters served unmerged over the model, as (name, PEFT adapter directory); a
    /// request picks one by name ([`GenParams::adapter`]). See `crate::lora`.
    pub loras: Vec<(String, std::path::PathBuf)>,
    /// Adapters held in memory at once (`None`: all of them); others are read again, least
    /// recently used evicted, when a request needs them.
    pub max_loras: Option<usize>,
    /// Multiply-adds of media encoder work between two steps of the running batch: a large
    /// image, video or clip is encoded in slices of about this size, so running streams wait
    /// at most one slice per token. 0: each item whole at once (running streams wait for it).
    pub encode_slice_macs: u64,
    /// Lookup (prompt n-gram) speculative decoding: most draft tokens verified per step and
    /// sequence (0: off). Exact for every request (see `scheduler::lookup`); it pays where
    /// outputs copy from their prompts.
    pub lookup: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            max_seqs: 16,
            max_queue: 256,
            max_queue_wait: None,
            kv_cache_mb: 1024,
            prefix_cache: true,
            ctx_size: None,
            template: None,
            default_system: None,
            template_kwargs: serde_json::Map::new(),
            params: GenParams::default(),
            defaults: GenParams::llama_factory(),
            max_n: 16,
            image_min_pixels: None,
            image_max_pixels: None,
            video_min_pixels: None,
            video_max_pixels: None,
            audio_sampling_rate: None,
            loras: Vec::new(),
            max_loras: None,
            // About a decode step of a small model on a few cores (tens of milliseconds).
            encode_slice_macs: 1_000_000_000,
            lookup: DEFAULT_LOOKUP,
        }
    }
}
