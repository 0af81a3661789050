//! The constraint on a small byte vocabulary (random walks through the mask always end in
//! valid JSON), and on the real Qwen vocabulary (token bytes, mask cost).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::*;

/// Ids 0..=255 are the single bytes; then a few multi-byte tokens, a non-text token and EOS.
const MULTI: [&str; 6] = ["{\"", "\": ", "true", "false", "\", \"", "\"}"];
const TOOL: u32 = 256 + MULTI.len() as u32;
const EOS: u32 = TOOL + 1;
const VOCAB: usize = EOS as usize + 1;
/// The model's logits row is longer than the vocabulary, as Qwen's is.
const LOGITS: usize = VOCAB + 7;

fn vocab() -> Vec<Option<Vec<u8>>> {
    let mut v: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    v.extend(MULTI.iter().map(|t| Some(t.as_bytes().to_vec())));
    v.push(None);
    v.push(None);
    v
}

fn compiler() -> ConstraintCompiler {
    ConstraintCompiler::new(&vocab(), &[EOS]).expect("compiler")
}

fn schema(schema: Value) -> ResponseFormat {
    ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat { name: "test".into(), description: None, schema: Some(schema), strict: Some(true) },
    }
}

/// The ids the constraint allows next.
fn allowed(c: &mut Constraint) -> Vec<u32> {
    let mut logits = vec![0.0f32; LOGITS];
    c.mask_logits(&mut logits).expect("mask");
    (0u32..).zip(&logits).filter(|(_, l)| l.is_finite()).map(|(id, _)| id).collect()
}

/// Samples uniformly among the allowed tokens until EOS; returns the text.
fn walk(c: &mut Constraint, rng: &mut StdRng) -> String {
    let table = vocab();
    let mut text = Vec::new();
    for _ in 0..2000 {
        let ids = allowed(c);
        assert!(!ids.contains(&TOOL), "a non-text token was allowed after {:?}", String::from_utf8_lossy(&text));
        let id = ids[rng.random_range(0..ids.len())];
        if id == EOS {
            assert!(c.is_complete() || c.matcher.is_accepting().expect("state"));
            return String::from_utf8(text).expect("UTF-8");
        }
        text.extend_from_slice(table[id as usize].as_deref().expect("a text token"));
        c.advance(id).expect("advance");
    }
    panic!("no EOS after 2000 tokens: {}", String::from_utf8_lossy(&text));
}

const PERSON: &str = r#"{"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 5},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "ok": {"type": "boolean"},
    "color": {"enum": ["red", "green"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 3}},
  "required": ["name", "age", "ok", "color", "tags"], "additionalProperties": false}"#;

fn is_person(v: &Value) -> bool {
    let o = v.as_object().expect("object");
    let short = |s: &Value, n| s.as_str().is_some_and(|s| s.chars().count() <= n);
    o.len() == 5
        && short(&o["name"], 5)
        && o["age"].as_u64().is_some_and(|a| a <= 120)
        && o["ok"].is_boolean()
        && (o["color"] == "red" || o["color"] == "green")
        && o["tags"].as_array().is_some_and(|t| t.len() <= 3 && t.iter().all(|s| short(s, 3)))
}

#[test]
fn random_walks_through_the_mask_end_in_valid_json() {
    let compiler = compiler();
    let person = compiler.compile(&schema(serde_json::from_str(PERSON).expect("schema"))).expect("compiles").expect("constraint");
    let object = compiler.compile(&ResponseFormat::JsonObject).expect("compiles").expect("constraint");
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..12 {
        let text = walk(&mut person.clone(), &mut rng);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(is_person(&v), "{text}");
        // Fixed separators, no other whitespace outside strings.
        assert!(text.starts_with("{\"name\": \""), "{text}");
        // Random digits make numbers like 6e07062 that overflow f64: check the syntax only.
        let text = walk(&mut object.clone(), &mut rng);
        serde_json::from_str::<serde::de::IgnoredAny>(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(text.starts_with('{'), "{text}");
    }
}

#[test]
fn masks_follow_the_grammar_and_end_with_eos_only() {
    let format = schema(json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}));
    let mut c = compiler().compile(&format).expect("compiles").expect("constraint");
    // `{` alone or `{"`; nothing past the vocabulary, no non-text token, no EOS.
    assert_eq!(allowed(&mut c), [u32::from(b'{'), 256]);
    let fork = c.clone();
    for id in [256, u32::from(b'o'), u32::from(b'k'), 257, 258] {
        assert!(allowed(&mut c).contains(&id), "{id}");
        c.advance(id).expect("allowed");
    }
    assert!(!c.is_complete());
    assert_eq!(allowed(&mut c), [u32::from(b'}')]);
    c.advance(u32::from(b'}')).expect("allowed");
    assert!(c.is_complete());
    assert_eq!(allowed(&mut c), [EOS]);
    // The copy taken at the start is still there, independent of the original.
    let mut fork = fork;
    assert_eq!(allowed(&mut fork), [u32::from(b'{'), 256]);
    // A token the grammar does not allow is an error, not a silent step.
    let e = fork.advance(u32::from(b'[')).expect_err("not allowed");
    assert!(matches!(e, ConstraintError::Step(_)), "{e}");
}

#[test]
fn text_format_has_no_constraint_and_bad_formats_name_the_field() {
    let compiler = compiler();
    assert!(compiler.compile(&ResponseFormat::Text).expect("text").is_none());
    let field = |f: &ResponseFormat| match compiler.compile(f).expect_err("invalid") {
        ConstraintError::Invalid { field, message } => format!("{field}: {message}"),
        other => panic!("{other:?}"),
    };
    let e = field(&schema(json!({"type": "objekt"})));
    assert!(e.starts_with("response_format.json_schema.schema: ") && e.contains("objekt"), "{e}");
    let e = field(&schema(json!(3)));
    assert!(e.starts_with("response_format.json_schema.schema: ") && e.contains("not 3"), "{e}");
    let bad_name = ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat { name: "no spaces".into(), description: None, schema: None, strict: None },
    };
    assert!(field(&bad_name).starts_with("response_format.json_schema.name: "));
    let e = ConstraintCompiler::new(&vocab(), &[]).expect_err("no EOS");
    assert!(e.to_string().contains("end-of-generation"), "{e}");
}

#[test]
fn openai_shapes_deserialize() {
    let f: ResponseFormat = serde_json::from_value(json!({"type": "json_object"})).expect("json_object");
    assert_eq!(f, ResponseFormat::JsonObject);
    let f: ResponseFormat = serde_json::from_value(json!({"type": "text"})).expect("text");
    assert_eq!(f, ResponseFormat::Text);
    let f: ResponseFormat = serde_json::from_value(
        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object"}, "strict": true}}),
    )
    .expect("json_schema");
    let ResponseFormat::JsonSchema { json_schema } = f else { panic!("{f:?}") };
    assert_eq!((json_schema.name.as_str(), json_schema.schema, json_schema.strict), ("person", Some(json!({"type": "object"})), Some(true)));
    let e = serde_json::from_value::<ResponseFormat>(json!({"type": "json_schema", "json_schema": {"name": "x", "shema": {}}}))
        .expect_err("typo");
    assert!(e.to_string().contains("shema"), "{e}");
    assert!(serde_json::from_value::<ResponseFormat>(json!({"type": "yaml"})).is_err());
}

#[test]
fn qwen_vocabulary_bytes_and_mask_cost() {
    let tok = crate::tokenizer::tests::qwen();
    let id = |t: &str| tok.token_to_id(t).unwrap_or_else(|| panic!("{t}"));
    assert_eq!(tok.text_bytes(id("Ġ{")).as_deref(), Some(&b" {"[..]));
    assert_eq!(tok.text_bytes(id("<|im_end|>")), None);
    assert_eq!(tok.text_bytes(id("<tool_call>")).as_deref(), Some(&b"<tool_call>"[..]), "user-defined tokens print as text");

    let start = Instant::now();
    let compiler = ConstraintCompiler::for_tokenizer(tok).expect("compiler");
    let setup = start.elapsed();
    let format = schema(json!({"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "langs": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age", "langs"]}));
    let start = Instant::now();
    let mut c = compiler.compile(&format).expect("compiles").expect("constraint");
    let compile = start.elapsed();
    let text = r#"{"name": "Ada Lovelace", "age": 36, "langs": ["English", "French"]}"#;
    let ids = tok.encode(text, false).expect("encode");
    // The model's logits row (151936) is longer than the tokenizer's vocabulary.
    let mut logits = vec![0.0f32; 151_936];
    let mut masking = std::time::Duration::ZERO;
    for &id in &ids {
        logits.fill(0.0);
        let start = Instant::now();
        c.mask_logits(&mut logits).expect("mask");
        masking += start.elapsed();
        assert!(logits[id as usize].is_finite(), "{:?} not allowed", tok.id_to_token(id));
        assert!(logits[tok.vocab_size()..].iter().all(|l| *l == f32::NEG_INFINITY));
        assert!(tok.eog_ids().iter().all(|&e| logits[e as usize] == f32::NEG_INFINITY), "EOS before the end");
        c.advance(id).expect("advance");
    }
    assert!(c.is_complete());
    logits.fill(0.0);
    c.mask_logits(&mut logits).expect("mask");
    let allowed: Vec<u32> = (0u32..).zip(&logits).filter(|(_, l)| l.is_finite()).map(|(i, _)| i).collect();
    assert_eq!(allowed, tok.eog_ids());
    println!(
        "Qwen vocabulary ({} tokens): index {setup:.2?}, schema compile {compile:.2?}, mask {:.2?} per token over {} tokens",
        tok.vocab_size(),
        masking / ids.len() as u32,
        ids.len()
    );
}
