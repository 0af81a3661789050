//! The non-weight files of a Hugging Face checkpoint directory that shape generation: where
//! its chat template comes from, and its `generation_config.json` defaults.
//!
//! Template source, in the order transformers uses: `chat_template.jinja`, else the
//! processor's `chat_template.json` (`{"chat_template": ...}`), else `tokenizer_config.json`'s
//! `chat_template`. A `chat_template` value is a string or a list of `{name, template}`; in a
//! list the one named `default` is the default and every entry can be chosen by name
//! (`tool_use`, `rag`, ...).
//!
//! Invariants: every error names the file it came from (and the key, for a value of the wrong
//! shape); absent optional files and absent keys are `None`, never errors; unknown keys are
//! ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};


pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub const CHAT_TEMPLATE_JINJA_FILE: &str = "chat_template.jinja";
pub const CHAT_TEMPLATE_JSON_FILE: &str = "chat_template.json";

/// Why a checkpoint file could not be read; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HfFileError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: expected a JSON object at the top level", path.display())]
    NotAnObject { path: PathBuf },
    #[error("{}: `{key}`: {problem}", path.display())]
    BadValue { path: PathBuf, key: String, problem: String },
}

/// A parsed JSON object file, remembering its path for error messages.
pub(crate) struct JsonFile {
    pub path: PathBuf,
    pub map: Map<String, Value>,
}

impl JsonFile {
    /// Reads `path`, which must hold a JSON object.
    pub fn read(path: &Path) -> Result<Self, HfFileError> {
        let text = read_text(path)?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(Self { path: path.to_owned(), map }),
            Ok(_) => Err(HfFileError::NotAnObject { path: path.to_owned() }),
            Err(source) => Err(HfFileError::Json { path: path.to_owned(), source }),
        }
    }

    /// Reads `dir/name` if it exists.
    pub fn read_optional(dir: &Path, name: &str) -> Result<Option<Self>, HfFileError> {
        let path = dir.join(name);
        if path.is_file() {
            Self::read(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A key's value; JSON `null` counts as absent (transformers writes `"pad_token_id": null`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The error for a value of the wrong shape at `key`.
    pub fn error(&self, key: &str, problem: impl Into<String>) -> HfFileError {
        HfFileError::BadValue { path: self.path.clone(), key: key.to_owned(), problem: problem.into() }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, HfFileError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.error(key, format!("expected true or false, found {v}"))),
        }
    }

    pub fn f32(&self, key: &str) -> Result<Option<f32>, HfFileError> {
        match self.get(key) {
            None => Ok(None),
            // Generation parameters are small; f32 is what the sampler uses.
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x as f32)),
                _ => Err(self.error(key, format!("{n} is not a finite number"))),
            },
            Some(v) => Err(self.error(key, format!("expected a number, found {v}"))),
        }
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>, HfFileError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => Err(self.error(key, format!("expected a non-negative integer, found {v}"))),
            },
        }
    }

    pub fn token_id(&self, key: &str) -> Result<Option<u32>, HfFileError> {
        self.get(key).map(|v| self.id_value(key, v)).transpose()
    }

    /// A token id or a list of them (`"eos_token_id": [1, 106]`).
    pub fn token_ids(&self, key: &str) -> Result<Vec<u32>, HfFileError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(values)) => values.iter().map(|v| self.id_value(key, v)).collect(),
            Some(v) => Ok(vec![self.id_value(key, v)?]),
        }
    }

    fn id_value(&self, key: &str, v: &Value) -> Result<u32, HfFileError> {
        match v.as_u64().and_then(|x| u32::try_from(x).ok()) {
            Some(id) => Ok(id),
            None => Err(self.error(key, format!("{v} is not a token id"))),
        }
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, HfFileError> {
    std::fs::read_to_string(path).map_err(|source| HfFileError::Read { path: path.to_owned(), source })
}

/// The chat templates a checkpoint directory ships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatTemplates {
    /// The template `apply_chat_template` uses when none is named.
    pub default: Option<String>,
    /// Templates of a `{name, template}` list (including `default` when the list has one), by
    /// name.
    pub named: BTreeMap<String, String>,
    /// The file `default` came from.
    pub source: Option<PathBuf>,
}

impl ChatTemplates {
    /// Reads the templates of `dir` (see the module docs for the order). A directory with none
    /// gives `default: None`.
    pub fn from_dir(dir: &Path) -> Result<Self, HfFileError> {
        let mut templates = Self::default();
        // `named` always comes from tokenizer_config.json: the other two files hold one template.
        if let Some(config) = JsonFile::read_optional(dir, TOKENIZER_CONFIG_FILE)? {
            templates = Self::from_value(&config, "chat_template")?;
        }
        let jinja = dir.join(CHAT_TEMPLATE_JINJA_FILE);
        if jinja.is_file() {
            templates.default = Some(read_text(&jinja)?);
            templates.source = Some(jinja);
        } else if let Some(file) = JsonFile::read_optional(dir, CHAT_TEMPLATE_JSON_FILE)? {
            let from_json = Self::from_value(&file, "chat_template")?;
            if from_json.default.is_some() {
                templates.default = from_json.default;
                templates.source = from_json.source;
            }
            templates.named.extend(from_json.named);
        }
        Ok(templates)
    }

    /// The template to use: `name`, or the default when `None`.
    pub fn get(&self, name: Option<&str>) -> Option<&str> {
        match name {
            None => self.default.as_deref(),
            Some(name) => self.named.get(name).map(String::as_str),
        }
    }

    /// `file[key]` as a string or a `{name, template}` list.
    fn from_value(file: &JsonFile, key: &str) -> Result<Self, HfFileError> {
        let mut templates = Self::default();
        match file.get(key) {
            None => return Ok(templates),
            Some(Value::String(s)) => templates.default = Some(s.clone()),
            Some(Value::Array(entries)) => {
                for entry in entries {
                    let name = entry.get("name").and_then(Value::as_str);
                    let template = entry.get("template").and_then(Value::as_str);
                    let (Some(name), Some(template)) = (name, template) else {
                        return Err(file.error(key, "list entries must be {\"name\": string, \"template\": string}"));
                    };
                    templates.named.insert(name.to_owned(), template.to_owned());
                }
                templates.default = templates.named.get("default").cloned();
            }
            Some(v) => return Err(file.error(key, format!("expected a string or a list, found {v}"))),
        }
        if templates.default.is_some() {
            templates.source = Some(file.path.clone());
        }
        Ok(templates)
    }
}

/// `generation_config.json`: the checkpoint's own defaults; every field is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation (`eos_token_id` may be a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
    /// Prompt plus generated tokens; `max_new_tokens` wins when both are set.
    pub max_length: Option<usize>,
}

impl GenerationDefaults {
    /// Reads `dir/generation_config.json`; a directory without one gives all `None`.
    pub fn from_dir(dir: &Path) -> Result<Self, HfFileError> {
        JsonFile::read_optional(dir, GENERATION_CONFIG_FILE)?
            .map_or_else(|| Ok(Self::default()), |file| Self::from_file(&file))
    }

    /// Reads a `generation_config.json` at any path.
    pub fn from_path(path: &Path) -> Result<Self, HfFileError> {
        Self::from_file(&JsonFile::read(path)?)
    }

    fn from_file(file: &JsonFile) -> Result<Self, HfFileError> {
        Ok(Self {
            bos_token_id: file.token_id("bos_token_id")?,
            eos_token_ids: file.token_ids("eos_token_id")?,
            pad_token_id: file.token_id("pad_token_id")?,
            do_sample: file.bool("do_sample")?,
            temperature: file.f32("temperature")?,
            top_p: file.f32("top_p")?,
            top_k: file.usize("top_k")?,
            repetition_penalty: file.f32("repetition_penalty")?,
            max_new_tokens: file.usize("max_new_tokens")?,
            max_length: file.usize("max_length")?,
        })
    }
}

#[cfg(test)]
mod tests;
