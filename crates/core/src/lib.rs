//! ingot's model core: everything needed to turn a model file and a conversation into tokens,
//! with no threads of its own, no I/O beyond reading model files, and no async runtime.
//!
//! Data path: [`weights`] reads a GGUF file or a Hugging Face checkpoint directory into a
//! [`config::ModelConfig`] and named weights; [`model::Model`] runs the transformer over a
//! batch of sequences whose KV caches live outside it ([`kv_cache`]); [`kernels`] are the CPU hot path; [`tokenizer`], [`template`],
//! [`sampling`] and [`stop`] turn text into ids and ids back into text.
//! A Hugging Face checkpoint directory's tokenizer files load through
//! [`tokenizer::Tokenizer::from_hf_dir`]; its chat template source and generation defaults
//! through [`hf_files`]. A checkpoint with a value head is a reward model ([`reward`]).
//! A Qwen2-VL or Qwen2.5-VL checkpoint also brings a vision encoder ([`model::vision`]) whose rows replace
//! the image pad tokens' embeddings, with M-RoPE positions over (t, h, w).
//! Images (and later video and audio) become encoder inputs through [`media`].
//!
//! Layers, bottom up. A module uses only modules of lower layers, and a directory module's
//! children build on it, never the reverse, so the crate has no import cycles
//! (`scripts/check-layers.py` checks it):
//! 1. [`kernels`], [`config`], [`sampling`], [`stop`], [`template`], [`media`]: no other module;
//! 2. [`hf_files`] (its generation defaults are sampling parameters), [`kv_cache`] (sized by
//!    the config);
//! 3. [`tokenizer`] (reads a checkpoint's tokenizer files through `hf_files`);
//! 4. [`constraint`] (a tokenizer's vocabulary, the tool-call grammars of `template`);
//!    [`weights`] (fills in configs, holds matrices as kernels read them);
//! 5. [`model`] (runs weights over KV caches), [`reward`] (a value head's weights);
//! 6. [`load`]: opens a model path into all of the above.
//!
//! So a type shared across layers lives in the lower one: configuration types (the vision
//! encoder's too) in `config`, the precision weights are held in in `weights`.

pub mod config;
pub mod constraint;
pub mod hf_files;
pub mod kernels;
pub mod kv_cache;
pub mod load;
pub mod media;
pub mod model;
pub mod reward;
pub mod sampling;
pub mod stop;
pub mod template;
pub mod tokenizer;
pub mod weights;
