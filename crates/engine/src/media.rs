//! Media (images today; video and audio slot in the same way) in chat requests.
//!
//! Placeholders follow LLaMA Factory: a message marks where each media item goes with
//! `<image>`; a request whose messages have none gets them prepended to its first user
//! message, and the count must then equal the number of items given. Content parts of type
//! `image` / `image_url` (Hugging Face and OpenAI shapes) become the same placeholders, so
//! every template, named or the model's own, renders them as text. After rendering, each
//! placeholder becomes the model's vision tokens (`<|vision_start|>`, the pad token repeated
//! once per feature row the encoder will produce, `<|vision_end|>`), exactly what the
//! Hugging Face processor feeds the model.
//!
//! All of this runs in the caller's thread, preprocessing (resize, normalise, patchify)
//! included; the engine thread receives a [`MediaPrompt`] and only runs the vision encoder,
//! once per item, when it admits the request. The n samples of a request share one
//! `MediaPrompt`, so they share the encoder's output too.
//!
//! Invariants of a [`MediaPrompt`]: items are in prompt order, their token spans are disjoint
//! runs of the pad token inside the prompt, and there is one M-RoPE position per prompt token.

use std::sync::OnceLock;

use ingot_core::config::vision::MultimodalTokens;
use ingot_core::media::{Media, MediaProcessor, Processed};
use ingot_core::model::mrope::rope_index;
use ingot_core::tokenizer::Tokenizer;
use serde_json::Value;

use crate::EngineError;

/// LLaMA Factory's image placeholder.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// One preprocessed media item and where its tokens sit in the prompt.
pub(crate) struct PromptMedia {
    pub processed: Processed,
    /// First pad token of the item in the prompt.
    pub start: usize,
    /// Its pad tokens (= the encoder's output rows).
    pub len: usize,
    /// Hash of the item's original bytes: the prefix cache may reuse this item's cached
    /// tokens only for the very same bytes.
    pub digest: u64,
    /// The encoder's output rows (`len × hidden`), set by the engine thread when the first
    /// sample that needs them is admitted.
    pub features: OnceLock<Vec<f32>>,
}

/// What a multimodal prompt carries besides its token ids.
pub struct MediaPrompt {
    pub(crate) items: Vec<PromptMedia>,
    /// M-RoPE (t, h, w) position of every prompt token.
    pub(crate) positions: Vec<[u32; 3]>,
    /// Position offset of every token after the prompt: position = cache index + delta.
    pub(crate) rope_delta: i64,
}

impl std::fmt::Debug for MediaPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPrompt").field("items", &self.items.len()).field("rope_delta", &self.rope_delta).finish()
    }
}

impl MediaPrompt {
    /// The prefix-cache key of every prompt token: its id, except inside a media item, where
    /// the key mixes the item's digest with the offset in the item (bit 63 set, so it never
    /// equals a token id). Two prompts share a cached prefix through an item only when the
    /// item's bytes are identical.
    pub(crate) fn keys(&self, prompt_ids: &[u32]) -> Vec<u64> {
        let mut keys: Vec<u64> = prompt_ids.iter().map(|&id| u64::from(id)).collect();
        for item in &self.items {
            for (offset, key) in keys[item.start..item.start + item.len].iter_mut().enumerate() {
                *key = (1 << 63) | (mix(item.digest ^ (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 1);
            }
        }
        keys
    }

    /// M-RoPE positions of the tokens at cache indices `range` after the prompt.
    pub(crate) fn positions_after_prompt(&self, range: std::ops::Range<usize>) -> Vec<[u32; 3]> {
        range
            .map(|i| {
                let p = (i as i64 + self.rope_delta).max(0) as u32;
                [p; 3]
            })
            .collect()
    }
}

/// A 64-bit finaliser (splitmix64), so nearby offsets give unrelated keys.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The parts of a model that take media: its placeholder tokens and one preprocessor per modality.
pub(crate) struct MediaSupport {
    pub tokens: MultimodalTokens,
    pub image: Box<dyn MediaProcessor>,
}

/// Replaces image content parts by placeholders (text parts are concatenated around them)
/// and returns how many placeholders the messages hold. Messages without image parts keep
/// their content as it is.
pub(crate) fn normalize_messages(messages: &mut [Value]) -> usize {
    let mut count = 0;
    for m in messages.iter_mut() {
        let Some(content) = m.get_mut("content") else { continue };
        if let Value::Array(parts) = content {
            let is_image = |p: &Value| {
                matches!(p.get("type").and_then(Value::as_str), Some("image" | "image_url"))
                    || p.get("image").is_some()
                    || p.get("image_url").is_some()
            };
            if parts.iter().any(is_image) {
                let mut text = String::new();
                for p in parts.iter() {
                    if is_image(p) {
                        text.push_str(IMAGE_PLACEHOLDER);
                    } else if let Some(t) = p.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
                *content = Value::String(text);
            }
        }
        if let Value::String(s) = content {
            count += s.matches(IMAGE_PLACEHOLDER).count();
        }
    }
    count
}

/// Checks the placeholders against the media given, prepending them to the first user
/// message when the messages have none (LLaMA Factory's rule).
pub(crate) fn place_media(messages: &mut [Value], media: usize) -> Result<(), EngineError> {
    let found = normalize_messages(messages);
    if found == media {
        return Ok(());
    }
    if found == 0 {
        let first_user = messages.iter_mut().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        let Some(Value::String(content)) = first_user.and_then(|m| m.get_mut("content")) else {
            return Err(EngineError::invalid(
                "messages",
                format!("{media} image(s) given but no user message with text content to attach them to"),
            ));
        };
        *content = IMAGE_PLACEHOLDER.repeat(media) + content;
        return Ok(());
    }
    Err(EngineError::invalid(
        "messages",
        format!("the messages have {found} {IMAGE_PLACEHOLDER} placeholder(s) but {media} image(s) were given; they must match"),
    ))
}

impl MediaSupport {
    /// Preprocesses the media, expands the rendered prompt's placeholders into the model's
    /// vision tokens, tokenizes it and lays out the items' spans and M-RoPE positions.
    pub(crate) fn build_prompt(
        &self,
        tokenizer: &Tokenizer,
        rendered: &str,
        media: &[Media],
    ) -> Result<(Vec<u32>, MediaPrompt), EngineError> {
        let invalid = |m: String| EngineError::invalid("messages", m);
        let pieces: Vec<&str> = rendered.split(IMAGE_PLACEHOLDER).collect();
        if pieces.len() - 1 != media.len() {
            return Err(invalid(format!(
                "the chat template rendered {} {IMAGE_PLACEHOLDER} placeholder(s) for {} image(s)",
                pieces.len() - 1,
                media.len()
            )));
        }
        let token = |id: u32| {
            tokenizer.id_to_token(id).ok_or_else(|| invalid(format!("the vision token id {id} is not in the vocabulary")))
        };
        let (start, pad, end) = (
            token(self.tokens.vision_start_token_id)?,
            token(self.tokens.image_token_id)?,
            token(self.tokens.vision_end_token_id)?,
        );
        let mut processed = Vec::with_capacity(media.len());
        for (i, m) in media.iter().enumerate() {
            let p = self.image.process(m).map_err(|source| EngineError::Media { field: format!("images[{i}]"), source })?;
            processed.push(p);
        }
        let mut text = String::with_capacity(rendered.len());
        for (i, piece) in pieces.iter().enumerate() {
            text.push_str(piece);
            if let Some(p) = processed.get(i) {
                text.push_str(start);
                text.push_str(&pad.repeat(self.image.placeholder_tokens(p)));
                text.push_str(end);
            }
        }
        let ids = tokenizer.encode_prompt(&text)?;

        // The pad runs, in order; a pad token typed into the text would break the layout.
        let mut spans = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            if ids[i] == self.tokens.image_token_id {
                let s = i;
                while i < ids.len() && ids[i] == self.tokens.image_token_id {
                    i += 1;
                }
                spans.push((s, i - s));
            } else {
                i += 1;
            }
        }
        let expected: Vec<usize> = processed.iter().map(|p| self.image.placeholder_tokens(p)).collect();
        if spans.iter().map(|s| s.1).collect::<Vec<_>>() != expected {
            return Err(invalid(format!(
                "the prompt's image tokens do not match the {} image(s) given (is `{pad}` written in the text?)",
                media.len()
            )));
        }
        let grids: Vec<[usize; 3]> = processed.iter().map(|p| p.grid_thw).collect();
        let (positions, rope_delta) = rope_index(&ids, &grids, &self.tokens).map_err(|e| invalid(e.to_string()))?;
        let items = processed
            .into_iter()
            .zip(spans)
            .zip(media)
            .map(|((processed, (start, len)), m)| PromptMedia {
                processed,
                start,
                len,
                digest: m.digest(),
                features: OnceLock::new(),
            })
            .collect();
        Ok((ids, MediaPrompt { items, positions, rope_delta }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_become_placeholders_and_strings_are_counted() {
        let mut m = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": [{"type": "text", "text": "look: "}, {"type": "image"}, {"type": "image_url", "image_url": {"url": "x"}}]}),
            json!({"role": "user", "content": "and <image> this"}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "kept"}]}),
        ];
        assert_eq!(normalize_messages(&mut m), 3);
        assert_eq!(m[1]["content"], "look: <image><image>");
        assert_eq!(m[3]["content"], json!([{"type": "text", "text": "kept"}]));
    }

    #[test]
    fn placeholders_are_prepended_to_the_first_user_message_or_must_match() {
        let mut m = vec![json!({"role": "system", "content": "s"}), json!({"role": "user", "content": "hi"})];
        place_media(&mut m, 2).expect("prepended");
        assert_eq!(m[1]["content"], "<image><image>hi");
        assert_eq!(m[0]["content"], "s");

        let mut m = vec![json!({"role": "user", "content": "<image> and <image>"})];
        let err = place_media(&mut m, 1).expect_err("2 placeholders, 1 image");
        assert!(err.to_string().contains("2 <image> placeholder(s) but 1 image(s)"), "{err}");
        let mut m = vec![json!({"role": "user", "content": "<image>"})];
        assert!(place_media(&mut m, 0).is_err(), "a placeholder without an image");
        let mut m = vec![json!({"role": "user", "content": "plain"})];
        place_media(&mut m, 0).expect("no media, no placeholder");
    }
}
