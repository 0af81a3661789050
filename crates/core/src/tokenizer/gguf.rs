//! Building a [`Tokenizer`] from `tokenizer.ggml.*` metadata, with llama.cpp's defaults
//! (`llama_vocab::impl::load`) where a key is absent.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::spm::Spm;
use super::texts::Texts;
use super::{parse_byte_token, Flavor, Model, PieceStyle, TokenKind, Tokenizer, TokenizerError, EOG_TEXTS};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// llama.cpp's pre-tokenizer regexes, applied in sequence (each splits the previous pieces).
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const DEFAULT_REGEXES: &[&str] =
    &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"];
const SUPPORTED_PRE: &str = "default (or absent), qwen2, deepseek-r1-qwen, llama3, llama-v3, \
                             llama-bpe, falcon3, gpt-2, phi-2";

type Metadata = HashMap<String, Value>;

pub(super) fn build(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
    let model_name = string(md, KEY_MODEL)?.ok_or(TokenizerError::MissingKey { key: KEY_MODEL })?;
    let texts: Texts = string_array(md, KEY_TOKENS)?.ok_or(TokenizerError::MissingKey { key: KEY_TOKENS })?.into_iter().collect();
    let n = texts.len();
    if n == 0 || u32::try_from(n).is_err() {
        return bad(KEY_TOKENS, format!("{n} tokens"));
    }
    // llama.cpp: without a type array every token is normal.
    let mut kinds = match array(md, KEY_TYPES, n)? {
        None => vec![TokenKind::Normal; n],
        Some(values) => values
            .iter()
            .map(|v| match integer(v) {
                Some(1) => Ok(TokenKind::Normal),
                Some(2) => Ok(TokenKind::Unknown),
                Some(3) => Ok(TokenKind::Control),
                Some(4) => Ok(TokenKind::UserDefined),
                Some(5) => Ok(TokenKind::Unused),
                Some(6) => Ok(TokenKind::Byte),
                _ => bad(KEY_TYPES, format!("token type {v:?} is not 1..=6")),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };

    let (style, model, default_add_bos, default_ids) = match model_name.as_str() {
        "gpt2" => {
            let (pre, llama3) = gpt2_pre_tokenizer(string(md, KEY_PRE)?.map(String::as_str))?;
            // llama.cpp's llama3 family skips merges for words already in the vocabulary, and
            // adds BOS by default.
            (PieceStyle::ByteLevel, Model::Hf(Box::new(gpt2_model(md, &texts, pre, llama3)?)), llama3, (None, None))
        }
        // llama.cpp's SentencePiece defaults: BOS 1, EOS 2, BOS added.
        "llama" => (PieceStyle::SentencePiece, spm_model(md, &texts, &kinds)?, true, (Some(1), Some(2))),
        other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
    };

    let bos = token_id(md, KEY_BOS, n)?.or(default_ids.0.filter(|&id| (id as usize) < n));
    let eos = token_id(md, KEY_EOS, n)?.or(default_ids.1.filter(|&id| (id as usize) < n));
    let add_bos = boolean(md, KEY_ADD_BOS)?.unwrap_or(default_add_bos);
    let add_space_prefix =
        style == PieceStyle::SentencePiece && boolean(md, KEY_ADD_SPACE_PREFIX)?.unwrap_or(true);

    let mut eog: Vec<u32> = [eos, token_id(md, KEY_EOT, n)?, token_id(md, KEY_EOM, n)?]
        .into_iter()
        .flatten()
        .collect();
    for (id, text) in texts.iter().enumerate() {
        if EOG_TEXTS.contains(&text) {
            // llama.cpp makes these control tokens so that they never print when skipping specials.
            kinds[id] = TokenKind::Control;
            eog.extend(u32::try_from(id).ok());
        }
    }
    eog.sort_unstable();
    eog.dedup();

    let mut specials: Vec<u32> = (0..n)
        .filter(|&id| {
            matches!(kinds[id], TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown)
                && !texts[id].is_empty()
        })
        .filter_map(|id| u32::try_from(id).ok())
        .collect();
    specials.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

    Ok(Tokenizer {
        model,
        flavor: Flavor::LlamaCpp,
        texts,
        kinds,
        style,
        specials,
        bos,
        eos,
        add_bos,
        add_space_prefix,
        eog,
    })
}

/// The pre-tokenizer for `tokenizer.ggml.pre`, and whether it is of the llama3 family.
fn gpt2_pre_tokenizer(pre: Option<&str>) -> Result<(PreTokenizerWrapper, bool), TokenizerError> {
    let (regexes, llama3): (&[&str], bool) = match pre {
        None | Some("default") => (DEFAULT_REGEXES, false),
        Some("qwen2" | "deepseek-r1-qwen") => (&[QWEN2_REGEX], false),
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3") => (&[LLAMA3_REGEX], true),
        Some("gpt-2" | "phi-2") => (&[GPT2_REGEX], false),
        Some(other) => {
            return Err(TokenizerError::UnsupportedPreTokenizer {
                pre: other.to_owned(),
                supported: SUPPORTED_PRE,
            })
        }
    };
    let mut steps = regexes
        .iter()
        .map(|re| {
            Split::new(SplitPattern::Regex((*re).to_owned()), SplitDelimiterBehavior::Isolated, false)
                .map(PreTokenizerWrapper::from)
                .map_err(|e| TokenizerError::Build(format!("pre-tokenizer regex {re}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The regexes run on the raw text; the byte-level mapping comes after them.
    steps.push(ByteLevel::new(false, false, false).into());
    Ok((Sequence::new(steps).into(), llama3))
}

fn gpt2_model(
    md: &Metadata,
    texts: &Texts,
    pre: PreTokenizerWrapper,
    ignore_merges: bool,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = string_array(md, KEY_MERGES)?
        .ok_or(TokenizerError::MissingKey { key: KEY_MERGES })?
        .into_iter()
        .map(|merge| {
            // llama.cpp splits at the first space after the first byte.
            match merge.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1) {
                Some(i) => Ok((merge[..i].to_owned(), merge[i + 1..].to_owned())),
                None => bad(KEY_MERGES, format!("merge {merge:?} has no space")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab(texts), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| TokenizerError::BadMetadata { key: KEY_MERGES, problem: e.to_string() })?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre));
    Ok(tokenizer)
}

/// The SentencePiece encoder (see `spm`) from the scores, after checking that every byte
/// token is of the form `<0xXX>` (decoding relies on it).
fn spm_model(md: &Metadata, texts: &Texts, kinds: &[TokenKind]) -> Result<Model, TokenizerError> {
    let scores: Vec<f32> = array(md, KEY_SCORES, texts.len())?
        .ok_or(TokenizerError::MissingKey { key: KEY_SCORES })?
        .iter()
        .map(|v| match v {
            Value::F32(s) => Ok(*s),
            Value::F64(s) => Ok(*s as f32),
            other => bad(KEY_SCORES, format!("score {other:?} is not a float")),
        })
        .collect::<Result<_, _>>()?;
    for (text, kind) in texts.iter().zip(kinds) {
        if *kind == TokenKind::Byte && parse_byte_token(text).is_none() {
            return bad(KEY_TOKENS, format!("byte token {text:?} is not of the form <0xXX>"));
        }
    }
    Ok(Model::Spm(Box::new(Spm::new(texts, scores))))
}

/// Text → id; with duplicate texts the last id wins, as in llama.cpp's `token_to_id`.
fn vocab(texts: &Texts) -> Vocab {
    texts.iter().zip(0u32..).map(|(t, id)| (t.to_owned(), id)).collect()
}

fn bad<T>(key: &'static str, problem: String) -> Result<T, TokenizerError> {
    Err(TokenizerError::BadMetadata { key, problem })
}

fn string<'a>(md: &'a Metadata, key: &'static str) -> Result<Option<&'a String>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => bad(key, format!("expected a string, found {:?}", other.value_type())),
    }
}

/// An array value; with `len`, it must have exactly that many entries (one per token).
fn array<'a>(md: &'a Metadata, key: &'static str, len: usize) -> Result<Option<&'a [Value]>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(values)) if values.len() == len => Ok(Some(values)),
        Some(Value::Array(values)) => bad(
            key,
            format!("has {} entries but {KEY_TOKENS} has {len}", values.len()),
        ),
        Some(other) => bad(key, format!("expected an array, found {:?}", other.value_type())),
    }
}

fn string_array<'a>(md: &'a Metadata, key: &'static str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let values = match md.get(key) {
        None => return Ok(None),
        Some(Value::Array(values)) => values,
        Some(other) => return bad(key, format!("expected an array, found {:?}", other.value_type())),
    };
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            other => bad(key, format!("entry {other:?} is not a string")),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn integer(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::I8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

/// A token id key; it must name a token of the vocabulary.
fn token_id(md: &Metadata, key: &'static str, n_tokens: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = md.get(key) else { return Ok(None) };
    match integer(v).and_then(|x| u32::try_from(x).ok()) {
        Some(id) if (id as usize) < n_tokens => Ok(Some(id)),
        _ => bad(key, format!("{v:?} is not a token id below the vocabulary size {n_tokens}")),
    }
}

fn boolean(md: &Metadata, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => bad(key, format!("expected a bool, found {other:?}")),
    }
}
