//! `ingot api`: the OpenAI-compatible HTTP server and web chat page, like `llamafactory-cli api`
//! (and its `webchat`, at `/`).
//!
//! LLaMA Factory's environment variables are honoured: API_HOST, API_PORT, API_KEY and
//! API_MODEL_NAME (flags win over them). SIGINT or SIGTERM stops accepting connections and
//! lets the requests in flight finish before the process exits. The address actually bound
//! (`--port 0` picks a free port) is printed as `listening on http://HOST:PORT`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use ingot_engine::EngineConfig;
use ingot_server::ServerConfig;

use crate::chat::ChatArgs;

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
    /// The model's name in /v1/models and requests (default: the model file's name).
    #[arg(long, env = "API_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = ServerConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Sequences decoded together; further requests wait in the queue.
    #[arg(long, default_value_t = EngineConfig::default().max_seqs)]
    pub max_seqs: usize,
    /// Requests that may wait for a place in the batch; beyond it requests get a 429.
    #[arg(long, default_value_t = EngineConfig::default().max_queue)]
    pub max_queue: usize,
}

pub fn run(args: ApiArgs) -> anyhow::Result<()> {
    let chat = &args.chat;
    let path = chat.model.model_path()?;
    let model_name = match &args.model_name {
        Some(n) => n.clone(),
        None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "ingot".into()),
    };
    // Checked before loading, as `chat` does.
    chat.prompt.gen.params().sampling().map_err(anyhow::Error::msg)?;
    let engine_cfg = EngineConfig { max_seqs: args.max_seqs, max_queue: args.max_queue, ..chat.prompt.engine_config(&chat.model) };
    let engine = chat.model.start_engine(engine_cfg)?;
    // The flags' generation settings go to the server, not the engine: they must beat the
    // model's generation_config.json (which beats the engine's defaults) and lose to requests.
    let cfg = ServerConfig {
        model_name,
        api_keys: args.api_keys.clone(),
        max_body_bytes: args.max_body_bytes,
        defaults: chat.prompt.gen.params(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(ingot_server::app(engine, cfg), &args.host, args.port))
}

async fn serve(app: axum::Router, host: &str, port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    eprintln!("listening on http://{addr}");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("serving")?;
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
