use serde_json::{json, Value as Json};

use super::*;

/// What LLaMA Factory's `tool_utils.py` writes for [`sample_tools`] and [`sample_calls`]
/// (`tool_formatter`, and `function_formatter` on both calls and on the first alone; llama3's
/// date fixed to 26 Jul 2024).
fn expected(key: &str) -> String {
    let all: Json = serde_json::from_str(include_str!("expected.json")).expect("JSON");
    all[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}"))
        .to_owned()
}

fn sample_tools() -> Vec<Json> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "description": "Temperature unit", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "array", "description": "Days ahead", "items": {"type": "integer"}}},
            "required": ["city"]}}}),
        json!({"name": "now", "description": "Current time (UTC).", "parameters": {"type": "object", "properties": {}}}),
    ]
}

fn sample_calls() -> Vec<Json> {
    vec![
        // OpenAI shape, arguments as a string.
        json!({"id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}),
        // Hugging Face shape, arguments as an object.
        json!({"name": "now", "arguments": {}}),
    ]
}

const NAMES: [&str; 2] = ["get_weather", "now"];

/// Name and arguments of each call, without the random ids.
fn calls(reply: &ParsedReply) -> Vec<(&str, &str)> {
    reply
        .tool_calls
        .iter()
        .map(|c| (c.name.as_str(), c.arguments.as_str()))
        .collect()
}

const PARIS: (&str, &str) = ("get_weather", r#"{"city": "Paris"}"#);
const NOW: (&str, &str) = ("now", "{}");

#[test]
fn tool_prompts_match_llama_factory() {
    let tools = sample_tools();
    for format in ToolFormat::ALL {
        let text = format
            .render_tools(&tools, Some("26 Jul 2024"))
            .expect("renders");
        assert_eq!(text, expected(format.name()), "format {}", format.name());
        assert_eq!(format.render_tools(&[], None).expect("no tools"), "");
    }
    // LLaMA Factory writes today's date when none is given.
    let today = ToolFormat::Llama3
        .render_tools(&tools, None)
        .expect("renders");
    assert!(today.contains(&format!(
        "Today Date: {}\n",
        super::super::strftime::strftime_now("%d %b %Y")
    )));
}

#[test]
fn tool_definition_errors_name_the_tool() {
    let tools = [
        json!({"name": "ok", "parameters": {"properties": {}}}),
        json!({"description": "nameless"}),
    ];
    assert_eq!(
        ToolFormat::Default.render_tools(&tools, None),
        Err(ToolError::Definition {
            index: 1,
            message: "the function has no `name` string".to_owned()
        })
    );
    let err = ToolFormat::Default
        .render_tools(&[json!({"type": "function"})], None)
        .expect_err("no function");
    assert!(err.to_string().starts_with("tools[0]: "), "{err}");
}

#[test]
fn tool_calls_are_written_as_llama_factory_writes_them() {
    let both = sample_calls();
    for format in ToolFormat::ALL {
        let name = format.name();
        assert_eq!(
            format.render_calls(&both).expect("renders"),
            expected(&format!("calls_{name}")),
            "{name}"
        );
        assert_eq!(
            format.render_calls(&both[..1]).expect("renders"),
            expected(&format!("call1_{name}")),
            "{name}"
        );
    }
    let bad = [json!({"name": "f", "arguments": "not json"})];
    assert!(matches!(
        ToolFormat::Qwen.render_calls(&bad),
        Err(ToolError::Call { index: 0, .. })
    ));
    let nameless = [json!({"arguments": {}})];
    assert!(matches!(
        ToolFormat::Qwen.render_calls(&nameless),
        Err(ToolError::Call { index: 0, .. })
    ));
}

#[test]
fn written_calls_parse_back() {
    for format in ToolFormat::ALL {
        let text = format.render_calls(&sample_calls()).expect("renders");
        let parsed = format.parse(&text, &NAMES);
        assert_eq!(
            calls(&parsed),
            [
                ("get_weather", r#"{"city": "Paris", "unit": "celsius"}"#),
                NOW
            ],
            "{}: {text}",
            format.name()
        );
        assert_eq!(parsed.content, "");
    }
}

#[test]
fn formats_are_detected_from_model_templates() {
    let expectations = [
        ("qwen2.5.jinja", ToolFormat::Qwen),
        ("qwen3.jinja", ToolFormat::Qwen),
        ("llama3.1.jinja", ToolFormat::Llama3),
        ("llama3.2.jinja", ToolFormat::Llama3),
        ("mistral-v0.3.jinja", ToolFormat::Mistral),
        ("mistral-nemo.jinja", ToolFormat::Mistral),
        ("gemma3.jinja", ToolFormat::Default),
        ("phi4.jinja", ToolFormat::Default),
        ("deepseek-r1-distill.jinja", ToolFormat::Default),
    ];
    for (file, format) in expectations {
        let path = ingot_testkit::fixtures_dir().join("templates").join(file);
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(ToolFormat::detect(&source), format, "{file}");
    }
    for format in ToolFormat::ALL {
        assert_eq!(ToolFormat::from_name(format.name()), Some(format));
    }
    assert_eq!(ToolFormat::from_name("glm4"), None);
}

#[test]
fn qwen_calls() {
    let q = |text: &str| ToolFormat::Qwen.parse(text, &NAMES);
    let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    assert_eq!(calls(&q(one)), [PARIS]);
    assert_eq!(q(one).content, "");
    // Parallel calls, text before them kept (without its trailing whitespace).
    let two = format!(
        "Let me look.\n\n{one}\n<tool_call>\n{{\"name\": \"now\", \"arguments\": {{}}}}\n</tool_call>\n"
    );
    let parsed = q(&two);
    assert_eq!(calls(&parsed), [PARIS, NOW]);
    assert_eq!(parsed.content, "Let me look.");
    // Unknown tool names are still calls when marked; ids are fresh and distinct.
    let other = q("<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}</tool_call>");
    assert_eq!(calls(&other), [("search", r#"{"q": "x"}"#)]);
    assert!(other.tool_calls[0].id.starts_with("call_") && other.tool_calls[0].id.len() == 37);
    assert_ne!(parsed.tool_calls[0].id, parsed.tool_calls[1].id);
    // A last block cut off before its closing tag, with whole JSON.
    assert_eq!(calls(&q("<tool_call>\n{\"name\": \"now\"}")), [NOW]);
    // Malformed: the whole reply is content.
    for text in [
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}\n</tool_call>",
        "<tool_call>{\"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"now\", \"arguments\": [1]}</tool_call>",
        "<tool_call>{\"name\": \"now\"}</tool_call> and then some text",
        "Use <tool_call> tags to call tools.",
        "<tool_call></tool_call>",
    ] {
        assert_eq!(
            q(text),
            ParsedReply {
                content: text.to_owned(),
                tool_calls: vec![]
            },
            "{text}"
        );
    }
}

#[test]
fn llama3_calls() {
    let l = |text: &str| ToolFormat::Llama3.parse(text, &NAMES);
    assert_eq!(
        calls(&l(
            r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#
        )),
        [PARIS]
    );
    assert_eq!(
        calls(&l(
            r#"[{"name": "get_weather", "parameters": {"city": "Paris"}}, {"name": "now", "parameters": {}}]"#
        )),
        [PARIS, NOW]
    );
    let tagged = l("Checking.<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"now\"}");
    assert_eq!(calls(&tagged), [PARIS, NOW]);
    assert_eq!(tagged.content, "Checking.");
    for text in [
        r#"{"name": "get_weather", "parameters": {"city": "Paris"}"#,
        r#"{"name": "unknown_tool", "parameters": {}}"#,
        r#"{"city": "Paris"}"#,
        "<|python_tag|>print(1)",
        "Sure: {\"name\": \"now\", \"parameters\": {}}",
    ] {
        assert_eq!(l(text).content, text);
        assert!(l(text).tool_calls.is_empty(), "{text}");
    }
}

#[test]
fn mistral_calls() {
    let m = |text: &str| ToolFormat::Mistral.parse(text, &NAMES);
    let parsed = m(
        r#"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]"#,
    );
    assert_eq!(calls(&parsed), [PARIS, NOW]);
    // Decoding usually drops the [TOOL_CALLS] token: the bare list is a call too.
    assert_eq!(calls(&m(r#"[{"name": "now", "arguments": {}}]"#)), [NOW]);
    let before = m("Let me see. [TOOL_CALLS][{\"name\": \"now\", \"arguments\": {}}][TOOL_CALLS]{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}");
    assert_eq!(calls(&before), [NOW, PARIS]);
    assert_eq!(before.content, "Let me see.");
    for text in [
        "[TOOL_CALLS] [{\"name\": \"now\", \"arguments\": {}",
        "[TOOL_CALLS] sorry",
        "[TOOL_CALLS] []",
    ] {
        assert_eq!(m(text).content, text);
        assert!(m(text).tool_calls.is_empty(), "{text}");
    }
}

#[test]
fn default_calls() {
    let d = |text: &str| ToolFormat::Default.parse(text, &NAMES);
    let parsed = d("Thought: I need the weather.\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}\nAction: now\nAction Input: {}");
    assert_eq!(calls(&parsed), [PARIS, NOW]);
    assert_eq!(parsed.content, "Thought: I need the weather.");
    assert_eq!(
        calls(&d(
            "Action: get_weather\nAction Input: ```json\n{\"city\": \"Paris\"}\n```"
        )),
        [PARIS]
    );
    for text in [
        "Action: get_weather\nAction Input: {\"city\": Paris}",
        "Action: get_weather\nAction Input: {\"city\": \"Paris\"} because it is nice",
        "Action: get weather\nAction Input: {}",
        "Press the Action: button.",
    ] {
        assert_eq!(d(text).content, text);
        assert!(d(text).tool_calls.is_empty(), "{text}");
    }
}

#[test]
fn bare_json_calls_need_known_names() {
    for format in ToolFormat::ALL {
        let p = |text: &str| format.parse(text, &NAMES);
        let bare = r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#;
        // Exactly what Qwen2.5-Coder-0.5B answers to a tool prompt.
        let fenced = format!("```json\n{bare}\n```");
        for text in [
            bare.to_owned(),
            fenced.clone(),
            format!("  {fenced}\n"),
            format!("```\n{bare}```"),
        ] {
            assert_eq!(calls(&p(&text)), [PARIS], "{}: {text}", format.name());
            assert_eq!(p(&text).content, "");
        }
        assert_eq!(
            calls(&p(&format!("{bare}\n{{\"name\": \"now\"}}"))),
            [PARIS, NOW]
        );
        assert_eq!(
            calls(&p(
                r#"{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}"#
            )),
            [PARIS]
        );
        for text in [
            r#"{"name": "send_mail", "arguments": {}}"#.to_owned(),
            format!("```python\n{bare}\n```"),
            format!("Here you go:\n{fenced}"),
            format!("{fenced}\nDone."),
            r#"{"name": "get_weather", "arguments": {"city": "Paris"}"#.to_owned(),
            "```json\n{\"answer\": 42}\n```".to_owned(),
        ] {
            assert_eq!(p(&text).content, text, "{}", format.name());
            assert!(p(&text).tool_calls.is_empty(), "{}: {text}", format.name());
        }
        // Without tool names nothing bare is a call.
        assert!(format.parse(bare, &[] as &[&str]).tool_calls.is_empty());
    }
}

/// Streams `text` cut at `cuts` and checks the invariant against the one-shot parser; returns
/// what each push returned.
fn stream(format: ToolFormat, text: &str, cuts: &[usize]) -> Vec<String> {
    let mut stream = ToolCallStream::new(format, &NAMES);
    let mut start = 0;
    let mut pushed = Vec::new();
    for &cut in cuts.iter().chain([&text.len()]) {
        pushed.push(stream.push(&text[start..cut]));
        start = cut;
    }
    let end = stream.finish();
    let whole = format.parse(text, &NAMES);
    assert_eq!(
        pushed.concat() + &end.content,
        whole.content,
        "{} cut at {cuts:?}: {text:?}",
        format.name()
    );
    assert_eq!(
        calls(&end),
        calls(&whole),
        "{} cut at {cuts:?}: {text:?}",
        format.name()
    );
    pushed
}

#[test]
fn streaming_matches_one_shot_at_every_split() {
    let samples: &[(ToolFormat, &str)] = &[
        (ToolFormat::Qwen, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"),
        (ToolFormat::Qwen, "a < b <tool_call>{\"name\": \"now\", \"arguments\": {\"x\": 1}</tool_call>"),
        (ToolFormat::Qwen, "Plain answer with <b>tags</b> and \"quotes\".\n\n"),
        (ToolFormat::Qwen, " ```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```\n"),
        (ToolFormat::Qwen, "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```\nThat is all."),
        (ToolFormat::Qwen, "```python\nprint({\"a\": 1})\n```"),
        (ToolFormat::Qwen, "{\"name\": \"now\"} {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"),
        (ToolFormat::Qwen, "{\"name\": \"now\"} x"),
        (ToolFormat::Llama3, "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}]"),
        (ToolFormat::Llama3, "Ok <|python_tag|>{\"name\": \"now\", \"parameters\": {}}"),
        (ToolFormat::Llama3, "<|python tag|> is a token."),
        (ToolFormat::Mistral, "Sure. [TOOL_CALLS] [{\"name\": \"now\", \"arguments\": {}}]"),
        (ToolFormat::Mistral, "[1, 2, 3] are [numbers]"),
        (ToolFormat::Default, "Thought: weather.\nAction: get_weather\nAction Input: {\"city\": \"Paris\"}"),
        (ToolFormat::Default, "An Action: film, Action Input: none. Actually, no."),
        (ToolFormat::Default, "Action: now\nAction Input: {} trailing"),
        (ToolFormat::Default, "héllo wörld 🌍 — Ações"),
    ];
    for &(format, text) in samples {
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &cut in &boundaries {
            stream(format, text, &[cut]);
        }
        // One character at a time.
        stream(format, text, &boundaries[1..boundaries.len() - 1]);
    }
}

#[test]
fn streaming_passes_content_on_early() {
    let chars = |text: &str| -> Vec<usize> {
        (1..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect()
    };
    // Plain text flows at once, except a trailing space and a possible marker start.
    let text = "Hello, world. 1 <";
    let pushed = stream(ToolFormat::Qwen, text, &chars(text));
    assert_eq!(pushed[..6].concat(), "Hello,");
    assert_eq!(pushed[..text.len() - 1].concat(), "Hello, world. 1");
    assert_eq!(pushed.concat(), "Hello, world. 1");
    // Content before a call is out before the call is complete.
    let text = "Checking. <tool_call>\n{\"name\": \"now\"}\n</tool_call>";
    let pushed = stream(ToolFormat::Qwen, text, &chars(text));
    assert_eq!(pushed[..text.len() - 1].concat(), "Checking.");
    assert_eq!(pushed[..9].concat(), "Checking.");
    // A reply that may be a bare (fenced) JSON call is held, then released once it is not.
    let text = "```json\n{\"name\": \"now\"}\n```\nDone";
    let pushed = stream(ToolFormat::Qwen, text, &chars(text));
    assert_eq!(pushed[..text.len() - 4].concat(), "");
    assert_eq!(pushed[..text.len() - 3].concat(), &text[..text.len() - 3]);
    let text = "```rust\nfn main() {}";
    let pushed = stream(ToolFormat::Qwen, text, &chars(text));
    assert_eq!(pushed[..3].concat(), "");
    assert_eq!(pushed[..4].concat(), "```r");
    let text = "Action: get_weather is what I'd do";
    let pushed = stream(ToolFormat::Default, text, &chars(text));
    assert_eq!(pushed[..20].concat(), "");
    assert_eq!(pushed[..21].concat(), "Action: get_weather i");
}
