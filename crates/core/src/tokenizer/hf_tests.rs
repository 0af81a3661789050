//! Hugging Face checkpoint tokenizers against transformers (the tiny-* `reference.json` cases),
//! a hand-written SentencePiece-style tokenizer for the decoder rules the fixtures do not
//! exercise, and errors that name the file.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use super::tests::stream;
use super::{StreamDecoder, Tokenizer, TokenizerError};
use crate::hf_files::{ChatTemplates, GenerationDefaults, HfFileError};
use crate::template::ChatTemplate;
use ingot_testkit::{fixtures_dir, scratch_dir};

const TINY: [&str; 5] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral", "tiny-gemma3"];

fn tiny(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn load(name: &str) -> Tokenizer {
    Tokenizer::from_hf_dir(&tiny(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference(name: &str) -> Json {
    let path = tiny(name).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON")
}

fn case_ids(reference: &Json, case: &str) -> Vec<u32> {
    let cases = reference["cases"].as_array().expect("cases");
    let case = cases.iter().find(|c| c["name"] == case).unwrap_or_else(|| panic!("case {case}"));
    case["input_ids"]
        .as_array()
        .expect("input_ids")
        .iter()
        .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).expect("id"))
        .collect()
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
}

#[test]
fn tiny_models_encode_like_transformers() {
    for name in TINY {
        let tok = load(name);
        let reference = reference(name);
        let sources = &reference["case_sources"];

        // `chat`: the rendered template, tokenized with add_special_tokens=False.
        let rendered = sources["chat"]["rendered"].as_str().expect("rendered");
        let want = case_ids(&reference, "chat");
        assert_eq!(tok.encode(rendered, false).expect("encode"), want, "{name} chat");
        assert_eq!(tok.decode(&want, false).expect("decode"), rendered, "{name} chat decode");
        stream(&tok, &want, false);
        stream(&tok, &want, true);

        // `short`/`long`: [BOS] + encode(text) where the family prepends BOS. The shared
        // tokenizer.json's ByteLevel post-processor adds nothing, so `tokenizer(text)` has no BOS
        // and neither has `encode(text, true)`.
        assert!(!tok.add_bos(), "{name}");
        for case in ["short", "long"] {
            let text = sources[case]["text"].as_str().expect("text");
            let bos_prepended = sources[case]["bos_prepended"].as_bool().expect("bos_prepended");
            let body = tok.encode(text, false).expect("encode");
            assert_eq!(tok.encode(text, true).expect("encode"), body, "{name} {case}");
            let mut got: Vec<u32> = tok.bos_id().filter(|_| bos_prepended).into_iter().collect();
            assert_eq!(got.len(), usize::from(bos_prepended), "{name} has a BOS");
            got.extend(body);
            let want = case_ids(&reference, case);
            assert_eq!(got, want, "{name} {case}");
            assert_eq!(tok.decode(&want, true).expect("decode"), text, "{name} {case}");
            assert_eq!(tok.decode(&want, false).expect("decode"), format!("{}{text}", tok.bos_token()));
            assert_eq!(stream(&tok, &want, true).concat(), text, "{name} {case}");
        }
    }
}

#[test]
fn tiny_model_templates_render_the_reference_text() {
    for name in TINY {
        let tok = load(name);
        let reference = reference(name);
        let chat = &reference["case_sources"]["chat"];
        let templates = ChatTemplates::from_dir(&tiny(name)).expect("templates");
        let source = templates.get(None).unwrap_or_else(|| panic!("{name} has a template"));
        let template = ChatTemplate::from_jinja(source, tok.bos_token(), tok.eos_token()).expect("compile");
        let rendered = template.render_json(&chat["messages"], None, true, &Map::new()).expect("render");
        assert_eq!(rendered, chat["rendered"].as_str().expect("rendered"), "{name}");
    }
}

#[test]
fn special_tokens_and_end_of_generation() {
    // The vocabulary (shared by every tiny model) holds <|endoftext|> 2024, <|im_end|> 2026,
    // <end_of_turn> 2036 and <|eot_id|> 2040, which end a turn whatever the family.
    let turn_ends = [2024, 2026, 2036, 2040];
    for (name, bos, eos, extra_eog) in [
        ("tiny-llama", Some(("<|begin_of_text|>", 2037)), ("<|eot_id|>", 2040), None),
        ("tiny-qwen2", None, ("<|im_end|>", 2026), None),
        ("tiny-qwen3", None, ("<|im_end|>", 2026), None),
        ("tiny-mistral", Some(("<s>", 2043)), ("</s>", 2044), Some(2044)),
        // generation_config.json: eos_token_id [2047, 2036].
        ("tiny-gemma3", Some(("<bos>", 2046)), ("<eos>", 2047), Some(2047)),
    ] {
        let tok = load(name);
        assert_eq!(tok.vocab_size(), 2048, "{name}");
        assert_eq!(tok.bos_id(), bos.map(|b| b.1), "{name}");
        assert_eq!(tok.bos_token(), bos.map_or("", |b| b.0), "{name}");
        assert_eq!((tok.eos_token(), tok.eos_id()), (eos.0, Some(eos.1)), "{name}");
        let mut want: Vec<u32> = turn_ends.into_iter().chain(extra_eog).collect();
        want.sort_unstable();
        assert_eq!(tok.eog_ids(), want, "{name}");
        assert!(tok.is_eog(eos.1) && !tok.is_eog(2025), "{name}");
    }
    // Every generation_config.json EOS ends generation, not only the end-of-turn texts.
    let dir = scratch_copy("hf-eos-list");
    write(&dir, "generation_config.json", r#"{"eos_token_id": [2040, 2041]}"#);
    let tok = Tokenizer::from_hf_dir(&dir).expect("eos list");
    assert_eq!(tok.eos_id(), Some(2040));
    assert!(tok.is_eog(2041), "{:?}", tok.eog_ids());
    write(&dir, "generation_config.json", r#"{"eos_token_id": 4096}"#);
    let err = Tokenizer::from_hf_dir(&dir).expect_err("eos beyond the vocabulary");
    assert!(matches!(err, TokenizerError::IdOutOfRange { id: 4096, vocab_size: 2048 }), "{err}");

    // qwen2-vl's generation_config.json lists <|endoftext|> too.
    let vl = load("tiny-qwen2-vl");
    assert_eq!(vl.eos_id(), Some(2026));
    assert!(vl.is_eog(2024));
}

#[test]
fn skip_special_drops_added_special_tokens() {
    let tok = load("tiny-qwen2");
    let ids = tok.encode("<|im_start|>user\n<tool_call>x</tool_call><|im_end|>", false).expect("encode");
    assert_eq!(ids.first(), Some(&2025));
    assert_eq!(ids.iter().filter(|&&id| id >= 2024).count(), 4, "{ids:?}");
    // Every added token of the tiny tokenizer is special, so all of them vanish.
    assert_eq!(tok.decode(&ids, true).expect("decode"), "user\nx");
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2026));
    assert_eq!(tok.id_to_token(2026), Some("<|im_end|>"));
    assert!(matches!(tok.decode(&[2048], false), Err(TokenizerError::IdOutOfRange { id: 2048, .. })));
}

/// A copy of a tiny checkpoint's tokenizer files in a scratch directory, to edit.
fn scratch_copy(test: &str) -> PathBuf {
    let dir = scratch_dir(test);
    for file in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(tiny("tiny-llama").join(file), dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    dir
}

/// `tokenizer_config.json` of the copy with `edit` applied.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut Map<String, Json>)) {
    let path = dir.join("tokenizer_config.json");
    let mut config: Map<String, Json> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("config");
    edit(&mut config);
    write(dir, "tokenizer_config.json", &Json::Object(config).to_string());
}

#[test]
fn config_controls_bos_and_added_tokens() {
    let dir = scratch_copy("hf-config");
    edit_config(&dir, |c| {
        c.insert("add_bos_token".into(), Json::Bool(true));
        // A token object instead of a string.
        c.insert("bos_token".into(), serde_json::json!({"content": "<|begin_of_text|>", "special": true}));
        let added = c["added_tokens_decoder"].as_object_mut().expect("added_tokens_decoder");
        added.insert("2048".into(), serde_json::json!({"content": "<extra_0>", "special": true}));
        added.insert("2049".into(), serde_json::json!({"content": "<tool>", "special": false}));
    });
    let tok = Tokenizer::from_hf_dir(&dir).expect("edited config");
    assert!(tok.add_bos());
    assert_eq!(tok.vocab_size(), 2050);
    let ids = tok.encode("a<extra_0>b<tool>", true).expect("encode");
    assert_eq!(ids.first(), Some(&2037));
    assert!(ids.contains(&2048) && ids.contains(&2049), "{ids:?}");
    // The special one is skipped, the other prints.
    assert_eq!(tok.decode(&ids, true).expect("decode"), "ab<tool>");

    // A config token that cannot land on its id.
    edit_config(&dir, |c| {
        c["added_tokens_decoder"].as_object_mut().expect("obj").insert("2100".into(), serde_json::json!({"content": "<far>"}));
    });
    let err = Tokenizer::from_hf_dir(&dir).expect_err("id gap");
    let TokenizerError::File(HfFileError::BadValue { key, .. }) = &err else { panic!("{err}") };
    assert_eq!(key, "added_tokens_decoder.2100");
}

#[test]
fn missing_and_malformed_files_are_named() {
    let dir = scratch_dir("hf-missing");
    let err = Tokenizer::from_hf_dir(&dir).expect_err("no tokenizer.json");
    assert!(matches!(err, TokenizerError::File(HfFileError::Read { .. })), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let dir = scratch_copy("hf-malformed");
    write(&dir, "tokenizer.json", "{\"model\": ");
    let err = Tokenizer::from_hf_dir(&dir).expect_err("truncated tokenizer.json");
    assert!(matches!(err, TokenizerError::HfTokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let dir = scratch_copy("hf-bad-config");
    write(&dir, "tokenizer_config.json", "{\"bos_token\": ");
    let err = Tokenizer::from_hf_dir(&dir).expect_err("truncated tokenizer_config.json");
    assert!(matches!(err, TokenizerError::File(HfFileError::Json { .. })), "{err}");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");

    for (key, value) in [("eos_token", Json::from("<nope>")), ("bos_token", Json::from(7)), ("add_bos_token", Json::from("yes"))] {
        let dir = scratch_copy("hf-bad-key");
        edit_config(&dir, |c| {
            c.insert(key.into(), value.clone());
        });
        let err = Tokenizer::from_hf_dir(&dir).expect_err(key);
        let TokenizerError::File(HfFileError::BadValue { path, key: got, .. }) = &err else { panic!("{key}: {err}") };
        assert_eq!((path.clone(), got.as_str()), (dir.join("tokenizer_config.json"), key));
    }

    let dir = scratch_copy("hf-bad-generation");
    write(&dir, "generation_config.json", "{\"eos_token_id\": \"x\"}");
    let err = Tokenizer::from_hf_dir(&dir).expect_err("bad generation_config.json");
    assert!(err.to_string().contains("generation_config.json") && err.to_string().contains("eos_token_id"), "{err}");
}

#[test]
fn works_without_tokenizer_config() {
    let dir = scratch_copy("hf-no-config");
    std::fs::remove_file(dir.join("tokenizer_config.json")).expect("rm");
    // BOS/EOS fall back to generation_config.json's ids.
    let tok = Tokenizer::from_hf_dir(&dir).expect("no config");
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(2037), Some(2040)));
    let without_generation = Tokenizer::from_hf_files(&dir.join("tokenizer.json"), None, &GenerationDefaults::default())
        .expect("tokenizer.json alone");
    assert_eq!((without_generation.bos_id(), without_generation.eos_id()), (None, None));
    assert_eq!(without_generation.bos_token(), "");
}

/// A SentencePiece-style `tokenizer.json` in the layout of Llama 2 / Mistral checkpoints:
/// `▁` prepended and for spaces, byte fallback, a BOS-adding post-processor and a decoder that
/// strips the first space.
const SPM_TOKENIZER: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
  ]},
  "pre_tokenizer": null,
  "post_processor": {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
  },
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}
  ]},
  "model": {
    "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "▁": 4, "h": 5, "i": 6, "▁h": 7, "▁hi": 8},
    "merges": ["▁ h", "▁h i"]
  }
}"#;

#[test]
fn sentencepiece_style_decoder_rules() {
    let dir = scratch_dir("hf-spm");
    write(&dir, "tokenizer.json", SPM_TOKENIZER);
    write(&dir, "tokenizer_config.json", r#"{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}"#);
    let tok = Tokenizer::from_hf_dir(&dir).expect("spm tokenizer");
    // The post-processor prepends <s>, so a prompt gets BOS.
    assert!(tok.add_bos());
    assert_eq!(tok.encode("hi hi", true).expect("encode"), [1, 8, 8]);
    assert_eq!(tok.encode("hi\n", false).expect("encode"), [8, 3]);
    // The decoder strips the first printed space, also after a skipped BOS (llama.cpp would not).
    assert_eq!(tok.decode(&[8, 8], false).expect("decode"), "hi hi");
    assert_eq!(tok.decode(&[1, 8, 8], true).expect("decode"), "hi hi");
    assert_eq!(tok.decode(&[1, 8, 8], false).expect("decode"), "<s> hi hi");
    assert_eq!(tok.decode(&[4, 3], true).expect("decode"), "\n");
    assert_eq!(stream(&tok, &[1, 8, 3, 8], true).concat(), "hi\n hi");
    let mut dec = StreamDecoder::new(&tok, true);
    assert_eq!(dec.push(1).expect("push"), "");
    assert_eq!(dec.push(8).expect("push"), "hi");

    // `add_bos_token: false` in the config overrides the post-processor.
    write(&dir, "tokenizer_config.json", r#"{"bos_token": "<s>", "add_bos_token": false}"#);
    let tok = Tokenizer::from_hf_dir(&dir).expect("spm tokenizer");
    assert_eq!(tok.encode("hi", true).expect("encode"), [8]);

    // A decoder the per-token rules do not cover.
    let mut json: Json = serde_json::from_str(SPM_TOKENIZER).expect("SPM_TOKENIZER");
    json["decoder"] = serde_json::json!({"type": "WordPiece", "prefix": "##", "cleanup": true});
    write(&dir, "tokenizer.json", &json.to_string());
    let err = Tokenizer::from_hf_dir(&dir).expect_err("WordPiece decoder");
    assert!(matches!(err, TokenizerError::UnsupportedDecoder { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json") && err.to_string().contains("WordPiece"), "{err}");
}
