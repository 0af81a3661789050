//! `ingot infer` end to end: the real binary, the real Qwen GGUF, greedy and short.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ingot_testkit::{fixtures_dir, model_path, scratch_dir};
use serde_json::Value;

fn datasets() -> PathBuf {
    fixtures_dir().join("datasets")
}

/// `ingot infer` on the default model, greedy, 8 new tokens, plus `args`.
fn infer_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingot"));
    cmd.arg("infer")
        .arg("--model")
        .arg(model_path(&ingot_core::load::models_dir(), ingot_core::load::DEFAULT_MODEL_FILE))
        .arg("--dataset-dir")
        .arg(datasets())
        .args(["--temperature", "0", "--max-new-tokens", "8"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn infer(args: &[&str]) -> Output {
    infer_cmd(args).output().expect("run ingot infer")
}

fn ok(out: &Output) {
    assert!(out.status.success(), "exit {:?}, stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line in {}", path.display());
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

fn indices(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["index"].as_u64().expect("index")).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn batched_rows_come_out_in_order_and_equal_each_row_alone() {
    let dir = scratch_dir("infer-order");
    let (batched, alone) = (dir.join("batched.jsonl"), dir.join("alone.jsonl"));
    let metrics = dir.join("metrics.json");
    let common = ["--dataset", "alpaca_demo", "--max-samples", "6"];
    ok(&infer(&[&common[..], &["-o", s(&batched), "--concurrency", "4", "--metrics", s(&metrics)]].concat()));
    ok(&infer(&[&common[..], &["-o", s(&alone), "--concurrency", "1"]].concat()));

    let rows = lines(&batched);
    assert_eq!(indices(&rows), [0, 1, 2, 3, 4, 5]);
    assert_eq!(rows[0]["label"], "Cheerful.");
    let prompt = rows[0]["prompt"].as_str().expect("prompt");
    assert!(prompt.contains("Give a synonym for the word.\nhappy") && !prompt.contains("<|im_start|>"), "{prompt}");
    for r in &rows {
        let tokens = r["completion_tokens"].as_u64().expect("completion_tokens");
        assert!((1..=8).contains(&tokens), "{r}");
        assert!(r["prompt_tokens"].as_u64().expect("prompt_tokens") > 10, "{r}");
        let reason = r["finish_reason"].as_str().expect("finish_reason");
        assert!(reason == "length" || (reason == "stop" && tokens < 8), "{r}");
        let keys: Vec<&str> = r.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, ["prompt", "predict", "label", "index", "finish_reason", "prompt_tokens", "completion_tokens"]);
    }
    // Greedy: batching four rows at a time changes nothing, byte for byte.
    assert_eq!(std::fs::read_to_string(&batched).ok(), std::fs::read_to_string(&alone).ok());

    let m: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).expect("metrics")).expect("json");
    for k in ["predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_runtime", "predict_samples_per_second"] {
        let v = m[k].as_f64().unwrap_or_else(|| panic!("{k} in {m}"));
        assert!(v >= 0.0 && (k.ends_with("second") || k.ends_with("runtime") || v <= 100.0), "{k} = {v}");
    }
    assert_eq!(m["predict_samples"], 6);
}

#[test]
fn bad_rows_are_reported_with_their_lines_and_good_rows_all_come_out() {
    let dir = scratch_dir("infer-bad");
    // The five bad rows of the fixture between good ones: good rows on lines 1, 3, 5.
    let good: Vec<String> = std::fs::read_to_string(datasets().join("openai_demo.jsonl"))
        .expect("openai_demo")
        .lines()
        .take(3)
        .map(str::to_owned)
        .collect();
    let bad: Vec<String> =
        std::fs::read_to_string(datasets().join("bad_rows.jsonl")).expect("bad_rows").lines().map(str::to_owned).collect();
    assert_eq!(bad.len(), 5);
    let mixed = [&good[0], &bad[0], &good[1], &bad[1], &good[2], &bad[2], &bad[3], &bad[4]];
    let input = dir.join("mixed.jsonl");
    std::fs::write(&input, mixed.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");

    let out = dir.join("out.jsonl");
    let run = infer(&["--dataset", s(&input), "-o", s(&out), "--concurrency", "3"]);
    ok(&run);
    assert_eq!(indices(&lines(&out)), [0, 2, 4]);
    assert_eq!(lines(&out)[1]["label"], "Toledo is about 30 minutes away by train and full of history.");
    let errors = lines(&dir.join("out.errors.jsonl"));
    let at: Vec<&str> = errors.iter().map(|e| e["at"].as_str().expect("at")).collect();
    assert_eq!(at, ["line 2", "line 4", "line 6", "line 7", "line 8"]);
    assert_eq!(indices(&errors), [1, 3, 5, 6, 7]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 5, "{stderr}");
    assert!(warnings[4].contains("mixed.jsonl line 8") && warnings[4].contains("context"), "{stderr}");

    // The fixture alone: exactly its five errors, no prediction.
    let only = dir.join("only.jsonl");
    ok(&infer(&["--dataset", "bad_rows", "-o", s(&only)]));
    assert!(lines(&only).is_empty());
    assert_eq!(indices(&lines(&dir.join("only.errors.jsonl"))), [0, 1, 2, 3, 4]);

    // --on-error fail stops at the first bad row, after writing every row before it.
    let failing = dir.join("fail.jsonl");
    let run = infer(&["--dataset", s(&input), "-o", s(&failing), "--on-error", "fail"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("mixed.jsonl line 2: invalid JSON"), "{stderr}");
    assert_eq!(indices(&lines(&failing)), [0]);
    assert!(!dir.join("fail.errors.jsonl").exists(), "a failing row is not recorded, so a rerun retries it");
}

/// Complete lines in a file that is being written.
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

#[test]
fn killed_and_rerun_every_row_is_written_exactly_once() {
    let dir = scratch_dir("infer-kill");
    let (reference, killed) = (dir.join("reference.jsonl"), dir.join("killed.jsonl"));
    let common = ["--dataset", "sharegpt_demo", "--max-samples", "8", "--concurrency", "2"];
    ok(&infer(&[&common[..], &["-o", s(&reference)]].concat()));

    let mut child = infer_cmd(&[&common[..], &["-o", s(&killed)]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ingot infer");
    let deadline = Instant::now() + Duration::from_secs(300);
    while complete_lines(&killed) < 2 && Instant::now() < deadline && child.try_wait().expect("poll").is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    child.wait().expect("reap");
    let before = complete_lines(&killed);
    assert!(before >= 2, "no rows were written before the kill");
    // As if the kill had landed inside a write: a torn line at the end.
    let mut torn = std::fs::read(&killed).expect("read");
    torn.extend_from_slice(br#"{"prompt":"system\nYou are"#);
    std::fs::write(&killed, torn).expect("tear");

    let rerun = infer(&[&common[..], &["-o", s(&killed)]].concat());
    ok(&rerun);
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(stderr.contains(&format!("{before} rows already done")) && stderr.contains("torn"), "{stderr}");
    assert_eq!(indices(&lines(&killed)), (0..8).collect::<Vec<u64>>());
    assert_eq!(std::fs::read_to_string(&killed).ok(), std::fs::read_to_string(&reference).ok());

    // Done is done: another rerun generates nothing and changes nothing.
    let again = infer(&[&common[..], &["-o", s(&killed)]].concat());
    ok(&again);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("8 rows already done") && stderr.contains("; 0 to go"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&killed).ok(), std::fs::read_to_string(&reference).ok());
}

#[test]
fn infer_takes_a_llama_factory_config() {
    let dir = scratch_dir("infer-yaml");
    let cfg = dir.join("infer.yaml");
    let tiny = fixtures_dir().join("tiny-qwen2");
    let yaml = format!(
        "model_name_or_path: {}\ntemplate: qwen\ndo_sample: false\nmax_new_tokens: 4\n\
         eval_dataset: openai_demo\ndataset_dir: {}\nmax_samples: 3\ncutoff_len: 2048\n",
        tiny.display(),
        datasets().display()
    );
    std::fs::write(&cfg, yaml).expect("write config");
    let (from_yaml, from_flags) = (dir.join("yaml.jsonl"), dir.join("flags.jsonl"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ingot")).arg("infer").args(args).stdin(Stdio::null()).output().expect("run ingot infer")
    };
    let out = run(&[s(&cfg), "max_new_tokens=2", "-o", s(&from_yaml)]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: ignoring") && stderr.contains("cutoff_len"), "{stderr}");
    let flags = ["--model", s(&tiny), "--template", "qwen", "--temperature", "0", "--max-new-tokens", "2"];
    let data_dir = datasets();
    let data = ["--dataset", "openai_demo", "--dataset-dir", s(&data_dir), "--max-samples", "3", "-o", s(&from_flags)];
    ok(&run(&[&flags[..], &data[..]].concat()));
    let rows = lines(&from_yaml);
    assert_eq!(indices(&rows), [0, 1, 2]);
    assert!(rows.iter().all(|r| r["completion_tokens"].as_u64() <= Some(2)), "{rows:?}");
    assert_eq!(std::fs::read_to_string(&from_yaml).ok(), std::fs::read_to_string(&from_flags).ok());
}

#[test]
fn a_dataset_that_is_neither_file_nor_name_is_one_clean_error() {
    let dir = scratch_dir("infer-missing");
    let out = infer(&["--dataset", "no_such_dataset", "-o", s(&dir.join("o.jsonl"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: no_such_dataset is not a file") && err.contains("alpaca_demo"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
