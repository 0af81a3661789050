//! PLACEHOLDER API (to be implemented): chat templates.

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Invalid(String),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {}

impl ChatTemplate {
    /// A Jinja template (HF / GGUF `chat_template`).
    pub fn from_jinja(_source: &str, _bos_token: &str, _eos_token: &str) -> Result<Self, TemplateError> {
        unimplemented!()
    }
    /// A named template (chatml, qwen, llama3, gemma, mistral, empty, ...).
    pub fn named(_name: &str, _bos_token: &str, _eos_token: &str) -> Result<Self, TemplateError> {
        unimplemented!()
    }
    pub fn render(
        &self,
        _messages: &[Message],
        _tools: Option<&[serde_json::Value]>,
        _add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        unimplemented!()
    }
    /// Extra stop strings this template ends a turn with (besides the tokenizer's EOG ids).
    pub fn stop_strings(&self) -> &[String] {
        unimplemented!()
    }
}
