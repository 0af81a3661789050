//! Qwen2-VL video against transformers on the shared `tiny-qwen2-vl/video` fixture, from the
//! frame PNGs: `pixel_values_videos` (within 1e-5) and `video_grid_thw`, the input ids with the
//! pad tokens expanded, the M-RoPE ids of both position rules, the prompt logits, and greedy
//! decoding with the original (legacy, default) rule; the image-and-video prompt too. Then video
//! files (H.264 MP4, VP9 WebM made from the same frames; see `fixtures/video/README.md`) decode,
//! sample as LLaMA Factory does and run end to end, and bad videos are errors, not panics.

mod vlm;

use std::path::PathBuf;

use ingot_core::config::KvType;
use ingot_core::kv_cache::SeqCache;
use ingot_core::load::{load_with, LoadOptions, LoadedModel};
use ingot_core::media::{FrameSampling, Image, Media, MediaLimits, MediaProcessor, Processed, Qwen2VlVideoProcessor, Video};
use ingot_core::model::mrope::{mrope_index, RopeRule, VideoGrid};
use ingot_core::model::{Embeds, Logits, SeqInput};
use ingot_core::sampling::argmax;
use ingot_testkit::{fixtures_dir, json_ids};
use safetensors::SafeTensors;
use serde_json::Value;
use vlm::{f32_tensor, i64_tensor, max_diff, LOGIT_TOLERANCE};

fn model_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn video_dir() -> PathBuf {
    model_dir().join("video")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(video_dir().join("reference.json")).expect("reference.json")).expect("json")
}

fn load() -> LoadedModel {
    let mut m = load_with(&model_dir(), &LoadOptions::default()).expect("load tiny-qwen2-vl");
    // transformers' reference keeps an f32 KV cache; f16 rounding alone exceeds the tolerances.
    m.model.set_kv_type(KvType::F32);
    m
}

/// `reference_tensors.safetensors`, to deserialize.
fn tensor_bytes() -> Vec<u8> {
    std::fs::read(video_dir().join("reference_tensors.safetensors")).expect("reference tensors")
}

fn frames() -> Vec<Image> {
    (0..8)
        .map(|t| {
            let path = video_dir().join(format!("frame_{t:02}.png"));
            let bytes = std::fs::read(&path).expect("frame");
            Image::decode(&bytes, &path.display().to_string(), &MediaLimits::default()).expect("decode frame")
        })
        .collect()
}

fn fixture_video() -> Video {
    Video::from_frames(frames(), "fixture frames", FrameSampling::default().fps).expect("video")
}

fn processor() -> Qwen2VlVideoProcessor {
    Qwen2VlVideoProcessor::from_dir(&model_dir()).expect("config").expect("present")
}

fn process(video: Video) -> Processed {
    processor().process(&Media::Video(video)).expect("process video")
}

#[test]
fn pixel_values_videos_match_transformers() {
    let bytes = tensor_bytes();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let out = process(fixture_video());
    for case in reference()["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let (shape, want) = f32_tensor(&st, &format!("{name}.pixel_values_videos"));
        assert_eq!(shape, [out.rows, out.row_len], "{name}: shape");
        let grid = i64_tensor(&st, &format!("{name}.video_grid_thw"));
        assert_eq!(grid, out.grid_thw.map(|g| g as i64), "{name}: video_grid_thw");
        let (worst, at) = max_diff(&out.pixel_values, &want);
        eprintln!("{name}: pixel_values_videos max |diff| {worst:.2e}");
        assert!(worst <= 1e-5, "{name}: max |diff| {worst} at row {} col {}", at / out.row_len, at % out.row_len);
        assert_eq!(processor().placeholder_tokens(&out), case["num_video_pad_tokens"].as_u64().expect("n") as usize);
    }
}

/// The rendered prompt with every `<|video_pad|>` (and `<|image_pad|>`) expanded to its
/// count, tokenized: what the engine will build.
fn expanded_ids(m: &LoadedModel, case: &Value) -> Vec<u32> {
    let mut text = case["rendered_prompt"].as_str().expect("prompt").to_string();
    for (pad, key) in [("<|video_pad|>", "num_video_pad_tokens"), ("<|image_pad|>", "num_image_pad_tokens")] {
        let n = case[key].as_u64().expect("count") as usize;
        if n > 0 {
            text = text.replacen(pad, &pad.repeat(n), 1);
        }
    }
    m.tokenizer.encode_prompt(&text).expect("tokenize")
}

fn axes_of(positions: &[[u32; 3]]) -> Vec<Vec<u32>> {
    (0..3).map(|a| positions.iter().map(|p| p[a]).collect()).collect()
}

/// Everything the model needs for one reference case: ids, the video's and (image case) the
/// image's encoder rows and grids.
struct Case {
    name: String,
    ids: Vec<u32>,
    images: Vec<[usize; 3]>,
    video: VideoGrid,
    embeds: Vec<(usize, Vec<f32>)>,
}

fn prepare(m: &LoadedModel, case: &Value, st: &SafeTensors<'_>, video: &Processed) -> Case {
    let vision = m.vision.as_ref().expect("vision");
    let name = case["name"].as_str().expect("name").to_string();
    let ids = expanded_ids(m, case);
    assert_eq!(ids, json_ids(&case["input_ids"]), "{name}: input ids");
    let stored: Vec<u32> = i64_tensor(st, &format!("{name}.input_ids")).iter().map(|&v| v as u32).collect();
    assert_eq!(ids, stored, "{name}: stored input ids");
    let mut embeds = Vec::new();
    let mut images = Vec::new();
    if case["image"].is_string() {
        // The image as the reference saw it (transformers' torchvision backend): the image
        // path has its own tests; here the video is under test.
        let grid = vlm::grid(st, &name);
        let (_, pixels) = f32_tensor(st, &format!("{name}.pixel_values"));
        let at = ids.iter().position(|&id| id == vision.tokens.image_token_id).expect("image tokens");
        embeds.push((at, vision.encoder.encode(&pixels, grid).expect("encode image")));
        images.push(grid);
    }
    let at = ids.iter().position(|&id| Some(id) == vision.tokens.video_token_id).expect("video tokens");
    embeds.push((at, vision.encoder.encode(&video.pixel_values, video.grid_thw).expect("encode video")));
    let video = VideoGrid { grid_thw: video.grid_thw, second_per_grid_t: fixture_video().second_per_grid_t(2) };
    Case { name, ids, images, video, embeds }
}

fn prefill(m: &LoadedModel, c: &Case, positions: &[[u32; 3]], cache: &mut SeqCache) -> Vec<f32> {
    let embeds: Vec<Embeds<'_>> = c.embeds.iter().map(|(at, rows)| Embeds { at: *at, rows }).collect();
    m.model
        .forward(&mut [SeqInput { tokens: &c.ids, cache, logits: Logits::All, positions: Some(positions), embeds: &embeds }])
        .expect("prefill")
        .remove(0)
}

fn greedy(m: &LoadedModel, cache: &mut SeqCache, last: &[f32], delta: i64, n: usize) -> Vec<u32> {
    let mut next = argmax(last);
    let mut out = vec![next];
    while out.len() < n {
        let p = (cache.len() as i64 + delta) as u32;
        let logits = m
            .model
            .forward(&mut [SeqInput { tokens: &[next], cache, logits: Logits::Last, positions: Some(&[[p; 3]]), embeds: &[] }])
            .expect("decode")
            .remove(0);
        next = argmax(&logits);
        out.push(next);
    }
    out
}

/// The last position's top 10 (ids exactly, values within the logit tolerance).
fn check_top10(name: &str, last: &[f32], want: &Value) {
    let want: Vec<(u32, f32)> =
        want.as_array().expect("top10").iter().map(|p| (p[0].as_u64().expect("id") as u32, p[1].as_f64().expect("v") as f32)).collect();
    let mut order: Vec<u32> = (0..last.len() as u32).collect();
    order.sort_by(|&a, &b| last[b as usize].total_cmp(&last[a as usize]));
    let worst = want.iter().map(|&(id, value)| (last[id as usize] - value).abs()).fold(0f32, f32::max);
    eprintln!("{name}: last-position top 10 within {worst:.2e}");
    for (i, &(id, value)) in want.iter().enumerate() {
        assert_eq!(order[i], id, "{name}: top-10 rank {i}");
        assert!((last[id as usize] - value).abs() < LOGIT_TOLERANCE, "{name}: top-10 logit of {id}: {} vs {value}", last[id as usize]);
    }
}

#[test]
fn matches_transformers_on_both_cases() {
    let m = load();
    let vision = m.vision.as_ref().expect("vision");
    let vocab = m.model.config().vocab_size;
    let bytes = tensor_bytes();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let video = process(fixture_video());
    for case in reference()["cases"].as_array().expect("cases") {
        let c = prepare(&m, case, &st, &video);
        let name = c.name.as_str();

        // transformers 5's rule: its ids, and its logits at every position.
        let rope = |rule| mrope_index(&c.ids, &c.images, &[c.video], &vision.tokens, rule).expect("rope index");
        let stored_ids = |key: &str| -> Vec<Vec<u32>> {
            i64_tensor(&st, &format!("{name}.{key}")).chunks(c.ids.len()).map(|r| r.iter().map(|&v| v as u32).collect()).collect()
        };
        let (pos5, delta5) = rope(RopeRule::Transformers5);
        let want5 = stored_ids("rope_position_ids");
        assert_eq!(axes_of(&pos5), want5, "{name}: transformers 5 position ids");
        assert_eq!(delta5, case["rope_deltas"][0].as_i64().expect("delta"), "{name}: transformers 5 delta");
        let mut cache = SeqCache::new(m.model.config());
        let logits5 = prefill(&m, &c, &pos5, &mut cache);
        let (_, want_logits) = f32_tensor(&st, &format!("{name}.logits"));
        let (worst, at) = max_diff(&logits5, &want_logits);
        eprintln!("{name}: transformers-5 rule, {} tokens, max |logit diff| over all positions {worst:.2e}", c.ids.len());
        assert!(worst < LOGIT_TOLERANCE, "{name}: logit difference {worst} at position {}", at / vocab);
        let tokens5 = greedy(&m, &mut cache, &logits5[logits5.len() - vocab..], delta5, 10);
        assert_eq!(tokens5, json_ids(&case["greedy_new_ids"]), "{name}: 5.x greedy");

        // The original rule (the default): ids exact, logits, top 10 and greedy tokens.
        let legacy = &case["legacy_rope"];
        let (pos, delta) = rope(RopeRule::default());
        let want: Vec<Vec<u32>> = legacy["rope_position_ids"].as_array().expect("rows").iter().map(json_ids).collect();
        assert_eq!(axes_of(&pos), want, "{name}: legacy position ids");
        assert_eq!(axes_of(&pos), stored_ids("legacy_rope_position_ids"), "{name}: stored legacy position ids");
        assert_eq!(delta, legacy["rope_deltas"][0].as_i64().expect("delta"), "{name}: legacy delta");
        let mut cache = SeqCache::new(m.model.config());
        let logits = prefill(&m, &c, &pos, &mut cache);
        // Up to the first token whose ids differ between the rules, the logits are the stored ones.
        let same = pos.iter().zip(&pos5).take_while(|(a, b)| a == b).count();
        let (worst, _) = max_diff(&logits[..same * vocab], &want_logits[..same * vocab]);
        assert!(worst < LOGIT_TOLERANCE, "{name}: legacy logits over the first {same} positions differ by {worst}");
        let last = &logits[logits.len() - vocab..];
        check_top10(name, last, &legacy["last_position_top10"]);
        let tokens = greedy(&m, &mut cache, last, delta, 10);
        eprintln!("{name}: legacy rule, logits within {worst:.2e} over the shared {same} positions, greedy {tokens:?}");
        assert_eq!(tokens, json_ids(&legacy["greedy_new_ids"]), "{name}: legacy greedy tokens");
    }
}

#[test]
fn bad_frame_lists_are_clear_errors() {
    let mut list = frames();
    let small = Image::decode(
        &std::fs::read(model_dir().join("image_64x48.png")).expect("png"),
        "image_64x48.png",
        &MediaLimits::default(),
    )
    .expect("decode");
    list.insert(3, small);
    let err = Video::from_frames(list, "video 1", 2.0).expect_err("mixed sizes");
    assert!(err.to_string().starts_with("video 1: cannot be preprocessed: frame 4 (image_64x48.png) is 64x48 but frame 1 ("), "{err}");
    let err = Video::from_frames(Vec::new(), "video 2", 2.0).expect_err("no frames");
    assert_eq!(err.to_string(), "video 2: cannot be preprocessed: the video has no frames");
}

/// Qwen2.5-VL has no video reference: the fixture's frames run through its processor (grid
/// [4, 8, 10]: edge windows cut short in every frame), its encoder and its language model, with
/// temporal ids spaced by `second_per_grid_t · tokens_per_second` = 1 · 4.
#[test]
fn qwen2_5_vl_video_runs_with_scaled_time() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-qwen2.5-vl"));
    let m = load_with(&dir, &LoadOptions::default()).expect("load tiny-qwen2.5-vl");
    let vision = m.vision.as_ref().expect("vision");
    assert_eq!(vision.tokens.tokens_per_second, Some(4));
    let processor = Qwen2VlVideoProcessor::from_dir(&dir).expect("config").expect("present");
    let video = fixture_video();
    let second_per_grid_t = video.second_per_grid_t(processor.frame.temporal_patch_size);
    let p = processor.process(&Media::Video(video)).expect("process");
    assert_eq!(p.grid_thw, [4, 8, 10]);
    let n = processor.placeholder_tokens(&p);
    assert_eq!(n, 80);
    let text = format!(
        "<|im_start|>user\n<|vision_start|>{}<|vision_end|>Describe this video.<|im_end|>\n<|im_start|>assistant\n",
        "<|video_pad|>".repeat(n)
    );
    let ids = m.tokenizer.encode_prompt(&text).expect("tokenize");
    let at = ids.iter().position(|&id| Some(id) == vision.tokens.video_token_id).expect("video tokens");
    let features = vision.encoder.encode(&p.pixel_values, p.grid_thw).expect("encode");
    let grid = VideoGrid { grid_thw: p.grid_thw, second_per_grid_t };
    let (positions, delta) = mrope_index(&ids, &[], &[grid], &vision.tokens, RopeRule::default()).expect("rope");
    // 20 tokens per temporal patch, at times 0, 4, 8, 12 past the video's start.
    let times: Vec<u32> = positions[at..at + n].iter().step_by(20).map(|p| p[0] - positions[at][0]).collect();
    assert_eq!(times, [0, 4, 8, 12]);
    assert_eq!(positions[at + n][0], positions[at][0] + 13, "text resumes past the last time id");
    let mut cache = SeqCache::new(m.model.config());
    let embeds = [Embeds { at, rows: &features }];
    let logits = m
        .model
        .forward(&mut [SeqInput { tokens: &ids, cache: &mut cache, logits: Logits::Last, positions: Some(&positions), embeds: &embeds }])
        .expect("prefill")
        .remove(0);
    assert!(logits.iter().all(|v| v.is_finite()));
    assert_eq!(greedy(&m, &mut cache, &logits, delta, 3).len(), 3);
}

/// Video files, decoded by the system's FFmpeg programs (`ffmpeg`, `ffprobe`).
mod files {
    use super::*;
    use ingot_core::media::{FfmpegTools, MediaError};
    use std::path::Path;

    fn files_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/video")
    }

    /// Mean absolute difference of two equally long value lists.
    fn mean_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
    }

    fn decode_file(file: &str, sampling: &FrameSampling) -> Result<Video, MediaError> {
        let path = files_dir().join(file);
        let bytes = std::fs::read(&path).expect("video file");
        Video::decode(&bytes, file, &MediaLimits::default(), sampling)
    }

    /// Which fixture frame each of `video`'s frames is closest to.
    fn nearest_frames(video: &Video) -> Vec<usize> {
        let reference = frames();
        video
            .frames()
            .iter()
            .map(|f| {
                let distance = |r: &Image| f.rgb().iter().zip(r.rgb()).map(|(a, b)| (*a as i64 - *b as i64).abs()).sum::<i64>();
                (0..reference.len()).min_by_key(|&i| distance(&reference[i])).expect("frames")
            })
            .collect()
    }

    #[test]
    fn video_files_decode_and_run_end_to_end() {
        let m = load();
        let vision = m.vision.as_ref().expect("vision");
        let vocab = m.model.config().vocab_size;
        let bytes = tensor_bytes();
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let case = &reference()["cases"][0];
        let (_, want_pixels) = f32_tensor(&st, "video_describe.pixel_values_videos");
        for file in ["frames_2fps_h264.mp4", "frames_2fps_vp9.webm"] {
            // 8 frames over 4 s at LLaMA Factory's 2 fps: all of them, in order, at 2 fps.
            let video = decode_file(file, &FrameSampling::default()).expect("decode");
            assert_eq!(video.frames().len(), 8, "{file}");
            assert_eq!((video.frames()[0].width(), video.frames()[0].height()), (56, 42), "{file}");
            assert_eq!(nearest_frames(&video), (0..8).collect::<Vec<_>>(), "{file}: frame order");
            assert_eq!(video.fps(), 2.0, "{file}");
            assert_eq!(video.second_per_grid_t(2), 1.0, "{file}");
            let p = process(video);
            assert_eq!(p.grid_thw, [4, 4, 4], "{file}");
            // Lossy compression: close to the PNGs' values, not equal.
            let (worst, _) = max_diff(&p.pixel_values, &want_pixels);
            let mean = mean_diff(&p.pixel_values, &want_pixels);
            eprintln!("{file}: pixel_values_videos vs the PNG frames: mean |diff| {mean:.3}, max {worst:.3}");
            assert!(mean < 0.1, "{file}: mean difference {mean}");

            let c = prepare(&m, case, &st, &p);
            let (pos, delta) = mrope_index(&c.ids, &[], &[c.video], &vision.tokens, RopeRule::default()).expect("rope");
            let mut cache = SeqCache::new(m.model.config());
            let logits = prefill(&m, &c, &pos, &mut cache);
            assert!(logits.iter().all(|v| v.is_finite()), "{file}: finite logits");
            let tokens = greedy(&m, &mut cache, &logits[logits.len() - vocab..], delta, 10);
            eprintln!("{file}: greedy {tokens:?}");
            assert_eq!(tokens.len(), 10);
            assert_eq!(cache.len(), c.ids.len() + 9);
        }
    }

    #[test]
    fn file_frames_are_sampled_as_llama_factory_does() {
        // 8 frames in 1 s. At 2 fps LLaMA Factory takes floor(1 · 2) = 2 frames at
        // linspace(0, 7, 2) = [0, 7]; at 4 fps, [0, 2.33, 4.67, 7] -> [0, 2, 4, 7]; at 16 fps all 8;
        // video_maxlen 3 caps at linspace(0, 7, 3) = [0, 3.5, 7] -> [0, 3, 7].
        for (fps, maxlen, want) in [(2.0, 128, vec![0, 7]), (4.0, 128, vec![0, 2, 4, 7]), (16.0, 128, (0..8).collect()), (16.0, 3, vec![0, 3, 7])] {
            let sampling = FrameSampling { fps, maxlen };
            let video = decode_file("frames_8fps_h264.mp4", &sampling).expect("decode");
            assert_eq!(nearest_frames(&video), want, "video_fps {fps}, video_maxlen {maxlen}");
            assert_eq!(sampling.indices(8, 1.0), want.iter().map(|&i| i as u64).collect::<Vec<_>>());
            // The kept frames stand for kept / duration frames per second.
            assert_eq!(video.fps(), want.len() as f64);
        }
        // An odd count (3 frames) is padded to 4 with the last frame: grid_t 2.
        let video = decode_file("frames_8fps_h264.mp4", &FrameSampling { fps: 16.0, maxlen: 3 }).expect("decode");
        assert_eq!(process(video).grid_thw, [2, 4, 4]);
        // WebM declares no frame count: the first video_maxlen frames.
        let video = decode_file("frames_2fps_vp9.webm", &FrameSampling { fps: 2.0, maxlen: 3 }).expect("decode");
        assert_eq!(nearest_frames(&video), [0, 1, 2]);
    }

    /// Byte offset of the first Matroska Cluster element (ID 1F 43 B6 75).
    fn first_cluster(bytes: &[u8]) -> usize {
        bytes.windows(4).position(|w| w == [0x1F, 0x43, 0xB6, 0x75]).expect("a cluster")
    }

    #[test]
    fn bad_video_files_are_clear_errors() {
        let sampling = FrameSampling::default();
        let limits = MediaLimits::default();
        let read = |file: &str| std::fs::read(files_dir().join(file)).expect("file");
        let message = |bytes: &[u8], name: &str, limits: &MediaLimits| {
            let err = Video::decode(bytes, name, limits, &sampling).expect_err(name);
            let text = err.to_string();
            assert!(text.starts_with(&format!("{name}: ")), "{text}");
            (err, text)
        };
        let mp4 = read("frames_2fps_h264.mp4");
        // Truncated inside the frame data (the index is at the front): fewer frames than declared.
        for (cut, frames) in [(mp4.len() * 2 / 3, 2), (mp4.len() - 100, 7)] {
            let (err, text) = message(&mp4[..cut], "cut.mp4", &limits);
            assert!(matches!(err, MediaError::Corrupt { .. }), "{text}");
            assert!(text.contains(&format!("truncated: the container declares 8 frames but only {frames} could be decoded")), "{text}");
        }
        // Truncated before the index (written at the end): not readable at all.
        let late_index = read("frames_8fps_h264.mp4");
        let (err, text) = message(&late_index[..late_index.len() / 2], "no-index.mp4", &limits);
        assert!(text.contains("not a readable video container (moov atom not found)"), "{text}");
        assert!(matches!(err, MediaError::Corrupt { .. }), "{text}");
        // Garbage, empty, and an image passed as a video.
        let (_, text) = message(&[0x5a; 4096], "noise.bin", &limits);
        assert!(text.contains("corrupt or truncated video data") || text.contains("unsupported video"), "{text}");
        let (_, text) = message(&[], "empty.mp4", &limits);
        assert_eq!(text, "empty.mp4: corrupt or truncated video data: no bytes");
        let png = std::fs::read(video_dir().join("frame_00.png")).expect("png");
        // Only MP4/MOV and Matroska demuxers probe the bytes: a PNG is not a container.
        let (err, text) = message(&png, "frame.png", &limits);
        assert!(matches!(err, MediaError::Corrupt { .. }) && text.contains("not a readable video container"), "{text}");
        // A codec outside the list (Motion JPEG in Matroska).
        let (err, text) = message(&read("mjpeg.mkv"), "mjpeg.mkv", &limits);
        assert!(matches!(err, MediaError::UnsupportedVideo { .. }) && text.contains("codec mjpeg"), "{text}");
        assert!(text.contains("supported: MP4/MOV or WebM/Matroska with H.264"), "{text}");
        // A video stream with no frames: the WebM's header, then one empty cluster (timecode 0).
        let webm = read("frames_2fps_vp9.webm");
        let mut empty = webm[..first_cluster(&webm)].to_vec();
        empty.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0x83, 0xE7, 0x81, 0x00]);
        let (err, text) = message(&empty, "zero.webm", &limits);
        assert!(matches!(err, MediaError::Geometry { .. }) && text.contains("the video has no frames"), "{text}");
        // No video stream at all.
        let (_, text) = message(&read("no_stream.mp4"), "no_stream.mp4", &limits);
        assert!(text.contains("no video stream"), "{text}");
        // Limits: bytes before anything is parsed, pixels from the stream header.
        let small = MediaLimits { max_bytes: 1000, ..limits };
        let (err, text) = message(&mp4, "big.mp4", &small);
        assert!(matches!(err, MediaError::TooManyBytes { limit: 1000, .. }) && text.contains("limit of 1000 bytes"), "{text}");
        let few = MediaLimits { max_pixels: 1000, ..limits };
        let (err, text) = message(&mp4, "wide.mp4", &few);
        assert!(matches!(err, MediaError::TooManyPixels { .. }) && text.contains("56x42") && text.contains("limit of 1000 pixels"), "{text}");
        // Corrupted frame data (bytes inside the frames overwritten) never panics.
        let mut damaged = mp4.clone();
        let start = damaged.len() / 2;
        damaged[start..start + 400].iter_mut().for_each(|b| *b = 0xff);
        let _ = Video::decode(&damaged, "damaged.mp4", &limits, &sampling);
    }

    #[test]
    fn missing_ffmpeg_and_the_time_limit_are_clear_errors() {
        let bytes = std::fs::read(files_dir().join("frames_2fps_h264.mp4")).expect("file");
        let (limits, sampling) = (MediaLimits::default(), FrameSampling::default());
        let missing = FfmpegTools { ffprobe: "/nonexistent/ffprobe".into(), ..FfmpegTools::default() };
        let err = Video::decode_with(&missing, &bytes, "clip.mp4", &limits, &sampling).expect_err("no ffprobe");
        assert!(matches!(err, MediaError::VideoDecoder { .. }), "{err}");
        assert!(err.to_string().starts_with("clip.mp4: cannot decode the video: the `/nonexistent/ffprobe` program was not found"), "{err}");
        assert!(err.to_string().contains("apt-get install ffmpeg"), "{err}");
        // A program that outlives the limit is killed: a script that sleeps stands in for a
        // stuck decoder.
        let dir = ingot_testkit::scratch_dir("stuck-ffprobe");
        let script = dir.join("ffprobe");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("script");
        let mut permissions = std::fs::metadata(&script).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).expect("chmod");
        let stuck = FfmpegTools { ffprobe: script, timeout: std::time::Duration::from_millis(300), ..FfmpegTools::default() };
        let started = std::time::Instant::now();
        let err = Video::decode_with(&stuck, &bytes, "slow.mp4", &limits, &sampling).expect_err("timeout");
        assert!(err.to_string().starts_with("slow.mp4: cannot decode the video: decoding took longer than the limit of 0.3 s"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the stuck program was not killed");
    }
}
