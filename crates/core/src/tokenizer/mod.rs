//! Text ⇄ token ids for a model. Two sources, each reproducing its own reference:
//! * a GGUF file's vocabulary ([`Tokenizer::from_gguf`]): exactly the ids llama.cpp gives
//!   (`llama_tokenize(.., parse_special = true)`) and the text its `token_to_piece` gives;
//! * a Hugging Face checkpoint's `tokenizer.json` + `tokenizer_config.json`
//!   ([`Tokenizer::from_hf_dir`], see `hf.rs`): exactly transformers' `tokenizer(text,
//!   add_special_tokens=False)`, since the `tokenizers` crate runs the file's own pipeline and
//!   added-token matching.
//!
//! Both share decoding, streaming and the end-of-generation rules below; `Flavor` marks the
//! few places where the two references differ.
//!
//! How a GGUF text is encoded, in llama.cpp's order:
//! 1. *Special-token split*: every control, user-defined and unknown token whose text occurs in the
//!    input becomes that single id (`<|im_start|>`, `<tool_call>`, Gemma's `"\n\n"` or `"  "`).
//!    Tokens are tried longest first over the whole text, as llama.cpp's
//!    `tokenizer_st_partition` does; a leftmost-longest matcher would differ on overlaps.
//! 2. The text between them is encoded by the vocabulary's model: for `gpt2` models a
//!    [`tokenizers::Tokenizer`] with no added tokens of its own (byte-level BPE with llama.cpp's
//!    pre-tokenizer regexes); for `llama` models llama.cpp's own SentencePiece merge loop with
//!    byte fallback (`spm.rs`). No Unicode normalisation: llama.cpp does none (Hugging Face's
//!    Qwen2 tokenizer applies NFC).
//!
//! Decoding is done per token from the vocabulary text (bytes, not `tokenizers`' decoders) because
//! llama.cpp's `token_to_piece` rules are per token type: control/unknown tokens vanish when
//! `skip_special`, user-defined ones are always printed raw, unused tokens print nothing,
//! `<0xXX>` tokens are one byte. Per-token bytes also make [`StreamDecoder`] exact. A Hugging
//! Face vocabulary maps onto the same types: special added tokens are control tokens, other
//! added tokens user-defined.
//!
//! Invariants: `kinds.len() == texts.len() == vocab_size()`; every id in `specials`, `eog`, `bos`,
//! `eos` is `< vocab_size()`; `specials` holds no empty text and is sorted longest first.
//!
//! Difference from llama.cpp that remains (not met by the fixtures): llama.cpp's `clean_spaces`
//! post-pass of `llama_detokenize` (not applied by `token_to_piece`, nor to streamed text) is
//! not done.

mod gguf;
mod hf;
mod spm;
mod texts;
#[cfg(test)]
mod hf_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;

pub use crate::hf_files::HfFileError;

/// Texts treated as end of generation wherever they are in the vocabulary, from llama.cpp's
/// `llama_vocab::impl::load` (a GGUF tokenizer also forces them to control tokens).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Why a tokenizer could not be built or used. Metadata errors name the GGUF key; checkpoint
/// errors name the file (and key).
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: &'static str },
    #[error("GGUF metadata key `{key}`: {problem}")]
    BadMetadata { key: &'static str, problem: String },
    #[error("unsupported tokenizer.ggml.model `{0}` (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("unsupported tokenizer.ggml.pre `{pre}` for a gpt2 tokenizer (supported: {supported})")]
    UnsupportedPreTokenizer { pre: String, supported: &'static str },
    #[error("building the tokenizer: {0}")]
    Build(String),
    #[error("encoding text: {0}")]
    Encode(String),
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: u32, vocab_size: usize },
    #[error(transparent)]
    File(#[from] HfFileError),
    #[error("{}: {message}", path.display())]
    HfTokenizer { path: PathBuf, message: String },
    #[error("{}: unsupported decoder {decoder} (supported: ByteLevel, or SentencePiece-style \
             Metaspace / Replace + ByteFallback)", path.display())]
    UnsupportedDecoder { path: PathBuf, decoder: String },
}

/// Whose rules the tokenizer reproduces where llama.cpp and Hugging Face differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Special tokens split longest first by [`Tokenizer::split_special`]; decoding with
    /// `skip_special` drops a leading BOS without stripping a space, and otherwise strips the
    /// space prefix from the first token only.
    LlamaCpp,
    /// Added tokens matched by `tokenizers` itself; the decoder's space strip applies to the
    /// first token that is not skipped.
    HuggingFace,
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`); they decide special-token matching
/// and how a token prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

/// How a normal token's text maps to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte-level alphabet: each char stands for one byte (`Ġ` = space).
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xXX>` byte tokens are raw bytes.
    SentencePiece,
}

/// A piece of input text after the special-token split.
#[derive(Debug, Clone, Copy)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// What encodes text into ids.
enum Model {
    /// GGUF `gpt2`: encodes the text between special tokens, knowing no added tokens.
    /// Hugging Face: the checkpoint's whole tokenizer, added tokens included.
    Hf(Box<tokenizers::Tokenizer>),
    /// GGUF `llama`: encodes the text between special tokens.
    Spm(Box<spm::Spm>),
}

/// Encoder and decoder for one model's vocabulary. Cheap to share (`&Tokenizer` or `Arc`).
pub struct Tokenizer {
    model: Model,
    flavor: Flavor,
    texts: texts::Texts,
    kinds: Vec<TokenKind>,
    style: PieceStyle,
    /// Ids matched whole in input text (control, user-defined, unknown), longest text first.
    /// Empty for Hugging Face tokenizers, whose `model` matches its added tokens itself.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// SentencePiece `add_dummy_prefix`: a space is put before text that follows a special
    /// token or starts the input (GGUF only: a Hugging Face `model` does it itself), and removed
    /// again from the first decoded token.
    add_space_prefix: bool,
    eog: Vec<u32>,
}

/// A summary: the vocabulary itself is too large to print.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("flavor", &self.flavor)
            .field("vocab_size", &self.vocab_size())
            .field("style", &self.style)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata (`gpt2` byte-level BPE or `llama`
    /// SentencePiece).
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        gguf::build(&content.metadata)
    }

    /// Builds the tokenizer of a Hugging Face checkpoint directory: `tokenizer.json` (required),
    /// `tokenizer_config.json` and `generation_config.json` (optional; see
    /// [`Tokenizer::from_hf_files`]).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let config = dir.join(crate::hf_files::TOKENIZER_CONFIG_FILE);
        let generation = crate::hf_files::GenerationDefaults::from_dir(dir)?;
        Self::from_hf_files(
            &dir.join(hf::TOKENIZER_FILE),
            config.is_file().then_some(config.as_path()),
            &generation,
        )
    }

    /// Builds a tokenizer from a `tokenizer.json`, the `tokenizer_config.json` beside it (special
    /// tokens, `add_bos_token`, `added_tokens_decoder`) and the generation defaults (their
    /// `bos_token_id`/`eos_token_id` stand in for missing config tokens; every EOS id ends
    /// generation).
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
        generation: &crate::hf_files::GenerationDefaults,
    ) -> Result<Self, TokenizerError> {
        hf::build(tokenizer_json, tokenizer_config, generation)
    }

    /// Encodes text; special-token text (`<|im_start|>`, `<tool_call>`, ...) maps to its single
    /// id. `add_bos`: prepend BOS when the model asks for it ([`Tokenizer::add_bos`]).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        if self.flavor == Flavor::HuggingFace {
            self.encode_with_model(text, &mut ids)?;
            return Ok(ids);
        }
        let mut after_special = true;
        let mut prefixed = String::new();
        for fragment in self.split_special(text) {
            match fragment {
                Fragment::Token(id) => {
                    ids.push(id);
                    after_special = true;
                }
                Fragment::Text(t) => {
                    let t = if self.add_space_prefix && after_special {
                        prefixed.clear();
                        prefixed.push(' ');
                        prefixed.push_str(t);
                        prefixed.as_str()
                    } else {
                        t
                    };
                    self.encode_with_model(t, &mut ids)?;
                    after_special = false;
                }
            }
        }
        Ok(ids)
    }

    /// Decodes ids to text as llama.cpp's `token_to_piece` does, token by token; invalid UTF-8
    /// becomes U+FFFD. `skip_special` drops control and unknown tokens (`<|im_end|>`, `<eos>`)
    /// but keeps user-defined ones (`<tool_call>`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let Some((&first, rest)) = ids.split_first() else {
            return Ok(String::new());
        };
        let mut bytes = Vec::new();
        let (drop_first, mut strip_space) = self.leading_rule(first, skip_special);
        let ids = if drop_first { rest } else { ids };
        for &id in ids {
            self.push_piece(id, skip_special, &mut strip_space, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Appends `model`'s ids for `text`, without a post-processor (no BOS/EOS of its own).
    fn encode_with_model(&self, text: &str, ids: &mut Vec<u32>) -> Result<(), TokenizerError> {
        match &self.model {
            Model::Hf(model) => {
                let encoding = model.encode_fast(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
                ids.extend_from_slice(encoding.get_ids());
                Ok(())
            }
            Model::Spm(model) => model.encode(&self.texts, text, ids),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// The id of a token given its vocabulary text (`"<|im_end|>"`, `"Ġthe"`, `"▁the"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.model {
            Model::Hf(model) => model.token_to_id(token),
            Model::Spm(model) => model.token_to_id(&self.texts, token),
        }
    }

    /// The vocabulary text of a token, as stored in the model file.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Text of the BOS token, for chat templates ("" when absent).
    pub fn bos_token(&self) -> &str {
        self.bos.and_then(|id| self.id_to_token(id)).unwrap_or("")
    }

    /// Text of the EOS token, for chat templates ("" when absent).
    pub fn eos_token(&self) -> &str {
        self.eos.and_then(|id| self.id_to_token(id)).unwrap_or("")
    }

    /// Whether the model wants BOS prepended to a prompt (and has one).
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Tokenizes a rendered prompt: special-token text maps to single ids, and BOS is
    /// prepended when the model wants it and the template did not already write it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode(text, false)?;
        if let Some(bos) = self.bos_id().filter(|_| self.add_bos()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// End-of-generation ids: EOS, EOT/EOM when the GGUF file names them (every
    /// `generation_config.json` `eos_token_id` for a checkpoint), and the end-of-turn tokens
    /// llama.cpp recognises by text (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, ...). Sorted.
    pub fn eog_ids(&self) -> Vec<u32> {
        self.eog.clone()
    }

    /// Whether generating `id` ends the turn.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The bytes token `id` adds to generated text, for grammar engines that match text
    /// token by token ([`crate::constraint`]): a normal token's bytes (byte-level alphabet or
    /// `▁` undone, `<0xXX>` as its byte), a user-defined token's text (it always prints raw).
    /// `None` for control, unknown and unused tokens, which are not text (`<|im_end|>`), and
    /// for ids outside the vocabulary. Empty for tokens that print nothing. The decoder's
    /// first-token space strip is not applied.
    pub fn text_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match self.kinds.get(id as usize)? {
            TokenKind::Control | TokenKind::Unknown | TokenKind::Unused => None,
            _ => {
                let mut bytes = Vec::new();
                self.append_piece(id, false, &mut bytes).ok()?;
                Some(bytes)
            }
        }
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token, longest first, split every
    /// remaining text fragment at its non-overlapping occurrences, left to right.
    fn split_special<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let needle = &self.texts[id as usize];
            let occurs = fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)));
            if !occurs {
                continue;
            }
            let mut split = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(t) = fragment else {
                    split.push(fragment);
                    continue;
                };
                let mut start = 0;
                for (pos, _) in t.match_indices(needle) {
                    if pos > start {
                        split.push(Fragment::Text(&t[start..pos]));
                    }
                    split.push(Fragment::Token(id));
                    start = pos + needle.len();
                }
                if start < t.len() {
                    split.push(Fragment::Text(&t[start..]));
                }
            }
            fragments = split;
        }
        fragments
    }

    /// How decoding starts. llama.cpp's `llama_detokenize`: with `skip_special` a leading BOS
    /// (of a model that adds one) is dropped and then *no* space is stripped; otherwise models
    /// with a space prefix lose one leading space of the first token. Hugging Face: nothing is
    /// dropped beyond what skipping drops. Returns (drop first id, strip space).
    fn leading_rule(&self, first: u32, skip_special: bool) -> (bool, bool) {
        let drop_bos = skip_special && self.add_bos && Some(first) == self.bos;
        if self.flavor == Flavor::LlamaCpp && drop_bos {
            (true, false)
        } else {
            (false, self.add_space_prefix)
        }
    }

    /// Appends `id`'s bytes, removing one leading space while `strip_space` is pending.
    /// llama.cpp clears it after the first token whatever it printed; Hugging Face decoders
    /// only see the tokens left after skipping, so there it waits for a token that prints.
    fn push_piece(
        &self,
        id: u32,
        skip_special: bool,
        strip_space: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        let start = out.len();
        self.append_piece(id, skip_special, out)?;
        if *strip_space && (out.len() > start || self.flavor == Flavor::LlamaCpp) {
            *strip_space = false;
            if out.get(start) == Some(&b' ') {
                out.remove(start);
            }
        }
        Ok(())
    }

    /// Appends the bytes llama.cpp's `token_to_piece` gives for `id`.
    fn append_piece(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) -> Result<(), TokenizerError> {
        let (Some(text), Some(kind)) = (self.texts.get(id as usize), self.kinds.get(id as usize)) else {
            return Err(TokenizerError::IdOutOfRange { id, vocab_size: self.vocab_size() });
        };
        match (kind, self.style) {
            (TokenKind::Control | TokenKind::Unknown, _) if skip_special => {}
            (TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined, _) => {
                out.extend_from_slice(text.as_bytes())
            }
            (TokenKind::Unused, _) | (TokenKind::Byte, PieceStyle::ByteLevel) => {}
            (TokenKind::Normal, PieceStyle::ByteLevel) => {
                for c in text.chars() {
                    match byte_level_to_byte(c) {
                        Some(b) => out.push(b),
                        // Not in the byte alphabet: keep the character itself.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            }
            (TokenKind::Normal, PieceStyle::SentencePiece) => {
                out.extend_from_slice(text.replace('▁', " ").as_bytes())
            }
            // Byte tokens were checked to be `<0xXX>` when the tokenizer was built.
            (TokenKind::Byte, PieceStyle::SentencePiece) => out.extend(parse_byte_token(text)),
        }
        Ok(())
    }
}

/// The byte a GPT-2 byte-level character stands for. Printable Latin-1 bytes (`!`..`~`,
/// `¡`..`¬`, `®`..`ÿ`) are themselves; the other 68 bytes, in increasing order, were moved to
/// U+0100.. so that every byte has a visible character.
fn byte_level_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => u8::try_from(cp).ok(),
        0x100..=0x120 => u8::try_from(cp - 0x100).ok(),        // bytes 0x00..=0x20
        0x121..=0x142 => u8::try_from(cp - 0x121 + 0x7F).ok(), // bytes 0x7F..=0xA0
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// The byte of a SentencePiece byte token `<0xXX>`.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Incremental detokenizer for streaming: never emits part of a UTF-8 character, and the
/// concatenation of everything [`StreamDecoder::push`] and [`StreamDecoder::finish`] return equals
/// [`Tokenizer::decode`] of all pushed ids.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    /// Bytes of an incomplete UTF-8 character waiting for the next token.
    pending: Vec<u8>,
    started: bool,
    strip_space: bool,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        Self { tokenizer, skip_special, pending: Vec::new(), started: false, strip_space: false }
    }

    /// Adds a token; returns the text that became complete (may be "").
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        if !self.started {
            self.started = true;
            let (drop, strip) = self.tokenizer.leading_rule(id, self.skip_special);
            self.strip_space = strip;
            if drop {
                return Ok(String::new());
            }
        }
        self.tokenizer.push_piece(id, self.skip_special, &mut self.strip_space, &mut self.pending)?;
        Ok(self.take_complete())
    }

    /// The bytes still held back (an incomplete character at the end of the stream), as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }

    /// Removes and returns the longest prefix of `pending` that can be printed. Invalid bytes
    /// become U+FFFD exactly as `String::from_utf8_lossy` would; only a possibly-incomplete
    /// character at the end is held back.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }
}
