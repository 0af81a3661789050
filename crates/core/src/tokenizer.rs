//! PLACEHOLDER API (to be implemented): tokenizer built from a GGUF's own vocabulary.

use candle_core::quantized::gguf_file;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{0}")]
    Invalid(String),
}

pub struct Tokenizer {}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata (`gpt2` byte-level BPE or `llama` SentencePiece).
    pub fn from_gguf(_content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        unimplemented!()
    }
    /// Encodes text; special-token text (`<|im_start|>`, `<tool_call>`, ...) maps to its single id.
    /// `add_bos`: prepend BOS when the model asks for it (`tokenizer.ggml.add_bos_token`).
    pub fn encode(&self, _text: &str, _add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        unimplemented!()
    }
    pub fn decode(&self, _ids: &[u32], _skip_special: bool) -> Result<String, TokenizerError> {
        unimplemented!()
    }
    pub fn vocab_size(&self) -> usize {
        unimplemented!()
    }
    pub fn token_to_id(&self, _token: &str) -> Option<u32> {
        unimplemented!()
    }
    pub fn bos_id(&self) -> Option<u32> {
        unimplemented!()
    }
    pub fn eos_id(&self) -> Option<u32> {
        unimplemented!()
    }
    /// Text of the BOS / EOS tokens, for chat templates ("" when absent).
    pub fn bos_token(&self) -> &str {
        unimplemented!()
    }
    pub fn eos_token(&self) -> &str {
        unimplemented!()
    }
    /// Whether the model wants BOS prepended to a prompt.
    pub fn add_bos(&self) -> bool {
        unimplemented!()
    }
    /// End-of-generation ids: EOS plus the end-of-turn tokens the vocabulary has.
    pub fn eog_ids(&self) -> Vec<u32> {
        unimplemented!()
    }
}

/// Incremental detokenizer for streaming: never emits part of a UTF-8 character.
pub struct StreamDecoder<'a> {
    _t: &'a Tokenizer,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(_tokenizer: &'a Tokenizer, _skip_special: bool) -> Self {
        unimplemented!()
    }
    /// Adds a token; returns the text that became complete.
    pub fn push(&mut self, _id: u32) -> Result<String, TokenizerError> {
        unimplemented!()
    }
}
