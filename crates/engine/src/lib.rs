//! The engine: one thread owns the model weights and every KV cache; front ends hold a
//! cloneable [`EngineHandle`] and talk to it through channels.
//!
//! The data path, module by module:
//! - [`request`]: a [`ChatRequest`] or [`PromptRequest`] becomes one [`ValidRequest`] in the
//!   caller's thread (template, tokens, media, parameters resolved with [`params`]' one chain
//!   of defaults, context and KV budget, grammar), or a typed [`EngineError`] naming the field;
//! - [`handle`]: [`EngineHandle::submit`] queues it, one [`EventSink`] per sample;
//! - `scheduler`: the engine thread's continuous batching (admission, chunked prefill,
//!   one forward pass per step, sampling, stop conditions), with the KV budget and prefix
//!   reuse in `prefix_pool`;
//! - `lora`: LoRA adapters served unmerged (names, which are resident, loading on demand);
//! - [`event`]: text deltas that never split a UTF-8 character, then exactly one `Done` or
//!   `Error`, straight into the caller's sink.
//!
//! The handle also speaks LLaMA Factory's `ChatModel` API ([`EngineHandle::chat`],
//! [`EngineHandle::stream_chat`], [`EngineHandle::get_scores`]).

mod config;
mod error;
pub mod event;
mod handle;
mod lora;
mod media;
mod params;
mod prefill;
mod prefix_pool;
mod prompter;
mod queue_wait;
pub mod request;
mod scheduler;

pub use config::{EngineConfig, DEFAULT_LOOKUP, MAX_LOOKUP};
pub use error::EngineError;
pub use event::{Cancel, Closed, Event, EventSink, FinishReason, Stream, Tagged, TokenLogprob, TokenLogprobs, Usage};
pub use handle::{start, EngineHandle, Response};
pub use ingot_core::constraint::{JsonSchemaFormat, ResponseFormat};
pub use ingot_core::media::{Image, Media, MediaError, MediaLimits};
pub use ingot_core::template::ToolChoice;
pub use media::{MediaKind, MediaPrompt, IMAGE_PLACEHOLDER};
pub use params::GenParams;
pub use prompter::{Prompter, Rendered};
pub use queue_wait::{retry_after_secs, QueueStats, QUEUE_BUCKETS};
pub use request::{ChatRequest, Prompt, PromptRequest, ValidRequest};
pub use scheduler::lookup::LookupStats;
