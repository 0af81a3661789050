//! The constraint on a small byte vocabulary (random walks through the mask always end in
//! valid JSON; under a forcing `tool_choice`, in calls every tool format parses, with valid
//! arguments), and on the real Qwen vocabulary (token bytes, mask cost).

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
    let object = compiler.compile(&ResponseFormat::JsonObject { schema: None }).expect("compiles").expect("constraint");
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
    // llama.cpp's `json_object` with a `schema` follows the schema.
    let with_schema = ResponseFormat::JsonObject { schema: Some(json!({"type": "integer"})) };
    let mut integer = compiler.compile(&with_schema).expect("compiles").expect("constraint");
    let text = walk(&mut integer, &mut rng);
    assert!(!text.is_empty() && text.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()), "{text}");
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
    assert_eq!(f, ResponseFormat::JsonObject { schema: None });
    let f: ResponseFormat = serde_json::from_value(json!({"type": "json_object", "schema": {"type": "integer"}})).expect("llama.cpp's");
    assert_eq!(f, ResponseFormat::JsonObject { schema: Some(json!({"type": "integer"})) });
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

/// Two tools with small, checkable argument schemas (strings of at most 5 characters, so
/// random walks stay short).
fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 5}, "unit": {"enum": ["c", "f"]}},
                "required": ["city", "unit"], "additionalProperties": false}}}),
        // A bare function object, no `type` in its schema.
        json!({"name": "get_time", "parameters": {"properties": {"timezone": {"type": "string", "maxLength": 5}},
            "required": ["timezone"], "additionalProperties": false}}),
    ]
}

/// Whether a parsed call's arguments validate against its tool in [`tools`].
fn valid_call(call: &crate::template::ToolCall) -> bool {
    let args: Value = serde_json::from_str(&call.arguments).expect("arguments are JSON");
    let Some(o) = args.as_object() else { return false };
    let short = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| s.chars().count() <= 5);
    match call.name.as_str() {
        "get_weather" => o.len() == 2 && short(o.get("city")) && (o["unit"] == "c" || o["unit"] == "f"),
        "get_time" => o.len() == 1 && short(o.get("timezone")),
        _ => false,
    }
}

/// Feeds `text` byte by byte (ids 0..=255 are the bytes), checking each is allowed first;
/// `Err(offset)` at the first byte the grammar refuses.
fn feed(c: &mut Constraint, text: &str) -> Result<(), usize> {
    for (offset, byte) in text.bytes().enumerate() {
        if !allowed(c).contains(&u32::from(byte)) {
            return Err(offset);
        }
        c.advance(u32::from(byte)).expect("allowed");
    }
    Ok(())
}

fn forced(format: ToolFormat, choice: &ToolChoice) -> Constraint {
    compiler().compile_tool_choice(format, &tools(), choice, ToolRules::default()).expect("compiles").expect("forces a call")
}

#[test]
fn random_walks_under_tool_choice_parse_into_valid_calls() {
    let names = ["get_weather", "get_time"];
    let mut rng = StdRng::seed_from_u64(11);
    for format in ToolFormat::ALL {
        let marker = match format {
            ToolFormat::Qwen => "<tool_call>\n{\"name\": \"",
            ToolFormat::Mistral => "[TOOL_CALLS] [{\"name\": \"",
            ToolFormat::Default => "Action: ",
            ToolFormat::Llama3 => "",
        };
        let required = forced(format, &ToolChoice::Required);
        let named = forced(format, &ToolChoice::Function("get_time".into()));
        let mut counts = Vec::new();
        for _ in 0..12 {
            let text = walk(&mut required.clone(), &mut rng);
            let parsed = format.parse(&text, &names);
            assert!(!parsed.tool_calls.is_empty() && parsed.content.is_empty(), "{format:?}: {text:?} -> {parsed:?}");
            assert!(parsed.tool_calls.iter().all(valid_call), "{format:?}: {text:?} -> {parsed:?}");
            assert!(text.starts_with(marker), "{format:?}: {text:?}");
            counts.push(parsed.tool_calls.len());

            let text = walk(&mut named.clone(), &mut rng);
            let parsed = format.parse(&text, &names);
            assert_eq!(parsed.tool_calls.len(), 1, "{format:?}: {text:?}");
            assert_eq!(parsed.tool_calls[0].name, "get_time", "{format:?}: {text:?}");
            assert!(valid_call(&parsed.tool_calls[0]) && parsed.content.is_empty(), "{format:?}: {text:?}");
        }
        // "required" admits several calls, and the walks found both one and several.
        assert!(counts.contains(&1) && counts.iter().any(|&n| n > 1), "{format:?}: {counts:?}");
    }
}

#[test]
fn tool_choice_accepts_exactly_the_rendered_calls() {
    let weather = json!({"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}});
    let time = json!({"name": "get_time", "arguments": {"timezone": "UTC"}});
    for format in ToolFormat::ALL {
        let marker = if format == ToolFormat::Mistral { "[TOOL_CALLS] " } else { "" };
        let render = |calls: &[Value]| format!("{marker}{}", format.render_calls(calls).expect("renders"));
        // What the format writes for one call and for two is accepted whole, and then only EOS.
        for calls in [vec![weather.clone()], vec![weather.clone(), time.clone()]] {
            let mut c = forced(format, &ToolChoice::Required);
            let text = render(&calls);
            feed(&mut c, &text).unwrap_or_else(|at| panic!("{format:?} refused {text:?} at {at}"));
            assert!(allowed(&mut c).contains(&EOS), "{format:?}: {text:?} is not complete");
        }
        // A named function: that one call, nothing after it, no other function.
        let mut c = forced(format, &ToolChoice::Function("get_time".into()));
        let text = render(std::slice::from_ref(&time));
        feed(&mut c, &text).unwrap_or_else(|at| panic!("{format:?} refused {text:?} at {at}"));
        assert!(c.is_complete(), "{format:?}: one call and nothing more");
        let mut c = forced(format, &ToolChoice::Function("get_time".into()));
        let text = render(std::slice::from_ref(&weather));
        let at = feed(&mut c, &text).expect_err("another function");
        assert_eq!(&text[at..at + 3], "wea", "{format:?}: refused at the name");
        // Arguments outside the schema: a unit not in the enum, a property not declared.
        for bad in [
            json!({"name": "get_weather", "arguments": {"city": "Paris", "unit": "k"}}),
            json!({"name": "get_time", "arguments": {"tz": "UTC"}}),
        ] {
            let mut c = forced(format, &ToolChoice::Required);
            let text = render(&[bad]);
            assert!(feed(&mut c, &text).is_err(), "{format:?} accepted {text:?}");
        }
    }
    // Free text before the call is not allowed.
    assert_eq!(feed(&mut forced(ToolFormat::Qwen, &ToolChoice::Required), "Sure! <tool_call>"), Err(0));
}

#[test]
fn tool_choice_errors_name_the_field() {
    let compiler = compiler();
    let message = |format, tools: &[Value], choice| compiler.compile_tool_choice(format, tools, &choice, ToolRules::default()).expect_err("invalid").to_string();
    for choice in [ToolChoice::None, ToolChoice::Auto] {
        assert!(compiler.compile_tool_choice(ToolFormat::Qwen, &tools(), &choice, ToolRules::default()).expect("valid").is_none());
        assert!(compiler.compile_tool_choice(ToolFormat::Qwen, &[], &choice, ToolRules::default()).expect("valid").is_none());
    }
    let e = message(ToolFormat::Qwen, &[], ToolChoice::Required);
    assert!(e.starts_with("tool_choice: ") && e.contains("at least one tool"), "{e}");
    let e = message(ToolFormat::Qwen, &tools(), ToolChoice::Function("get_news".into()));
    assert!(e.starts_with("tool_choice: ") && e.contains("\"get_news\"") && e.contains("get_weather, get_time"), "{e}");
    let e = message(ToolFormat::Qwen, &[], ToolChoice::Function("get_news".into()));
    assert!(e.starts_with("tool_choice: ") && e.contains("none given"), "{e}");
    let e = message(ToolFormat::Default, &[json!({"name": "get time"})], ToolChoice::Required);
    assert!(e.starts_with("tool_choice: ") && e.contains("\"get time\""), "{e}");
    let e = message(ToolFormat::Qwen, &[tools()[0].clone(), json!({"description": "x"})], ToolChoice::Required);
    assert!(e.starts_with("tools[1]: ") && e.contains("name"), "{e}");
    let e = message(ToolFormat::Qwen, &[json!({"name": "f", "parameters": {"type": "string"}})], ToolChoice::Required);
    assert!(e.starts_with("tools[0]: ") && e.contains("object"), "{e}");
    let e = message(ToolFormat::Qwen, &[json!({"name": "f", "parameters": {"properties": {"x": {"type": "objekt"}}}})], ToolChoice::Required);
    assert!(e.starts_with("tools: ") && e.contains("objekt"), "{e}");
    // A function without parameters takes exactly `{}`.
    let mut c = compiler.compile_tool_choice(ToolFormat::Qwen, &[json!({"name": "now"})], &ToolChoice::Required, ToolRules::default()).expect("valid").expect("forces");
    assert_eq!(feed(&mut c, "<tool_call>\n{\"name\": \"now\", \"arguments\": {\"x\""), Err(42), "refused at the first key");
    let mut c = compiler.compile_tool_choice(ToolFormat::Qwen, &[json!({"name": "now"})], &ToolChoice::Required, ToolRules::default()).expect("valid").expect("forces");
    assert_eq!(feed(&mut c, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"), Ok(()));
}

#[test]
fn tool_choice_openai_shapes() {
    let cases = [
        (json!("none"), ToolChoice::None),
        (json!("auto"), ToolChoice::Auto),
        (json!("required"), ToolChoice::Required),
        (json!({"type": "function", "function": {"name": "get_time"}}), ToolChoice::Function("get_time".into())),
    ];
    for (wire, choice) in cases {
        assert_eq!(serde_json::from_value::<ToolChoice>(wire.clone()).expect("valid"), choice);
        assert_eq!(serde_json::to_value(&choice).expect("serializes"), wire);
    }
    assert!(ToolChoice::Required.forces_call() && ToolChoice::Function("f".into()).forces_call());
    assert!(!ToolChoice::Auto.forces_call() && !ToolChoice::None.forces_call());
    for bad in [json!("always"), json!({"type": "function"}), json!({"function": {"name": "f"}}), json!(1)] {
        let e = serde_json::from_value::<ToolChoice>(bad.clone()).expect_err("invalid").to_string();
        assert!(e.contains("tool_choice must be") && e.contains(&bad.to_string()), "{e}");
    }
}

#[test]
fn parallel_tool_calls_false_admits_one_call() {
    let one = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"utc\"}}\n</tool_call>";
    let rules = ToolRules { single_call: true, response_format: None };
    let compile = |rules| compiler().compile_tool_choice(ToolFormat::Qwen, &tools(), &ToolChoice::Required, rules).expect("valid").expect("forces");
    let mut c = compile(rules);
    assert_eq!(feed(&mut c, one), Ok(()));
    assert!(c.is_complete(), "nothing may follow the one call");
    let mut c = compile(ToolRules::default());
    assert_eq!(feed(&mut c, &format!("{one}\n{one}")), Ok(()), "parallel calls by default");
}

#[test]
fn auto_with_a_response_format_admits_calls_or_schema_json() {
    let format = schema(json!({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 5}}, "required": ["answer"]}));
    let rules = |single_call| ToolRules { single_call, response_format: Some(&format) };
    let compile = |r| compiler().compile_tool_choice(ToolFormat::Qwen, &tools(), &ToolChoice::Auto, r).expect("valid").expect("a grammar");
    let call = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"utc\"}}\n</tool_call>";
    assert_eq!(feed(&mut compile(rules(false)), &format!("{call}\n{call}")), Ok(()));
    let mut c = compile(rules(true));
    assert_eq!(feed(&mut c, call), Ok(()));
    assert!(c.is_complete(), "one call only");
    assert_eq!(feed(&mut compile(rules(false)), "{\"answer\": \"ok\"}"), Ok(()));
    assert_eq!(feed(&mut compile(rules(false)), "Sure"), Err(0), "free text is neither");
    assert_eq!(feed(&mut compile(rules(false)), "{\"answer\": 3"), Err(11), "the schema holds");
    // A forced call ignores the format (it is for a later text turn); `none` constrains nothing.
    let mut c = compiler().compile_tool_choice(ToolFormat::Qwen, &tools(), &ToolChoice::Required, rules(false)).expect("valid").expect("forces");
    assert_eq!(feed(&mut c, "{"), Err(0));
    assert!(compiler().compile_tool_choice(ToolFormat::Qwen, &tools(), &ToolChoice::None, rules(false)).expect("valid").is_none());
}

#[test]
fn numbers_stop_at_sixteen_digits() {
    for ty in ["integer", "number"] {
        let format = schema(json!({"type": "object", "properties": {"n": {"type": ty}}, "required": ["n"]}));
        let mut c = compiler().compile(&format).expect("valid").expect("a grammar");
        let sixteen = "1234567890123456";
        assert_eq!(feed(&mut c, &format!("{{\"n\": {sixteen}")), Ok(()));
        assert!(!allowed(&mut c).iter().any(|&id| id < 256 && (id as u8).is_ascii_digit()), "{ty}: a 17th digit");
        assert_eq!(feed(&mut c, "}"), Ok(()));
    }
    // The fraction and the exponent are bounded on their own.
    let mut c = compiler().compile(&schema(json!({"type": "number"}))).expect("valid").expect("a grammar");
    assert_eq!(feed(&mut c, "-1.1234567890123456"), Ok(()));
    assert!(!allowed(&mut c).iter().any(|&id| id < 256 && (id as u8).is_ascii_digit()));
    assert_eq!(feed(&mut c, "e+1234567890123456"), Ok(()));
    assert!(allowed(&mut c).contains(&EOS));
    // Digits inside strings are text.
    let mut c = compiler().compile(&schema(json!({"type": "string"}))).expect("valid").expect("a grammar");
    assert_eq!(feed(&mut c, "\"12345678901234567890\""), Ok(()));
    assert_eq!(MAX_DIGITS, 16);
}

/// A llama.cpp-style GBNF grammar (comments, a recursive rule, classes, escapes, bounded and
/// unbounded repetition, an empty alternative) admits exactly its language.
const LIST_GBNF: &str = r#"# a list of small words
root ::= "[" items? "]" ("!" | )
items ::= word ("," [ \t]* items)?   # recursive
word ::= [a-c]{1,3} | "\x7e" [^\n\]]
"#;

#[test]
fn gbnf_grammars_admit_exactly_their_language() {
    let c = compiler();
    for ok in ["[]", "[a]!", "[abc,  b,\tc]", "[~x,~~]"] {
        let mut g = c.compile_gbnf(LIST_GBNF).expect("compiles");
        assert_eq!(feed(&mut g, ok), Ok(()), "{ok}");
        assert!(g.matcher.is_accepting().expect("state"), "{ok} should be complete");
    }
    for (bad, at) in [("[abcd]", 4), ("[a,]", 3), ("[~\n]", 2), ("[~]]", 2), ("x", 0), ("[a] ", 3)] {
        let mut g = c.compile_gbnf(LIST_GBNF).expect("compiles");
        assert_eq!(feed(&mut g, bad), Err(at), "{bad:?}");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20 {
        let text = walk(&mut c.compile_gbnf(LIST_GBNF).expect("compiles"), &mut rng);
        assert!(text.starts_with('[') && text.trim_end_matches('!').ends_with(']'), "{text:?}");
    }
}

#[test]
fn gbnf_errors_name_the_grammar_field() {
    for bad in ["root ::= undefined-rule", "root ::= \"a", "not gbnf at all"] {
        match compiler().compile_gbnf(bad).expect_err(bad) {
            ConstraintError::Invalid { field, message } => assert!(field == "grammar" && message.contains("line 1"), "{message}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}
