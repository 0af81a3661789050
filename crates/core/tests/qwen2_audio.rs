//! Qwen2-Audio against transformers on the shared `tiny-qwen2-audio` fixture, from the WAV file
//! to the greedy tokens: the WAV decodes to the reference waveform, the 128-bin Whisper
//! features are within 1e-4 of the processor's, the rendered prompt with `<|AUDIO|>` expanded
//! tokenizes to the reference `input_ids` exactly, the projected audio rows match, the whole
//! prompt's logits are within 1e-3 at every position, and 10 greedy tokens decoded with the KV
//! cache are transformers' exactly. Also: the 44.1 kHz stereo clip of `audio/` after downmix and
//! resampling, and bad audio as errors naming the file and the limit.

mod vlm;

use std::path::PathBuf;

use ingot_core::config::KvType;
use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::media::{Audio, Media, MediaError, MediaLimits, WhisperFeatureExtractor};
use ingot_core::model::audio::audio_tokens;
use ingot_core::model::{Embeds, ForwardError, Logits, SeqInput};
use ingot_core::sampling::argmax;
use ingot_testkit::{fixtures_dir, json_ids};
use safetensors::SafeTensors;
use serde_json::Value;
use vlm::{f32_tensor, i64_tensor, max_diff, LOGIT_TOLERANCE};

const FEATURE_TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-audio")
}

fn load() -> LoadedModel {
    let mut m = load_with(&dir(), &LoadOptions::default()).unwrap_or_else(|e| panic!("loading tiny-qwen2-audio: {e}"));
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerances.
    m.model.set_kv_type(KvType::F32);
    m
}

fn case() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
    let v: Value = serde_json::from_str(&text).expect("reference.json");
    v["cases"][0].clone()
}

fn reference_tensors() -> Vec<u8> {
    std::fs::read(dir().join("reference_tensors.safetensors")).expect("reference tensors")
}

fn read_audio(name: &str) -> Audio {
    let bytes = std::fs::read(fixtures_dir().join("audio").join(name)).expect("audio file");
    Audio::decode(&bytes, name, &MediaLimits::default()).expect("decode")
}

#[test]
fn loads_as_an_audio_language_model() {
    let m = load();
    let audio = m.audio.as_ref().expect("Qwen2-Audio has an audio side");
    assert!(m.vision.is_none());
    assert_eq!(audio.audio_token_id, 2048);
    assert_eq!(m.tokenizer.token_to_id("<|AUDIO|>"), Some(2048));
    assert_eq!((audio.feature_extractor.feature_size(), audio.feature_extractor.sampling_rate()), (128, 16_000));
    let cfg = audio.encoder.config();
    assert_eq!((cfg.num_mel_bins, cfg.d_model, cfg.encoder_layers, cfg.hidden_size), (128, 32, 2, 64));
    assert_eq!(m.model.config().mrope_section, None, "plain 1-D RoPE");
}

/// The processor's steps: WAV → features (checked against the stored ones) → the rendered
/// prompt with `<|AUDIO|>` repeated once per audio token → ids equal to the reference.
#[test]
fn prompt_ids_and_features_match_the_processor() {
    let (m, case, bytes) = (load(), case(), reference_tensors());
    let audio = m.audio.as_ref().expect("audio");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");

    let features = audio.feature_extractor.process(&Media::Audio(read_audio("tone_chirp_16k.wav"))).expect("features");
    let (shape, want) = f32_tensor(&st, "input_features");
    assert_eq!(shape, [features.n_mels, features.frames]);
    let (d, at) = max_diff(&features.features, &want);
    eprintln!("128-bin features: max abs diff {d}");
    assert!(d < FEATURE_TOLERANCE, "features: max abs diff {d} at {at}");
    let mask = i64_tensor(&st, "feature_attention_mask");
    assert_eq!(features.valid_frames as i64, mask.iter().sum::<i64>());
    let n = audio_tokens(features.valid_frames);
    assert_eq!(n as u64, case["num_audio_tokens"].as_u64().expect("count"));

    let rendered = case["rendered_prompt"].as_str().expect("prompt");
    let expanded = rendered.replacen("<|AUDIO|>", &"<|AUDIO|>".repeat(n), 1);
    let ids = m.tokenizer.encode_prompt(&expanded).expect("tokenize");
    assert_eq!(ids, json_ids(&case["input_ids"]));
    let stored: Vec<u32> = i64_tensor(&st, "input_ids").iter().map(|&v| v as u32).collect();
    assert_eq!(ids, stored);
}

#[test]
fn matches_transformers_logits_and_greedy_tokens() {
    let (m, case, bytes) = (load(), case(), reference_tensors());
    let audio = m.audio.as_ref().expect("audio");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let ids = json_ids(&case["input_ids"]);
    let (_, stored_features) = f32_tensor(&st, "input_features");
    let valid = i64_tensor(&st, "feature_attention_mask").iter().sum::<i64>() as usize;

    // From the stored features, and from our own features of the WAV: the same rows.
    let rows = audio.encoder.encode(&stored_features, 3000, valid).expect("encode");
    let (_, projected) = f32_tensor(&st, "audio_features_projected");
    let (d, at) = max_diff(&rows, &projected);
    eprintln!("projected audio rows from the stored features: max abs diff {d}");
    assert!(d < LOGIT_TOLERANCE, "projected audio rows: max abs diff {d} at {at}");
    let ours = audio.feature_extractor.process(&Media::Audio(read_audio("tone_chirp_16k.wav"))).expect("features");
    let rows_ours = audio.encoder.encode(&ours.features, ours.frames, ours.valid_frames).expect("encode");
    let (d, _) = max_diff(&rows_ours, &projected);
    eprintln!("projected audio rows from our features: max abs diff {d}");
    assert!(d < LOGIT_TOLERANCE, "projected rows from our features: max abs diff {d}");

    let start = ids.iter().position(|&id| id == audio.audio_token_id).expect("an audio token");
    assert_eq!(ids.iter().filter(|&&id| id == audio.audio_token_id).count() * m.model.config().hidden_size, rows.len());
    let embeds = [Embeds { at: start, rows: &rows }];
    let mut cache = SeqCache::new(m.model.config());
    let logits = m
        .model
        .forward(&mut [SeqInput { tokens: &ids, cache: &mut cache, logits: Logits::All, positions: None, embeds: &embeds }])
        .expect("prefill")
        .remove(0);
    let (_, want) = f32_tensor(&st, "logits");
    let (d, at) = max_diff(&logits, &want);
    eprintln!("logits: max abs diff {d}");
    assert!(d < LOGIT_TOLERANCE, "logits: max abs diff {d} at position {}", at / m.model.config().vocab_size);

    let vocab = m.model.config().vocab_size;
    let mut next = argmax(&logits[logits.len() - vocab..]) as u32;
    let mut greedy = vec![next];
    while greedy.len() < json_ids(&case["greedy_new_ids"]).len() {
        let out = m
            .model
            .forward(&mut [SeqInput { tokens: &[next], cache: &mut cache, logits: Logits::Last, positions: None, embeds: &[] }])
            .expect("decode")
            .remove(0);
        next = argmax(&out) as u32;
        greedy.push(next);
    }
    assert_eq!(greedy, json_ids(&case["greedy_new_ids"]));
}

/// The 44.1 kHz stereo clip: downmix, resample to 16 kHz, 80-bin features, compared with
/// transformers' features of soxr HQ's resampling (LLaMA Factory's path), at the same 1e-4 as
/// the 16 kHz clip. `media::resample` builds soxr HQ's two stages, so the waveform matches
/// soxr's to float32 rounding; a different good resampler (scipy's resample_poly, stored in the
/// fixture) is 0.136 away in the features.
#[test]
fn resampled_stereo_clip_features() {
    let bytes = std::fs::read(fixtures_dir().join("audio/reference_features.safetensors")).expect("reference");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let audio = read_audio("tone_chirp_44k_stereo.wav");
    assert_eq!((audio.sample_rate(), audio.samples().len()), (44_100, 66_150));
    let (_, resampled) = f32_tensor(&st, "stereo44k.resampled_soxr_hq");
    let ours = ingot_core::media::resample::resample(audio.samples(), 44_100, 16_000);
    let (d, at) = max_diff(&ours, &resampled);
    eprintln!("waveform vs soxr HQ: max abs diff {d} at sample {at}");
    assert!(d < 1e-6, "waveform vs soxr HQ: max abs diff {d} at sample {at}");
    let f = WhisperFeatureExtractor::default().process(&Media::Audio(audio)).expect("features");
    assert_eq!(f.valid_frames, 150);
    let (_, want) = f32_tensor(&st, "stereo44k.input_features");
    let (d, at) = max_diff(&f.features, &want);
    eprintln!("44.1 kHz clip: features max abs diff {d} at (bin {}, frame {})", at / 3000, at % 3000);
    assert!(d < FEATURE_TOLERANCE, "features: max abs diff {d} at (bin {}, frame {})", at / 3000, at % 3000);
}

#[test]
fn bad_audio_is_an_error_naming_the_file() {
    let m = load();
    let audio = m.audio.as_ref().expect("audio");
    let bytes = std::fs::read(fixtures_dir().join("audio/tone_chirp_16k.wav")).expect("wav");
    for cut in [10, 44, 45, 1000, bytes.len() / 2, bytes.len() - 1] {
        let e = Audio::decode(&bytes[..cut], "clip.wav", &MediaLimits::default()).expect_err("truncated");
        assert!(e.to_string().starts_with("clip.wav: "), "cut at {cut}: {e}");
    }
    let e = Audio::decode(b"<html>not audio</html>", "page.html", &MediaLimits::default()).expect_err("not audio");
    assert!(matches!(e, MediaError::UnsupportedAudio { .. }) && e.to_string().contains("page.html"), "{e}");
    let limits = MediaLimits { max_audio_seconds: 1.0, ..MediaLimits::default() };
    let e = Audio::decode(&bytes, "clip.wav", &limits).expect_err("1.5 s > 1 s");
    assert!(matches!(e, MediaError::TooLong { .. }) && e.to_string().contains("limit of 1 s"), "{e}");

    // Features the encoder cannot take are errors, not panics.
    let n = audio.encoder.config().num_mel_bins;
    let zeros = vec![0f32; n * 3000];
    let err = |r: Result<Vec<f32>, ForwardError>| matches!(r, Err(ForwardError::AudioFeatures { .. }));
    assert!(err(audio.encoder.encode(&zeros[1..], 3000, 150)), "ragged features");
    assert!(err(audio.encoder.encode(&zeros, 3000, 3001)), "more valid frames than frames");
    assert!(err(audio.encoder.encode(&zeros, 3000, 2)), "too short for a token");
    assert!(err(audio.encoder.encode(&vec![0f32; n * 4000], 4000, 4000)), "over max_source_positions");
    assert_eq!(audio.encoder.encode(&zeros, 3000, 3).expect("one token").len(), m.model.config().hidden_size);
}

/// `audio_config`: transformers' defaults for missing keys; values the encoder cannot honour
/// are errors naming the key.
#[test]
fn audio_config_defaults_and_errors() {
    use ingot_core::weights::hf_config::read_audio_config;
    let dir = ingot_testkit::scratch_dir("qwen2-audio-config");
    let read = |config: Value| {
        std::fs::write(dir.join("config.json"), config.to_string()).expect("write");
        read_audio_config(&dir, 64)
    };
    let (cfg, token) = read(serde_json::json!({"model_type": "qwen2_audio"})).expect("defaults").expect("audio");
    assert_eq!((cfg.num_mel_bins, cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, token), (128, 1280, 32, 20, 151_646));
    let by_class = read(serde_json::json!({"architectures": ["Qwen2AudioForConditionalGeneration"]})).expect("class");
    assert!(by_class.is_some());
    assert!(read(serde_json::json!({"model_type": "qwen2"})).expect("text model").is_none());
    for (bad, key) in [
        (serde_json::json!({"activation_function": "relu"}), "activation_function"),
        (serde_json::json!({"d_model": 30, "encoder_attention_heads": 4}), "d_model"),
        (serde_json::json!(5), "audio_config"),
    ] {
        let e = read(serde_json::json!({"model_type": "qwen2_audio", "audio_config": bad})).expect_err("invalid");
        assert!(e.to_string().contains(key) && e.to_string().contains("config.json"), "{e}");
    }
}
