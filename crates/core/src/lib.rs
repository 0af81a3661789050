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
#[doc(hidden)]
pub mod testing;
pub mod tokenizer;
pub mod weights;
