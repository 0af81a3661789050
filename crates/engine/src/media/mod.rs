//! Media (images, videos, audio clips) in chat requests.
//!
//! Placeholders follow LLaMA Factory ([`placeholders`]): `<image>`, `<video>`, `<audio>` in
//! message text, or content parts of each modality, counted per modality against the items
//! given. After rendering, each placeholder, and each media marker the model's own template
//! wrote for a part (`<|vision_start|><|video_pad|><|vision_end|>`,
//! `<|audio_bos|><|AUDIO|><|audio_eos|>`), becomes the model's tokens for the item: the opening
//! token, the pad token repeated once per row the encoder will produce, the closing token,
//! exactly what the Hugging Face processor feeds the model.
//!
//! Each modality has its own preprocessor: the image and video processors of a vision model
//! (patch grids for the vision tower), the Whisper feature extractor of an audio model (log-mel
//! features for the audio encoder). All of this runs in the caller's thread; the engine thread
//! receives a [`MediaPrompt`] and only runs the encoders ([`encode`]), once per item, when it
//! admits the request. The n samples of a request share one `MediaPrompt`, so they share the
//! encoders' output too.
//!
//! Positions: a vision model's prompt gets M-RoPE (t, h, w) ids ([`mrope_index`], the original
//! rule the checkpoints were trained with; Qwen2.5-VL videos scale time by
//! `second_per_grid_t`); an audio model's prompt has plain 1-D positions (none stored).
//!
//! Invariants of a [`MediaPrompt`]: items are in prompt order, their token spans are disjoint
//! runs of their pad token inside the prompt, and when positions are stored there is one per
//! prompt token.

mod encode;
mod placeholders;

use std::collections::VecDeque;
use std::sync::OnceLock;

use ingot_core::config::vision::MultimodalTokens;
use ingot_core::media::{Media, MediaProcessor, WhisperFeatureExtractor};
use ingot_core::model::audio::audio_tokens;
use ingot_core::model::mrope::{mrope_index, RopeRule, VideoGrid};
use ingot_core::tokenizer::Tokenizer;

pub(crate) use self::encode::{EncoderInput, Encoders};
pub use self::placeholders::MediaKind;
pub(crate) use self::placeholders::place_media;
use crate::EngineError;

/// LLaMA Factory's image placeholder.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// One preprocessed media item and where its tokens sit in the prompt.
pub(crate) struct PromptMedia {
    pub input: EncoderInput,
    /// Where the request gave the item (`videos[0]`), for errors.
    pub field: String,
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
    /// M-RoPE (t, h, w) position of every prompt token; `None` for 1-D positions.
    pub(crate) positions: Option<Vec<[u32; 3]>>,
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

    /// M-RoPE positions of the prompt tokens in `range`; `None` for 1-D positions.
    pub(crate) fn prompt_positions(&self, range: std::ops::Range<usize>) -> Option<Vec<[u32; 3]>> {
        self.positions.as_ref().map(|p| p[range].to_vec())
    }

    /// M-RoPE positions of the tokens at cache indices `range` after the prompt; `None` for
    /// 1-D positions.
    pub(crate) fn positions_after_prompt(&self, range: std::ops::Range<usize>) -> Option<Vec<[u32; 3]>> {
        self.positions.as_ref()?;
        Some(
            range
                .map(|i| {
                    let p = (i as i64 + self.rope_delta).max(0) as u32;
                    [p; 3]
                })
                .collect(),
        )
    }
}

/// A 64-bit finaliser (splitmix64), so nearby offsets give unrelated keys.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The vision side of a model: its token ids and one processor per visual modality.
pub(crate) struct VisionInput {
    pub tokens: MultimodalTokens,
    pub image: Box<dyn MediaProcessor>,
    pub video: Box<dyn MediaProcessor>,
}

/// The audio side of a model: its audio token and feature extractor.
pub(crate) struct AudioInput {
    pub token_id: u32,
    pub extractor: WhisperFeatureExtractor,
}

/// The parts of a model that take media.
pub(crate) struct MediaSupport {
    pub vision: Option<VisionInput>,
    pub audio: Option<AudioInput>,
}

/// How one modality is written in a prompt.
struct Layout {
    kind: MediaKind,
    pad_id: u32,
    open: String,
    pad: String,
    close: String,
}

impl Layout {
    /// The marker a model's template writes for a media part: open, one pad, close.
    fn marker(&self) -> String {
        format!("{}{}{}", self.open, self.pad, self.close)
    }
}

/// One item, preprocessed, before it is placed.
struct Prepared {
    kind: MediaKind,
    input: EncoderInput,
    tokens: usize,
    field: String,
    digest: u64,
    second_per_grid_t: Option<f32>,
}

/// How many items of each modality `media` holds (indexed by `MediaKind as usize`).
pub(crate) fn count_kinds(media: &[Media]) -> [usize; 3] {
    let mut counts = [0; 3];
    for m in media {
        counts[MediaKind::of(m) as usize] += 1;
    }
    counts
}

/// Refuses media of a modality the model does not take, naming the modality's field.
pub(crate) fn refuse_untaken(support: Option<&MediaSupport>, given: [usize; 3]) -> Result<(), EngineError> {
    for kind in MediaKind::ALL {
        let n = given[kind as usize];
        if n > 0 && !support.is_some_and(|s| s.takes(kind)) {
            let encoder = if kind == MediaKind::Audio { "audio" } else { "vision" };
            return Err(EngineError::invalid(
                kind.field(),
                format!("{}: {n} {}(s) given, but this model does not take {}s (it has no {encoder} encoder for them)", kind.field(), kind.name(), kind.name()),
            ));
        }
    }
    Ok(())
}

impl MediaSupport {
    /// Whether the model takes items of `kind`.
    pub(crate) fn takes(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Image => self.vision.is_some(),
            MediaKind::Video => self.vision.as_ref().is_some_and(|v| v.tokens.video_token_id.is_some()),
            MediaKind::Audio => self.audio.is_some(),
        }
    }

    /// The modalities whose content parts `template_source` renders itself (it writes the
    /// modality's pad token).
    pub(crate) fn template_kinds(&self, tokenizer: &Tokenizer, template_source: &str) -> Vec<MediaKind> {
        MediaKind::ALL
            .into_iter()
            .filter(|&k| self.layout(tokenizer, k).is_ok_and(|l| template_source.contains(&l.pad)))
            .collect()
    }

    fn layout(&self, tokenizer: &Tokenizer, kind: MediaKind) -> Result<Layout, EngineError> {
        let untaken = || EngineError::invalid(kind.field(), format!("this model does not take {}s", kind.name()));
        let text = |id: u32| {
            tokenizer
                .id_to_token(id)
                .map(str::to_string)
                .ok_or_else(|| EngineError::invalid("messages", format!("the {} token id {id} is not in the vocabulary", kind.name())))
        };
        match kind {
            MediaKind::Image | MediaKind::Video => {
                let v = self.vision.as_ref().ok_or_else(untaken)?;
                let pad_id = if kind == MediaKind::Image { v.tokens.image_token_id } else { v.tokens.video_token_id.ok_or_else(untaken)? };
                let (open, pad, close) = (text(v.tokens.vision_start_token_id)?, text(pad_id)?, text(v.tokens.vision_end_token_id)?);
                Ok(Layout { kind, pad_id, open, pad, close })
            }
            MediaKind::Audio => {
                let a = self.audio.as_ref().ok_or_else(untaken)?;
                // Qwen2-Audio's processor (and LLaMA Factory's plugin) write these by name.
                Ok(Layout { kind, pad_id: a.token_id, open: "<|audio_bos|>".into(), pad: text(a.token_id)?, close: "<|audio_eos|>".into() })
            }
        }
    }

    /// One item's encoder input and token count; errors name the item's field (`videos[1]`).
    fn prepare(&self, media: &Media, field: String) -> Result<Prepared, EngineError> {
        let kind = MediaKind::of(media);
        let bad = |source| EngineError::Media { field: field.clone(), source };
        let (input, tokens, second_per_grid_t) = match (kind, &self.vision, &self.audio) {
            (MediaKind::Image | MediaKind::Video, Some(v), _) => {
                let processor = if kind == MediaKind::Image { &v.image } else { &v.video };
                let p = processor.process(media).map_err(bad)?;
                let n = processor.placeholder_tokens(&p);
                (EncoderInput::Vision(p), n, processor.second_per_grid_t(media))
            }
            (MediaKind::Audio, _, Some(a)) => {
                let f = a.extractor.process(media).map_err(bad)?;
                let n = audio_tokens(f.valid_frames);
                if n == 0 {
                    return Err(EngineError::invalid(
                        field,
                        format!("{}: the clip is too short for one audio token (it needs at least 3 feature frames)", media.source()),
                    ));
                }
                (EncoderInput::Audio(f), n, None)
            }
            _ => return Err(EngineError::invalid(field, format!("this model does not take {}s", kind.name()))),
        };
        Ok(Prepared { kind, input, tokens, field, digest: media.digest(), second_per_grid_t })
    }

    /// Preprocesses the media, expands the rendered prompt's placeholders and media markers
    /// into the model's tokens, tokenizes it and lays out the items' spans and positions.
    pub(crate) fn build_prompt(
        &self,
        tokenizer: &Tokenizer,
        rendered: &str,
        media: &[Media],
    ) -> Result<(Vec<u32>, MediaPrompt), EngineError> {
        let invalid = |m: String| EngineError::invalid("messages", m);
        let given = count_kinds(media);
        let layouts: Vec<Layout> =
            MediaKind::ALL.into_iter().filter(|&k| given[k as usize] > 0).map(|k| self.layout(tokenizer, k)).collect::<Result<_, _>>()?;
        // Per modality, the items in the order given.
        let mut queues: [VecDeque<Prepared>; 3] = Default::default();
        let mut seen = [0usize; 3];
        for m in media {
            let kind = MediaKind::of(m);
            let field = format!("{}[{}]", kind.field(), seen[kind as usize]);
            seen[kind as usize] += 1;
            queues[kind as usize].push_back(self.prepare(m, field)?);
        }

        let patterns: Vec<(String, &Layout)> =
            layouts.iter().flat_map(|l| [(l.kind.placeholder().to_string(), l), (l.marker(), l)]).collect();
        let mut text = String::with_capacity(rendered.len());
        let mut placed: Vec<(Prepared, u32)> = Vec::with_capacity(media.len());
        let mut rest = rendered;
        loop {
            let next = patterns.iter().filter_map(|(p, l)| rest.find(p.as_str()).map(|at| (at, p.len(), *l))).min_by_key(|x| x.0);
            let Some((at, len, l)) = next else { break };
            text.push_str(&rest[..at]);
            let Some(item) = queues[l.kind as usize].pop_front() else {
                return Err(invalid(format!(
                    "the chat template rendered more {} markers than the {} {}(s) given",
                    l.kind.name(),
                    given[l.kind as usize],
                    l.kind.name()
                )));
            };
            text.push_str(&l.open);
            text.push_str(&l.pad.repeat(item.tokens));
            text.push_str(&l.close);
            placed.push((item, l.pad_id));
            rest = &rest[at + len..];
        }
        text.push_str(rest);
        if let Some(left) = queues.iter().find(|q| !q.is_empty()) {
            let kind = left[0].kind;
            return Err(invalid(format!(
                "the chat template rendered {} of the {} {}(s) given (it drops the rest; write a {} placeholder for each)",
                given[kind as usize] - left.len(),
                given[kind as usize],
                kind.name(),
                kind.placeholder()
            )));
        }
        let ids = tokenizer.encode_prompt(&text)?;
        let spans = pad_runs(&ids, &layouts.iter().map(|l| l.pad_id).collect::<Vec<_>>());
        let expected: Vec<(u32, usize)> = placed.iter().map(|(p, id)| (*id, p.tokens)).collect();
        if spans.iter().map(|&(id, _, len)| (id, len)).collect::<Vec<_>>() != expected {
            return Err(invalid(format!(
                "the prompt's media tokens do not match the {} item(s) given (is a media pad token written in the text?)",
                media.len()
            )));
        }
        let (positions, rope_delta) = match &self.vision {
            Some(v) => {
                let images: Vec<[usize; 3]> = placed.iter().filter_map(|(p, _)| vision_grid(p, MediaKind::Image)).collect();
                let videos: Vec<VideoGrid> = placed
                    .iter()
                    .filter_map(|(p, _)| {
                        vision_grid(p, MediaKind::Video)
                            .map(|grid_thw| VideoGrid { grid_thw, second_per_grid_t: p.second_per_grid_t.unwrap_or(1.0) })
                    })
                    .collect();
                let (p, d) = mrope_index(&ids, &images, &videos, &v.tokens, RopeRule::default()).map_err(|e| invalid(e.to_string()))?;
                (Some(p), d)
            }
            None => (None, 0),
        };
        let items = placed
            .into_iter()
            .zip(spans)
            .map(|((p, _), (_, start, len))| PromptMedia {
                input: p.input,
                field: p.field,
                start,
                len,
                digest: p.digest,
                features: OnceLock::new(),
            })
            .collect();
        Ok((ids, MediaPrompt { items, positions, rope_delta }))
    }
}

/// The patch grid of a vision item of `kind`.
fn vision_grid(p: &Prepared, kind: MediaKind) -> Option<[usize; 3]> {
    match &p.input {
        EncoderInput::Vision(v) if p.kind == kind => Some(v.grid_thw),
        _ => None,
    }
}

/// The maximal runs of any of the `pads` in `ids`, in order: (pad id, start, length).
fn pad_runs(ids: &[u32], pads: &[u32]) -> Vec<(u32, usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        if pads.contains(&ids[i]) {
            let (id, s) = (ids[i], i);
            while i < ids.len() && ids[i] == id {
                i += 1;
            }
            runs.push((id, s, i - s));
        } else {
            i += 1;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_runs_split_by_kind_and_position() {
        assert_eq!(pad_runs(&[1, 7, 7, 2, 8, 8, 8, 7, 3], &[7, 8]), vec![(7, 1, 2), (8, 4, 3), (7, 7, 1)]);
        assert_eq!(pad_runs(&[1, 2], &[7]), vec![]);
    }
}
