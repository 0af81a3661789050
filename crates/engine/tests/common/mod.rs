//! The engines the integration tests share: the real default model on 2 threads.

use std::sync::OnceLock;

use ingot_engine::{EngineConfig, EngineHandle};

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
