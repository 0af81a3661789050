//! Template sources and generation defaults of the tiny checkpoints, and errors that name the
//! file and key.

use std::path::{Path, PathBuf};

use super::{ChatTemplates, GenerationDefaults, HfFileError};
use ingot_testkit::{fixtures_dir, scratch_dir};

fn tiny(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
}

#[test]
fn qwen2_generation_defaults() {
    let g = GenerationDefaults::from_dir(&tiny("tiny-qwen2")).expect("qwen2 generation config");
    assert_eq!(
        g,
        GenerationDefaults {
            bos_token_id: None,
            eos_token_ids: vec![2026],
            pad_token_id: Some(2024),
            do_sample: Some(true),
            temperature: Some(0.7),
            top_p: Some(0.8),
            top_k: Some(20),
            repetition_penalty: Some(1.05),
            max_new_tokens: None,
            max_length: None,
        }
    );
}

#[test]
fn eos_lists_and_greedy_without_do_sample() {
    let gemma = GenerationDefaults::from_dir(&tiny("tiny-gemma3")).expect("gemma3");
    assert_eq!(gemma.eos_token_ids, [2047, 2036]);
    assert_eq!(gemma.bos_token_id, Some(2046));
    assert_eq!((gemma.temperature, gemma.top_p, gemma.top_k), (None, Some(0.95), Some(64)));

    let mistral = GenerationDefaults::from_dir(&tiny("tiny-mistral")).expect("mistral");
    assert_eq!(mistral.do_sample, None);

    // Unknown keys are ignored, null is unset.
    let dir = scratch_dir("gen-greedy");
    write(&dir, "generation_config.json", r#"{"do_sample": false, "temperature": 0.3, "repetition_penalty": 1.2,
        "max_length": 100, "pad_token_id": null, "some_future_key": [1, {"x": 2}]}"#);
    let g = GenerationDefaults::from_dir(&dir).expect("greedy config");
    assert_eq!((g.do_sample, g.temperature, g.repetition_penalty), (Some(false), Some(0.3), Some(1.2)));
    assert_eq!((g.pad_token_id, g.max_length), (None, Some(100)));
}

#[test]
fn missing_generation_config_is_all_defaults() {
    let dir = scratch_dir("gen-missing");
    assert_eq!(GenerationDefaults::from_dir(&dir).expect("no file"), GenerationDefaults::default());
    let err = GenerationDefaults::from_path(&dir.join("generation_config.json")).expect_err("explicit path");
    assert!(matches!(err, HfFileError::Read { .. }), "{err}");
    assert!(err.to_string().contains("generation_config.json"), "{err}");
}

#[test]
fn bad_generation_config_names_file_and_key() {
    let dir = scratch_dir("gen-bad");
    write(&dir, "generation_config.json", "{\"temperature\": 0.7,");
    let err = GenerationDefaults::from_dir(&dir).expect_err("truncated JSON");
    assert!(matches!(err, HfFileError::Json { .. }), "{err}");
    assert!(err.to_string().contains("generation_config.json"), "{err}");

    for (text, key) in [
        (r#"{"temperature": "hot"}"#, "temperature"),
        (r#"{"eos_token_id": [2, -1]}"#, "eos_token_id"),
        (r#"{"do_sample": 1}"#, "do_sample"),
        (r#"{"top_k": 2.5}"#, "top_k"),
    ] {
        write(&dir, "generation_config.json", text);
        let err = GenerationDefaults::from_dir(&dir).expect_err(text);
        let HfFileError::BadValue { path, key: got, .. } = &err else { panic!("{text}: {err}") };
        assert_eq!((path.file_name().and_then(|n| n.to_str()), got.as_str()), (Some("generation_config.json"), key));
    }
    write(&dir, "generation_config.json", "[1, 2]");
    assert!(matches!(GenerationDefaults::from_dir(&dir), Err(HfFileError::NotAnObject { .. })));
}

#[test]
fn templates_of_the_tiny_checkpoints() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral", "tiny-gemma3"] {
        let t = ChatTemplates::from_dir(&tiny(name)).expect(name);
        assert!(t.default.as_deref().is_some_and(|s| s.contains("messages")), "{name}");
        assert_eq!(t.source, Some(tiny(name).join("tokenizer_config.json")), "{name}");
        assert!(t.named.is_empty(), "{name}");
    }
    // The processor's chat_template.json wins over tokenizer_config.json.
    let vl = ChatTemplates::from_dir(&tiny("tiny-qwen2-vl")).expect("qwen2-vl");
    assert_eq!(vl.source, Some(tiny("tiny-qwen2-vl").join("chat_template.json")));
    assert!(vl.get(None).is_some_and(|s| s.contains("<|vision_start|>")));
}

#[test]
fn template_source_order_and_named_templates() {
    let dir = scratch_dir("templates");
    assert_eq!(ChatTemplates::from_dir(&dir).expect("empty dir"), ChatTemplates::default());

    write(&dir, "tokenizer_config.json", r#"{"chat_template": [
        {"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}"#);
    let t = ChatTemplates::from_dir(&dir).expect("list");
    assert_eq!((t.get(None), t.get(Some("tool_use")), t.get(Some("rag"))), (Some("D"), Some("T"), None));

    write(&dir, "chat_template.json", r#"{"chat_template": "J"}"#);
    let t = ChatTemplates::from_dir(&dir).expect("json");
    assert_eq!((t.get(None), t.get(Some("tool_use"))), (Some("J"), Some("T")));
    assert_eq!(t.source, Some(dir.join("chat_template.json")));

    write(&dir, "chat_template.jinja", "{{ messages }}");
    let t = ChatTemplates::from_dir(&dir).expect("jinja");
    assert_eq!(t.get(None), Some("{{ messages }}"));
    assert_eq!(t.source, Some(dir.join("chat_template.jinja")));

    // A list without `default` gives no default but keeps the names.
    std::fs::remove_file(dir.join("chat_template.jinja")).expect("rm");
    std::fs::remove_file(dir.join("chat_template.json")).expect("rm");
    write(&dir, "tokenizer_config.json", r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#);
    let t = ChatTemplates::from_dir(&dir).expect("list without default");
    assert_eq!((t.get(None), t.get(Some("tool_use")), t.source.as_deref()), (None, Some("T"), None));
}

#[test]
fn bad_templates_name_file_and_key() {
    let dir = scratch_dir("templates-bad");
    for text in [r#"{"chat_template": 3}"#, r#"{"chat_template": [{"name": "default"}]}"#] {
        write(&dir, "tokenizer_config.json", text);
        let err = ChatTemplates::from_dir(&dir).expect_err(text);
        let HfFileError::BadValue { path, key, .. } = &err else { panic!("{text}: {err}") };
        assert_eq!((path.clone(), key.as_str()), (dir.join("tokenizer_config.json"), "chat_template"));
    }
    write(&dir, "tokenizer_config.json", "{}");
    write(&dir, "chat_template.json", "not json");
    let err = ChatTemplates::from_dir(&dir).expect_err("malformed chat_template.json");
    assert!(err.to_string().contains("chat_template.json"), "{err}");
}
