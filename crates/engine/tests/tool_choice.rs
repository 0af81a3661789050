//! `tool_choice` on the real default model (Qwen2.5-Coder-0.5B, qwen tool format), greedy and
//! short: a prompt the model answers in prose even with tools offered gets a well-formed call
//! with valid arguments under `"required"`, and exactly the named function under a named
//! choice; the same request without forcing gets no call (so the grammar is what makes the
//! calls); choices that cannot be honoured fail before anything runs.

mod common;


use ingot_core::template::{ParsedReply, ToolFormat};
use ingot_engine::{
    ChatRequest, EngineError, FinishReason, GenParams, Prompt, PromptRequest, ResponseFormat, ToolChoice, ValidRequest,
};
use serde_json::{json, Value};

use common::engine;


const NAMES: [&str; 2] = ["get_weather", "get_time"];
/// A question no tool answers: the model replies in prose.
const QUESTION: &str = "Write one sentence about why the sky is blue.";

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "The city name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"]}}}),
        json!({"type": "function", "function": {"name": "get_time", "description": "Get the current time in a timezone",
            "parameters": {"type": "object", "properties": {
                "timezone": {"type": "string", "description": "An IANA timezone such as Europe/Paris"}},
                "required": ["timezone"]}}}),
    ]
}

fn request(tool_choice: Option<ToolChoice>) -> ChatRequest {
    let params = GenParams { max_new_tokens: Some(64), tool_choice, ..GenParams::greedy() };
    ChatRequest { tools: Some(tools()), ..ChatRequest::from_turns([("user", QUESTION)], params) }
}

/// The reply, as the template's tool format extracts it.
fn answer(req: ChatRequest) -> (String, ParsedReply) {
    let format = engine().template().expect("the model has a template").tool_format();
    assert_eq!(format, ToolFormat::Qwen);
    let mut replies = engine().chat(req).expect("chat");
    let reply = replies.pop().expect("one reply");
    assert_eq!(reply.finish_reason, FinishReason::Stop, "{:?}", reply.text);
    let parsed = format.parse(&reply.text, &NAMES);
    (reply.text, parsed)
}

/// Whether a call's arguments validate against its tool's schema (the declared properties,
/// all required, strings, the enum).
fn valid_arguments(name: &str, arguments: &str) -> bool {
    let args: Value = serde_json::from_str(arguments).expect("arguments are JSON");
    let Some(o) = args.as_object() else { return false };
    let text = |key| o.get(key).is_some_and(Value::is_string);
    match name {
        "get_weather" => o.len() == 2 && text("city") && (o["unit"] == "celsius" || o["unit"] == "fahrenheit"),
        "get_time" => o.len() == 1 && text("timezone"),
        _ => false,
    }
}

#[test]
fn forcing_a_call_yields_a_valid_call_where_the_model_would_not_call() {
    // Teeth: offered the tools but not forced (no choice, or "auto"), the model answers in prose.
    for choice in [None, Some(ToolChoice::Auto)] {
        let (text, parsed) = answer(request(choice.clone()));
        println!("{choice:?}: {text:?}");
        assert!(parsed.tool_calls.is_empty(), "{choice:?} already calls a tool: {text:?}");
    }

    let (text, parsed) = answer(request(Some(ToolChoice::Required)));
    println!("required: {text:?}");
    assert!(text.starts_with("<tool_call>\n{\"name\": "), "{text:?}");
    assert!(!parsed.tool_calls.is_empty() && parsed.content.is_empty(), "{text:?} -> {parsed:?}");
    for call in &parsed.tool_calls {
        assert!(valid_arguments(&call.name, &call.arguments), "{call:?}");
    }

    // A named function: exactly that one, whichever it is.
    for name in NAMES {
        let choice: ToolChoice = serde_json::from_value(json!({"type": "function", "function": {"name": name}})).expect("shape");
        let (text, parsed) = answer(request(Some(choice)));
        println!("{name}: {text:?}");
        assert_eq!(parsed.tool_calls.len(), 1, "{text:?}");
        assert_eq!(parsed.tool_calls[0].name, name, "{text:?}");
        assert!(valid_arguments(name, &parsed.tool_calls[0].arguments), "{text:?}");
        assert!(parsed.content.is_empty(), "{text:?}");
    }
}

#[test]
fn choices_that_cannot_be_honoured_fail_before_running() {
    let invalid = |result: Result<ValidRequest, EngineError>| match result {
        Err(e) if e.is_request_error() => {
            assert!(matches!(e.field(), Some("tool_choice" | "tools")), "{e:?}");
            e.to_string()
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("accepted"),
    };
    let m = invalid(engine().validate_chat(request(Some(ToolChoice::Function("get_news".into())))));
    assert!(m.starts_with("tool_choice: ") && m.contains("get_news") && m.contains("get_weather, get_time"), "{m}");
    let no_tools = ChatRequest { tools: None, ..request(Some(ToolChoice::Required)) };
    let m = invalid(engine().validate_chat(no_tools));
    assert!(m.starts_with("tool_choice: ") && m.contains("at least one tool"), "{m}");
    // A forced call with a response_format is valid (OpenAI's semantics: the call is the whole
    // reply, the format is for a later text turn), and so is "auto" with both.
    for choice in [ToolChoice::Required, ToolChoice::Auto] {
        let mut both = request(Some(choice));
        both.params.response_format = Some(ResponseFormat::JsonObject { schema: None });
        both.params.parallel_tool_calls = Some(false);
        engine().validate_chat(both).expect("tools with a response_format");
    }
    let params = GenParams { tool_choice: Some(ToolChoice::Required), ..GenParams::greedy() };
    let m = invalid(engine().validate_prompt(PromptRequest { prompt: Prompt::Ids(vec![1, 2, 3]), params }));
    assert!(m.starts_with("tool_choice: ") && m.contains("chat request"), "{m}");
    let bad_schema = ChatRequest {
        tools: Some(vec![json!({"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}})]),
        ..request(Some(ToolChoice::Required))
    };
    let m = invalid(engine().validate_chat(bad_schema));
    assert!(m.starts_with("tools: ") && m.contains("strin"), "{m}");
    // "none" and "auto" constrain nothing, so they need no tools.
    let free = ChatRequest { tools: None, ..request(Some(ToolChoice::None)) };
    let params = GenParams { max_new_tokens: Some(1), ..free.params.clone() };
    assert_eq!(engine().chat(ChatRequest { params, ..free }).expect("valid").len(), 1);
}
