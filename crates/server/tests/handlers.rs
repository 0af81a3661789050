//! The HTTP layer against a stub engine (no model): request parsing into the engine's one
//! parameters type, the one table from engine errors to OpenAI's error bodies, and SSE
//! delivery, through the real router with `tower::ServiceExt::oneshot`.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ingot_core::model::ForwardError;
use ingot_core::template::ToolFormat;
use ingot_engine::{ChatRequest, EngineError, Event, EventSink, FinishReason, PromptRequest, Usage};
use ingot_server::backend::{ScoresDone, Submitted};
use ingot_server::sink::ChannelSink;
use ingot_server::{app, Backend, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

/// What the stub does with a chat request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Streams "Hello" " world" then `Done` for every sample.
    Reply,
    /// Refuses the request with this error.
    Fail(fn() -> EngineError),
    /// Streams "Hello", then fails mid-generation.
    FailMidway,
    /// Drops its sinks without a terminal event (the engine stopped).
    Vanish,
    /// Queues the request, then sheds it: it waited past `--max-queue-wait`.
    Expire,
}

struct Stub {
    behaviour: Behaviour,
    /// The last chat request, as the engine would receive it.
    seen: Arc<Mutex<Option<ChatRequest>>>,
}

fn usage(completion_tokens: usize) -> Usage {
    Usage {
        finish_reason: FinishReason::Stop,
        prompt_tokens: 3,
        completion_tokens,
        cached_tokens: 0,
        time_to_first_token: 0.0,
        prefill_seconds: 0.0,
        decode_seconds: 0.0,
        stop_string: None,
    }
}

impl Stub {
    fn run(&self, samples: usize, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        for i in 0..samples {
            let mut sink = sinks(i);
            match self.behaviour {
                Behaviour::Fail(e) => return Err(e()),
                Behaviour::Reply => {
                    for t in ["Hello", " world"] {
                        let _ = sink.send(Event::Text(t.into()));
                    }
                    let _ = sink.send(Event::Done(usage(2)));
                }
                Behaviour::FailMidway => {
                    let _ = sink.send(Event::Text("Hello".into()));
                    let _ = sink.send(Event::Error(EngineError::Forward(ForwardError::ContextOverflow { pos: 9, max: 8 })));
                }
                Behaviour::Vanish => {}
                Behaviour::Expire => {
                    let (waited, limit) = (std::time::Duration::from_secs(31), std::time::Duration::from_secs(30));
                    let _ = sink.send(Event::Error(EngineError::QueueExpired { waited, limit }));
                }
            }
        }
        Ok(Submitted { prompt_ids: vec![1, 2, 3], samples })
    }
}

impl Backend for Stub {
    fn submit_chat(&self, req: ChatRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        let n = req.params.num_return_sequences.unwrap_or(1);
        *self.seen.lock().expect("lock") = Some(req);
        self.run(n, sinks)
    }

    fn submit_prompt(&self, req: PromptRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        self.run(req.params.num_return_sequences.unwrap_or(1), sinks)
    }

    fn apply_template(&self, _: ChatRequest) -> Result<(String, Vec<u32>), EngineError> {
        Ok(("prompt".into(), vec![1, 2, 3]))
    }

    fn submit_scores(&self, texts: &[String], _: Option<usize>, done: ScoresDone) -> Result<(), EngineError> {
        done(Ok(texts.iter().map(|t| t.len() as f32).collect()));
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        0
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        // One id per byte, 1000 for BOS.
        Ok(add_special.then_some(1000).into_iter().chain(text.bytes().map(u32::from)).collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        match ids.iter().position(|&id| id > 255) {
            Some(i) => Err(EngineError::invalid(format!("tokens[{i}]"), "outside the vocabulary")),
            None => Ok(ids.iter().map(|&b| char::from(b as u8)).collect()),
        }
    }

    fn piece(&self, id: u32) -> Vec<u8> {
        if id > 255 { b"<s>".to_vec() } else { vec![id as u8] }
    }

    fn takes_images(&self) -> bool {
        false
    }

    fn context_length(&self) -> usize {
        4096
    }

    fn reply_format(&self, _: &[u32]) -> (ToolFormat, bool) {
        (ToolFormat::Default, false)
    }
}

fn server(behaviour: Behaviour) -> (axum::Router, Arc<Mutex<Option<ChatRequest>>>) {
    let cfg = ServerConfig { model_name: "m".into(), strict_model_name: true, request_workers: 1, ..ServerConfig::default() };
    server_with(behaviour, cfg)
}

fn server_with(behaviour: Behaviour, cfg: ServerConfig) -> (axum::Router, Arc<Mutex<Option<ChatRequest>>>) {
    let seen = Arc::new(Mutex::new(None));
    (app(Stub { behaviour, seen: seen.clone() }, cfg).expect("app"), seen)
}

/// POSTs `body` (text) to `path`; returns the status and the body text.
async fn post(router: axum::Router, path: &str, body: &str) -> (StatusCode, String) {
    let req = Request::post(path).header("content-type", "application/json").body(Body::from(body.to_owned())).expect("request");
    let resp = router.oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

fn chat(extra: Value) -> String {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    body.to_string()
}

fn error(text: &str) -> Value {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["error"].clone()
}

#[tokio::test]
async fn engine_errors_become_openai_errors_naming_the_param() {
    type Case = (fn() -> EngineError, StatusCode, Value);
    let cases: [Case; 7] = [
        (|| EngineError::invalid("num_return_sequences", "n must be between 1 and 16, got 0"), StatusCode::BAD_REQUEST, json!("n")),
        (|| EngineError::invalid("max_new_tokens", "max_new_tokens must leave at least 1 new token"), StatusCode::BAD_REQUEST, json!("max_tokens")),
        (|| EngineError::invalid("top_p", "top_p must be in (0, 1], got 2"), StatusCode::BAD_REQUEST, json!("top_p")),
        (|| EngineError::invalid("messages[2].content", "x"), StatusCode::BAD_REQUEST, json!("messages[2].content")),
        (|| EngineError::Overloaded { queued: 4, limit: 4 }, StatusCode::TOO_MANY_REQUESTS, Value::Null),
        (|| EngineError::Stopped, StatusCode::SERVICE_UNAVAILABLE, Value::Null),
        (|| EngineError::NoTemplate, StatusCode::BAD_REQUEST, Value::Null),
    ];
    for (make, status, param) in cases {
        let (router, _) = server(Behaviour::Fail(make));
        for stream in [false, true] {
            let (got, body) = post(router.clone(), "/v1/chat/completions", &chat(json!({"stream": stream}))).await;
            assert_eq!(got, status, "{}: {body}", make());
            let e = error(&body);
            assert_eq!(e["param"], param, "{body}");
            assert_eq!(e["message"], make().to_string(), "{body}");
        }
    }
}

#[tokio::test]
async fn openai_fields_arrive_as_the_engines_parameters() {
    let (router, seen) = server(Behaviour::Reply);
    let body = chat(json!({"n": 2, "max_tokens": 5, "max_completion_tokens": 7, "stop": "END", "temperature": 0.5,
        "top_k": 3, "seed": 9, "tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}],
        "stop_token_ids": [4], "ignore_eos": true}));
    let (status, text) = post(router, "/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["choices"].as_array().expect("choices").len(), 2);
    assert_eq!(v["choices"][1]["message"]["content"], "Hello world");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let req = seen.lock().expect("lock").take().expect("a request");
    let p = &req.params;
    assert_eq!((p.num_return_sequences, p.max_new_tokens, p.seed, p.top_k), (Some(2), Some(7), Some(9), Some(3)));
    assert_eq!((p.stop.clone(), p.stop_token_ids.clone(), p.ignore_eos), (vec!["END".to_string()], vec![4], Some(true)));
    assert_eq!(p.temperature, Some(0.5));
    assert!(req.tools.is_none(), "tool_choice none switches the tools off");
}

#[tokio::test]
async fn shape_errors_are_422s_naming_the_path() {
    let (router, _) = server(Behaviour::Reply);
    let cases = [
        (chat(json!({"temperature": "hot"})), StatusCode::UNPROCESSABLE_ENTITY, json!("temperature")),
        (chat(json!({"stream": "yes"})), StatusCode::UNPROCESSABLE_ENTITY, json!("stream")),
        (chat(json!({"stop": 3})), StatusCode::UNPROCESSABLE_ENTITY, json!("stop")),
        (json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, json!("messages[0].role")),
        (chat(json!({"stream_options": {"include_usage": true}})), StatusCode::BAD_REQUEST, json!("stream_options")),
        (json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user"}]}).to_string(),
            StatusCode::BAD_REQUEST, json!("messages[2].content")),
        ("{not json".to_string(), StatusCode::BAD_REQUEST, Value::Null),
        (json!({"model": "other", "messages": [{"role": "user", "content": "x"}]}).to_string(), StatusCode::NOT_FOUND, Value::Null),
    ];
    for (body, status, param) in cases {
        let (got, text) = post(router.clone(), "/v1/chat/completions", &body).await;
        assert_eq!(got, status, "{body}: {text}");
        assert_eq!(error(&text)["param"], param, "{body}: {text}");
    }
}

/// The `data:` payloads of an SSE body.
fn sse(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[tokio::test]
async fn streams_deliver_chunks_and_end_with_done_or_an_error_event() {
    let (router, _) = server(Behaviour::Reply);
    let (status, text) = post(router, "/v1/chat/completions", &chat(json!({"stream": true}))).await;
    assert_eq!(status, StatusCode::OK);
    let data = sse(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).expect("chunk"))
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "Hello world");

    // A failure after the stream started is its last event, in OpenAI's error shape.
    let (router, _) = server(Behaviour::FailMidway);
    let (status, text) = post(router.clone(), "/v1/chat/completions", &chat(json!({"stream": true}))).await;
    assert_eq!(status, StatusCode::OK);
    let last = sse(&text).pop().expect("events");
    assert!(error(&last)["message"].as_str().is_some_and(|m| m.contains("beyond the model's context")), "{last}");
    let (status, text) = post(router, "/v1/completions", &json!({"model": "m", "prompt": "x"}).to_string()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");

    // An engine that goes away without finishing: 503, or an error event when streaming.
    let (router, _) = server(Behaviour::Vanish);
    let (status, _) = post(router.clone(), "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, text) = post(router, "/v1/completions", &json!({"model": "m", "prompt": [1, 2], "stream": true}).to_string()).await;
    assert_eq!(error(&sse(&text).pop().expect("events"))["type"], "server_error", "{text}");
}

/// A request shed while queued is a 503 with `Retry-After` on every streaming route too, not a
/// 200 stream whose only event is the error (which clients and routers count as served).
#[tokio::test]
async fn a_stream_shed_in_the_queue_is_a_503() {
    let (router, _) = server(Behaviour::Expire);
    let messages = json!([{"role": "user", "content": "hi"}]);
    let routes = [
        ("/v1/chat/completions", chat(json!({"stream": true}))),
        ("/v1/completions", json!({"model": "m", "prompt": "x", "stream": true}).to_string()),
        ("/v1/messages", json!({"model": "m", "max_tokens": 8, "messages": messages, "stream": true}).to_string()),
        ("/v1/responses", json!({"model": "m", "input": "hi", "stream": true}).to_string()),
        ("/completion", json!({"prompt": "x", "stream": true}).to_string()),
    ];
    for (path, body) in routes {
        let req = Request::post(path).header("content-type", "application/json").body(Body::from(body)).expect("request");
        let resp = router.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(resp.headers().contains_key("retry-after"), "{path}");
    }
}

#[tokio::test]
async fn scores_and_templates_go_through_the_backend() {
    let (router, _) = server(Behaviour::Reply);
    let (status, text) = post(router.clone(), "/v1/score/evaluation", &json!({"model": "m", "messages": ["ab", "abcd"]}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["scores"], json!([2.0, 4.0]));
    let (status, text) = post(router, "/apply-template", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["prompt_ids"], json!([1, 2, 3]));
}

async fn get(router: axum::Router, path: &str) -> (StatusCode, Value) {
    let (status, text) = get_text(router, path).await;
    (status, serde_json::from_str(&text).expect("json"))
}

#[tokio::test]
async fn any_model_name_gets_the_served_model_unless_strict() {
    let cfg = ServerConfig { model_name: "m".into(), aliases: vec!["alias".into()], request_workers: 1, ..ServerConfig::default() };
    let (lenient, _) = server_with(Behaviour::Reply, cfg.clone());
    for body in [json!({"model": "test", "messages": [{"role": "user", "content": "x"}]}), json!({"messages": [{"role": "user", "content": "x"}]})] {
        for path in ["/v1/chat/completions", "/chat/completions"] {
            let (status, text) = post(lenient.clone(), path, &body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{path} {body}: {text}");
            assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["model"], "m", "answered by the served name");
        }
    }
    let (status, text) = post(lenient.clone(), "/completions", &json!({"prompt": "x"}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for path in ["/v1/models", "/models"] {
        let (status, v) = get(lenient.clone(), path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((v["data"][0]["id"].clone(), v["data"][0]["max_model_len"].clone()), (json!("m"), json!(4096)), "{v}");
        assert!(v["data"][0]["created"].is_u64() && v["data"][0]["owned_by"].is_string(), "{v}");
    }
    let (status, v) = get(lenient, "/v1/models/anything").await;
    assert_eq!((status, v["id"].clone()), (StatusCode::OK, json!("m")));

    let (strict, _) = server_with(Behaviour::Reply, ServerConfig { strict_model_name: true, ..cfg });
    let (status, text) = post(strict.clone(), "/v1/chat/completions", &chat(json!({"model": "alias"}))).await;
    assert_eq!(status, StatusCode::OK, "an alias is served: {text}");
    let (status, text) = post(strict.clone(), "/v1/chat/completions", &chat(json!({"model": "gpt-4"}))).await;
    assert_eq!((status, error(&text)["code"].clone()), (StatusCode::NOT_FOUND, json!("model_not_found")), "{text}");
    let (status, _) = get(strict.clone(), "/v1/models/gpt-4").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = get(strict, "/v1/models/m").await;
    assert_eq!((status, v["id"].clone()), (StatusCode::OK, json!("m")));
}

#[tokio::test]
async fn tokenize_and_detokenize_speak_llama_cpp_and_vllm() {
    let (router, _) = server(Behaviour::Reply);
    let (status, text) = post(router.clone(), "/tokenize", &json!({"content": "hi"}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["tokens"].clone(), v["count"].clone(), v["max_model_len"].clone()), (json!([104, 105]), json!(2), json!(4096)));
    // vLLM's defaults add special tokens.
    let (_, text) = post(router.clone(), "/tokenize", &json!({"prompt": "hi", "return_token_strs": true}).to_string()).await;
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["tokens"].clone(), v["token_strs"].clone()), (json!([1000, 104, 105]), json!(["<s>", "h", "i"])));
    let (_, text) = post(router.clone(), "/v1/tokenize", &json!({"content": "\u{e9}", "with_pieces": true}).to_string()).await;
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["tokens"], json!([{"id": 195, "piece": [195]}, {"id": 169, "piece": [169]}]), "partial UTF-8 as bytes");
    let (_, text) = post(router.clone(), "/tokenize", &json!({"messages": [{"role": "user", "content": "x"}]}).to_string()).await;
    assert_eq!(serde_json::from_str::<Value>(&text).expect("json")["tokens"], json!([1, 2, 3]), "through the template");
    let (status, text) = post(router.clone(), "/tokenize", &json!({"content": "a", "prompt": "b"}).to_string()).await;
    assert_eq!((status, error(&text)["param"].clone()), (StatusCode::BAD_REQUEST, json!("content")));
    let (status, text) = post(router.clone(), "/tokenize", &json!({"content": "a", "add_bos": true}).to_string()).await;
    assert_eq!((status, error(&text)["param"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("add_bos")), "{text}");
    let body = json!({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false});
    let (status, text) = post(router.clone(), "/tokenize", &body.to_string()).await;
    assert_eq!((status, error(&text)["param"].clone()), (StatusCode::BAD_REQUEST, json!("add_generation_prompt")));

    let (status, text) = post(router.clone(), "/detokenize", &json!({"tokens": [104, 105]}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["content"].clone(), v["prompt"].clone()), (json!("hi"), json!("hi")));
    let (status, text) = post(router, "/detokenize", &json!({"tokens": [1, 99999]}).to_string()).await;
    assert_eq!((status, error(&text)["param"].clone()), (StatusCode::BAD_REQUEST, json!("tokens[1]")), "{text}");
}

#[tokio::test]
async fn browsers_on_this_machine_or_listed_origins_may_call_the_api() {
    let (router, _) = server(Behaviour::Reply);
    let preflight = |origin: &str| {
        Request::options("/v1/chat/completions")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .body(Body::empty())
            .expect("request")
    };
    let resp = router.clone().oneshot(preflight("http://localhost:5173")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:5173");
    assert_eq!(h["access-control-allow-headers"], "authorization, content-type");
    assert!(h["access-control-allow-methods"].to_str().is_ok_and(|m| m.contains("POST")));
    let resp = router.clone().oneshot(preflight("http://evil.example")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let post_from = |origin: &str| {
        Request::post("/v1/chat/completions").header("origin", origin).header("content-type", "application/json")
            .body(Body::from(chat(json!({})))).expect("request")
    };
    let resp = router.clone().oneshot(post_from("http://127.0.0.1:8080")).await.expect("response");
    assert_eq!((resp.status(), resp.headers()["access-control-allow-origin"].clone()), (StatusCode::OK, "http://127.0.0.1:8080".parse().expect("value")));
    let resp = router.oneshot(post_from("http://evil.example")).await.expect("response");
    assert!(!resp.headers().contains_key("access-control-allow-origin"), "no CORS grant for other origins");

    let cfg = ServerConfig { model_name: "m".into(), cors_origins: vec!["https://app.example".into()], request_workers: 1, ..ServerConfig::default() };
    let (listed, _) = server_with(Behaviour::Reply, cfg);
    let resp = listed.oneshot(preflight("https://app.example")).await.expect("response");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

/// The SSE events of a body: (event name, data) pairs.
fn sse_pairs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut name), d.to_owned()));
        }
    }
    out
}

#[tokio::test]
async fn responses_route_answers_streams_and_continues() {
    let (router, seen) = server(Behaviour::Reply);
    let body = json!({"input": "hi", "instructions": "be brief", "max_output_tokens": 5});
    let (status, text) = post(router.clone(), "/v1/responses", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["object"].clone(), v["status"].clone()), (json!("response"), json!("completed")));
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello world");
    assert_eq!((v["usage"]["input_tokens"].clone(), v["usage"]["output_tokens"].clone()), (json!(3), json!(2)));
    // Continued: the first turn and its reply come before the new input; instructions do not.
    let next = json!({"input": "again", "previous_response_id": v["id"]});
    let (status, _) = post(router.clone(), "/responses", &next.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let msgs = seen.lock().expect("lock").clone().expect("request").messages;
    let roles: Vec<_> = msgs.iter().map(|m| m["content"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(roles, ["hi", "Hello world", "again"]);
    let (status, got) = get(router.clone(), &format!("/v1/responses/{}", v["id"].as_str().expect("id"))).await;
    assert_eq!((status, got["id"].clone()), (StatusCode::OK, v["id"].clone()));
    let (status, text) = post(router.clone(), "/v1/responses", &json!({"input": "x", "previous_response_id": "resp_x"}).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("\"param\":\"previous_response_id\""), "{text}");
    // Streamed: the event sequence, numbered.
    let (status, text) = post(router, "/v1/responses", &json!({"input": "hi", "stream": true}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_pairs(&text);
    let names: Vec<_> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]);
    for (i, (name, data)) in events.iter().enumerate() {
        let d: Value = serde_json::from_str(data).expect("json");
        assert_eq!((d["type"].as_str(), d["sequence_number"].as_u64()), (Some(name.as_str()), Some(i as u64)));
    }
}

#[tokio::test]
async fn messages_route_speaks_anthropic_including_errors() {
    let cfg = ServerConfig { model_name: "m".into(), api_keys: vec!["k".into()], request_workers: 1, ..ServerConfig::default() };
    let (router, _) = server_with(Behaviour::Reply, cfg);
    let body = json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let send = |path: &str, body: String, key: Option<&str>| {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let router = router.clone();
        async move {
            let resp = router.oneshot(req.body(Body::from(body)).expect("request")).await.expect("response");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
            (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
        }
    };
    let (status, text) = send("/v1/messages", body.clone(), Some("k")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["content"][0]["text"].clone(), v["stop_reason"].clone()), (json!("Hello world"), json!("end_turn")));
    let (status, text) = send("/v1/messages", body.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let e: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((e["type"].clone(), e["error"]["type"].clone()), (json!("error"), json!("authentication_error")));
    for bad in [json!({"messages": [{"role": "user", "content": "hi"}]}), json!({"max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]})] {
        let (status, text) = send("/v1/messages", bad.to_string(), Some("k")).await;
        assert!(status.is_client_error(), "{status} {text}");
        let e: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{text}");
    }
    let (status, text) = send("/v1/messages/count_tokens", json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(), Some("k")).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "{\"input_tokens\":3}"));
    let stream = json!({"max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (_, text) = send("/messages", stream, Some("k")).await;
    let names: Vec<_> = sse_pairs(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]);
}

#[tokio::test]
async fn llama_cpp_native_routes() {
    let (router, _) = server(Behaviour::Reply);
    let (status, text) = post(router.clone(), "/completion", &json!({"prompt": "hi", "n_predict": 4, "cache_prompt": true}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["content"].clone(), v["tokens_predicted"].clone(), v["stop_type"].clone()), (json!("Hello world"), json!(2), json!("eos")));
    assert_eq!(v["timings"]["predicted_n"], 2);
    let (_, text) = post(router.clone(), "/completion", &json!({"prompt": [1, 2], "stream": true}).to_string()).await;
    let lines: Vec<Value> = sse_pairs(&text).iter().map(|(_, d)| serde_json::from_str(d).expect("json")).collect();
    let content: String = lines.iter().filter_map(|l| l["content"].as_str()).collect();
    assert_eq!((content.as_str(), lines.last().map(|l| l["stop"].clone())), ("Hello world", Some(json!(true))));
    // The stub's vocabulary is bytes: no fill-in-the-middle tokens.
    let (status, text) = post(router.clone(), "/infill", &json!({"input_prefix": "def f(", "input_suffix": ")"}).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("<|fim_prefix|>"), "{text}");
    let (status, v) = get(router.clone(), "/props").await;
    assert_eq!((status, v["default_generation_settings"]["n_ctx"].clone()), (StatusCode::OK, json!(4096)));
    let (status, _) = get(router, "/slots").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn every_route_taking_a_body_refuses_one_over_the_limit() {
    let cfg = ServerConfig { model_name: "m".into(), max_body_bytes: 1024, request_workers: 1, ..ServerConfig::default() };
    let (router, _) = server_with(Behaviour::Reply, cfg);
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(2048)}], "prompt": "x", "text": "x"}).to_string();
    let routes = ["/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions", "/tokenize", "/detokenize",
                  "/v1/tokenize", "/v1/detokenize", "/v1/score/evaluation", "/apply-template"];
    for route in routes {
        let (status, text) = post(router.clone(), route, &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{route}: {text}");
        assert!(error(&text)["message"].as_str().is_some_and(|m| m.contains("1024 bytes")), "{route}: {text}");
    }
}

#[tokio::test]
async fn an_expected_wait_over_the_bound_is_a_503_with_retry_after() {
    let busy = || EngineError::QueueWait { expected: std::time::Duration::from_millis(4200), limit: std::time::Duration::from_secs(1) };
    let (router, _) = server(Behaviour::Fail(busy));
    for stream in [false, true] {
        let req = Request::post("/v1/chat/completions").header("content-type", "application/json")
            .body(Body::from(chat(json!({"stream": stream})))).expect("request");
        let resp = router.clone().oneshot(req).await.expect("response");
        assert_eq!((resp.status(), resp.headers()["retry-after"].to_str().ok()), (StatusCode::SERVICE_UNAVAILABLE, Some("5")));
    }
    let (_, metrics) = get_text(router, "/metrics").await;
    assert!(metrics.contains("ingot_requests_total{route=\"/v1/chat/completions\",status=\"503\"} 2"), "{metrics}");
    assert!(metrics.contains("ingot_queue_time_seconds_count 0") && metrics.contains("ingot_requests_shed_total{reason=\"queue_wait\"} 0"), "{metrics}");
}

async fn get_text(router: axum::Router, path: &str) -> (StatusCode, String) {
    let resp = router.oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}
