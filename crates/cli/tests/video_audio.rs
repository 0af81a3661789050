//! Videos and audio through the real binary, on the tiny Qwen2-VL and Qwen2-Audio fixtures
//! (random weights: only exact agreement with transformers' greedy tokens says the pipeline is
//! right): `ingot chat --video DIR|FILE` / `/video`, `ingot chat --audio` / `/audio`, `ingot
//! infer` over rows with `videos` (a list of frame paths, or a video file) and `audios`
//! columns, where media a model cannot take is an error row naming its column, and the API with
//! the official openai client (`input_audio`, `audio_url`, `video_url`).
//!
//! Video files are made here by the system's ffmpeg (which ingot decodes them with) from the
//! fixture frames, losslessly (H.264 in RGB, VP9 lossless), so that their decoded frames are the
//! PNGs' pixels and the reference greedy tokens hold.

mod common;

use std::path::{Path, PathBuf};

use common::{chat_with, ingot};
use ingot_core::tokenizer::Tokenizer;
use ingot_testkit::{fixtures_dir, json_ids, scratch_dir};
use serde_json::{json, Value};

fn vlm_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn audio_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-audio")
}

fn case(reference: PathBuf, i: usize) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(reference).expect("reference.json")).expect("json");
    v["cases"][i].clone()
}

fn text_of(model: &Path, ids: &Value) -> String {
    Tokenizer::from_hf_dir(model).expect("tokenizer").decode(&json_ids(ids), true).expect("decode")
}

/// `ingot chat` greedy for 10 tokens: success, stdout, stderr.
fn chat(model: &Path, args: &[&str], input: &str) -> (bool, String, String) {
    let args: Vec<&str> = ["--temperature", "0", "--max-new-tokens", "10", "--threads", "2"].into_iter().chain(args.iter().copied()).collect();
    let out = chat_with(model, &args, input);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The fixture video's 8 frames, copied into a directory of their own.
fn frames_dir() -> PathBuf {
    let dir = scratch_dir("video-frames");
    for t in 0..8 {
        let name = format!("frame_{t:02}.png");
        std::fs::copy(vlm_dir().join("video").join(&name), dir.join(&name)).expect("copy frame");
    }
    dir
}

fn wav() -> String {
    fixtures_dir().join("audio/tone_chirp_16k.wav").display().to_string()
}

#[test]
fn chat_takes_a_video_directory_and_an_audio_clip() {
    let c = case(vlm_dir().join("video/reference.json"), 0);
    let want = text_of(&vlm_dir(), &c["legacy_rope"]["greedy_new_ids"]);
    let frames = frames_dir().display().to_string();
    let (ok, stdout, stderr) = chat(&vlm_dir(), &["--video", &frames], "Describe this video.\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("Assistant: {want}")), "{stdout}\n{stderr}");
    // /video in the session, then a mixed-size frame directory: an error naming the frame.
    let mixed = scratch_dir("video-mixed");
    std::fs::copy(vlm_dir().join("video/frame_00.png"), mixed.join("a.png")).expect("copy");
    std::fs::copy(vlm_dir().join("image_64x48.png"), mixed.join("b.png")).expect("copy");
    let input = format!("/video {frames}\nDescribe this video.\n/video {}\n/audio {}\n", mixed.display(), wav());
    let (ok, stdout, stderr) = chat(&vlm_dir(), &[], &input);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("Assistant: {want}")), "{stdout}\n{stderr}");
    assert!(stderr.contains("b.png") && stderr.contains("is 64x48 but frame 1"), "{stderr}");
    assert!(stderr.contains("this model does not take audios"), "{stderr}");

    let c = case(audio_dir().join("reference.json"), 0);
    let want = text_of(&audio_dir(), &c["greedy_new_ids"]);
    let (ok, stdout, stderr) = chat(&audio_dir(), &["--audio", &wav()], "What do you hear?\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("Assistant: {want}")), "{stdout}\n{stderr}");
    let input = format!("/audio {}\nWhat do you hear?\n", wav());
    let (ok, stdout, stderr) = chat(&audio_dir(), &["--max-audio-seconds", "1"], &input);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("tone_chirp_16k.wav") && stderr.contains("over the limit of 1 s"), "{stderr}");
    assert_eq!(stdout.matches("Assistant: ").count(), 1, "{stdout}");
    // Over the limit on the command line: fails before the model loads, naming file and limit.
    let (ok, _, stderr) = chat(&audio_dir(), &["--audio", &wav(), "--max-audio-seconds", "1"], "hi\n");
    assert!(!ok && stderr.contains("tone_chirp_16k.wav") && stderr.contains("limit of 1 s"), "{stderr}");
}

/// Runs `ingot infer` over `rows` on `model`: the predictions and the errors file.
fn infer(model: &Path, name: &str, media: &Path, rows: &[Value]) -> (Vec<Value>, String) {
    infer_with(model, name, media, rows, &[])
}

/// [`infer`] with more flags.
fn infer_with(model: &Path, name: &str, media: &Path, rows: &[Value], extra: &[&str]) -> (Vec<Value>, String) {
    let dir = scratch_dir(name);
    let data = dir.join("rows.jsonl");
    std::fs::write(&data, rows.iter().map(|r| r.to_string() + "\n").collect::<String>()).expect("write");
    let output = dir.join("out.jsonl");
    let paths = [model.as_os_str(), data.as_os_str(), media.as_os_str(), output.as_os_str()];
    let flags = ["--model", "--dataset", "--media-dir", "--output"];
    let mut cmd = ingot();
    cmd.arg("infer");
    for (flag, path) in flags.iter().zip(paths) {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .args(["--format", "openai", "--temperature", "0", "--max-new-tokens", "10", "--threads", "2", "--no-resume"])
        .args(extra)
        .output()
        .expect("run infer");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let preds = std::fs::read_to_string(&output).expect("output").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    (preds, std::fs::read_to_string(output.with_extension("errors.jsonl")).unwrap_or_default())
}

#[test]
fn infer_reads_videos_and_audios_columns() {
    let c = case(vlm_dir().join("video/reference.json"), 0);
    let frames: Vec<String> = (0..8).map(|t| format!("tiny-qwen2-vl/video/frame_{t:02}.png")).collect();
    let rows = [
        json!({"messages": [{"role": "user", "content": "<video>Describe this video."}], "videos": [frames]}),
        json!({"messages": [{"role": "user", "content": "<audio>What do you hear?"}], "audios": ["audio/tone_chirp_16k.wav"]}),
    ];
    let (preds, errors) = infer(&vlm_dir(), "infer-video", &fixtures_dir(), &rows);
    assert_eq!(preds.len(), 1, "{preds:?}\n{errors}");
    assert_eq!(preds[0]["predict"], text_of(&vlm_dir(), &c["legacy_rope"]["greedy_new_ids"]), "{}", preds[0]);
    assert_eq!(preds[0]["prompt_tokens"], c["input_ids"].as_array().expect("ids").len());
    assert!(errors.contains("audios") && errors.contains("does not take audios"), "{errors}");

    let rows = [
        json!({"messages": [{"role": "user", "content": "<audio>What do you hear?"}], "audios": "audio/tone_chirp_16k.wav"}),
        json!({"messages": [{"role": "user", "content": "<video>What?"}], "videos": [frames]}),
        json!({"messages": [{"role": "user", "content": "<audio>What?"}], "audios": ["audio/no-such.wav"]}),
    ];
    let (preds, errors) = infer(&audio_dir(), "infer-audio", &fixtures_dir(), &rows);
    assert_eq!(preds.len(), 1, "{preds:?}\n{errors}");
    // LLaMA Factory's placeholder form: the reference prompt without the template's
    // `Audio 1: ` (8 tokens) and the newline after the clip.
    assert_eq!(preds[0]["prompt_tokens"], 83 - 9, "{}", preds[0]);
    assert!(errors.contains("videos") && errors.contains("does not take videos"), "{errors}");
    assert!(errors.contains("column `audios`") && errors.contains("no-such.wav"), "{errors}");
}

/// Runs the system's ffmpeg (`.ci/run` installs it), quietly, overwriting.
fn ffmpeg(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg: video files need it (apt-get install ffmpeg)");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Video files made from the fixture's 8 frames at 2 fps (4 s), in a directory of their own:
/// `clip.mp4` (H.264, lossless RGB), `clip.webm` (VP9, lossless), `mjpeg.mkv` (Motion JPEG, a
/// codec ingot refuses), `empty.webm` (the WebM's header and one empty cluster: no frames) and
/// `cut.mp4` (the first half of the MP4, whose index is at the end).
fn video_files(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let frames = vlm_dir().join("video/frame_%02d.png");
    let encode = |codec: &[&str], file: &str| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["-framerate".as_ref(), "2".as_ref(), "-i".as_ref(), frames.as_os_str()];
        args.extend(codec.iter().map(std::ffi::OsStr::new));
        let out = dir.join(file);
        args.push(out.as_os_str());
        ffmpeg(&args);
    };
    encode(&["-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24"], "clip.mp4");
    encode(&["-c:v", "libvpx-vp9", "-lossless", "1", "-pix_fmt", "gbrp"], "clip.webm");
    encode(&["-frames:v", "1", "-c:v", "mjpeg"], "mjpeg.mkv");
    let webm = std::fs::read(dir.join("clip.webm")).expect("webm");
    // Matroska's Cluster element ID; an empty cluster with timecode 0 follows the header.
    let cluster = webm.windows(4).position(|w| w == [0x1F, 0x43, 0xB6, 0x75]).expect("a cluster");
    let mut empty = webm[..cluster].to_vec();
    empty.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0x83, 0xE7, 0x81, 0x00]);
    std::fs::write(dir.join("empty.webm"), empty).expect("write");
    let mp4 = std::fs::read(dir.join("clip.mp4")).expect("mp4");
    std::fs::write(dir.join("cut.mp4"), &mp4[..mp4.len() / 2]).expect("write");
    dir
}

#[test]
fn chat_and_infer_take_video_files() {
    let c = case(vlm_dir().join("video/reference.json"), 0);
    let want = text_of(&vlm_dir(), &c["legacy_rope"]["greedy_new_ids"]);
    let dir = video_files("video-files-cli");
    for file in ["clip.mp4", "clip.webm"] {
        let path = dir.join(file).display().to_string();
        let (ok, stdout, stderr) = chat(&vlm_dir(), &["--video", &path], "Describe this video.\n");
        assert!(ok, "{file}: {stderr}");
        assert!(stdout.contains(&format!("Assistant: {want}")), "{file}: {stdout}\n{stderr}");
    }
    // Bad files in the session: an error naming the file and what is wrong; the session goes on.
    let input = format!(
        "/video {}\n/video {}\n/video {}\n/video {}\nDescribe this video.\n",
        dir.join("cut.mp4").display(),
        dir.join("mjpeg.mkv").display(),
        dir.join("empty.webm").display(),
        dir.join("clip.mp4").display()
    );
    let (ok, stdout, stderr) = chat(&vlm_dir(), &[], &input);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("cut.mp4: corrupt or truncated video data: not a readable video container"), "{stderr}");
    assert!(stderr.contains("mjpeg.mkv: unsupported video (codec mjpeg)"), "{stderr}");
    assert!(stderr.contains("empty.webm: cannot be preprocessed: the video has no frames"), "{stderr}");
    assert!(stdout.contains(&format!("Assistant: {want}")), "{stdout}\n{stderr}");

    // `videos` holding a file, as a list or a bare path; a truncated file is an error row.
    let rows = [
        json!({"messages": [{"role": "user", "content": "<video>Describe this video."}], "videos": ["clip.mp4"]}),
        json!({"messages": [{"role": "user", "content": "<video>Describe this video."}], "videos": "clip.webm"}),
        json!({"messages": [{"role": "user", "content": "<video>Describe this video."}], "videos": ["cut.mp4"]}),
    ];
    let (preds, errors) = infer(&vlm_dir(), "infer-video-files", &dir, &rows);
    assert_eq!(preds.len(), 2, "{preds:?}\n{errors}");
    for p in &preds {
        assert_eq!(p["predict"], want, "{p}");
        assert_eq!(p["prompt_tokens"], c["input_ids"].as_array().expect("ids").len());
    }
    assert!(errors.contains("column `videos`") && errors.contains("cut.mp4") && errors.contains("not a readable video container"), "{errors}");

    // The same rows on a remote replica: the files go inline as `video_url` parts to its
    // /v1/chat/completions, with the same answers; the truncated one is the server's 400.
    let replica = common::Server::start_model(&vlm_dir(), &["--threads", "2"], &[]);
    let (remote, errors) = infer_with(&vlm_dir(), "infer-video-files-remote", &dir, &rows, &["--remote", &replica.base]);
    assert_eq!(remote.len(), 2, "{remote:?}\n{errors}\n{}", replica.log());
    for (r, p) in remote.iter().zip(&preds) {
        assert_eq!((&r["predict"], &r["prompt_tokens"]), (&p["predict"], &p["prompt_tokens"]), "{r}");
    }
    assert!(errors.contains("not a readable video container"), "{errors}");
}

#[test]
fn api_serves_video_files_to_the_openai_client() {
    let c = case(vlm_dir().join("video/reference.json"), 0);
    let dir = video_files("video-files-api");
    let expected = dir.join("expected.json");
    let spec = json!({
        "mp4": dir.join("clip.mp4"),
        "webm": dir.join("clip.webm"),
        "mjpeg": dir.join("mjpeg.mkv"),
        "empty_webm": dir.join("empty.webm"),
        "png": vlm_dir().join("video/frame_00.png"),
        "text": text_of(&vlm_dir(), &c["legacy_rope"]["greedy_new_ids"]),
        "prompt_tokens": c["input_ids"].as_array().expect("ids").len(),
        "max_tokens": 10,
    });
    let server = common::Server::start_model(&vlm_dir(), &["--threads", "2", "--model-name", "tiny-vl"], &[]);
    let slow = common::Server::start_model(&vlm_dir(), &["--threads", "2", "--model-name", "tiny-vl", "--video-fps", "1"], &[]);
    // At 1 frame per second the 4 s clip keeps floor(4 · 1) = 4 of its 8 frames: grid 2x4x4, so
    // 8 video tokens instead of 16.
    let mut spec = spec;
    spec["base_1fps"] = json!(slow.base);
    spec["prompt_tokens_1fps"] = json!(c["input_ids"].as_array().expect("ids").len() - 8);
    std::fs::write(&expected, spec.to_string()).expect("write");
    run_client("video_client.py", &server, "tiny-vl", &expected);
}

/// Runs `tests/api/SCRIPT BASE_URL MODEL EXPECTED` with the test venv's Python: every check passes.
fn run_client(script: &str, server: &common::Server, model: &str, expected: &Path) {
    let python = common::test_tool(".test-venv/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api").join(script);
    let out = std::process::Command::new(python).arg(script).arg(&server.base).arg(model).arg(expected).output().expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\nstderr: {}\nserver: {}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// A mono 16 kHz 16-bit PCM WAV of `seconds` of silence.
fn silent_wav(seconds: u32) -> Vec<u8> {
    let data = 16_000 * 2 * seconds;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&16_000u32.to_le_bytes());
    w.extend_from_slice(&32_000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data.to_le_bytes());
    w.resize(w.len() + data as usize, 0);
    w
}

#[test]
fn api_serves_audio_to_the_openai_client() {
    let c = case(audio_dir().join("reference.json"), 0);
    let dir = scratch_dir("audio-api");
    let media = dir.join("media");
    std::fs::create_dir_all(&media).expect("media dir");
    let long = dir.join("long.wav");
    std::fs::write(&long, silent_wav(3)).expect("write");
    let expected = dir.join("expected.json");
    let spec = json!({
        "wav": fixtures_dir().join("audio/tone_chirp_16k.wav"),
        "long_wav": long,
        "outside_path": fixtures_dir().join("audio/tone_chirp_16k.wav"),
        "text": text_of(&audio_dir(), &c["greedy_new_ids"]),
        "prompt_tokens": c["input_ids"].as_array().expect("ids").len(),
        "max_tokens": 10,
    });
    std::fs::write(&expected, spec.to_string()).expect("write");
    let server = common::Server::start_model(
        &audio_dir(),
        &["--media-dir", media.to_str().expect("path"), "--threads", "2", "--model-name", "tiny-audio", "--max-audio-seconds", "2"],
        &[],
    );
    run_client("audio_client.py", &server, "tiny-audio", &expected);
}

#[test]
fn the_web_page_sends_an_attached_audio_clip() {
    let c = case(audio_dir().join("reference.json"), 0);
    let server = common::Server::start_model(&audio_dir(), &["--threads", "2"], &[]);
    let shot = scratch_dir("audio-browser").join("chat.png");
    let clip = fixtures_dir().join("audio/tone_chirp_16k.wav");
    let v = common::run_browser(&server, &shot, &["What do you hear?".as_ref(), "10".as_ref(), clip.as_os_str()]);
    // The page sends the clip as an audio_url part before the text: the reference prompt.
    assert_eq!(v["reply"].as_str().map(str::trim), Some(text_of(&audio_dir(), &c["greedy_new_ids"]).trim()), "{v}");
    assert_eq!(v["thumbnails"], 1, "{v}");
}
