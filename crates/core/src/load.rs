//! Opening a model path: the model, its tokenizer and its chat template, together.

use std::path::Path;

use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::weights::gguf::GgufFile;
use crate::weights::LoadError;

/// Everything a front end needs from one model file.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// The file's own Jinja chat template, if it has one.
    pub chat_template: Option<String>,
}

/// Loads a GGUF file. Every failure names the file.
pub fn load(path: &Path) -> Result<LoadedModel, LoadError> {
    if path.is_dir() {
        return Err(LoadError::Invalid {
            path: path.display().to_string(),
            problem: "is a directory; expected a .gguf file".into(),
        });
    }
    let file = GgufFile::open(path)?;
    let cfg = file.config()?;
    let tokenizer = Tokenizer::from_gguf(file.content())
        .map_err(|source| LoadError::Tokenizer { path: path.to_path_buf(), source })?;
    let model = Model::load(&file, cfg)?;
    Ok(LoadedModel { model, tokenizer, chat_template: file.chat_template().map(str::to_string) })
}

/// File name of the default model (Qwen2.5-Coder-0.5B-Instruct) in [`models_dir`].
pub const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct.gguf";

/// Where `scripts/fetch-models.sh` puts models: `$INGOT_MODELS_DIR`, else
/// `$XDG_CACHE_HOME/ingot/models`, else `~/.cache/ingot/models`.
pub fn models_dir() -> std::path::PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    if let Some(dir) = var("INGOT_MODELS_DIR") {
        return dir;
    }
    let cache = var("XDG_CACHE_HOME").unwrap_or_else(|| var("HOME").unwrap_or_default().join(".cache"));
    cache.join("ingot").join("models")
}
