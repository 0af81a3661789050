//! `ingot infer`: a model over a dataset, one prediction per row, like LLaMA Factory's
//! `scripts/vllm_infer.py` (its `generated_predictions.jsonl`), on CPU and resumable.
//!
//! Rows are read and converted up front (see `dataset`), then handed to the engine in input
//! order with at most `--concurrency` in flight, so the engine batches them. Results come back
//! out of order and go through the `output` module's reorder buffer: the output file is at every
//! moment the in-order prefix of the results, and a rerun skips the rows already written, so a
//! run killed at any point and rerun yields every row exactly once.
//!
//! A row that cannot be processed (malformed, or a prompt over the context) is written to the
//! errors file in its place and the run goes on (`--on-error skip`), or ends the run after every
//! row before it is written (`--on-error fail`; then it is not recorded, so a rerun retries it).
//! A row recorded in the errors file counts as done: after fixing the dataset, `--no-resume`.
//!
//! Differences from LLaMA Factory's output: `label` is the dataset's answer text as it is (LLaMA
//! Factory decodes the templated answer, e.g. with the template's trailing newline), and a
//! prompt over the context is an error for its row rather than cut to `cutoff_len`.

mod output;
mod progress;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{ArgMatches, Args, ValueEnum};
use crossbeam_channel::Sender;
use ingot_engine::{Cancel, ChatRequest, EngineConfig, EngineError, EngineHandle, Event, GenParams, Media, Tagged};
use serde_json::json;

use crate::chat::PromptArgs;
use crate::dataset::{self, Format, Place, Row, RowMedia, VideoRef};
use crate::infer_config::{fill, ConfigArgs};
use crate::bleu_rouge::{self, Similarity};
use crate::media::{read_audio, read_frames, read_image, read_video, MediaReading};
use crate::model_args::ModelArgs;
use output::{Finished, Prediction, RowError, Sink};
use progress::Progress;

#[derive(Args, Debug)]
pub struct InferArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset: a JSON or JSONL file, or a dataset name in DATASET_DIR/dataset_info.json
    /// (required, here or as `dataset` in the config).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Where dataset names are looked up (LLaMA Factory's `dataset_dir`).
    #[arg(long, default_value = "data")]
    pub dataset_dir: PathBuf,
    /// Where the relative image paths of an `images` column are found (LLaMA Factory's
    /// `media_dir`; default: DATASET_DIR).
    #[arg(long)]
    pub media_dir: Option<PathBuf>,
    /// Row format of a dataset file (default: told from each row's keys).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Predictions, one JSON object per row, in input order.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Only the first N rows of the dataset.
    #[arg(long)]
    pub max_samples: Option<usize>,
    /// Rows in flight at once (the engine batches them).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Skip the rows OUTPUT (and the errors file) already hold: the default.
    #[arg(long, overrides_with = "no_resume")]
    pub resume: bool,
    /// Start over: empty OUTPUT and the errors file first.
    #[arg(long)]
    pub no_resume: bool,
    /// What a row that cannot be processed does: recorded in the errors file (skip), or ends the run (fail).
    #[arg(long, value_enum, default_value_t = OnError::Skip)]
    pub on_error: OnError,
    /// Errors file (default: OUTPUT with `.errors.jsonl` for its extension).
    #[arg(long)]
    pub errors: Option<PathBuf>,
    /// Write BLEU-4 and ROUGE-1/2/L of the predictions against the labels, runtime and samples/s here.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    Skip,
    Fail,
}

impl InferArgs {
    /// Takes the settings of the config file and overrides where no flag was given for them.
    pub fn apply_config(&mut self, matches: &ArgMatches) -> anyhow::Result<()> {
        let mut cfg = self.config.resolve()?;
        cfg.ignored.append(&mut cfg.server_keys);
        cfg.warn_ignored();
        self.model.apply_config(&cfg, matches);
        self.prompt.apply_config(&cfg, matches);
        fill(&mut self.dataset, cfg.dataset.clone().map(Some), matches, "dataset");
        fill(&mut self.dataset_dir, cfg.dataset_dir.clone(), matches, "dataset_dir");
        fill(&mut self.media_dir, cfg.media_dir.clone().map(Some), matches, "media_dir");
        fill(&mut self.max_samples, cfg.max_samples.map(Some), matches, "max_samples");
        Ok(())
    }

    fn errors_path(&self) -> PathBuf {
        self.errors.clone().unwrap_or_else(|| self.output.with_extension("errors.jsonl"))
    }
}

/// A row being generated.
struct InFlight {
    /// Its place in the order rows were handed out (the reorder buffer's sequence), which
    /// also tags its events.
    seq: usize,
    index: usize,
    place: Place,
    prompt: String,
    label: String,
    cancel: Cancel,
    text: String,
}

/// Why a row did not start: its own fault (reported, the run goes on) or the engine's.
enum StartError {
    Row(String),
    Fatal(anyhow::Error),
}

impl From<EngineError> for StartError {
    fn from(e: EngineError) -> Self {
        if e.is_request_error() {
            Self::Row(e.to_string())
        } else {
            Self::Fatal(e.into())
        }
    }
}

/// A row's media, read and decoded: images, then videos, then audios (the engine places each
/// modality by its own placeholders). Errors name the column and the file.
fn row_media(m: &RowMedia, dir: &Path, reading: &MediaReading) -> anyhow::Result<Vec<Media>> {
    let mut media = Vec::with_capacity(m.images.len() + m.videos.len() + m.audios.len());
    for p in &m.images {
        media.push(read_image(&dir.join(p)).context("column `images`")?);
    }
    for v in &m.videos {
        let video = match v {
            VideoRef::Path(p) => read_video(&dir.join(p), reading),
            VideoRef::Frames(frames) => {
                let paths: Vec<_> = frames.iter().map(|f| dir.join(f)).collect();
                let source = format!("the {} frames from {}", paths.len(), paths.first().map_or(String::new(), |p| p.display().to_string()));
                read_frames(&paths, &source, reading)
            }
        };
        media.push(video.context("column `videos`")?);
    }
    for p in &m.audios {
        media.push(read_audio(&dir.join(p), reading).context("column `audios`")?);
    }
    Ok(media)
}

/// Submits a row: its messages, system prompt and tools go to the chat template (the label
/// stays out); its events go to `events` tagged with `seq`. Returns the prompt text (special
/// tokens left out, as LLaMA Factory writes it) and the row's canceller.
fn start(
    engine: &EngineHandle,
    row: &Row,
    media_dir: &Path,
    reading: &MediaReading,
    seq: usize,
    events: &Sender<(usize, Event)>,
) -> Result<(String, Cancel), StartError> {
    // A missing or broken media file is the row's fault, reported like any bad row.
    let media = row_media(&row.media, media_dir, reading).map_err(|e| StartError::Row(format!("{e:#}")))?;
    let request = ChatRequest {
        media,
        messages: row.messages.clone(),
        // The row's own system prompt wins; without one the engine's default (--system) applies.
        system: row.system.clone().filter(|s| !s.is_empty()),
        tools: row.tools.clone(),
        // One prediction per row; the generation settings are the engine's (flags, config).
        params: GenParams { num_return_sequences: Some(1), ..GenParams::default() },
        ..ChatRequest::default()
    };
    let valid = engine.validate_chat(request)?;
    let prompt = engine.tokenizer().decode(valid.prompt_ids(), true).map_err(|e| StartError::Row(e.to_string()))?;
    let cancel = engine.submit(valid, |_| Tagged { index: seq, tx: events.clone() })?;
    let cancel = cancel.into_iter().next().ok_or_else(|| StartError::Fatal(anyhow::anyhow!("the engine queued no sample")))?;
    Ok((prompt, cancel))
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    // Checked before anything loads; the engine checks the rest per row.
    args.prompt.params().sampling()?;
    let name = args.dataset.as_deref().context("no dataset: pass --dataset PATH|NAME (or `dataset` in the config)")?;
    let mut data = dataset::open(name, &args.dataset_dir, args.format)?;
    if let Some(n) = args.max_samples {
        data.rows.truncate(n);
    }
    let source = data.path.display().to_string();
    let errors_path = args.errors_path();
    anyhow::ensure!(errors_path != args.output, "the errors file must not be the output file ({})", args.output.display());

    let fresh = args.no_resume;
    let done = if fresh { output::Recovered::default() } else { output::recover(&args.output, &errors_path, data.rows.len())? };
    let todo: Vec<usize> = (0..data.rows.len()).filter(|&i| !done.done(i)).collect();
    if !fresh && todo.len() < data.rows.len() {
        eprintln!(
            "infer: resuming {}: {} rows already done ({} predictions, {} errors){}; {} to go (--no-resume starts over)",
            args.output.display(),
            data.rows.len() - todo.len(),
            done.predictions.len(),
            done.errors.len(),
            if done.cut > 0 { format!(", cut a torn last line of {} bytes", done.cut) } else { String::new() },
            todo.len()
        );
    }
    let mut sink = Sink::open(&args.output, &errors_path, fresh)?;
    // Generation time, model loading left out (as LLaMA Factory's predict_runtime).
    let mut runtime = 0.0;

    if !todo.is_empty() {
        let cfg = EngineConfig { max_seqs: args.concurrency, ..args.prompt.engine_config(&args.model) };
        let engine = args.model.start_chat_engine(cfg)?;
        let started = Instant::now();
        let mut progress = Progress::new(todo.len());
        let run = Run {
            engine: &engine,
            rows: &data.rows,
            concurrency: args.concurrency,
            on_error: args.on_error,
            source: &source,
            media_dir: args.media_dir.as_deref().unwrap_or(&args.dataset_dir),
            reading: args.model.media_reading()?,
        };
        let failed = run.generate(&todo, &mut sink, &mut progress)?;
        runtime = started.elapsed().as_secs_f64();
        let (written, errors) = sink.counts();
        progress.finish(written, errors);
        if let Some(e) = failed {
            bail!("{source} {}: {} (--on-error fail; rows before it are in {})", e.place, e.error, args.output.display());
        }
    }
    if let Some(path) = &args.metrics {
        write_metrics(path, &args.output, sink.counts().0, runtime)?;
    }
    Ok(())
}

/// What a run needs to generate rows.
struct Run<'a> {
    engine: &'a EngineHandle,
    rows: &'a [(Place, Result<Row, String>)],
    concurrency: usize,
    on_error: OnError,
    /// The dataset file, for messages.
    source: &'a str,
    /// Where relative media paths point.
    media_dir: &'a Path,
    /// How media files are read.
    reading: MediaReading,
}

impl Run<'_> {
    /// Runs the rows `todo` through the engine, writing results in order. Returns the row error
    /// that ended the run under `--on-error fail`.
    fn generate(&self, todo: &[usize], sink: &mut Sink, progress: &mut Progress) -> anyhow::Result<Option<RowError>> {
        let (concurrency, on_error, source) = (self.concurrency, self.on_error, self.source);
        let mut in_flight: Vec<InFlight> = Vec::with_capacity(concurrency);
        let mut next = 0;
        // Under --on-error fail: the first failing row; nothing after it is started or written.
        let mut stop_at: Option<usize> = None;
        let mut fail: Option<RowError> = None;
        // Every row's events, tagged with the row's `seq`.
        let (events, received) = crossbeam_channel::unbounded::<(usize, Event)>();

        // Records a finished row, writing whatever is now in order; reports errors under skip.
        let finish = |sink: &mut Sink, progress: &mut Progress, seq: usize, item: Finished, tokens: usize| -> anyhow::Result<()> {
            progress.row_done(tokens);
            for e in sink.finish(seq, item)? {
                eprintln!("warning: {source} {}: {} (row skipped)", e.place, e.error);
            }
            Ok(())
        };

        loop {
            while stop_at.is_none() && in_flight.len() < concurrency && next < todo.len() {
                let (seq, index) = (next, todo[next]);
                next += 1;
                let (place, row) = &self.rows[index];
                let started = match row {
                    Ok(row) => start(self.engine, row, self.media_dir, &self.reading, seq, &events).map(|s| (s, row.label.clone())),
                    Err(e) => Err(StartError::Row(e.clone())),
                };
                match started {
                    Ok(((prompt, cancel), label)) => {
                        in_flight.push(InFlight { seq, index, place: *place, prompt, label, cancel, text: String::new() })
                    }
                    Err(StartError::Fatal(e)) => return Err(e),
                    Err(StartError::Row(error)) => {
                        let e = RowError { index, place: place.to_string(), error };
                        if on_error == OnError::Fail {
                            stop_at = Some(seq);
                            fail = Some(e);
                        } else {
                            finish(sink, progress, seq, Finished::Failed(e), 0)?;
                        }
                    }
                }
            }
            if let Some(stop) = stop_at {
                // Rows after the failing one are cancelled in the engine and forgotten here.
                in_flight.retain(|f| {
                    if f.seq >= stop {
                        f.cancel.cancel();
                    }
                    f.seq < stop
                });
            }
            if in_flight.is_empty() {
                break;
            }
            let (tag, event) = received.recv().map_err(|_| anyhow::anyhow!("the engine stopped"))?;
            // Events of rows cancelled above may still arrive.
            let Some(i) = in_flight.iter().position(|f| f.seq == tag) else { continue };
            match event {
                Event::Text(t) => in_flight[i].text.push_str(&t),
                Event::Done(usage) => {
                    let f = in_flight.swap_remove(i);
                    let p = Prediction {
                        prompt: f.prompt,
                        predict: f.text,
                        label: f.label,
                        index: f.index,
                        finish_reason: usage.finish_reason.as_str(),
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                    };
                    finish(sink, progress, f.seq, Finished::Prediction(p), usage.completion_tokens)?;
                }
                Event::Error(error) => {
                    // An error while generating is the row's (its input was valid, but the
                    // model or its grammar failed on it).
                    let f = in_flight.swap_remove(i);
                    let e = RowError { index: f.index, place: f.place.to_string(), error: error.to_string() };
                    if on_error == OnError::Fail {
                        if stop_at.is_none_or(|s| f.seq < s) {
                            stop_at = Some(f.seq);
                            fail = Some(e);
                        }
                    } else {
                        finish(sink, progress, f.seq, Finished::Failed(e), 0)?;
                    }
                }
            }
        }
        debug_assert!(fail.is_some() || sink.waiting() == 0, "every row handed out was written");
        Ok(fail)
    }
}

/// Scores every prediction in `output` (earlier runs' too) and writes LLaMA Factory's
/// `predict_results.json` keys; runtime (seconds generating) and samples/s are this run's.
fn write_metrics(path: &Path, output: &Path, generated: usize, runtime: f64) -> anyhow::Result<()> {
    let pairs = output::read_pairs(output)?;
    let similarity = Similarity::new();
    let scores: Vec<bleu_rouge::Scores> = pairs.iter().map(|(p, l)| similarity.score(p, l)).collect();
    let avg = bleu_rouge::average(&scores);
    let report = json!({
        "predict_bleu-4": avg.bleu4,
        "predict_rouge-1": avg.rouge1,
        "predict_rouge-2": avg.rouge2,
        "predict_rouge-l": avg.rouge_l,
        "predict_samples": pairs.len(),
        "predict_runtime": (runtime * 1e4).round() / 1e4,
        "predict_samples_per_second": if runtime > 0.0 { (generated as f64 / runtime * 1e3).round() / 1e3 } else { 0.0 },
    });
    let text = serde_json::to_string_pretty(&report).context("serialising metrics")?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
