//! The files `ingot infer` writes, and how a rerun picks up after a crash.
//!
//! Invariants, which hold after every write so that a SIGKILL at any moment loses nothing:
//! - The output and errors files are append-only JSONL, each line one `write` of a whole line,
//!   so a file is always a sequence of complete lines plus at most one torn last line (only if
//!   the process died inside that write); [`recover`] cuts such a tail off.
//! - Rows finish out of order, but a result is written only once every row before it (in the
//!   order they were handed out) is written: the [`Reorder`] buffer holds the early ones. So
//!   the files hold, in input order, the results of a prefix of the work.
//! - Every line carries its row's `index`; the rows already written (to either file) are what a
//!   rerun skips, so each row ends up in the files exactly once.
//!
//! Lines go to the kernel as soon as they are complete (a `File` has no user-space buffer),
//! which survives the process being killed; surviving a power cut would need an fsync per line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

/// One prediction line, with LLaMA Factory's `generated_predictions.jsonl` keys first.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub prompt: String,
    pub predict: String,
    pub label: String,
    pub index: usize,
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// One errors-file line: the row, where it is in the dataset, and what was wrong.
#[derive(Debug, Clone, Serialize)]
pub struct RowError {
    pub index: usize,
    /// "line 3" (JSONL) or "row 3" (JSON array).
    #[serde(rename = "at")]
    pub place: String,
    pub error: String,
}

/// A finished row.
#[derive(Debug, Clone)]
pub enum Finished {
    Prediction(Prediction),
    Failed(RowError),
}

/// Hands items back in sequence order (0, 1, 2, ...) whatever order they arrive in.
#[derive(Debug)]
pub struct Reorder<T> {
    next: usize,
    pending: BTreeMap<usize, T>,
}

impl<T> Reorder<T> {
    pub fn new() -> Self {
        Reorder { next: 0, pending: BTreeMap::new() }
    }

    /// Takes item `seq` and returns the items now ready, in order.
    pub fn push(&mut self, seq: usize, item: T) -> Vec<T> {
        debug_assert!(seq >= self.next && !self.pending.contains_key(&seq), "sequence number {seq} given twice");
        self.pending.insert(seq, item);
        let mut ready = Vec::new();
        while let Some(item) = self.pending.remove(&self.next) {
            ready.push(item);
            self.next += 1;
        }
        ready
    }

    /// Items waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

/// The output and errors files of a run, written in order.
pub struct Sink {
    output: File,
    output_path: PathBuf,
    errors_path: PathBuf,
    /// Opened on the first error, so a clean run leaves no errors file.
    errors: Option<File>,
    reorder: Reorder<Finished>,
    written: usize,
    failed: usize,
}

/// What an earlier run left: the indices of the rows done.
#[derive(Debug, Default)]
pub struct Recovered {
    pub predictions: BTreeSet<usize>,
    pub errors: BTreeSet<usize>,
    /// Bytes of torn last lines that were cut off.
    pub cut: usize,
}

impl Recovered {
    pub fn done(&self, index: usize) -> bool {
        self.predictions.contains(&index) || self.errors.contains(&index)
    }
}

/// Reads the rows an earlier run wrote to `output` and `errors` (missing files: none),
/// cutting off a torn last line. Every line must be a JSON object with an `index` below `rows`,
/// each index once: anything else is not a file this command wrote for this dataset.
pub fn recover(output: &Path, errors: &Path, rows: usize) -> anyhow::Result<Recovered> {
    let mut rec = Recovered::default();
    for (path, set) in [(output, &mut rec.predictions), (errors, &mut rec.errors)] {
        rec.cut += indices(path, rows, set)?;
    }
    if let Some(i) = rec.predictions.intersection(&rec.errors).next() {
        bail!("row {i} is in both {} and {}: not files of one run (hint: --no-resume)", output.display(), errors.display());
    }
    Ok(rec)
}

/// Adds the indices of `path` to `set`; returns the number of bytes cut off a torn tail.
fn indices(path: &Path, rows: usize, set: &mut BTreeSet<usize>) -> anyhow::Result<usize> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let cut = bytes.len() - complete;
    if cut > 0 {
        let file = OpenOptions::new().write(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        file.set_len(complete as u64).with_context(|| format!("cannot cut the torn last line of {}", path.display()))?;
    }
    let hint = "(hint: --no-resume starts over, or choose another --output)";
    for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let value: Value = serde_json::from_slice(line).map_err(|_| anyhow::anyhow!("{}: not a line written by ingot infer {hint}", at()))?;
        let index = value.get("index").and_then(Value::as_u64).map(|i| i as usize);
        let Some(index) = index else { bail!("{}: no `index`: not a line written by ingot infer {hint}", at()) };
        if index >= rows {
            bail!("{}: row index {index}, but this run has {rows} rows: a different dataset, or a smaller --max-samples? {hint}", at());
        }
        if !set.insert(index) {
            bail!("{}: row {index} written twice {hint}", at());
        }
    }
    Ok(cut)
}

/// Opens a file for appending (creating it), or truncated when starting over.
fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))
}

fn write_line(file: &mut File, path: &Path, item: &impl Serialize) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(item).context("serialising a result")?;
    line.push('\n');
    file.write_all(line.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

impl Sink {
    /// Opens the files for appending; `fresh` empties them first (no resume).
    pub fn open(output: &Path, errors_path: &Path, fresh: bool) -> anyhow::Result<Sink> {
        if fresh {
            for p in [output, errors_path] {
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove {}", p.display()))
                    }
                    _ => {}
                }
            }
        }
        let file = open_append(output)?;
        let errors = if errors_path.exists() { Some(open_append(errors_path)?) } else { None };
        Ok(Sink {
            output: file,
            output_path: output.to_owned(),
            errors_path: errors_path.to_owned(),
            errors,
            reorder: Reorder::new(),
            written: 0,
            failed: 0,
        })
    }

    /// Takes the result of the `seq`-th row handed out and writes every result now in order.
    /// Returns the errors written, for the caller to report.
    pub fn finish(&mut self, seq: usize, item: Finished) -> anyhow::Result<Vec<RowError>> {
        let mut reported = Vec::new();
        for item in self.reorder.push(seq, item) {
            match item {
                Finished::Prediction(p) => {
                    write_line(&mut self.output, &self.output_path, &p)?;
                    self.written += 1;
                }
                Finished::Failed(e) => {
                    if self.errors.is_none() {
                        self.errors = Some(open_append(&self.errors_path)?);
                    }
                    if let Some(f) = self.errors.as_mut() {
                        write_line(f, &self.errors_path, &e)?;
                    }
                    self.failed += 1;
                    reported.push(e);
                }
            }
        }
        Ok(reported)
    }

    /// (predictions, errors) written in this run.
    pub fn counts(&self) -> (usize, usize) {
        (self.written, self.failed)
    }

    /// Results held back waiting for an earlier row.
    pub fn waiting(&self) -> usize {
        self.reorder.waiting()
    }
}

/// Reads back the `(predict, label)` pairs of an output file, for metrics.
pub fn read_pairs(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("predict"), field("label")) {
                (Some(p), Some(l)) => Ok((p, l)),
                _ => bail!("{}:{}: no `predict` and `label` strings", path.display(), n + 1),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_items_only_after_all_earlier_ones() {
        let mut r = Reorder::new();
        assert!(r.push(2, 'c').is_empty());
        assert!(r.push(1, 'b').is_empty());
        assert_eq!(r.waiting(), 2);
        assert_eq!(r.push(0, 'a'), ['a', 'b', 'c']);
        assert_eq!(r.push(3, 'd'), ['d']);
        assert!(r.push(5, 'f').is_empty());
        assert_eq!(r.push(4, 'e'), ['e', 'f']);
        assert_eq!(r.waiting(), 0);
    }

    fn prediction(index: usize) -> Finished {
        Finished::Prediction(Prediction {
            prompt: format!("p{index}"),
            predict: "x".into(),
            label: "y".into(),
            index,
            finish_reason: "stop",
            prompt_tokens: 1,
            completion_tokens: 1,
        })
    }

    #[test]
    fn out_of_order_results_are_written_in_order_and_recovered() {
        let dir = ingot_testkit::scratch_dir("infer-sink");
        let (out, errs) = (dir.join("out.jsonl"), dir.join("out.errors.jsonl"));
        let mut sink = Sink::open(&out, &errs, false).expect("open");
        let error = || Finished::Failed(RowError { index: 1, place: "line 2".into(), error: "bad".into() });
        assert!(sink.finish(2, prediction(2)).expect("write").is_empty());
        assert!(!errs.exists(), "no error yet, no errors file");
        let reported = sink.finish(1, error()).expect("write");
        assert!(reported.is_empty(), "row 1 waits for row 0");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "", "nothing before row 0");
        let reported = sink.finish(0, prediction(0)).expect("write");
        assert_eq!(reported.len(), 1);
        assert_eq!(sink.counts(), (2, 1));
        let text = std::fs::read_to_string(&out).expect("read");
        let idx: Vec<u64> =
            text.lines().map(|l| serde_json::from_str::<Value>(l).expect("json")["index"].as_u64().expect("index")).collect();
        assert_eq!(idx, [0, 2]);
        assert!(text.starts_with(r#"{"prompt":"p0","predict":"x","label":"y","index":0,"finish_reason":"stop""#), "{text}");

        // A torn tail (a kill inside a write) is cut, and the rows written are done.
        std::fs::write(&out, format!("{text}{{\"prompt\":\"p3\",\"pre")).expect("tear");
        let rec = recover(&out, &errs, 10).expect("recover");
        assert_eq!((rec.predictions.iter().copied().collect::<Vec<_>>(), rec.errors.len(), rec.cut), (vec![0, 2], 1, 19));
        assert!(rec.done(1) && !rec.done(3));
        assert_eq!(std::fs::read_to_string(&out).expect("read"), text);
        assert_eq!(read_pairs(&out).expect("pairs"), vec![("x".to_owned(), "y".to_owned()); 2]);

        // Another dataset, or a file that is not ours, is refused.
        let e = format!("{:#}", recover(&out, &errs, 2).expect_err("index 2 of 2 rows"));
        assert!(e.contains("different dataset") && e.contains("--no-resume"), "{e}");
        std::fs::write(&out, "hello\n").expect("write");
        let e = format!("{:#}", recover(&out, &errs, 10).expect_err("not ours"));
        assert!(e.contains("out.jsonl:1"), "{e}");

        // Starting over empties both files.
        Sink::open(&out, &errs, true).expect("fresh");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "");
        assert!(!errs.exists());
    }
}
