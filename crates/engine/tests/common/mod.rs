//! The engines the integration tests share (the real default model on 2 threads) and
//! helpers to queue requests.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::OnceLock;

use ingot_engine::{ChatRequest, EngineConfig, EngineError, EngineHandle, PromptRequest, Stream};

/// A new engine on the default model with `cfg` (threads fixed at 2).
pub fn start(cfg: EngineConfig) -> EngineHandle {
    let path = ingot_testkit::model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE);
    let loaded = ingot_core::load::load(&path).expect("load model");
    ingot_engine::start(loaded, EngineConfig { threads: 2, ..cfg }).expect("start engine")
}

/// The engine a test binary's tests share: default settings (prefix cache on).
pub fn engine() -> &'static EngineHandle {
    static E: OnceLock<EngineHandle> = OnceLock::new();
    E.get_or_init(|| start(EngineConfig::default()))
}

/// A queued chat request: its prompt and one stream per sample.
pub struct Submission {
    pub prompt_ids: Vec<u32>,
    pub streams: Vec<Stream>,
}

/// Validates and queues a chat request.
pub fn submit_chat(e: &EngineHandle, req: ChatRequest) -> Result<Submission, EngineError> {
    let valid = e.validate_chat(req)?;
    let prompt_ids = valid.prompt_ids().to_vec();
    Ok(Submission { prompt_ids, streams: e.stream(valid)? })
}

/// Validates and queues a raw prompt of one sample.
pub fn submit_prompt(e: &EngineHandle, req: PromptRequest) -> Result<Stream, EngineError> {
    Ok(e.stream(e.validate_prompt(req)?)?.remove(0))
}
