//! LLaMA Factory's media placeholders (`<image>`, `<video>`, `<audio>`) and the content parts
//! of Hugging Face and OpenAI messages, before the chat template renders them.
//!
//! Per modality: the messages' placeholders and media parts are counted; when there are none
//! and items of that modality are given, placeholders are prepended to the first user message
//! (LLaMA Factory's rule: images, then videos, then audios, each in front of the previous, so
//! the text starts `<audio>…<video>…<image>…`); otherwise the count must equal the items given.
//!
//! A media part renders through the model's own template when that template writes the
//! modality's tokens itself (the Qwen2-VL and Qwen2-Audio templates do: `Audio 1:
//! <|audio_bos|><|AUDIO|><|audio_eos|>`): the part is kept, in Hugging Face's canonical shape
//! `{"type": "video"}`, so the text is transformers' exactly. Otherwise (a named template) it
//! becomes its placeholder. After rendering, [`super::MediaSupport::build_prompt`] finds both
//! forms in prompt order.

use serde_json::{json, Value};

use crate::EngineError;
use ingot_core::media::Media;

/// One modality of media input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
}

impl MediaKind {
    pub const ALL: [MediaKind; 3] = [MediaKind::Image, MediaKind::Video, MediaKind::Audio];

    /// The modality of an item.
    pub fn of(media: &Media) -> MediaKind {
        match media {
            Media::Image(_) => MediaKind::Image,
            Media::Video(_) => MediaKind::Video,
            Media::Audio(_) => MediaKind::Audio,
        }
    }

    /// LLaMA Factory's placeholder.
    pub fn placeholder(self) -> &'static str {
        match self {
            MediaKind::Image => "<image>",
            MediaKind::Video => "<video>",
            MediaKind::Audio => "<audio>",
        }
    }

    /// The singular name, as in `"image"`.
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        }
    }

    /// The plural, which is also LLaMA Factory's argument and dataset column name (`videos`):
    /// errors about items of this modality name it as their field.
    pub fn field(self) -> &'static str {
        match self {
            MediaKind::Image => "images",
            MediaKind::Video => "videos",
            MediaKind::Audio => "audios",
        }
    }

    /// The modality of a content part: Hugging Face's `{"type": "image"|"video"|"audio"}` (or
    /// a part holding such a key), OpenAI's `image_url` / `input_audio`, and vLLM's
    /// `video_url` / `audio_url`. `None` for text and anything else.
    pub fn of_part(part: &Value) -> Option<MediaKind> {
        let ty = part.get("type").and_then(Value::as_str);
        let has = |keys: &[&str]| keys.iter().any(|k| part.get(*k).is_some());
        if matches!(ty, Some("image" | "image_url")) || has(&["image", "image_url"]) {
            Some(MediaKind::Image)
        } else if matches!(ty, Some("video" | "video_url")) || has(&["video", "video_url"]) {
            Some(MediaKind::Video)
        } else if matches!(ty, Some("audio" | "audio_url" | "input_audio")) || has(&["audio", "audio_url", "input_audio"]) {
            Some(MediaKind::Audio)
        } else {
            None
        }
    }
}

/// Rewrites media content parts (see the module documentation: kept as canonical parts for the
/// modalities in `template_kinds`, placeholders otherwise; a message left with text only
/// becomes a string) and returns how many items of each modality the messages mark.
pub(crate) fn normalize_messages(messages: &mut [Value], template_kinds: &[MediaKind]) -> [usize; 3] {
    let mut counts = [0; 3];
    for m in messages.iter_mut() {
        let Some(content) = m.get_mut("content") else { continue };
        if let Value::Array(parts) = content {
            if parts.iter().any(|p| MediaKind::of_part(p).is_some()) {
                let mut out: Vec<Value> = Vec::with_capacity(parts.len());
                let mut text = String::new();
                for p in parts.iter() {
                    match MediaKind::of_part(p) {
                        Some(kind) if template_kinds.contains(&kind) => {
                            if !text.is_empty() {
                                out.push(json!({"type": "text", "text": std::mem::take(&mut text)}));
                            }
                            out.push(json!({"type": kind.name()}));
                        }
                        Some(kind) => text.push_str(kind.placeholder()),
                        None => text.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                    }
                }
                *content = match out.is_empty() {
                    true => Value::String(text),
                    false => {
                        if !text.is_empty() {
                            out.push(json!({"type": "text", "text": text}));
                        }
                        Value::Array(out)
                    }
                };
            }
        }
        for kind in MediaKind::ALL {
            counts[kind as usize] += count_in(content, kind);
        }
    }
    counts
}

/// Items of `kind` marked in one message's content: placeholders in its text, media parts.
fn count_in(content: &Value, kind: MediaKind) -> usize {
    match content {
        Value::String(s) => s.matches(kind.placeholder()).count(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match MediaKind::of_part(p) {
                Some(k) => usize::from(k == kind),
                None => p.get("text").and_then(Value::as_str).map_or(0, |t| t.matches(kind.placeholder()).count()),
            })
            .sum(),
        _ => 0,
    }
}

/// Checks the messages' placeholders and parts against the media given, per modality,
/// prepending placeholders to the first user message for a modality the messages do not mark
/// (LLaMA Factory's rule). `given[kind as usize]` is the number of items of each modality.
pub(crate) fn place_media(messages: &mut [Value], given: [usize; 3], template_kinds: &[MediaKind]) -> Result<(), EngineError> {
    let found = normalize_messages(messages, template_kinds);
    for kind in MediaKind::ALL {
        let (found, given) = (found[kind as usize], given[kind as usize]);
        if found == given {
            continue;
        }
        let (name, placeholder) = (kind.name(), kind.placeholder());
        if found != 0 {
            return Err(EngineError::invalid(
                "messages",
                format!("the messages have {found} {placeholder} placeholder(s) but {given} {name}(s) were given; they must match (a {name} content part counts as one)"),
            ));
        }
        let first_user = messages.iter_mut().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        match first_user.and_then(|m| m.get_mut("content")) {
            Some(Value::String(content)) => *content = placeholder.repeat(given) + content,
            Some(Value::Array(parts)) => parts.insert(0, json!({"type": "text", "text": placeholder.repeat(given)})),
            _ => {
                return Err(EngineError::invalid(
                    "messages",
                    format!("{given} {name}(s) given but no user message with content to attach them to"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &[MediaKind] = &[];

    #[test]
    fn parts_become_placeholders_and_strings_are_counted() {
        let mut m = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": [{"type": "text", "text": "look: "}, {"type": "image"}, {"type": "image_url", "image_url": {"url": "x"}}]}),
            json!({"role": "user", "content": "and <image> this <video>"}),
            json!({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, {"type": "video_url", "video_url": {"url": "v"}}]}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "kept"}]}),
        ];
        assert_eq!(normalize_messages(&mut m, NONE), [3, 2, 1]);
        assert_eq!(m[1]["content"], "look: <image><image>");
        assert_eq!(m[3]["content"], "<audio><video>");
        assert_eq!(m[4]["content"], json!([{"type": "text", "text": "kept"}]));
    }

    #[test]
    fn parts_the_template_renders_stay_parts_in_the_canonical_shape() {
        let mut m = vec![json!({"role": "user", "content": [
            {"type": "audio_url", "audio_url": {"url": "a.wav"}}, {"type": "text", "text": "What?"}, {"type": "image"}
        ]})];
        assert_eq!(normalize_messages(&mut m, &[MediaKind::Audio]), [1, 0, 1]);
        assert_eq!(m[0]["content"], json!([{"type": "audio"}, {"type": "text", "text": "What?<image>"}]));
    }

    #[test]
    fn placeholders_are_prepended_per_modality_or_must_match() {
        let mut m = vec![json!({"role": "system", "content": "s"}), json!({"role": "user", "content": "hi"})];
        place_media(&mut m, [2, 1, 1], NONE).expect("prepended");
        assert_eq!(m[1]["content"], "<audio><video><image><image>hi");
        assert_eq!(m[0]["content"], "s");

        let mut m = vec![json!({"role": "user", "content": "<image> and <image>"})];
        let err = place_media(&mut m, [1, 0, 0], NONE).expect_err("2 placeholders, 1 image");
        assert!(err.to_string().contains("2 <image> placeholder(s) but 1 image(s)"), "{err}");
        let mut m = vec![json!({"role": "user", "content": "<video>"})];
        let err = place_media(&mut m, [0, 0, 0], NONE).expect_err("a placeholder without a video");
        assert!(err.to_string().contains("1 <video> placeholder(s) but 0 video(s)"), "{err}");
        let mut m = vec![json!({"role": "user", "content": "<image> and audio"})];
        place_media(&mut m, [1, 0, 1], NONE).expect("the audio is prepended, the image matches");
        assert_eq!(m[0]["content"], "<audio><image> and audio");
        let mut m = vec![json!({"role": "user", "content": "plain"})];
        place_media(&mut m, [0, 0, 0], NONE).expect("no media, no placeholder");
    }
}
