//! llama.cpp's `grammar` (GBNF) on the three completion routes, assistant prefill (chat and
//! Anthropic), and the stop string reported by llama.cpp's `/completion` and Anthropic's
//! Messages: through the real server and the real Qwen GGUF, greedy, exact expectations.

use serde_json::{json, Value};

use super::{agent, post};
use crate::common::Server;

const KEY: Option<&str> = Some("test-key");

fn ok(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = post(&agent(), &server.url(path), KEY, &body.to_string());
    assert_eq!(status, 200, "{path}: {v}");
    v
}

fn grammar(server: &Server) {
    let yes_no = json!({"prompt": "Is Paris the capital of France? Answer yes or no:", "n_predict": 10,
        "temperature": 0, "grammar": "root ::= \" \" (\"yes\" | \"no\") \".\"  # the whole answer\n"});
    let v = ok(server, "/completion", yes_no);
    assert!(matches!(v["content"].as_str(), Some(" yes." | " no.")) && v["stop_type"] == "eos", "{v}");

    let digits = "root ::= [1-9] [0-9]{2}";
    let chat = json!({"messages": [{"role": "user", "content": "Give me a three digit number."}], "max_tokens": 10,
        "temperature": 0, "grammar": digits});
    let v = ok(server, "/v1/chat/completions", chat);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(content.len() == 3 && content.bytes().all(|b| b.is_ascii_digit()) && !content.starts_with('0'), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");

    let year = json!({"prompt": "The first man walked on the moon in the year", "max_tokens": 10, "temperature": 0,
        "grammar": "root ::= \" \" year\nyear ::= [12] [0-9] [0-9] [0-9]"});
    let v = ok(server, "/v1/completions", year);
    let text = v["choices"][0]["text"].as_str().unwrap_or_default();
    assert!(text.len() == 5 && text.starts_with(' ') && text[1..].bytes().all(|b| b.is_ascii_digit()), "{v}");

    let bad = [
        json!({"prompt": "x", "grammar": "root ::= undefined-rule"}),
        json!({"prompt": "x", "grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}),
    ];
    for body in bad {
        let (status, v) = post(&agent(), &server.url("/v1/completions"), KEY, &body.to_string());
        assert_eq!((status, &v["error"]["param"]), (400, &json!("grammar")), "{v}");
    }
}

fn prefill(server: &Server) {
    let user = json!({"role": "user", "content": "What is the capital of France?"});
    let start = "The capital of France is";
    let turns = json!([user, {"role": "assistant", "content": start}]);
    // The prompt is the question's prompt (generation prompt included) plus the assistant's
    // text: no end-of-turn after it.
    let question = ok(server, "/apply-template", json!({"messages": [user]}));
    let prefilled = ok(server, "/apply-template", json!({"messages": turns}));
    let expected = format!("{}{start}", question["prompt"].as_str().expect("prompt"));
    assert_eq!(prefilled["prompt"], expected.as_str());

    let chat = ok(server, "/v1/chat/completions", json!({"messages": turns, "max_tokens": 6, "temperature": 0}));
    let continued = chat["choices"][0]["message"]["content"].as_str().expect("content").to_owned();
    let raw = ok(server, "/v1/completions", json!({"prompt": expected, "max_tokens": 6, "temperature": 0}));
    assert_eq!(raw["choices"][0]["text"], continued.as_str());
    assert!(continued.contains("Paris"), "{chat}");

    let anthropic = json!({"messages": turns, "max_tokens": 6, "temperature": 0});
    let v = ok(server, "/v1/messages", anthropic);
    assert_eq!(v["content"][0]["text"].as_str().map(str::trim), Some(continued.trim()), "{v}");
}

fn stop_words(server: &Server) {
    let body = json!({"prompt": "def fibonacci(n):", "n_predict": 24, "temperature": 0});
    let full = ok(server, "/completion", body.clone())["content"].as_str().expect("content").to_owned();
    // A stop string from the middle of the greedy reply: the reply ends just before it.
    let word: String = full.trim_start().chars().skip(6).take(4).collect();
    let cut = full.find(&word).expect("in the reply");
    let mut stopped = body;
    stopped["stop"] = json!(["never-generated", word]);
    let v = ok(server, "/completion", stopped);
    assert_eq!((v["content"].as_str(), &v["stop_type"], &v["stopping_word"]), (Some(&full[..cut]), &json!("word"), &json!(word)), "{v}");

    let turns = json!([{"role": "user", "content": "Name three colors."}]);
    let whole = ok(server, "/v1/messages", json!({"messages": turns, "max_tokens": 16, "temperature": 0}));
    assert_eq!((&whole["stop_sequence"], whole["stop_reason"] != "stop_sequence"), (&Value::Null, true), "{whole}");
    let text = whole["content"][0]["text"].as_str().expect("text");
    let word: String = text.chars().skip(4).take(3).collect();
    let v = ok(server, "/v1/messages", json!({"messages": turns, "max_tokens": 16, "temperature": 0, "stop_sequences": [word]}));
    assert_eq!((&v["stop_reason"], &v["stop_sequence"]), (&json!("stop_sequence"), &json!(word)), "{v}");
    assert_eq!(v["content"][0]["text"].as_str().map(str::trim), Some(text[..text.find(&word).expect("in")].trim()), "{v}");
}

/// Every check of this module, against one server started with `--api-key test-key`.
pub fn grammar_prefill_and_stop_words(server: &Server) {
    grammar(server);
    prefill(server);
    stop_words(server);
}
