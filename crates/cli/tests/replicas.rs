//! ingot beyond one process: two `ingot api` replicas of the real Qwen GGUF behind
//! sglang-router and behind vllm-router (installed by scripts/install-test-tools.sh into
//! `.router-venv` and `.vllm-router-venv`), and
//! `ingot infer --remote` over replicas, with replicas and `infer` itself SIGKILLed mid-run;
//! `ingot api --remote` and `ingot chat --remote` on a replica.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_tool, Server};
use ingot_testkit::{fixtures_dir, model_path, scratch_dir};
use serde_json::{json, Value};

const MODEL_NAME: &str = "qwen2.5-coder-0.5b-instruct";

fn qwen() -> PathBuf {
    model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(600))).build().into()
}

fn get(url: &str) -> Result<(u16, String), ureq::Error> {
    let mut r = agent().get(url).call()?;
    Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
}

fn post(url: &str, body: &Value) -> Result<(u16, String), ureq::Error> {
    let mut r = agent().post(url).header("content-type", "application/json").send(body.to_string())?;
    Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A router with the cache-aware policy in front of `workers`, killed when dropped.
struct Router {
    child: Child,
    base: String,
}

/// Which router: SGLang's or vLLM's (both Rust, from PyPI; scripts/install-test-tools.sh).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sglang,
    Vllm,
}

impl Router {
    fn start(kind: Kind, workers: &[&str]) -> Router {
        let (port, metrics_port) = (free_port(), free_port());
        let mut cmd = match kind {
            Kind::Sglang => {
                let mut c = Command::new(test_tool(".router-venv/bin/python"));
                c.args(["-m", "sglang_router.launch_router", "--log-level", "warn"]);
                c
            }
            Kind::Vllm => {
                let mut c = Command::new(test_tool(".vllm-router-venv/bin/vllm-router"));
                c.args(["--log-level", "warning"]);
                c
            }
        };
        let child = cmd
            .args(["--policy", "cache_aware", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--prometheus-port", &metrics_port.to_string()])
            // Imbalance past 2 requests in flight sends new conversations to the less loaded replica
            // (the defaults, 64 and 1.5, let a burst of 32 land on one).
            .args(["--balance-abs-threshold", "2", "--balance-rel-threshold", "1.2"])
            .args(["--health-check-interval-secs", "1", "--worker-urls"])
            .args(workers)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {kind:?} router: {e}"));
        let router = Router { child, base: format!("http://127.0.0.1:{port}") };
        // Workers register in the background: wait until the router lists the model by its name.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, body)) = get(&format!("{}/v1/models", router.base)) {
                if body.contains(MODEL_NAME) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{kind:?} router did not list {MODEL_NAME} from the replicas");
            std::thread::sleep(Duration::from_millis(250));
        }
        router
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gauge or the sum of a counter's series in a replica's `/metrics`.
fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = get(&server.url("/metrics")).expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A streamed chat completion through `base`: whether it ended with a finish reason and
/// `[DONE]`, without an error.
fn stream_ok(base: &str, prompt: &str, max_tokens: usize, started: &AtomicUsize) -> bool {
    let body = json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                      "temperature": 0, "ignore_eos": true, "stream": true});
    let reply = agent().post(format!("{base}/v1/chat/completions")).header("content-type", "application/json").send(body.to_string());
    let Ok(mut reply) = reply else {
        started.fetch_add(1, Ordering::SeqCst);
        return false;
    };
    started.fetch_add(1, Ordering::SeqCst);
    if reply.status() != 200 {
        return false;
    }
    let (mut finished, mut done) = (false, false);
    for line in BufReader::new(reply.body_mut().as_reader()).lines() {
        let Ok(line) = line else { return false };
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return false };
        if v.get("error").is_some() {
            return false;
        }
        finished |= v["choices"][0]["finish_reason"].is_string();
    }
    finished && done
}

#[test]
fn replicas_behind_sglang_router() {
    replicas_behind(Kind::Sglang);
}

#[test]
fn replicas_behind_vllm_router() {
    replicas_behind(Kind::Vllm);
}

/// Two replicas behind a router: the openai-client checks pass through it, both replicas
/// serve, and a replica SIGKILLed during 32 streams fails only the streams it held.
fn replicas_behind(kind: Kind) {
    let a = Server::start(&[], &[]);
    let b = Server::start(&[], &[]);
    let router = Router::start(kind, &[&a.base, &b.base]);

    // What the router registered the replicas under comes from their /model_info.
    let (_, info) = get(&a.url("/model_info")).expect("model_info");
    let info: Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["served_model_name"], MODEL_NAME);
    assert_eq!(info["is_generation"], true);
    assert_eq!(info["model_path"].as_str().map(Path::new), Some(qwen().as_path()));
    let (status, _) = get(&a.url("/health_generate")).expect("health_generate");
    assert_eq!(status, 200);

    // The official client's checks, through the router.
    let python = test_tool(".test-venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/openai_client.py");
    let fixture = fixtures_dir().join("real/qwen2.5-coder-0.5b-greedy.json");
    let out = Command::new(python).arg(script).arg(&router.base).arg(MODEL_NAME).arg(fixture).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(" passed, 0 failed"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // 32 concurrent streams of different conversations spread over both replicas; one
    // replica is SIGKILLed once every stream has reached a replica.
    let started = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..32)
        .map(|i| {
            let (base, started) = (router.base.clone(), started.clone());
            std::thread::spawn(move || stream_ok(&base, &format!("Count from {i} to {}, one number a line.", i + 500), 96, &started))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    while started.load(Ordering::SeqCst) < 32 {
        assert!(Instant::now() < deadline, "the streams did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let on_a = metric(&a, "ingot_running_sequences") + metric(&a, "ingot_queue_depth");
    let on_b = metric(&b, "ingot_running_sequences") + metric(&b, "ingot_queue_depth");
    assert!(on_a >= 1.0 && on_b >= 1.0, "both replicas serve: {on_a} streams on A, {on_b} on B");
    let served_b = metric(&b, "ingot_requests_total");
    let mut a = a;
    a.child.kill().expect("SIGKILL replica A");
    let _ = a.child.wait();
    let results: Vec<bool> = streams.into_iter().map(|t| t.join().expect("stream thread")).collect();
    let failed = results.iter().filter(|ok| !**ok).count();
    assert!(failed as f64 <= on_a, "{failed} streams failed, but only {on_a} were on the killed replica");

    // New requests keep succeeding, on the replica left.
    for i in 0..6 {
        let body = json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": format!("Say {i}.")}], "max_tokens": 4});
        let (status, text) = post(&format!("{}/v1/chat/completions", router.base), &body).expect("request after the kill");
        assert_eq!(status, 200, "request {i} after the kill: {text}");
    }
    assert!(metric(&b, "ingot_requests_total") >= served_b + 6.0, "the requests after the kill went to replica B");
}

/// `ingot infer` of the first `rows` rows of alpaca_demo, greedy, 12 new tokens, plus `args`.
fn infer_cmd(out: &Path, rows: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingot"));
    cmd.arg("infer")
        .arg("--model")
        .arg(qwen())
        .arg("--dataset-dir")
        .arg(fixtures_dir().join("datasets"))
        .args(["--dataset", "alpaca_demo", "--max-samples", &rows.to_string(), "--temperature", "0", "--max-new-tokens", "12"])
        .arg("-o")
        .arg(out)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn ok(out: Output) {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Waits until `path` holds at least `n` lines.
fn wait_for_lines(path: &Path, n: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while lines_in(path) < n {
        assert!(child.try_wait().expect("poll").is_none(), "infer ended before {n} rows were written");
        assert!(Instant::now() < deadline, "no {n} rows written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn infer_remote_equals_local_and_is_exactly_once_across_kills() {
    const ROWS: usize = 12;
    let dir = scratch_dir("infer-remote");
    let local = dir.join("local.jsonl");
    ok(infer_cmd(&local, ROWS, &[]).output().expect("local infer"));
    let expected = read(&local);
    assert_eq!(expected.lines().count(), ROWS);

    let a = Server::start(&[], &[]);
    let b = Server::start(&[], &[]);
    let remotes = ["--remote", a.base.as_str(), "--remote", b.base.as_str(), "--remote-concurrency", "2"];

    // Clean run over both replicas: byte-identical to the local run.
    let clean = dir.join("clean.jsonl");
    ok(infer_cmd(&clean, ROWS, &[&remotes[..], &["--no-resume"]].concat()).output().expect("remote infer"));
    assert_eq!(read(&clean), expected, "infer --remote differs from local infer");

    // infer itself SIGKILLed mid-run, then rerun: every row exactly once.
    let resumed = dir.join("resumed.jsonl");
    let mut run = infer_cmd(&resumed, ROWS, &[&remotes[..], &["--no-resume"]].concat()).spawn().expect("start infer");
    wait_for_lines(&resumed, 3, &mut run);
    run.kill().expect("SIGKILL infer");
    let _ = run.wait();
    assert!(lines_in(&resumed) < ROWS, "the run finished before it was killed");
    ok(infer_cmd(&resumed, ROWS, &remotes).output().expect("rerun"));
    assert_eq!(read(&resumed), expected, "the resumed run differs");

    // Replica A SIGKILLed mid-run: its rows finish on B, each exactly once.
    let survived = dir.join("survived.jsonl");
    let mut run = infer_cmd(&survived, ROWS, &[&remotes[..], &["--no-resume"]].concat()).spawn().expect("start infer");
    wait_for_lines(&survived, 3, &mut run);
    let a_base = a.base.clone();
    let mut a = a;
    a.child.kill().expect("SIGKILL replica A");
    let _ = a.child.wait();
    let out = run.wait_with_output().expect("wait for infer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{a_base} failed")), "the dead replica's rows were retried: {stderr}");
    assert_eq!(read(&survived), expected, "the run that lost a replica differs");
    drop(b);
}

#[test]
fn infer_remote_refuses_bad_backends_before_any_row() {
    let dir = scratch_dir("infer-remote-errors");
    let out = dir.join("out.jsonl");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = infer_cmd(&out, 2, &["--remote", &dead]).output().expect("infer");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains(&dead) && stderr.contains("unreachable"), "{stderr}");
    assert_eq!(lines_in(&out), 0);

    // A replica of another model (its tokenizer disagrees with --model's).
    let other = Server::start_model(&fixtures_dir().join("tiny-llama"), &[], &[]);
    let o = infer_cmd(&out, 2, &["--remote", &other.base]).output().expect("infer");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains(&other.base) && stderr.contains("different model"), "{stderr}");
    assert_eq!(lines_in(&out), 0);

    // A server that lists a model but has no /v1/completions: refused by infer and by api.
    let bare = serve_without_completions();
    let o = infer_cmd(&out, 2, &["--remote", &bare]).output().expect("infer");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains(&bare) && stderr.contains("has no /v1/completions"), "{stderr}");
    assert_eq!(lines_in(&out), 0);
    let o = Command::new(env!("CARGO_BIN_EXE_ingot"))
        .arg("api")
        .arg("--model")
        .arg(qwen())
        .args(["--port", "0", "--remote", &bare])
        .output()
        .expect("api");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains(&bare) && stderr.contains("has no /v1/completions"), "{stderr}");
}

/// A server that lists a model in `/v1/models` and answers 404 to everything else; its base URL.
fn serve_without_completions() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            answer_without_completions(stream);
        }
    });
    base
}

fn answer_without_completions(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let _ = reader.read_exact(&mut vec![0; length]);
    let (status, body) = match request_line.split_whitespace().nth(1) {
        Some("/v1/models") => ("200 OK", r#"{"object":"list","data":[{"id":"some-model","object":"model"}]}"#),
        _ => ("404 Not Found", r#"{"error":{"message":"not found"}}"#),
    };
    let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
}

/// `ingot api --remote` on a local replica passes the API tests' openai-client checks (the
/// same greedy texts as the reference a local server matches; a forcing tool_choice is a
/// 400), generating on the replica; `ingot chat --remote` replies as a local chat does.
#[test]
fn api_and_chat_on_a_remote_replica() {
    let replica = Server::start(&[], &[]);
    let front = Server::start(&["--remote", &replica.base], &[]);
    let python = test_tool(".test-venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/openai_client.py");
    let fixture = fixtures_dir().join("real/qwen2.5-coder-0.5b-greedy.json");
    let out = Command::new(python).arg(script).arg(&front.base).arg(MODEL_NAME).arg(fixture).arg("--remote").output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(" passed, 0 failed"), "{stdout}\n{}\nfront: {}", String::from_utf8_lossy(&out.stderr), front.log());
    assert!(metric(&replica, "ingot_requests_total") >= 10.0, "the replica generated the replies");

    let args = ["--temperature", "0", "--max-new-tokens", "24"];
    let input = "What is the capital of France?\nAnd of Italy?\n";
    let local = common::chat(&args, input);
    let remote = common::chat(&[&args[..], &["--remote", &replica.base]].concat(), input);
    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(local.status.success() && remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    assert!(text(&local).matches("Assistant: ").count() == 2, "{}", text(&local));
    assert_eq!(text(&remote), text(&local), "chat --remote differs from local chat");

    // A front on two replicas, one SIGKILLed: every request still succeeds (the dead one's
    // turn passes to the other before any token was sent).
    let other = Server::start(&[], &[]);
    let pair = Server::start(&["--remote", &other.base, "--remote", &replica.base], &[]);
    let mut other = other;
    other.child.kill().expect("SIGKILL a replica");
    let _ = other.child.wait();
    for i in 0..4 {
        let body = json!({"messages": [{"role": "user", "content": format!("Say {i}.")}], "max_tokens": 4, "stream": i % 2 == 0});
        let (status, text) = post(&pair.url("/v1/chat/completions"), &body).expect("request after the kill");
        assert!(status == 200 && !text.contains("error"), "request {i} after the kill: {status} {text}\n{}", pair.log());
    }
    assert!(pair.log().contains(&format!("--remote {} failed", other.base)), "{}", pair.log());
}
