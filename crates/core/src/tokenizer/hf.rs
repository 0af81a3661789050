//! Building a [`Tokenizer`] from a Hugging Face checkpoint's `tokenizer.json` and
//! `tokenizer_config.json`, as transformers' `PreTrainedTokenizerFast` would load them.
//!
//! Encoding is the `tokenizers` pipeline of the file itself with its added tokens, without the
//! post-processor: `encode(text, false)` is `tokenizer(text, add_special_tokens=False)`. BOS is
//! ours to add (`encode(text, true)`): when `tokenizer_config.json` sets `add_bos_token`, that
//! decides; otherwise BOS is added when the file's post-processor puts it first, so that
//! `encode(text, true)` equals `tokenizer(text)` for a prompt. Anything else a post-processor
//! appends (an EOS) is left out on purpose: a prompt to continue must not end the text.
//!
//! Decoding maps the vocabulary onto the shared per-token rules: special added tokens are
//! control tokens (dropped by `skip_special`, as `skip_special_tokens=True` drops them), other
//! added tokens print raw, and the decoder decides how normal tokens print (`ByteLevel`, or
//! SentencePiece-style `Metaspace` / `Replace("▁", " ") + ByteFallback`, whose `<0xXX>` tokens
//! are bytes) and whether the first printed space is stripped (`Strip` / `Metaspace` prepend).
//!
//! Not reproduced: `clean_up_tokenization_spaces` (it rewrites text across token boundaries,
//! which a stream cannot do); decoders of other kinds are rejected.

use std::path::Path;
use std::str::FromStr;

use serde_json::Value;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::pre_tokenizers::metaspace::PrependScheme;
use tokenizers::AddedToken;

use super::{parse_byte_token, Flavor, Model, PieceStyle, TokenKind, Tokenizer, TokenizerError, EOG_TEXTS};
use crate::hf_files::{read_text, GenerationDefaults, JsonFile};

pub(super) const TOKENIZER_FILE: &str = "tokenizer.json";

pub(super) fn build(
    tokenizer_json: &Path,
    tokenizer_config: Option<&Path>,
    generation: &GenerationDefaults,
) -> Result<Tokenizer, TokenizerError> {
    let hf_error = |message: String| TokenizerError::HfTokenizer { path: tokenizer_json.to_owned(), message };
    let mut model = tokenizers::Tokenizer::from_str(&read_text(tokenizer_json)?)
        .map_err(|e| hf_error(format!("not a tokenizers file: {e}")))?;
    let config = tokenizer_config.map(JsonFile::read).transpose()?;
    if let Some(config) = &config {
        add_config_tokens(&mut model, config)?;
    }

    let vocab = model.get_vocab(true);
    let n = vocab.values().max().map_or(0, |&max| max as usize + 1);
    if n == 0 {
        return Err(hf_error("the vocabulary is empty".to_owned()));
    }
    // Ids missing from the file (rare gaps) print nothing, like llama.cpp's unused tokens.
    let mut texts = vec![String::new(); n];
    let mut kinds = vec![TokenKind::Unused; n];
    for (text, id) in vocab {
        texts[id as usize] = text;
        kinds[id as usize] = TokenKind::Normal;
    }
    let (style, strips_space, byte_fallback) = decoder_rules(model.get_decoder())
        .map_err(|decoder| TokenizerError::UnsupportedDecoder { path: tokenizer_json.to_owned(), decoder })?;
    if byte_fallback {
        for (text, kind) in texts.iter().zip(&mut kinds) {
            if parse_byte_token(text).is_some() {
                *kind = TokenKind::Byte;
            }
        }
    }
    for (id, token) in model.get_added_tokens_decoder() {
        if let Some(kind) = kinds.get_mut(id as usize) {
            *kind = if token.special { TokenKind::Control } else { TokenKind::UserDefined };
        }
    }

    let bos = special_token(&model, config.as_ref(), "bos_token")?.or(generation.bos_token_id);
    let eos = special_token(&model, config.as_ref(), "eos_token")?
        .or_else(|| generation.eos_token_ids.first().copied());
    for id in bos.iter().chain(&eos).chain(&generation.eos_token_ids) {
        if *id as usize >= n {
            return Err(TokenizerError::IdOutOfRange { id: *id, vocab_size: n });
        }
    }
    let add_bos = match config.as_ref().map(|c| c.bool("add_bos_token")).transpose()?.flatten() {
        Some(add) => add,
        None => {
            let with_specials = model
                .encode_fast("", true)
                .map_err(|e| TokenizerError::Encode(e.to_string()))?;
            bos.is_some() && with_specials.get_ids().first() == bos.as_ref()
        }
    };

    let mut eog: Vec<u32> = eos.into_iter().chain(generation.eos_token_ids.iter().copied()).collect();
    eog.extend(EOG_TEXTS.iter().filter_map(|text| model.token_to_id(text)));
    eog.sort_unstable();
    eog.dedup();

    Ok(Tokenizer {
        model: Model::Hf(Box::new(model)),
        flavor: Flavor::HuggingFace,
        texts: texts.into_iter().collect(),
        kinds,
        style,
        specials: Vec::new(),
        bos,
        eos,
        add_bos,
        add_space_prefix: strips_space,
        eog,
    })
}

/// transformers adds the tokens of `added_tokens_decoder` that `tokenizer.json` lacks; each must
/// land on the id the config gives it.
fn add_config_tokens(model: &mut tokenizers::Tokenizer, config: &JsonFile) -> Result<(), TokenizerError> {
    const KEY: &str = "added_tokens_decoder";
    let Some(entries) = config.get(KEY) else { return Ok(()) };
    let Value::Object(entries) = entries else {
        return Err(config.error(KEY, "expected an object of id → token").into());
    };
    for (id_text, entry) in entries {
        let key = format!("{KEY}.{id_text}");
        let Ok(id) = id_text.parse::<u32>() else {
            return Err(config.error(&key, "the key is not a token id").into());
        };
        let Some(content) = entry.get("content").and_then(Value::as_str) else {
            return Err(config.error(&key, "missing string `content`").into());
        };
        if model.token_to_id(content) == Some(id) {
            continue;
        }
        let flag = |name: &str, default: bool| entry.get(name).and_then(Value::as_bool).unwrap_or(default);
        let special = flag("special", false);
        let token = AddedToken::from(content, special)
            .single_word(flag("single_word", false))
            .lstrip(flag("lstrip", false))
            .rstrip(flag("rstrip", false))
            .normalized(flag("normalized", !special));
        let added = if special { model.add_special_tokens([token]) } else { model.add_tokens([token]) };
        added.map_err(|e| config.error(&key, format!("adding token {content:?}: {e}")))?;
        match model.token_to_id(content) {
            Some(got) if got == id => {}
            got => {
                let at = got.map_or_else(|| "nowhere".to_owned(), |got| format!("id {got}"));
                return Err(config.error(&key, format!("token {content:?} would be added at {at}, not {id}")).into());
            }
        }
    }
    Ok(())
}

/// The id of a `tokenizer_config.json` special token (`"<s>"` or `{"content": "<s>", ...}`);
/// `None` when the file or key is absent or null.
fn special_token(
    model: &tokenizers::Tokenizer,
    config: Option<&JsonFile>,
    key: &str,
) -> Result<Option<u32>, TokenizerError> {
    let Some(config) = config else { return Ok(None) };
    let text = match config.get(key) {
        None => return Ok(None),
        Some(Value::String(text)) => text,
        Some(Value::Object(token)) => match token.get("content") {
            Some(Value::String(text)) => text,
            _ => return Err(config.error(key, "the token object has no string `content`").into()),
        },
        Some(v) => return Err(config.error(key, format!("expected a string or a token object, found {v}")).into()),
    };
    match model.token_to_id(text) {
        Some(id) => Ok(Some(id)),
        None => Err(config.error(key, format!("{text:?} is not in the vocabulary")).into()),
    }
}

/// How the decoder prints normal tokens: (style, strips the first printed space, `<0xXX>` tokens
/// are bytes). An unsupported decoder gives its name.
fn decoder_rules(decoder: Option<&DecoderWrapper>) -> Result<(PieceStyle, bool, bool), String> {
    let steps = match decoder {
        Some(DecoderWrapper::Sequence(seq)) => seq.get_decoders(),
        Some(single) => std::slice::from_ref(single),
        None => return Err("(none)".to_owned()),
    };
    let mut style = None;
    let (mut strips_space, mut byte_fallback) = (false, false);
    for step in steps {
        match step {
            DecoderWrapper::ByteLevel(_) => style = Some(PieceStyle::ByteLevel),
            DecoderWrapper::Metaspace(m) => {
                style = Some(PieceStyle::SentencePiece);
                strips_space |= m.get_prepend_scheme() != PrependScheme::Never;
            }
            // In SentencePiece-style sequences the replacement is `▁` → space.
            DecoderWrapper::Replace(_) => style = Some(PieceStyle::SentencePiece),
            DecoderWrapper::ByteFallback(_) => byte_fallback = true,
            DecoderWrapper::Fuse(_) => {}
            DecoderWrapper::Strip(strip) => strips_space |= strip.content == ' ' && strip.start > 0,
            other => return Err(decoder_name(other).to_owned()),
        }
    }
    style.map(|style| (style, strips_space, byte_fallback)).ok_or_else(|| {
        steps.iter().map(decoder_name).collect::<Vec<_>>().join(" + ")
    })
}

fn decoder_name(decoder: &DecoderWrapper) -> &'static str {
    match decoder {
        DecoderWrapper::BPE(_) => "BPEDecoder",
        DecoderWrapper::ByteLevel(_) => "ByteLevel",
        DecoderWrapper::WordPiece(_) => "WordPiece",
        DecoderWrapper::Metaspace(_) => "Metaspace",
        DecoderWrapper::CTC(_) => "CTC",
        DecoderWrapper::Sequence(_) => "Sequence",
        DecoderWrapper::Replace(_) => "Replace",
        DecoderWrapper::Fuse(_) => "Fuse",
        DecoderWrapper::Strip(_) => "Strip",
        DecoderWrapper::ByteFallback(_) => "ByteFallback",
    }
}
