//! Images through every front end, on the tiny Qwen2-VL fixture (random weights, so only
//! exact token agreement with transformers' greedy run says the pipeline is right):
//! `ingot chat --image` and `/image`, `ingot infer` over rows with an `images` column (also
//! through `--remote` on a replica), and
//! `ingot api` driven by the official openai client with base64 data URLs, a media
//! directory, and the refusals (403 for paths outside it and for remote URLs without the flag,
//! 400 for mismatched counts and corrupt, unsupported or too large images, 413 over the byte limit).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{chat_with, ingot, run_browser, test_tool, Server};
use ingot_testkit::{fixtures_dir, json_ids, scratch_dir};
use ingot_core::tokenizer::Tokenizer;
use serde_json::{json, Value};

fn vlm_dir() -> PathBuf {
    fixtures_dir().join("tiny-qwen2-vl")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(vlm_dir().join("reference.json")).expect("reference.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["cases"].as_array().expect("cases").clone()
}

/// The text of transformers' greedy tokens for a case.
fn expected_text(c: &Value) -> String {
    let tok = Tokenizer::from_hf_dir(&vlm_dir()).expect("tokenizer");
    tok.decode(&json_ids(&c["greedy_new_ids"]), true).expect("decode")
}

/// `ingot chat` on the tiny VLM, greedy for 10 tokens: success, stdout, stderr.
fn chat(args: &[&str], input: &str) -> (bool, String, String) {
    let args: Vec<&str> = ["--temperature", "0", "--max-new-tokens", "10", "--threads", "2"].into_iter().chain(args.iter().copied()).collect();
    let out = chat_with(&vlm_dir(), &args, input);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn image_path(file: &str) -> String {
    vlm_dir().join(file).display().to_string()
}

#[test]
fn chat_takes_an_image_flag_and_the_image_command() {
    let c = cases();
    // --image: the image goes before the first turn's text (case 1's layout).
    let (ok, stdout, stderr) = chat(&["--image", &image_path("image_64x48.png")], "Describe this image.\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("Assistant: {}", expected_text(&c[0]))), "{stdout}\n{stderr}");

    // /image, placed by the text's own placeholder, with a system prompt (case 2).
    let input = format!("/image {}\nWhat shapes do you see?<image>\n", image_path("image_40x90.png"));
    let (ok, stdout, stderr) = chat(&["--system", "You are a careful visual assistant."], &input);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Attached"), "{stderr}");
    assert!(stdout.contains(&format!("Assistant: {}", expected_text(&c[1]))), "{stdout}\n{stderr}");

    // Bad images are reported and the session goes on.
    let dir = scratch_dir("vision-chat");
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n not an image").expect("write");
    let input = format!("/image {}\n/image {}\nDescribe this image.\n", corrupt.display(), dir.join("missing.png").display());
    let (ok, stdout, stderr) = chat(&[], &input);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("corrupt.png") && stderr.contains("missing.png"), "{stderr}");
    assert_eq!(stdout.matches("Assistant: ").count(), 1, "{stdout}");

    // A missing --image file fails before the model loads, naming it.
    let (ok, _, stderr) = chat(&["--image", "/nonexistent/cat.png"], "hi\n");
    assert!(!ok && stderr.contains("/nonexistent/cat.png"), "{stderr}");
}

/// Rows with images (two good, one with a miscounted placeholder, one missing file).
fn image_rows() -> [Value; 4] {
    [
        json!({"messages": [{"role": "user", "content": "<image>Describe this image."}, {"role": "assistant", "content": "x"}],
               "images": ["image_64x48.png"]}),
        json!({"messages": [{"role": "system", "content": "You are a careful visual assistant."},
                            {"role": "user", "content": "What shapes do you see?<image>"}, {"role": "assistant", "content": "y"}],
               "images": ["image_40x90.png"]}),
        json!({"messages": [{"role": "user", "content": "<image><image>Two?"}], "images": ["image_64x48.png"]}),
        json!({"messages": [{"role": "user", "content": "<image>Missing?"}], "images": ["no-such.png"]}),
    ]
}

/// `ingot infer` of `rows` on the tiny VLM, greedy for 10 tokens, plus `args`; its output
/// and the predictions file.
fn infer_rows(dir: &Path, rows: &[Value], args: &[&str]) -> (Output, PathBuf) {
    let data = dir.join("rows.jsonl");
    std::fs::write(&data, rows.iter().map(|r| r.to_string() + "\n").collect::<String>()).expect("write");
    let output = dir.join("out.jsonl");
    let out = ingot()
        .arg("infer")
        .arg("--model")
        .arg(vlm_dir())
        .arg("--dataset")
        .arg(&data)
        .arg("--media-dir")
        .arg(vlm_dir())
        .arg("--output")
        .arg(&output)
        .args(["--format", "openai", "--temperature", "0", "--max-new-tokens", "10", "--threads", "2", "--no-resume"])
        .args(args)
        .output()
        .expect("run infer");
    (out, output)
}

#[test]
fn infer_reads_the_images_column() {
    let c = cases();
    let dir = scratch_dir("vision-infer");
    let rows = image_rows();
    let (out, output) = infer_rows(&dir, &rows, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let preds: Vec<Value> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(preds.len(), 2, "{preds:?}");
    for (p, c) in preds.iter().zip(&c) {
        assert_eq!(p["predict"], expected_text(c), "{p}");
        assert_eq!(p["prompt_tokens"], c["input_ids"].as_array().expect("ids").len(), "{p}");
    }
    let errors = std::fs::read_to_string(output.with_extension("errors.jsonl")).expect("errors file");
    assert!(errors.contains("placeholder"), "{errors}");
    assert!(errors.contains("no-such.png"), "{errors}");
}

/// `infer --remote` on an `ingot api` replica of the VLM: image rows go through
/// `/v1/chat/completions` and predict what a local run predicts; the bad rows are errors.
#[test]
fn infer_remote_sends_image_rows_through_chat_completions() {
    let local_dir = scratch_dir("vision-infer-local");
    let (out, local) = infer_rows(&local_dir, &image_rows(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replica = Server::start_model(&vlm_dir(), &["--threads", "2"], &[]);
    let dir = scratch_dir("vision-infer-remote");
    let (out, remote) = infer_rows(&dir, &image_rows(), &["--remote", &replica.base]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), replica.log());
    let text = |p: &Path| std::fs::read_to_string(p).expect("output");
    assert_eq!(text(&remote).lines().count(), 2);
    assert_eq!(text(&remote), text(&local), "remote image rows give what local ones do");
    let errors = std::fs::read_to_string(remote.with_extension("errors.jsonl")).expect("errors file");
    assert!(errors.contains("placeholder") && errors.contains("no-such.png"), "{errors}");
}

#[test]
fn api_serves_images_to_the_openai_client() {
    let python = test_tool(".test-venv/bin/python");
    let c = cases();
    let dir = scratch_dir("vision-api");
    // The media dir holds copies of the images; the fixture directory itself is outside it.
    let media = dir.join("media");
    std::fs::create_dir_all(&media).expect("media dir");
    let mut expected_cases = Vec::new();
    for case in &c {
        let file = case["image"].as_str().expect("image");
        std::fs::copy(vlm_dir().join(file), media.join(file)).expect("copy");
        expected_cases.push(json!({
            "name": case["name"],
            "messages": case["messages"],
            "image_path": media.join(file).canonicalize().expect("canonical"),
            "max_tokens": case["greedy_new_ids"].as_array().expect("ids").len(),
            "prompt_tokens": case["input_ids"].as_array().expect("ids").len(),
            "input_ids": case["input_ids"],
            "text": expected_text(case),
        }));
    }
    let expected = dir.join("expected.json");
    let outside = vlm_dir().join("image_64x48.png");
    std::fs::write(&expected, json!({"cases": expected_cases, "outside_path": outside}).to_string()).expect("write");

    let server = Server::start_model(
        &vlm_dir(),
        &["--media-dir", media.to_str().expect("path"), "--threads", "2", "--model-name", "tiny-vl", "--max-media-mb", "1"],
        &[],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/vision_client.py");
    let out = Command::new(python).arg(script).arg(&server.base).arg("tiny-vl").arg(&expected).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\nstderr: {}\nserver: {}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn the_web_page_sends_an_attached_image() {
    let c = &cases()[0];
    let server = Server::start_model(&vlm_dir(), &["--threads", "2"], &[]);
    let shot = scratch_dir("vision-browser").join("chat.png");
    let image = vlm_dir().join("image_64x48.png");
    let v = run_browser(&server, &shot, &["Describe this image.".as_ref(), "10".as_ref(), image.as_os_str()]);
    // The page sends the image before the text: case 1's prompt, so transformers' greedy reply.
    assert_eq!(v["reply"].as_str().map(str::trim), Some(expected_text(c).trim()), "{v}");
    assert_eq!(v["thumbnails"], 1, "{v}");
}

