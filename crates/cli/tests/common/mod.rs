//! What the binary's end-to-end tests share: running `ingot chat` on a pipe and `ingot api`
//! on a free port, and finding the tools `scripts/install-test-tools.sh` installs.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ingot_testkit::model_path;

pub fn ingot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ingot"))
}

/// Runs `ingot chat` on the default model with `input` on a pipe.
pub fn chat(args: &[&str], input: &str) -> Output {
    chat_with(&model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE), args, input)
}

pub fn chat_with(model: &Path, args: &[&str], input: &str) -> Output {
    let model_args = [OsStr::new("--model"), model.as_os_str()];
    run_chat(model_args.into_iter().chain(args.iter().map(OsStr::new)), input)
}

/// Runs `ingot chat` with `args`, `input` on a pipe.
pub fn run_chat<'a>(args: impl IntoIterator<Item = &'a OsStr>, input: &str) -> Output {
    let mut child = ingot()
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ingot");
    // ingot may exit before reading (bad flags): a broken pipe is then expected, and the
    // assertions on its output decide.
    let _ = child.stdin.take().expect("stdin").write_all(input.as_bytes());
    child.wait_with_output().expect("wait for ingot")
}

/// A running `ingot api`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Everything the server printed on stderr so far.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server on a free port (`--port 0`) with `args` and `env`, and waits until it
    /// listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_model(&model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE), args, env)
    }

    pub fn start_model(model: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingot"));
        cmd.arg("api").arg("--model").arg(model).args(["--port", "0"]).args(args);
        for var in ["API_HOST", "API_PORT", "API_KEY", "API_MODEL_NAME"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start ingot api");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        // Loading takes seconds; the bound is only there so a hung start fails the test.
        let base = rx.recv_timeout(Duration::from_secs(600)).unwrap_or_else(|_| {
            panic!("ingot api did not start listening: {}", log.lock().expect("log"))
        });
        Server { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tool installed by scripts/install-test-tools.sh; panics with the fix when it is missing.
pub fn test_tool(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(p.exists(), "{} is missing: run scripts/install-test-tools.sh", p.display());
    p
}

/// Drives the server's web page in headless Chromium (`tests/api/browser.js`, with `extra`
/// arguments after the screenshot path) and returns what the script reports.
/// Runs a check script of `tests/api` (built on its `checks.py`) with the test venv's Python
/// and `args`; fails with the script's report and the server's log unless every check passed.
pub fn run_checks(server: &Server, script: &str, args: &[&OsStr]) {
    let python = test_tool(".test-venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api").join(script);
    let out = Command::new(python).arg(script).args(args).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{stdout}\nstderr: {}\nserver: {}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

pub fn run_browser(server: &Server, screenshot: &Path, extra: &[&OsStr]) -> serde_json::Value {
    let node_modules = test_tool(".test-node/node_modules");
    test_tool("/usr/bin/chromium");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/browser.js");
    let out = Command::new("node")
        .arg(script)
        .arg(&server.base)
        .arg(screenshot)
        .args(extra)
        .env("NODE_PATH", node_modules)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\nstderr: {}\nserver: {}", String::from_utf8_lossy(&out.stderr), server.log());
    serde_json::from_str(stdout.trim()).expect("browser result json")
}
