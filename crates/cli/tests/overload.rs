//! `ingot api` under overload and against hostile clients, through the real binary and the
//! real Qwen GGUF: the time bound on the queue (503 with `Retry-After`), the header and body
//! read timeouts (a client trickling bytes is cut off) and the connection cap.
//!
//! Long generations use `ignore_eos` with a large `max_tokens`, so they are still running
//! when the test needs them to be, however fast the machine; the tests drop them when done
//! (a closed connection cancels its sequence).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(timeout).build().into()
}

/// A streamed generation that outlasts any test: the response, once its first chunk came.
fn start_long_stream(server: &Server) -> ureq::http::Response<ureq::Body> {
    let body = json!({"messages": [{"role": "user", "content": "Count to a million."}], "stream": true,
                      "max_tokens": 4000, "ignore_eos": true, "temperature": 0});
    let resp = post(&agent(None), &server.url("/v1/chat/completions"), &body).expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    resp
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    agent.post(url).header("Content-Type", "application/json").send(body.to_string())
}

fn metric(server: &Server, line_prefix: &str) -> Option<f64> {
    let text = agent(None).get(&server.url("/metrics")).call().expect("metrics").body_mut().read_to_string().expect("text");
    text.lines().find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn a_queue_wait_over_the_bound_is_a_503_with_retry_after() {
    // One batch slot and a tiny bound: a request that cannot be admitted at once is shed, at
    // submission (its expected wait is over the bound) or from the queue (it waited past it).
    let server = Server::start(&["--max-seqs", "1", "--max-queue-wait", "0.001"], &[]);
    let mut running = start_long_stream(&server);
    let mut first = [0u8; 1];
    running.body_mut().as_reader().read_exact(&mut first).expect("first chunk");
    // It holds the slot once it has left the queue.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&server, "ingot_queue_depth ") != Some(0.0) {
        assert!(Instant::now() < deadline, "the running stream never left the queue");
        std::thread::sleep(Duration::from_millis(50));
    }
    for stream in [false, true] {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stream": stream});
        let mut resp = post(&agent(Some(Duration::from_secs(120))), &server.url("/v1/chat/completions"), &body).expect("request");
        assert_eq!(resp.status().as_u16(), 503, "stream: {stream}");
        let retry: u64 = resp.headers()["retry-after"].to_str().expect("ascii").parse().expect("whole seconds");
        assert!(retry >= 1);
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().expect("body")).expect("json");
        assert_eq!(v["error"]["code"], "server_busy", "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("--max-queue-wait")), "{v}");
    }
    assert_eq!(metric(&server, "ingot_requests_shed_total{reason=\"queue_wait\"} "), Some(2.0));
    // Health and metrics never queue, and the running stream is untouched.
    assert_eq!(agent(None).get(&server.url("/health")).call().expect("health").status().as_u16(), 200);
    running.body_mut().as_reader().read_exact(&mut first).expect("the stream goes on");
}

/// Writes `bytes` one every `gap` until the server closes the connection (or they run out);
/// returns how long the server took to answer or close, and what it answered.
fn trickle(server: &Server, bytes: &[u8], gap: Duration) -> (Duration, String) {
    let addr = server.base.strip_prefix("http://").expect("http");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_millis(10))).expect("timeout");
    let start = Instant::now();
    let mut answer = Vec::new();
    for &b in bytes {
        if stream.write_all(&[b]).is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(gap);
    }
    (start.elapsed(), String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    let server = Server::start(&["--header-read-timeout", "1", "--body-read-timeout", "1", "--max-connections", "2"], &[]);
    // Two bytes a second for up to a minute: the head never completes.
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".repeat(2);
    let (took, answer) = trickle(&server, head.as_bytes(), Duration::from_millis(500));
    assert!(took < Duration::from_secs(30), "a slow head held the connection for {took:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A whole head, then a body trickled a byte at a time: 408 from the body deadline.
    let body = json!({"messages": [{"role": "user", "content": "x".repeat(200)}]}).to_string();
    let request = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let head_len = request.len() - body.len();
    let addr = server.base.strip_prefix("http://").expect("http");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(&request.as_bytes()[..head_len]).expect("head");
    stream.set_read_timeout(Some(Duration::from_millis(10))).expect("timeout");
    let start = Instant::now();
    let mut answer = Vec::new();
    for &b in &request.as_bytes()[head_len..] {
        let _ = stream.write_all(&[b]);
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || !answer.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-read-timeout"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(30));

    // Two connections busy streaming: a third is not served until one closes.
    let first = start_long_stream(&server);
    let _second = start_long_stream(&server);
    let impatient = agent(Some(Duration::from_secs(2)));
    assert!(impatient.get(&server.url("/health")).call().is_err(), "a third connection was served");
    drop(first);
    let health = agent(Some(Duration::from_secs(60))).get(&server.url("/health")).call().expect("served once a connection closed");
    assert_eq!(health.status().as_u16(), 200);
}
