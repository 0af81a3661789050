//! Video and audio requests through the engine, against transformers' references: the tiny
//! Qwen2-VL fixture's two video cases (the video as its list of frame PNGs; one with an image
//! too), and the tiny Qwen2-Audio fixture's clip. Each gives the reference's prompt ids (media
//! tokens expanded) and greedy tokens exactly, with the original M-RoPE rule for videos and
//! plain positions for audio; LLaMA Factory's placeholders give the same prompts; media a
//! model cannot take is refused naming its field; the prefix cache keys videos and clips by
//! their bytes.

mod common;

use std::path::PathBuf;

use common::submit_chat;
use ingot_engine::{ChatRequest, EngineConfig, EngineHandle, GenParams, Image, Media, MediaKind, MediaLimits, Response};
use ingot_core::media::{Audio, Video};
use ingot_testkit::{fixtures_dir, json_ids};
use serde_json::{json, Value};

fn vlm_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn audio_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-audio")
}

fn cases(path: PathBuf) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).expect("json");
    v["cases"].as_array().expect("cases").clone()
}

fn start(dir: PathBuf, cfg: EngineConfig) -> EngineHandle {
    let loaded = ingot_core::load::load(&dir).expect("load fixture model");
    ingot_engine::start(loaded, EngineConfig { threads: 2, ..cfg }).expect("start")
}

fn image(path: PathBuf) -> Media {
    let bytes = std::fs::read(&path).expect("image");
    Media::Image(Image::decode(&bytes, &path.display().to_string(), &MediaLimits::default()).expect("decode"))
}

/// The fixture video: its 8 frame PNGs, taken at LLaMA Factory's default 2 fps.
fn video() -> Media {
    let frames = (0..8)
        .map(|t| match image(vlm_dir().join(format!("video/frame_{t:02}.png"))) {
            Media::Image(i) => i,
            _ => unreachable!("image() makes images"),
        })
        .collect();
    Media::Video(Video::from_frames(frames, "fixture frames", 2.0).expect("video"))
}

fn clip(name: &str) -> Media {
    let bytes = std::fs::read(fixtures_dir().join("audio").join(name)).expect("audio");
    Media::Audio(Audio::decode(&bytes, name, &MediaLimits::default()).expect("decode"))
}

fn greedy(n: usize) -> GenParams {
    GenParams { temperature: Some(0.0), max_new_tokens: Some(n), ..GenParams::default() }
}

fn one(engine: &EngineHandle, req: ChatRequest) -> Response {
    engine.chat(req).expect("chat").remove(0)
}

/// A video case as a request: its messages (Hugging Face parts), its image if any, the video.
fn video_request(c: &Value) -> ChatRequest {
    let mut media = Vec::new();
    if let Some(file) = c["image"].as_str() {
        media.push(image(vlm_dir().join(file)));
    }
    media.push(video());
    ChatRequest { messages: c["messages"].as_array().expect("messages").clone(), media, params: greedy(10), ..ChatRequest::default() }
}

#[test]
fn video_cases_give_transformers_prompt_ids_and_legacy_greedy_tokens() {
    let engine = start(vlm_dir(), EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    assert!(engine.takes(MediaKind::Video) && !engine.takes(MediaKind::Audio));
    for c in cases(vlm_dir().join("video/reference.json")) {
        let name = c["name"].as_str().expect("name");
        let sub = submit_chat(&engine, video_request(&c)).expect("submit");
        assert_eq!(sub.prompt_ids, json_ids(&c["input_ids"]), "{name}: prompt ids with expanded video tokens");
        drop(sub);
        let r = one(&engine, video_request(&c));
        let want = engine.tokenizer().decode(&json_ids(&c["legacy_rope"]["greedy_new_ids"]), true).expect("decode");
        assert_eq!(r.text, want, "{name}: greedy tokens with the original position rule");
        assert_eq!(r.response_length, 10);
    }
}

#[test]
fn llama_factory_placeholders_give_the_same_video_prompt() {
    let engine = start(vlm_dir(), EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    let c = &cases(vlm_dir().join("video/reference.json"))[1];
    let want = json_ids(&c["input_ids"]);
    // `<image><video>` in the text, as a LLaMA Factory dataset writes it.
    let req = |messages: Value| ChatRequest {
        messages: messages.as_array().expect("messages").clone(),
        media: vec![image(vlm_dir().join("image_64x48.png")), video()],
        params: greedy(2),
        ..ChatRequest::default()
    };
    let text = json!([{"role": "user", "content": "<image><video>Does the picture appear in the video?"}]);
    assert_eq!(submit_chat(&engine, req(text)).expect("placeholders").prompt_ids, want);
    // No placeholders: LLaMA Factory prepends them (images first, then videos in front).
    let bare = json!([{"role": "user", "content": "Does the picture appear in the video?"}]);
    let prepended = submit_chat(&engine, req(bare)).expect("prepended").prompt_ids;
    let (video_pad, image_pad) = (2034, 2033);
    let first = |id| prepended.iter().position(|&x| x == id).expect("pad");
    assert!(first(video_pad) < first(image_pad), "<video> is prepended in front of <image>");
    // The named template renders the placeholders the same way.
    let named = start(vlm_dir(), EngineConfig { template: Some("qwen2_vl".into()), prefix_cache: false, ..EngineConfig::default() });
    let parts = json!([{"role": "user", "content": [{"type": "image"}, {"type": "video_url", "video_url": {"url": "x"}}, {"type": "text", "text": "Does the picture appear in the video?"}]}]);
    assert_eq!(submit_chat(&named, req(parts)).expect("named template").prompt_ids, want);
}

#[test]
fn audio_case_gives_transformers_prompt_ids_and_greedy_tokens() {
    let engine = start(audio_dir(), EngineConfig::default());
    assert!(engine.takes(MediaKind::Audio) && !engine.takes(MediaKind::Image));
    let c = &cases(audio_dir().join("reference.json"))[0];
    let req = ChatRequest {
        messages: c["messages"].as_array().expect("messages").clone(),
        media: vec![clip("tone_chirp_16k.wav")],
        params: greedy(10),
        ..ChatRequest::default()
    };
    let valid = engine.validate_chat(req.clone()).expect("valid");
    assert_eq!(valid.prompt_text(), c["rendered_prompt"].as_str(), "the template's `Audio 1: ` marker");
    assert_eq!(valid.prompt_ids(), json_ids(&c["input_ids"]).as_slice(), "prompt ids with 37 audio tokens");
    let want = engine.tokenizer().decode(&json_ids(&c["greedy_new_ids"]), true).expect("decode");
    let first = one(&engine, req.clone());
    assert_eq!(first.text, want, "greedy tokens");
    // The prefix cache reuses the clip's tokens for the very same bytes only.
    let again = one(&engine, req.clone());
    let audio_end = json_ids(&c["input_ids"]).iter().rposition(|&id| id == 2048).expect("audio token") + 1;
    assert!(again.usage.cached_tokens >= audio_end, "same clip: reused through it ({})", again.usage.cached_tokens);
    assert_eq!(again.text, want);
    let other = ChatRequest { media: vec![clip("tone_chirp_44k_stereo.wav")], ..req };
    let r = one(&engine, other);
    let first_audio = json_ids(&c["input_ids"]).iter().position(|&id| id == 2048).expect("audio token");
    assert!(r.usage.cached_tokens <= first_audio, "another clip is computed afresh ({})", r.usage.cached_tokens);

    // LLaMA Factory's placeholder: `<audio>` becomes <|audio_bos|> + 37 x <|AUDIO|> + <|audio_eos|>.
    let lf = ChatRequest {
        messages: vec![json!({"role": "user", "content": "<audio>What do you hear?"})],
        media: vec![clip("tone_chirp_16k.wav")],
        params: greedy(1),
        ..ChatRequest::default()
    };
    let ids = engine.validate_chat(lf).expect("placeholder").prompt_ids().to_vec();
    assert_eq!(ids.iter().filter(|&&id| id == 2048).count(), 37);
    let at = ids.iter().position(|&id| id == 2048).expect("audio");
    assert_eq!((ids[at - 1], ids[at + 37]), (2049, 2050), "wrapped in <|audio_bos|> … <|audio_eos|>");
}

#[test]
fn media_a_model_cannot_take_is_refused_naming_its_field() {
    let vlm = start(vlm_dir(), EngineConfig::default());
    let ask = |media: Vec<Media>| ChatRequest {
        messages: vec![json!({"role": "user", "content": "What is this?"})],
        media,
        params: greedy(2),
        ..ChatRequest::default()
    };
    let err = vlm.validate_chat(ask(vec![clip("tone_chirp_16k.wav")])).expect_err("no audio encoder");
    assert_eq!(err.field(), Some("audios"), "{err}");
    assert!(err.to_string().contains("does not take audios"), "{err}");
    let audio = start(audio_dir(), EngineConfig::default());
    let err = audio.validate_chat(ask(vec![video()])).expect_err("no vision encoder");
    assert_eq!(err.field(), Some("videos"), "{err}");
    // A video part with no video given is an error, never a text-only answer.
    let part = ChatRequest {
        messages: vec![json!({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]})],
        params: greedy(2),
        ..ChatRequest::default()
    };
    let err = vlm.validate_chat(part).expect_err("a video part without its video");
    assert!(err.to_string().contains("1 <video> placeholder(s) but 0 video(s)"), "{err}");
    // Bad media is an error naming the item.
    let short = {
        let bytes = std::fs::read(fixtures_dir().join("audio/tone_chirp_16k.wav")).expect("wav");
        let limits = MediaLimits { max_audio_seconds: 1.0, ..MediaLimits::default() };
        Audio::decode(&bytes, "clip.wav", &limits).expect_err("over the limit").to_string()
    };
    assert!(short.contains("clip.wav") && short.contains("limit of 1 s"), "{short}");
}
