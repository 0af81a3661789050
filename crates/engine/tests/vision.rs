//! Image requests through the engine on the tiny Qwen2-VL fixture: the prompt ids with the
//! expanded image tokens and the greedy continuation exactly as transformers computed them,
//! image requests batched with others, several images in one conversation, and a prefix
//! cache that reuses an image's tokens only for the very same image bytes. The same end to
//! end on the tiny Qwen2.5-VL fixture (window attention).

mod common;

use std::path::PathBuf;

use common::{submit_chat, Submission};
use ingot_testkit::{fixtures_dir, json_ids};
use ingot_engine::{ChatRequest, EngineConfig, EngineHandle, GenParams, Image, Media, MediaLimits, Response};
use serde_json::{json, Value};

fn vlm_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(vlm_dir().join("reference.json")).expect("reference.json")).expect("json")
}

fn case(name: &str) -> Value {
    reference()["cases"].as_array().expect("cases").iter().find(|c| c["name"] == name).expect("case").clone()
}

fn start(cfg: EngineConfig) -> EngineHandle {
    let loaded = ingot_core::load::load(&vlm_dir()).expect("load tiny-qwen2-vl");
    assert!(loaded.vision.is_some(), "the fixture has a vision tower");
    ingot_engine::start(loaded, EngineConfig { threads: 2, ..cfg }).expect("start")
}

fn image(file: &str) -> Media {
    let path = vlm_dir().join(file);
    let bytes = std::fs::read(&path).expect("image");
    Media::Image(Image::decode(&bytes, file, &MediaLimits::default()).expect("decode"))
}

fn greedy(n: usize) -> GenParams {
    GenParams { temperature: Some(0.0), max_new_tokens: Some(n), ..GenParams::default() }
}

/// The fixture case as a request: its messages, its image, greedy for as many tokens as the
/// reference holds.
fn request(c: &Value) -> ChatRequest {
    ChatRequest {
        messages: c["messages"].as_array().expect("messages").clone(),
        media: vec![image(c["image"].as_str().expect("image"))],
        params: greedy(c["greedy_new_ids"].as_array().expect("ids").len()),
        ..ChatRequest::default()
    }
}

fn expected_text(engine: &EngineHandle, c: &Value) -> String {
    engine.tokenizer().decode(&json_ids(&c["greedy_new_ids"]), true).expect("decode")
}

/// [`expected_text`] as the engine streams it: a continuation that stops inside a UTF-8
/// sequence (image 2 of the Qwen2.5-VL fixture ends on a lone byte token) has no text for
/// the incomplete tail, where a one-shot decode shows U+FFFD.
fn streamed_text(engine: &EngineHandle, c: &Value) -> String {
    expected_text(engine, c).trim_end_matches('\u{FFFD}').to_string()
}

/// The text of a submission's first sample, as streamed.
fn first_sample_text(sub: Submission) -> String {
    let mut got = String::new();
    for ev in sub.streams.into_iter().next().expect("stream").events.iter() {
        match ev {
            ingot_engine::Event::Text(t) => got.push_str(&t),
            ingot_engine::Event::Logprobs(_) => {}
            ingot_engine::Event::Done(_) => break,
            ingot_engine::Event::Error(e) => panic!("{e}"),
        }
    }
    got
}

fn one(engine: &EngineHandle, req: ChatRequest) -> Response {
    engine.chat(req).expect("chat").remove(0)
}

#[test]
fn fixture_cases_give_transformers_prompt_ids_and_greedy_tokens() {
    let engine = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    assert!(engine.takes_images());
    for name in ["image1_describe", "image2_system_question"] {
        let c = case(name);
        let sub = submit_chat(&engine, request(&c)).expect("submit");
        assert_eq!(sub.prompt_ids, json_ids(&c["input_ids"]), "{name}: prompt ids with expanded image tokens");
        drop(sub);
        let r = one(&engine, request(&c));
        assert_eq!(r.text, expected_text(&engine, &c), "{name}: greedy continuation");
        assert_eq!(r.prompt_length, c["input_ids"].as_array().expect("ids").len());
    }
}

#[test]
fn placeholders_as_text_equal_content_parts() {
    let engine = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    let c = case("image2_system_question");
    // LLaMA Factory's form: the placeholder in the text, the system prompt as a field.
    let req = ChatRequest {
        messages: vec![json!({"role": "user", "content": "What shapes do you see?<image>"})],
        system: Some("You are a careful visual assistant.".into()),
        media: vec![image("image_40x90.png")],
        params: greedy(10),
        ..ChatRequest::default()
    };
    let sub = submit_chat(&engine, req).expect("submit");
    assert_eq!(sub.prompt_ids, json_ids(&c["input_ids"]));
    // No placeholder at all: the image goes before the first user message's text (image 1's layout).
    let c1 = case("image1_describe");
    let req = ChatRequest {
        messages: vec![json!({"role": "user", "content": "Describe this image."})],
        media: vec![image("image_64x48.png")],
        params: greedy(10),
        ..ChatRequest::default()
    };
    assert_eq!(submit_chat(&engine, req).expect("submit").prompt_ids, json_ids(&c1["input_ids"]));
}

#[test]
fn llama_factory_s_qwen2_vl_template_gives_the_same_prompt() {
    let engine = start(EngineConfig { template: Some("qwen2_vl".into()), prefix_cache: false, ..EngineConfig::default() });
    for name in ["image1_describe", "image2_system_question"] {
        let c = case(name);
        assert_eq!(submit_chat(&engine, request(&c)).expect("submit").prompt_ids, json_ids(&c["input_ids"]), "{name}");
    }
}

#[test]
fn mismatched_counts_and_text_models_are_refused() {
    let engine = start(EngineConfig::default());
    let two = ChatRequest {
        messages: vec![json!({"role": "user", "content": "<image> and <image>"})],
        media: vec![image("image_64x48.png")],
        params: greedy(4),
        ..ChatRequest::default()
    };
    let err = submit_chat(&engine, two).err().expect("2 placeholders, 1 image");
    assert!(err.to_string().contains("2 <image> placeholder(s) but 1 image(s)"), "{err}");
    let none = ChatRequest {
        messages: vec![json!({"role": "user", "content": "<image> what is it?"})],
        params: greedy(4),
        ..ChatRequest::default()
    };
    assert!(submit_chat(&engine, none).is_err(), "a placeholder without its image");
}

#[test]
fn image_requests_batch_with_text_requests_and_keep_their_tokens() {
    let engine = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    let (c1, c2) = (case("image1_describe"), case("image2_system_question"));
    let text = ChatRequest::from_turns([("user", "Write a short story about a cat.")], greedy(12));
    let solo_text = one(&engine, text.clone()).text;
    // All at once, several times over: they share steps, in any mix of prefill and decode.
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push((submit_chat(&engine, request(&c1)).expect("c1"), expected_text(&engine, &c1)));
        subs.push((submit_chat(&engine, text.clone()).expect("text"), solo_text.clone()));
        subs.push((submit_chat(&engine, request(&c2)).expect("c2"), expected_text(&engine, &c2)));
    }
    for (sub, want) in subs {
        let got = first_sample_text(sub);
        assert_eq!(got, want);
    }
}

#[test]
fn samples_of_one_request_share_its_image() {
    let engine = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    let c = case("image2_system_question");
    let mut req = request(&c);
    req.params.num_return_sequences = Some(3);
    let replies = engine.chat(req).expect("chat");
    assert_eq!(replies.len(), 3);
    for r in replies {
        assert_eq!(r.text, expected_text(&engine, &c));
    }
}

#[test]
fn an_image_split_across_prefill_chunks_keeps_its_tokens() {
    // 11 samples of a 49-token prompt whose image tokens are 20..24: a step prefills at most
    // 512 prompt tokens, so 10 samples take 490 and the 11th gets the first 22 tokens, half
    // of its image. Its feature rows must continue where the first chunk stopped.
    let engine = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    let req = |n: usize| ChatRequest {
        messages: vec![json!({"role": "user", "content": "Describe this image, please now."})],
        media: vec![image("image_64x48.png")],
        params: GenParams { num_return_sequences: Some(n), ..greedy(8) },
        ..ChatRequest::default()
    };
    let sub = submit_chat(&engine, req(1)).expect("submit");
    assert_eq!(sub.prompt_ids.len(), 49, "the layout this test relies on");
    assert_eq!(sub.prompt_ids.iter().position(|&id| id == 2033), Some(20));
    drop(sub);
    let solo = one(&engine, req(1)).text;
    let all = engine.chat(req(11)).expect("chat");
    assert_eq!(all.len(), 11);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.text, solo, "sample {i}");
    }
}

#[test]
fn two_images_in_one_conversation() {
    let engine = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    let req = ChatRequest {
        messages: vec![
            json!({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}),
            json!({"role": "assistant", "content": "A picture."}),
            json!({"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]}),
        ],
        media: vec![image("image_64x48.png"), image("image_40x90.png")],
        params: greedy(6),
        ..ChatRequest::default()
    };
    let sub = submit_chat(&engine, req.clone()).expect("submit");
    let pad = 2033;
    let runs: Vec<usize> = sub
        .prompt_ids
        .split(|&id| id != pad)
        .filter(|run| !run.is_empty())
        .map(<[u32]>::len)
        .collect();
    assert_eq!(runs, vec![4, 6], "image 1 then image 2, each with its own token count");
    drop(sub);
    let r = one(&engine, req);
    assert_eq!(r.response_length, 6);
}

#[test]
fn the_prefix_cache_reuses_an_image_only_for_identical_bytes() {
    let engine = start(EngineConfig::default());
    let c1 = case("image1_describe");
    let first = one(&engine, request(&c1));
    let again = one(&engine, request(&c1));
    let image_end = json_ids(&c1["input_ids"]).iter().rposition(|&id| id == 2033).expect("pad") + 1;
    assert!(again.usage.cached_tokens >= image_end, "same image: reused through it ({})", again.usage.cached_tokens);
    assert_eq!(again.text, first.text);

    // Another image of the same size: the same token ids, different pixels.
    let mut other = request(&c1);
    let plain = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, 200, (y * 5) as u8]));
    let mut png = Vec::new();
    plain.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
    other.media = vec![Media::Image(Image::decode(&png, "gradient", &MediaLimits::default()).expect("decode"))];
    let r = one(&engine, other.clone());
    let first_pad = json_ids(&c1["input_ids"]).iter().position(|&id| id == 2033).expect("pad");
    assert!(r.usage.cached_tokens <= first_pad, "a different image is computed afresh ({})", r.usage.cached_tokens);
    // And its answer is what a fresh engine gives.
    let fresh = start(EngineConfig { prefix_cache: false, ..EngineConfig::default() });
    assert_eq!(r.text, one(&fresh, other).text);
}

/// Qwen2.5-VL (window attention) end to end on its checked-in fixture: image bytes through the
/// checkpoint's preprocessing, the template, the encoder and the cached decode give
/// transformers' prompt ids and greedy continuation, alone and both cases batched.
#[test]
fn qwen2_5_vl_fixture_cases_end_to_end() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/fixtures/tiny-qwen2.5-vl"));
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference.json")).expect("json");
    let loaded = ingot_core::load::load(&dir).expect("load tiny-qwen2.5-vl");
    let engine = ingot_engine::start(loaded, EngineConfig { threads: 2, ..EngineConfig::default() }).expect("start");
    assert!(engine.takes_images());
    let requests: Vec<(Value, ChatRequest)> = reference["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let file = c["image"].as_str().expect("image");
            let bytes = std::fs::read(dir.join(file)).expect("image");
            let media = Media::Image(Image::decode(&bytes, file, &MediaLimits::default()).expect("decode"));
            let req = ChatRequest {
                messages: c["messages"].as_array().expect("messages").clone(),
                media: vec![media],
                params: greedy(c["greedy_new_ids"].as_array().expect("ids").len()),
                ..ChatRequest::default()
            };
            (c.clone(), req)
        })
        .collect();
    assert_eq!(requests.len(), 2);
    for (c, req) in &requests {
        let name = c["name"].as_str().expect("name");
        let sub = submit_chat(&engine, req.clone()).expect("submit");
        assert_eq!(sub.prompt_ids, json_ids(&c["input_ids"]), "{name}: prompt ids with expanded image tokens");
        drop(sub);
        let r = one(&engine, req.clone());
        assert_eq!(r.response_length, c["greedy_new_ids"].as_array().expect("ids").len(), "{name}: tokens");
        assert_eq!(r.text, streamed_text(&engine, c), "{name}: greedy continuation");
    }
    // Both at once (the second run also meets the prefix cache).
    let subs: Vec<_> = requests.iter().map(|(_, req)| submit_chat(&engine, req.clone()).expect("submit")).collect();
    for ((c, _), sub) in requests.iter().zip(subs) {
        let got = first_sample_text(sub);
        assert_eq!(got, streamed_text(&engine, c), "{}: batched", c["name"]);
    }
}
