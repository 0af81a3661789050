//! End-to-end tests of `ingot api`: the real binary on a free port with the real Qwen GGUF,
//! driven by the official `openai` Python client, by plain HTTP, and by headless Chromium.
//!
//! The Python venv and playwright-core come from `scripts/install-test-tools.sh` (which the
//! README's test command and `.ci/run` call); every generation is greedy and short.

mod common;
#[path = "api/surfaces.rs"]
mod surfaces;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_browser, run_checks, Server};
use ingot_testkit::{fixtures_dir, scratch_dir, write_random_lora};
use serde_json::{json, Value};

fn greedy_fixture() -> PathBuf {
    fixtures_dir().join("real/qwen2.5-coder-0.5b-greedy.json")
}

/// The reference conversation "capital" and its greedy reply.
fn capital() -> (Value, String) {
    let text = std::fs::read_to_string(greedy_fixture()).expect("greedy fixture");
    let v: Value = serde_json::from_str(&text).expect("fixture json");
    let item = v["items"].as_array().expect("items").iter().find(|i| i["name"] == "capital").expect("capital").clone();
    (item["messages"].clone(), item["text"].as_str().expect("text").to_owned())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// POSTs `body` (raw text) and returns the status and the parsed JSON answer.
fn post(agent: &ureq::Agent, url: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.send(body).expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} answer is not JSON ({e}): {text}")))
}

fn get(agent: &ureq::Agent, url: &str, key: Option<&str>) -> (u16, String) {
    let mut req = agent.get(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().expect("request");
    (resp.status().as_u16(), resp.body_mut().read_to_string().expect("body"))
}

/// Asserts OpenAI's error shape and returns the error object.
fn openai_error(v: &Value) -> &Value {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    e
}

/// The `data:` payloads of a streamed response, up to and including `[DONE]`.
fn sse_events(reader: impl Read) -> Vec<String> {
    let mut out = Vec::new();
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        if let Some(d) = line.strip_prefix("data: ") {
            out.push(d.to_owned());
            if d == "[DONE]" {
                break;
            }
        }
    }
    out
}

/// One streamed chat request: the concatenated content and the finish reason.
fn stream_chat(agent: &ureq::Agent, base: &str, body: &Value) -> (String, Option<String>) {
    let mut resp = agent
        .post(&format!("{base}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let events = sse_events(resp.body_mut().as_reader());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let (mut text, mut finish) = (String::new(), None);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).expect("chunk json");
        assert!(v.get("error").is_none(), "{v}");
        if let Some(c) = v["choices"].get(0) {
            text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
    }
    (text, finish)
}

#[test]
fn openai_python_client() {
    let server = Server::start(&["--api-key", "other-key", "--api-key", "test-key", "--model-name", "qwen-test"], &[]);
    run_checks(&server, "openai_client.py", &[server.base.as_ref(), "qwen-test".as_ref(), greedy_fixture().as_os_str()]);
}

#[test]
fn bad_requests_get_openai_errors() {
    // Key and model name from LLaMA Factory's environment variables.
    // Strict model names: another model's name is OpenAI's 404.
    let server = Server::start(&["--strict-model-name", "--ctx-size", "4096"], &[("API_KEY", "secret"), ("API_MODEL_NAME", "env-model")]);
    let a = agent();
    let chat_url = server.url("/v1/chat/completions");
    let key = Some("secret");
    let user = json!([{"role": "user", "content": "hi"}]);

    let (status, body) = get(&a, &server.url("/v1/models"), key);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"env-model\""), "{body}");
    assert!(body.contains("\"max_model_len\":4096"), "--ctx-size: {body}");

    let ok = json!({"model": "env-model", "messages": user, "max_tokens": 1}).to_string();
    for (given, what) in [(None, "missing key"), (Some("wrong"), "wrong key")] {
        let (status, v) = post(&a, &chat_url, given, &ok);
        assert_eq!(status, 401, "{what}: {v}");
        assert_eq!(openai_error(&v)["type"], "authentication_error", "{what}");
    }

    // (body, status, param the error must name)
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("{\"model\": \"env-model\", \"messages\": [".into(), 400, None),
        (json!({"model": "env-model", "messages": user, "temperature": "hot"}).to_string(), 422, Some("temperature")),
        (json!({"model": "env-model", "messages": "hi"}).to_string(), 422, Some("messages")),
        (json!({"model": "env-model", "messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 422, Some("messages[0].role")),
        (json!({"model": "env-model", "messages": []}).to_string(), 400, Some("messages")),
        (json!({"model": "env-model", "messages": user, "temperature": -1}).to_string(), 400, Some("temperature")),
        (json!({"model": "env-model", "messages": user, "top_p": 2}).to_string(), 400, Some("top_p")),
        (json!({"model": "env-model", "messages": user, "max_tokens": 0}).to_string(), 400, Some("max_tokens")),
        (json!({"model": "env-model", "messages": user, "max_tokens": 40_000}).to_string(), 400, Some("max_tokens")),
        (json!({"model": "env-model", "messages": user, "stop": ["a", ""]}).to_string(), 400, Some("stop[1]")),
        (json!({"model": "env-model", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": null}]}).to_string(), 400, Some("messages[2].content")),
        (json!({"model": "env-model", "messages": user, "response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "objekt"}}}}).to_string(), 400, Some("response_format.json_schema")),
        (json!({"model": "env-model", "messages": user, "n": 0}).to_string(), 400, Some("n")),
        (json!({"model": "env-model", "messages": user, "n": 0, "stream": true}).to_string(), 400, Some("n")),
        (json!({"model": "gpt-4", "messages": user}).to_string(), 404, None),
    ];
    for (body, want, param) in &cases {
        let (status, v) = post(&a, &chat_url, key, body);
        assert_eq!(status, *want, "{body} -> {v}");
        let e = openai_error(&v);
        if let Some(p) = param {
            assert_eq!(e["param"], *p, "{body} -> {v}");
        }
    }
    // Temperature's range is checked by the engine, whose message names the field and limit.
    let (_, v) = post(&a, &chat_url, key, &json!({"model": "env-model", "messages": user, "temperature": -1}).to_string());
    assert!(openai_error(&v)["message"].as_str().is_some_and(|m| m.contains("temperature")), "{v}");

    // Over the default 1 MiB body limit.
    let big = json!({"model": "env-model", "messages": [{"role": "user", "content": "a".repeat(2 << 20)}]}).to_string();
    let (status, v) = post(&a, &chat_url, key, &big);
    assert_eq!(status, 413, "{v}");
    openai_error(&v);

    // Under the body limit, over the model's context (32768 tokens), and over --ctx-size.
    let long = json!({"model": "env-model", "messages": [{"role": "user", "content": "hello ".repeat(40_000)}], "stream": true});
    let (status, v) = post(&a, &chat_url, key, &long.to_string());
    assert_eq!(status, 400, "{v}");
    assert!(openai_error(&v)["message"].as_str().is_some_and(|m| m.contains("tokens")), "{v}");
    let over = json!({"model": "env-model", "messages": [{"role": "user", "content": "hello ".repeat(5_000)}]});
    let (status, v) = post(&a, &chat_url, key, &over.to_string());
    assert_eq!(status, 400, "{v}");
    assert!(openai_error(&v)["message"].as_str().is_some_and(|m| m.contains("context of 4096")), "{v}");

    let (status, body) = get(&a, &server.url("/v1/nothing-here"), key);
    assert_eq!(status, 404, "{body}");
    openai_error(&serde_json::from_str(&body).expect("json"));

    let (status, body) = get(&a, &server.url("/health"), None);
    assert_eq!(status, 200, "the server still answers: {body}");
    let (status, metrics) = get(&a, &server.url("/metrics"), None);
    assert_eq!(status, 200);
    assert!(metrics.contains("ingot_requests_total{route=\"/v1/chat/completions\",status=\"422\"} 3"), "{metrics}");
    assert!(metrics.contains("# TYPE ingot_time_to_first_token_seconds histogram"), "{metrics}");
}

#[test]
fn config_overrides_set_the_request_defaults() {
    // LLaMA Factory style `KEY=VALUE` overrides (as after a config file): they beat the model's
    // generation_config.json, and a request's own fields beat them.
    let server = Server::start(&["max_new_tokens=3", "do_sample=false"], &[]);
    let (messages, expected) = capital();
    let a = agent();
    let url = server.url("/v1/chat/completions");
    let (status, r) = post(&a, &url, None, &json!({"model": "qwen2.5-coder-0.5b-instruct", "messages": messages}).to_string());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 3, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    assert!(expected.starts_with(r["choices"][0]["message"]["content"].as_str().expect("content")), "greedy: {r}");
    let body = json!({"model": "qwen2.5-coder-0.5b-instruct", "messages": messages, "max_tokens": 16});
    let (_, r) = post(&a, &url, None, &body.to_string());
    assert_eq!(r["choices"][0]["message"]["content"], expected, "{r}");
}

#[test]
fn a_full_queue_answers_429() {
    // With no room in the queue every generation request is refused, before any stream starts.
    let server = Server::start(&["--max-queue", "0"], &[]);
    let a = agent();
    for stream in [false, true] {
        let body = json!({"model": "qwen2.5-coder-0.5b-instruct", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        let (status, v) = post(&a, &server.url("/v1/chat/completions"), None, &body.to_string());
        assert_eq!(status, 429, "{v}");
        assert_eq!(openai_error(&v)["type"], "rate_limit_error", "{v}");
    }
    assert_eq!(get(&a, &server.url("/health"), None).0, 200);
}

#[test]
fn apply_template_shows_the_prompt_of_a_chat_template_file() {
    // --chat-template replaces the model's template; the route renders without generating.
    let fixtures = fixtures_dir().join("templates");
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("cases.json")).expect("cases.json")).expect("cases");
    let case = cases
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["id"] == "qwen3/single_user_gen_thinking_false")
        .expect("the qwen3 no-thinking case");
    let template = fixtures.join("qwen3.jinja");
    let server = Server::start(&["--chat-template", template.to_str().expect("path"), "--max-queue", "0"], &[]);
    let body = json!({
        "model": "qwen2.5-coder-0.5b-instruct",
        "messages": case["messages"],
        "chat_template_kwargs": {"enable_thinking": false},
    });
    let (status, v) = post(&agent(), &server.url("/apply-template"), None, &body.to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["prompt"], case["expected"], "{v}");
    let ids = v["prompt_ids"].as_array().expect("ids");
    assert_eq!(v["prompt_tokens"].as_u64(), Some(ids.len() as u64));
    assert!(ids.len() > 5, "{v}");
}

#[test]
fn score_route_matches_transformers() {
    let server = Server::start_model(&fixtures_dir().join("tiny-qwen2-rm"), &["--model-name", "rm", "--cache-type", "f32"], &[]);
    let text = std::fs::read_to_string(fixtures_dir().join("tiny-qwen2-rm/scores.json")).expect("scores.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    let items = v["items"].as_array().expect("items");
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().expect("text")).collect();
    let a = agent();
    let (status, r) =
        post(&a, &server.url("/v1/score/evaluation"), None, &json!({"model": "rm", "messages": texts}).to_string());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "score.evaluation");
    let scores = r["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), items.len());
    for (item, got) in items.iter().zip(scores) {
        let (want, got) = (item["score"].as_f64().expect("score"), got.as_f64().expect("number"));
        assert!((got - want).abs() <= 1e-4, "{}: got {got}, transformers {want}", item["text"]);
    }
    // max_length cuts texts (a 2-token head scores differently), and 0 is refused.
    let long = texts.iter().max_by_key(|t| t.len()).expect("a text");
    let score = |body: Value| post(&a, &server.url("/v1/score/evaluation"), None, &body.to_string());
    let (_, full) = score(json!({"model": "rm", "messages": [long]}));
    let (status, cut) = score(json!({"model": "rm", "messages": [long], "max_length": 2}));
    assert_eq!(status, 200, "{cut}");
    assert_ne!(cut["scores"], full["scores"], "{cut} {full}");
    let (status, r) = score(json!({"model": "rm", "messages": [long], "max_length": 0}));
    assert_eq!(status, 400, "{r}");
    // A reward model does not chat.
    let chat = json!({"model": "rm", "messages": [{"role": "user", "content": "hi"}]});
    let (status, r) = post(&a, &server.url("/v1/chat/completions"), None, &chat.to_string());
    assert_eq!(status, 400, "{r}");
    assert!(openai_error(&r)["message"].as_str().is_some_and(|m| m.contains("reward model")), "{r}");
}

#[test]
fn concurrent_streaming_clients_all_finish() {
    let server = Server::start(&[], &[]);
    let (messages, expected) = capital();
    let body = json!({"model": "qwen2.5-coder-0.5b-instruct", "messages": messages, "temperature": 0, "max_tokens": 16, "stream": true});
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (base, body) = (server.base.clone(), body.clone());
            std::thread::spawn(move || stream_chat(&agent(), &base, &body))
        })
        .collect();
    for h in handles {
        let (text, finish) = h.join().expect("client thread");
        // Batched with 31 others, each greedy reply is still the reference one.
        assert_eq!(text, expected);
        assert_eq!(finish.as_deref(), Some("stop"));
    }
    let (_, metrics) = get(&agent(), &server.url("/metrics"), None);
    assert!(metrics.contains("ingot_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 32"), "{metrics}");
}

/// The `ingot_completion_tokens_total` value and whether no sequence is in flight.
fn completion_tokens_when_idle(a: &ureq::Agent, server: &Server) -> Option<f64> {
    let (_, m) = get(a, &server.url("/metrics"), None);
    let value = |name: &str| {
        m.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(-1.0)
    };
    (value("ingot_running_sequences ") == 0.0 && value("ingot_queue_depth ") == 0.0)
        .then(|| value("ingot_completion_tokens_total "))
}

#[test]
fn disconnect_cancels_and_sigterm_lets_streams_finish() {
    let mut server = Server::start(&[], &[]);
    let a = agent();
    let (messages, expected) = capital();
    // A client that reads two chunks of a long reply, then goes away.
    let long = json!({"model": "qwen2.5-coder-0.5b-instruct", "stream": true, "max_tokens": 4000, "temperature": 0,
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one number per line."}]});
    {
        let mut resp = a
            .post(&server.url("/v1/chat/completions"))
            .header("Content-Type", "application/json")
            .send(long.to_string())
            .expect("request");
        let mut lines = BufReader::new(resp.body_mut().as_reader()).lines();
        let data = lines.by_ref().map_while(Result::ok).filter(|l| l.starts_with("data: ")).take(3).count();
        assert_eq!(data, 3);
    }
    // Cancelled, the sequence stops far short of its 4000 tokens (no timing assumed: we wait
    // for the engine to be idle, however long that takes, then count the tokens generated).
    let tokens = loop {
        if let Some(t) = completion_tokens_when_idle(&a, &server) {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!((1.0..4000.0).contains(&tokens), "generated {tokens} tokens after the client left");

    // SIGTERM while a stream is in flight: it still completes, then the server exits cleanly.
    let body = json!({"model": "qwen2.5-coder-0.5b-instruct", "messages": messages, "temperature": 0, "max_tokens": 16, "stream": true});
    let mut resp = a
        .post(&server.url("/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("request");
    let mut reader = BufReader::new(resp.body_mut().as_reader());
    let mut first = String::new();
    reader.read_line(&mut first).expect("first chunk");
    assert!(first.starts_with("data: "), "{first}");
    let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let events = sse_events(reader);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"].get(0).and_then(|c| c["delta"]["content"].as_str()).map(str::to_owned))
        .collect();
    assert_eq!(text, expected);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the server did not exit after SIGTERM: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn web_page_streams_a_reply_in_chromium() {
    let server = Server::start(&[], &[]);
    let shot = scratch_dir("api-browser").join("chat.png");
    let v = run_browser(&server, &shot, &[]);
    assert!(v["reply"].as_str().is_some_and(|r| r.contains("Paris")), "{v}");
    assert!(v["steps"].as_u64().is_some_and(|n| n >= 2), "the reply arrived in one piece, not streamed: {v}");
    assert!(v["status"].as_str().is_some_and(|s| s.contains("tokens/s")), "{v}");
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0), "no screenshot at {}", shot.display());
    // Kept for people to look at: the test's scratch directory is not removed.
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn tokenize_routes_round_trip_and_token_prompts_match_text_prompts() {
    let server = Server::start(&[], &[]);
    let a = agent();
    let text = std::fs::read_to_string(fixtures_dir().join("real/qwen2.5-coder-0.5b-tokenize.json")).expect("tokenize fixture");
    let fixture: Value = serde_json::from_str(&text).expect("json");
    for item in fixture["items"].as_array().expect("items") {
        let (status, v) = post(&a, &server.url("/tokenize"), None, &json!({"content": item["text"]}).to_string());
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["tokens"], item["llama_cpp_ids"], "{}", item["text"]);
        let (status, v) = post(&a, &server.url("/detokenize"), None, &json!({"tokens": item["llama_cpp_ids"]}).to_string());
        assert_eq!(status, 200, "{v}");
        // Special tokens are kept (as llama.cpp's server does), so the text comes back byte for byte.
        assert_eq!(v["content"], item["text"], "{}", item["text"]);
    }

    // A prompt given as ids answers exactly as the same prompt given as text.
    let prompt = "def fibonacci(n):";
    let (_, ids) = post(&a, &server.url("/tokenize"), None, &json!({"content": prompt}).to_string());
    let complete = |p: Value| {
        let body = json!({"prompt": p, "max_tokens": 12, "temperature": 0});
        let (status, v) = post(&a, &server.url("/v1/completions"), None, &body.to_string());
        assert_eq!(status, 200, "{v}");
        v["choices"][0]["text"].clone()
    };
    let by_text = complete(json!(prompt));
    assert!(by_text.as_str().is_some_and(|t| !t.is_empty()), "{by_text}");
    assert_eq!(complete(ids["tokens"].clone()), by_text);

    // The routes without `/v1` are the same routes.
    let (messages, expected) = capital();
    let body = json!({"messages": messages, "temperature": 0, "max_tokens": 16}).to_string();
    for path in ["/v1/chat/completions", "/chat/completions"] {
        let (status, v) = post(&a, &server.url(path), None, &body);
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(v["choices"][0]["message"]["content"], expected.as_str(), "{path}");
    }
}

/// llama.cpp's `/completion` (text and ids give the same greedy answer, streamed too) and
/// `/infill` with Qwen2.5-Coder's fill-in-the-middle tokens.
fn llama_cpp_native_routes(server: &Server) {
    let a = agent();
    let (status, text) = post(&a, &server.url("/completion"), Some("test-key"), &json!({"prompt": "The capital of France is", "n_predict": 6, "temperature": 0}).to_string());
    assert_eq!(status, 200, "{text}");
    let content = text["content"].as_str().expect("content").to_owned();
    assert!(!content.is_empty() && text["tokens_predicted"] == 6 && text["stop_type"] == "limit", "{text}");
    assert_eq!(text["timings"]["predicted_n"], 6, "{text}");
    let (_, ids) = post(&a, &server.url("/tokenize"), Some("test-key"), &json!({"content": "The capital of France is"}).to_string());
    let by_ids = json!({"prompt": ids["tokens"], "n_predict": 6, "temperature": 0, "stream": true});
    let mut resp = a.post(&server.url("/completion")).header("Authorization", "Bearer test-key").send(by_ids.to_string()).expect("request");
    let lines: Vec<Value> = sse_events(resp.body_mut().as_reader()).iter().map(|d| serde_json::from_str(d).expect("json")).collect();
    let streamed: String = lines.iter().filter_map(|l| l["content"].as_str()).collect();
    assert_eq!(streamed, content, "{lines:?}");
    assert_eq!(lines.last().map(|l| l["stop"].clone()), Some(json!(true)));
    let fim = json!({"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n\nprint(add(1, 2))\n", "n_predict": 8, "temperature": 0});
    let (status, v) = post(&a, &server.url("/infill"), Some("test-key"), &fim.to_string());
    assert_eq!(status, 200, "{v}");
    assert!(v["content"].as_str().is_some_and(|c| c.contains('a') && c.contains('b')), "{v}");
}

/// The Responses API with the `openai` client and the Agents SDK, the Messages API with the
/// `anthropic` client, llama.cpp's native routes, `grammar`, prefill and stop strings, against
/// one server.
#[test]
fn responses_messages_and_llama_cpp_routes() {
    let server = Server::start(&["--api-key", "test-key", "--model-name", "qwen-test"], &[]);
    let fixture = greedy_fixture();
    for script in ["responses_client.py", "anthropic_client.py"] {
        run_checks(&server, script, &[server.base.as_ref(), "qwen-test".as_ref(), fixture.as_os_str()]);
    }
    llama_cpp_native_routes(&server);
    surfaces::grammar_prefill_and_stop_words(&server);
}

/// Two LoRA adapters (the fixture's and a random one made here) over tiny-llama, one resident
/// at a time (`--max-loras 1`: the other loads on demand while its requests wait): the
/// official client sees both in `/v1/models`, and each of 12 concurrent requests over the base
/// and both adapters equals the same request alone. Under `--strict-model-name` an unknown
/// name is a 404 listing what is served.
#[test]
fn lora_adapters_picked_by_model_name() {
    let second = scratch_dir("lora-api-second");
    write_random_lora(&fixtures_dir().join("tiny-llama-lora"), &second, 7);
    let tuned = format!("tuned={}", fixtures_dir().join("tiny-llama-lora").display());
    let other = format!("other={}", second.display());
    let args = ["--lora", &tuned, "--lora", &other, "--max-loras", "1", "--strict-model-name"];
    let server = Server::start_model(&fixtures_dir().join("tiny-llama"), &args, &[]);
    let (status, body) = get(&agent(), &server.url("/v1/models/no-such-model"), None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("`tiny-llama`, `tuned`, `other`"), "{body}");
    drop(server);

    let server = Server::start_model(&fixtures_dir().join("tiny-llama"), &args[..6], &[]);
    run_checks(&server, "openai_lora.py", &[server.base.as_ref(), "tiny-llama".as_ref(), "tuned".as_ref(), "other".as_ref()]);
}
