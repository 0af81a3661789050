//! Real client libraries, unmodified, against one `ingot api` on the real Qwen GGUF:
//! `tests/api/real_clients.py` drives it with the `openai` SDK (logprobs, tools with
//! `response_format`, `parallel_tool_calls`), langchain-openai, openai-agents, pydantic-ai and
//! litellm, and LLaMA Factory's two API example scripts as published (model "test", the GPA tool
//! call, an image to a text model). The libraries come from `scripts/install-test-tools.sh`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{test_tool, Server};

#[test]
fn real_clients_work_unmodified() {
    let python = test_tool(".test-venv/bin/python");
    let server = Server::start(&[], &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/real_clients.py");
    let out = Command::new(python).arg(script).arg(&server.base).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
