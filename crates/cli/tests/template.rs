//! `ingot template` through the real binary: the printed prompt is byte-identical to what
//! transformers rendered for the reference cases, and `--ids` is that prompt's tokenization.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn ingot(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ingot")).args(args).output().expect("run ingot")
}

fn write_json(dir: &Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(v).expect("json")).expect("write");
    path.display().to_string()
}

/// Every Qwen reference case (their special tokens are the default model's), rendered from
/// the template file by the binary, matches transformers' `apply_chat_template` exactly.
#[test]
fn prints_the_prompt_transformers_renders() {
    let fixtures = ingot_testkit::fixtures_dir().join("templates");
    let cases: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixtures.join("cases.json")).expect("cases.json")).expect("cases");
    let dir = ingot_testkit::scratch_dir("template-cli");
    let model = ingot_testkit::model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE);
    let mut checked = 0;
    for case in cases.iter().filter(|c| matches!(c["template"].as_str(), Some("qwen2.5" | "qwen3"))) {
        let id = case["id"].as_str().expect("id");
        let Some(expected) = case["expected"].as_str() else { continue };
        let mut kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
        // Every other case passes add_generation_prompt in --kwargs, as apply_chat_template
        // takes it; the rest use the flag.
        let via_flag = checked % 2 == 0;
        let generation = if via_flag {
            kwargs.remove("add_generation_prompt").and_then(|v| v.as_bool()).unwrap_or(false)
        } else {
            true
        };
        let messages = write_json(&dir, "messages.json", &case["messages"]);
        let template = fixtures.join(case["template_file"].as_str().expect("file")).display().to_string();
        let kwargs = serde_json::to_string(&kwargs).expect("kwargs");
        let mut args = vec!["template", "--model", model.to_str().expect("path"), "--chat-template", &template];
        args.extend(["--messages", &messages, "--kwargs", &kwargs]);
        let tools;
        if !case["tools"].is_null() {
            tools = write_json(&dir, "tools.json", &case["tools"]);
            args.extend(["--tools", &tools]);
        }
        if via_flag && !generation {
            args.push("--no-generation-prompt");
        }
        let out = ingot(&args);
        assert!(out.status.success(), "{id}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{id}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} cases checked");
}

#[test]
fn ids_are_the_prompt_tokenized_and_bad_input_is_named() {
    let dir = ingot_testkit::scratch_dir("template-cli-ids");
    let messages = write_json(&dir, "m.json", &serde_json::json!([{"role": "user", "content": "Hi"}]));
    let text = ingot(&["template", "--messages", &messages]);
    let ids = ingot(&["template", "--messages", &messages, "--ids"]);
    assert!(text.status.success() && ids.status.success());
    let ids: Vec<u32> = serde_json::from_slice(&ids.stdout).expect("a JSON array of ids");
    let path = ingot_testkit::model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE);
    let tok = ingot_core::load::load_prompting(&path).expect("tokenizer").tokenizer;
    assert_eq!(ids, tok.encode_prompt(&String::from_utf8_lossy(&text.stdout)).expect("encode"));
    assert_eq!(tok.decode(&ids, false).expect("decode"), String::from_utf8_lossy(&text.stdout));

    let not_array = write_json(&dir, "bad.json", &serde_json::json!({"role": "user"}));
    let out = ingot(&["template", "--messages", &not_array]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a JSON array"));
    let out = ingot(&["template", "--messages", &messages, "--kwargs", "[1]"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kwargs must be a JSON object"));
}

#[test]
fn a_chat_template_file_that_is_missing_or_broken_is_named() {
    let dir = ingot_testkit::scratch_dir("template-cli-bad-file");
    let broken = dir.join("broken.jinja");
    std::fs::write(&broken, "{% if %}").expect("write");
    let missing = dir.join("missing.jinja");
    for (file, want) in [(&broken, "syntax error"), (&missing, "reading --chat-template")] {
        let out = Command::new(env!("CARGO_BIN_EXE_ingot"))
            .args(["chat", "--chat-template", file.to_str().expect("path")])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ingot");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(file.to_str().expect("path")) && err.contains(want), "{err}");
    }
}
