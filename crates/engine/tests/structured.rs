//! Structured output on the real default model: ten `json_schema` requests and a
//! `json_object` one, greedy, return JSON that parses and validates; the same requests without
//! `response_format` mostly do not (so the masking is what makes them pass); a constrained
//! sequence leaves the others in its batch unchanged; bad schemas fail before anything runs.

mod common;


use ingot_engine::{
    ChatRequest, EngineError, Event, FinishReason, GenParams, JsonSchemaFormat,
    ResponseFormat, Stream,
};
use serde_json::{json, Value};

use common::engine;


const MAX_NEW_TOKENS: usize = 64;

fn json_schema(name: &str, schema: Value) -> ResponseFormat {
    ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat { name: name.into(), description: None, schema: Some(schema), strict: Some(true) },
    }
}

fn request(question: &str, format: Option<ResponseFormat>) -> ChatRequest {
    let params = GenParams { max_new_tokens: Some(MAX_NEW_TOKENS), response_format: format, ..GenParams::greedy() };
    ChatRequest::from_turns([("user", question)], params)
}

/// The ten schemas, each with the question asked: required strings, integers, numbers,
/// booleans, enums, arrays (bounded and of objects), nested objects, optional properties.
fn cases() -> Vec<(&'static str, &'static str, Value)> {
    let string = json!({"type": "string"});
    vec![
        ("person", "Give a fictional person's name and age as JSON.", json!({"type": "object",
            "properties": {"name": string, "age": {"type": "integer"}}, "required": ["name", "age"]})),
        ("product", "Describe a laptop for sale as JSON: title, price in dollars, whether it is in stock.",
            json!({"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                "price": {"type": "number"}, "in_stock": {"type": "boolean"}},
                "required": ["title", "price", "in_stock"], "additionalProperties": false})),
        ("weather", "What is the weather like in Paris today? Answer as JSON.", json!({"type": "object",
            "properties": {"city": string, "temperature_c": {"type": "number"},
                "condition": {"enum": ["sunny", "cloudy", "rainy", "snowy"]}},
            "required": ["city", "temperature_c", "condition"], "additionalProperties": false})),
        ("todo", "List what I should pack for a beach trip, as JSON.", json!({"type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 20},
                "minItems": 1, "maxItems": 3}},
            "required": ["items"], "additionalProperties": false})),
        ("book", "Tell me about the novel Dune as JSON.", json!({"type": "object",
            "properties": {"book": {"type": "object", "properties": {"title": string,
                "author": {"type": "object", "properties": {"name": string, "born": {"type": "integer"}},
                    "required": ["name", "born"], "additionalProperties": false}},
                "required": ["title", "author"], "additionalProperties": false}},
            "required": ["book"], "additionalProperties": false})),
        ("color", "Give the RGB values of the color orange as JSON.", json!({"type": "object",
            "properties": {"name": string, "rgb": {"type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 255}, "minItems": 3, "maxItems": 3}},
            "required": ["name", "rgb"], "additionalProperties": false})),
        ("prime", "Is 7 a prime number? Answer as JSON.", json!({"type": "object",
            "properties": {"number": {"type": "integer"}, "is_prime": {"type": "boolean"}},
            "required": ["number", "is_prime"], "additionalProperties": false})),
        ("planets", "Name the first three planets from the Sun with their order, as JSON.", json!({"type": "object",
            "properties": {"planets": {"type": "array", "maxItems": 3, "items": {"type": "object",
                "properties": {"name": string, "order": {"type": "integer", "minimum": 1}},
                "required": ["name", "order"], "additionalProperties": false}}},
            "required": ["planets"], "additionalProperties": false})),
        ("review", "Rate this review as JSON: 'The food was cold and the waiter was rude.'", json!({"type": "object",
            "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "sentiment": {"enum": ["positive", "negative", "neutral"]}},
            "required": ["sentiment", "rating"], "additionalProperties": false})),
        ("country", "Tell me about Japan as JSON.", json!({"type": "object",
            "properties": {"country": string, "capital": string, "population_millions": {"type": "integer", "minimum": 0, "maximum": 2000}},
            "required": ["country", "capital"], "additionalProperties": false})),
    ]
}

/// Where `value` breaks `schema`, if anywhere. Covers the keywords the cases use and
/// panics on any other, so a schema can never be half-checked.
fn violation(value: &Value, schema: &Value, path: &str) -> Option<String> {
    let s = schema.as_object().expect("schema object");
    let fail = |why: String| Some(format!("{path}: {why}"));
    for key in s.keys() {
        let known = ["type", "properties", "required", "additionalProperties", "enum", "items", "minItems", "maxItems",
            "minimum", "maximum", "maxLength"];
        assert!(known.contains(&key.as_str()), "the test validator does not know `{key}`");
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("type {other}"),
        };
        if !ok {
            return fail(format!("{value} is not of type {t}"));
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return fail(format!("{value} is not one of {allowed:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if s.get("minimum").and_then(Value::as_f64).is_some_and(|m| n < m) || s.get("maximum").and_then(Value::as_f64).is_some_and(|m| n > m) {
            return fail(format!("{n} is out of range"));
        }
    }
    if let (Some(text), Some(max)) = (value.as_str(), s.get("maxLength").and_then(Value::as_u64)) {
        if text.chars().count() as u64 > max {
            return fail(format!("{text:?} is longer than {max}"));
        }
    }
    if let Some(items) = value.as_array() {
        if s.get("minItems").and_then(Value::as_u64).is_some_and(|m| (items.len() as u64) < m)
            || s.get("maxItems").and_then(Value::as_u64).is_some_and(|m| items.len() as u64 > m)
        {
            return fail(format!("{} items is out of range", items.len()));
        }
        if let Some(item_schema) = s.get("items") {
            return items.iter().enumerate().find_map(|(i, v)| violation(v, item_schema, &format!("{path}[{i}]")));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = s.get("properties").and_then(Value::as_object);
        for name in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !object.contains_key(name.as_str().expect("name")) {
                return fail(format!("{name} is missing"));
            }
        }
        for (key, v) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => {
                    if let Some(why) = violation(v, sub, &format!("{path}.{key}")) {
                        return Some(why);
                    }
                }
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return fail(format!("{key} is not allowed"))
                }
                None => {}
            }
        }
    }
    None
}

/// Why `text` is not a valid instance of `schema`, if it is not.
fn invalid(text: &str, schema: &Value) -> Option<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => violation(&v, schema, "$"),
        Err(e) => Some(format!("does not parse: {e}")),
    }
}

/// The text and finish reason of one sample.
fn collect(stream: Stream) -> (String, FinishReason) {
    let mut text = String::new();
    for event in stream.events.iter() {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Logprobs(_) => {}
            Event::Done(usage) => return (text, usage.finish_reason),
            Event::Error(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("the stream ended without Done");
}

fn submit(req: ChatRequest) -> Stream {
    common::submit_chat(engine(), req).expect("submit").streams.pop().expect("one sample")
}

#[test]
fn schemas_are_enforced_and_unconstrained_greedy_output_is_not_valid() {
    let cases = cases();
    // Everything in one batch: constrained and free sequences side by side.
    let constrained: Vec<Stream> =
        cases.iter().map(|(name, q, schema)| submit(request(q, Some(json_schema(name, schema.clone()))))).collect();
    let free: Vec<Stream> = cases.iter().map(|(_, q, _)| submit(request(q, None))).collect();
    let object = submit(request("Describe a cat as a JSON object.", Some(ResponseFormat::JsonObject { schema: None })));

    let mut free_invalid = 0;
    let mut free_texts = Vec::new();
    for (((name, _, schema), c), f) in cases.iter().zip(constrained).zip(free) {
        let (text, reason) = collect(c);
        println!("{name}: {text}");
        assert_eq!(reason, FinishReason::Stop, "{name}: the grammar did not complete in {MAX_NEW_TOKENS} tokens: {text}");
        if let Some(why) = invalid(&text, schema) {
            panic!("{name}: {why}: {text}");
        }
        let (text, _) = collect(f);
        if let Some(why) = invalid(&text, schema) {
            println!("{name} unconstrained, invalid ({why}): {text:?}");
            free_invalid += 1;
        }
        free_texts.push(text);
    }
    let (text, reason) = collect(object);
    println!("json_object: {text}");
    assert_eq!(reason, FinishReason::Stop);
    assert!(serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")).is_object(), "{text}");
    // Without the mask the model fences its JSON or strays from the schema.
    assert!(free_invalid >= 5, "only {free_invalid} of 10 unconstrained replies are invalid: the test lacks teeth");

    // Batch invariance: alone, a free request gives what it gave beside constrained ones.
    let (alone, _) = collect(submit(request(cases[0].1, None)));
    assert_eq!(alone, free_texts[0]);
}

#[test]
fn samples_each_follow_the_schema_and_bad_formats_fail_before_running() {
    let (name, q, schema) = cases().swap_remove(6);
    let params = GenParams {
        do_sample: Some(true),
        temperature: Some(1.0),
        seed: Some(3),
        num_return_sequences: Some(2),
        max_new_tokens: Some(MAX_NEW_TOKENS),
        response_format: Some(json_schema(name, schema.clone())),
        ..GenParams::default()
    };
    let replies = engine().chat(ChatRequest::from_turns([("user", q)], params)).expect("chat");
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!(r.finish_reason, FinishReason::Stop, "{}", r.text);
        assert_eq!(invalid(&r.text, &schema), None, "{}", r.text);
    }

    let bad = |format: ResponseFormat| match engine().chat(request("hi", Some(format))) {
        Err(e @ EngineError::Constraint(_)) => {
            assert!(e.is_request_error() && e.field().is_some_and(|f| f.starts_with("response_format.json_schema.")), "{e:?}");
            e.to_string()
        }
        other => panic!("{other:?}"),
    };
    let m = bad(json_schema("x", json!({"type": "object", "properties": {"a": {"type": "strin"}}})));
    assert!(m.starts_with("response_format.json_schema.schema: "), "{m}");
    let m = bad(json_schema("has space", json!({})));
    assert!(m.starts_with("response_format.json_schema.name: "), "{m}");
    // Through serde, as a front end would take it from an OpenAI request.
    let format: ResponseFormat = serde_json::from_value(json!({"type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 10, "maximum": 5}}}))
    .expect("shape");
    let m = bad(format);
    assert!(m.starts_with("response_format.json_schema.schema: "), "{m}");
}
