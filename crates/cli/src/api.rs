//! `ingot api`: the OpenAI-compatible HTTP server and web chat page, like `llamafactory-cli api`
//! (and its `webchat`, at `/`).
//!
//! LLaMA Factory's environment variables are honoured: API_HOST, API_PORT, API_KEY and
//! API_MODEL_NAME (flags win over them). SIGINT or SIGTERM stops accepting connections and
//! lets the requests in flight finish before the process exits. The address actually bound
//! (`--port 0` picks a free port) is printed as `listening on http://HOST:PORT`.
//!
//! Where `image_url` content parts may point is the server's media policy: data URLs always,
//! files inside `--media-dir DIR` (config key `media_dir`), public http(s) URLs with
//! `--allow-remote-media` (`allow_remote_media`), each at most `--max-media-mb` MiB.
//!
//! With `--remote URL` the same routes run on remote OpenAI-compatible engines instead of
//! the model's weights ([`RemoteEngine`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use clap::{ArgMatches, Args};
use ingot_engine::EngineConfig;
use ingot_engine::Prompter;
use ingot_server::{Backend, Deployment, HttpLimits, MediaPolicy, ServerConfig};

use crate::chat::ChatArgs;
use crate::infer_config::fill;
use crate::remote::RemoteEngine;

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Model, template, system prompt, enable_thinking, generation defaults and config file:
    /// as for `chat`. Sampling flags set the defaults that requests override.
    #[command(flatten)]
    pub chat: ChatArgs,
    /// Address to listen on.
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "API_PORT", default_value_t = 8000)]
    pub port: u16,
    /// An accepted API key (repeat for several); without one, no key is needed.
    #[arg(long = "api-key", env = "API_KEY", hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// The model's name in /v1/models and responses (default: the model file's name).
    #[arg(long, env = "API_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Another name requests may use for the model (repeatable).
    #[arg(long = "model-alias", value_name = "NAME")]
    pub model_aliases: Vec<String>,
    /// Answer requests naming a model that is not served with OpenAI's 404 (by default any
    /// name gets the served model, as LLaMA Factory's and llama.cpp's servers do).
    #[arg(long)]
    pub strict_model_name: bool,
    /// A web origin (`https://app.example`) whose pages may call the API from a browser,
    /// besides this machine's (repeatable; `*` allows any).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = ServerConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Sequences decoded together; further requests wait in the queue.
    #[arg(long, default_value_t = EngineConfig::default().max_seqs)]
    pub max_seqs: usize,
    /// Requests that may wait for a place in the batch; beyond it requests get a 429.
    #[arg(long, default_value_t = EngineConfig::default().max_queue)]
    pub max_queue: usize,
    /// Answer a new request at once with 503 and `Retry-After` when its expected wait for a
    /// place in the batch is over SECONDS (estimated from the queue depth and recent
    /// sequences' service times; 0 turns the bound off).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub max_queue_wait: f64,
    /// Connections open at once; further ones wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = HttpLimits::default().max_connections)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's head (also how long an idle kept-alive
    /// connection stays open).
    #[arg(long, value_name = "SECONDS", default_value_t = HttpLimits::default().header_read_timeout.as_secs_f64())]
    pub header_read_timeout: f64,
    /// Seconds a request's body may take to arrive, after its head (then 408).
    #[arg(long, value_name = "SECONDS", default_value_t = ServerConfig::default().body_read_timeout.as_secs_f64())]
    pub body_read_timeout: f64,
    /// Directory whose files `image_url`, `audio_url` and `video_url` parts may name (a plain path, relative to DIR, or
    /// a file:// URL); symlinks and `..` may not leave it. Without it, local paths are refused.
    #[arg(long, value_name = "DIR")]
    pub media_dir: Option<PathBuf>,
    /// Let media parts name http(s) URLs (hosts with public addresses only).
    #[arg(long)]
    pub allow_remote_media: bool,
    /// Largest media item a part may bring, in MiB (decoded, for data URLs).
    #[arg(long, value_name = "MB", default_value_t = MediaPolicy::default().max_bytes >> 20)]
    pub max_media_mb: usize,
}

impl ApiArgs {
    /// Takes the settings of the config file and overrides where no flag was given for them:
    /// the model and prompt keys, as `chat` does, and the server's `media_dir` and
    /// `allow_remote_media`.
    pub fn apply_config(&mut self, matches: &ArgMatches) -> anyhow::Result<()> {
        let cfg = self.chat.config.resolve()?;
        fill(&mut self.media_dir, cfg.media_dir.clone().map(Some), matches, "media_dir");
        fill(&mut self.allow_remote_media, cfg.allow_remote_media, matches, "allow_remote_media");
        self.chat.apply_resolved(cfg, matches);
        Ok(())
    }

    /// The media policy these flags give; the directory must exist (it is canonicalised).
    pub fn media_policy(&self) -> anyhow::Result<MediaPolicy> {
        ensure!(self.max_media_mb >= 1, "--max-media-mb must be at least 1");
        let max_bytes = self.max_media_mb.checked_mul(1 << 20).context("--max-media-mb is too large")?;
        let media_dir = self.media_dir.as_deref().map(media_dir).transpose()?;
        let reading = self.chat.model.media_reading()?;
        let (max_audio_seconds, video_sampling) = (reading.limits.max_audio_seconds, reading.sampling);
        Ok(MediaPolicy { media_dir, allow_remote: self.allow_remote_media, max_bytes, max_audio_seconds, video_sampling, ..MediaPolicy::default() })
    }
}

fn media_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let real = dir.canonicalize().with_context(|| format!("--media-dir {}", dir.display()))?;
    ensure!(real.is_dir(), "--media-dir {}: not a directory", dir.display());
    Ok(real)
}

/// A flag's seconds as a duration: finite and not negative.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("--{flag} must be a finite number of seconds >= 0, got {value}"))
}

pub fn run(args: ApiArgs) -> anyhow::Result<()> {
    // Checked first: a mistyped --media-dir fails at once, not after the model loaded.
    let media = args.media_policy()?;
    let max_queue_wait = Some(seconds("max-queue-wait", args.max_queue_wait)?).filter(|d| !d.is_zero());
    let body_read_timeout = seconds("body-read-timeout", args.body_read_timeout)?;
    let limits = HttpLimits { max_connections: args.max_connections, header_read_timeout: seconds("header-read-timeout", args.header_read_timeout)? };
    ensure!(args.max_connections >= 1, "--max-connections must be at least 1");
    let chat = &args.chat;
    let path = chat.model.model_path()?;
    let model_name = match &args.model_name {
        Some(n) => n.clone(),
        None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "ingot".into()),
    };
    // Checked before loading, as `chat` does.
    chat.prompt.params().sampling()?;
    ensure!(chat.prompt.use_lora.is_none(), "--use-lora (use_lora) is for chat and infer: API requests pick an adapter by their `model`");
    if let Some((name, _)) = chat.model.loras.iter().find(|(n, _)| *n == model_name || args.model_aliases.contains(n)) {
        bail!("--lora {name}=...: the adapter name is the served model's own name; pick another");
    }
    let engine_cfg =
        EngineConfig { max_seqs: args.max_seqs, max_queue: args.max_queue, max_queue_wait, ..chat.prompt.engine_config(&chat.model) };
    let cfg = |model_type: Option<String>| ServerConfig {
        deployment: Deployment { model_path: path.display().to_string(), model_type, max_running_requests: args.max_seqs },
        model_name,
        aliases: args.model_aliases.clone(),
        strict_model_name: args.strict_model_name,
        cors_origins: args.cors_origins.clone(),
        api_keys: args.api_keys.clone(),
        max_body_bytes: args.max_body_bytes,
        body_read_timeout,
        media,
        ..ServerConfig::default()
    };
    if !chat.remote.urls.is_empty() {
        ensure!(chat.model.loras.is_empty(), "--lora: adapters run on a local model, not with --remote");
        let prompter = Prompter::new(chat.model.load_prompting()?, &engine_cfg)?;
        let remote = RemoteEngine::connect(&chat.remote.urls, prompter, &engine_cfg, chat.remote.timeout(), "api")?;
        return start(remote, cfg(None), &args.host, args.port, limits);
    }
    let engine = chat.model.start_engine(engine_cfg)?;
    let model_type = Some(format!("{:?}", engine.model_config().arch).to_lowercase());
    start(engine, cfg(model_type), &args.host, args.port, limits)
}

/// Serves the API on `backend` until a shutdown signal.
fn start(backend: impl Backend, cfg: ServerConfig, host: &str, port: u16, limits: HttpLimits) -> anyhow::Result<()> {
    let app = ingot_server::app(backend, cfg).context("starting the request workers")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(app, host, port, limits))
}

async fn serve(app: axum::Router, host: &str, port: u16, limits: HttpLimits) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    eprintln!("listening on http://{addr}");
    ingot_server::serve(listener, app, limits, shutdown_signal()).await;
    eprintln!("stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    eprintln!("shutting down: finishing the requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
    }

    fn args(argv: &[&str]) -> anyhow::Result<ApiArgs> {
        let matches = Cli::command().try_get_matches_from(std::iter::once("api").chain(argv.iter().copied()))?;
        let mut args = Cli::from_arg_matches(&matches)?.api;
        args.apply_config(&matches)?;
        Ok(args)
    }

    #[test]
    fn media_flags_make_the_policy() {
        let policy = args(&[]).expect("no flags").media_policy().expect("default policy");
        assert_eq!(policy, MediaPolicy::default());

        let dir = ingot_testkit::scratch_dir("api-media-flags");
        let d = dir.display().to_string();
        let policy = args(&["--media-dir", &d, "--allow-remote-media", "--max-media-mb", "3"]).expect("flags").media_policy().expect("policy");
        assert_eq!(policy.media_dir, Some(dir.canonicalize().expect("canonical")));
        assert!(policy.allow_remote);
        assert_eq!(policy.max_bytes, 3 << 20);

        let missing = dir.join("nope");
        let e = format!("{:#}", args(&["--media-dir", &missing.display().to_string()]).expect("parses").media_policy().expect_err("missing"));
        assert!(e.contains("--media-dir") && e.contains(&missing.display().to_string()), "{e}");
        let file = dir.join("file.txt");
        std::fs::write(&file, "x").expect("write");
        let e = format!("{:#}", args(&["--media-dir", &file.display().to_string()]).expect("parses").media_policy().expect_err("a file"));
        assert!(e.contains("not a directory"), "{e}");
        let e = format!("{:#}", args(&["--max-media-mb", "0"]).expect("parses").media_policy().expect_err("zero"));
        assert!(e.contains("--max-media-mb"), "{e}");
    }

    #[test]
    fn time_flags_are_finite_seconds() {
        assert_eq!(seconds("max-queue-wait", 0.25).expect("a quarter"), Duration::from_millis(250));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = format!("{:#}", seconds("body-read-timeout", bad).expect_err("refused"));
            assert!(e.contains("--body-read-timeout"), "{e}");
        }
        let a = args(&[]).expect("defaults");
        assert_eq!((a.max_queue_wait, a.max_connections), (30.0, HttpLimits::default().max_connections));
    }

    #[test]
    fn media_keys_come_from_the_config_and_flags_win() {
        let dir = ingot_testkit::scratch_dir("api-media-config");
        let yaml = dir.join("api.yaml");
        std::fs::write(&yaml, format!("media_dir: {}\nallow_remote_media: true\n", dir.display())).expect("write");
        let y = yaml.display().to_string();
        let a = args(&[&y]).expect("config");
        assert_eq!((a.media_dir.as_deref(), a.allow_remote_media), (Some(dir.as_path()), true));
        let other = dir.join("other");
        let a = args(&[&y, "allow_remote_media=false", "--media-dir", &other.display().to_string()]).expect("config");
        assert_eq!((a.media_dir.as_deref(), a.allow_remote_media), (Some(other.as_path()), false));
    }
}
