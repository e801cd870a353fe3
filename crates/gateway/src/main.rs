//! `gateway`: one binary for the whole product.
//!
//! - `start`, `migrate`, `config check` work on the store and files directly ([`serve`],
//!   [`config_file`], [`settings`]).
//! - Every other command talks to a running gateway's admin API ([`cli`]).

mod access_cli;
mod billing_cli;
mod cli;
mod config_file;
mod function_cli;
mod kb_cli;
mod logs_cli;
mod models_cli;
mod otel;
mod serve;
mod settings;
mod tail_fanin;

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use serde_json::json;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "ai-gateway: one OpenAI-compatible endpoint in front of every model"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the data plane (GATEWAY_PORT, 4080) and the admin plane (GATEWAY_ADMIN_PORT, 4081).
    Start,
    /// Run the store's migrations and exit.
    Migrate,
    /// Check a config file without starting (defaults to GATEWAY_CONFIG).
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Manage upstream providers (through the admin API).
    Provider {
        #[command(subcommand)]
        cmd: ProviderCmd,
    },
    /// Manage public model names: aliases, targets and fallbacks (through the admin API).
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Gateway keys: create (shown once), list, revoke, rotate.
    Key {
        #[command(subcommand)]
        cmd: access_cli::KeyCmd,
    },
    /// Consumers: who calls your gateway APIs.
    Consumer {
        #[command(subcommand)]
        cmd: access_cli::ConsumerCmd,
    },
    /// Gateway APIs: slug, auth mode, IP rules, JWT settings.
    Api {
        #[command(subcommand)]
        cmd: access_cli::ApiCmd,
    },
    /// Functions: your HTTP endpoints used as pre/post-hooks and function backends.
    Function {
        #[command(subcommand)]
        cmd: function_cli::FunctionCmd,
    },
    /// Local CPU models: pull a known model, list what is installed.
    Models {
        #[command(subcommand)]
        cmd: models_cli::ModelsCmd,
    },
    /// Knowledge bases: create, upload documents, status, test queries.
    Kb {
        #[command(subcommand)]
        cmd: kb_cli::KbCmd,
    },
    /// Admin tokens with roles (admin, viewer).
    Token {
        #[command(subcommand)]
        cmd: access_cli::TokenCmd,
    },
    /// Secrets at rest (provider keys): rotate the encryption key.
    Secrets {
        #[command(subcommand)]
        cmd: access_cli::SecretsCmd,
    },
    /// Plans of gateway APIs: limits, allowances, prices.
    Plan {
        #[command(subcommand)]
        cmd: billing_cli::PlanCmd,
    },
    /// Model prices (built-in table and overrides).
    Price {
        #[command(subcommand)]
        cmd: billing_cli::PriceCmd,
    },
    /// The request log: follow it live, list, filter, stats.
    Logs {
        #[command(subcommand)]
        cmd: logs_cli::LogsCmd,
    },
    /// Usage analytics by consumer or model (24h, 7d, 30d; CSV).
    Analytics {
        #[command(subcommand)]
        cmd: logs_cli::AnalyticsCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    Check { file: Option<PathBuf> },
}

#[derive(Subcommand)]
enum ProviderCmd {
    /// Add (or replace) a provider.
    Add {
        #[arg(long)]
        name: String,
        /// openai, azure_openai, anthropic, gemini, groq, mistral, …, openai_compatible
        #[arg(long)]
        kind: String,
        #[arg(long)]
        base_url: Option<String>,
        /// Read the API key from this environment variable.
        #[arg(long)]
        api_key_env: Option<String>,
        /// Read the API key from the first line of standard input.
        #[arg(long)]
        api_key_stdin: bool,
        #[arg(long)]
        api_version: Option<String>,
        /// Models the provider serves (comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long, default_value_t = 0)]
        priority: i64,
    },
    List,
    /// Check one provider, or all.
    Health {
        name: Option<String>,
    },
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Add (or replace) a model alias.
    Add {
        #[arg(long)]
        name: String,
        /// provider/model, repeatable; tried in order.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// `class=a,b` or just `a,b` (class `any`), repeatable.
        #[arg(long = "fallback")]
        fallbacks: Vec<String>,
    },
    List,
    Remove {
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    // The sandboxed text extractor the knowledge base starts per upload: no runtime, no logging.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == knowledge::sandbox::WORKER_ARG)
    {
        return std::process::ExitCode::from(
            u8::try_from(knowledge::sandbox::worker_main()).unwrap_or(1),
        );
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG").unwrap_or_else(|_| {
        let dev = std::env::var("GATEWAY_DEV").is_ok_and(|v| v == "1");
        tracing_subscriber::EnvFilter::new(if dev { "debug" } else { "info" })
    });
    // `GATEWAY_LOG_FORMAT=json`: one JSON object per event (typed fields kept as fields), for
    // log shippers; the default is human-readable.
    if std::env::var("GATEWAY_LOG_FORMAT").is_ok_and(|v| v.trim() == "json") {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cmd {
        Cmd::Start => serve::start(settings::Settings::from_env()?).await?,
        Cmd::Migrate => {
            let s = settings::Settings::from_env()?;
            serve::open_store(&s).await?;
            println!(
                "migrations applied to {}",
                if s.is_postgres() {
                    "PostgreSQL"
                } else {
                    "SQLite"
                }
            );
        }
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            let file = file
                .or_else(config_file::path_from_env)
                .context("no file given and GATEWAY_CONFIG is unset")?;
            let cfg = config_file::load(&file, &HashSet::new())?;
            println!(
                "{}: ok ({} providers, {} models)",
                file.display(),
                cfg.providers.len(),
                cfg.models.len()
            );
        }
        Cmd::Provider { cmd } => {
            let c = cli::AdminClient::from_env()?;
            match cmd {
                ProviderCmd::Add {
                    name,
                    kind,
                    base_url,
                    api_key_env,
                    api_key_stdin,
                    api_version,
                    models,
                    priority,
                } => {
                    let key = cli::read_key(api_key_env.as_deref(), api_key_stdin)?;
                    let body = json!({"name": name, "kind": kind, "base_url": base_url, "api_key": key,
                        "api_version": api_version, "models": models, "priority": priority});
                    let body = strip_nulls(body);
                    c.call_put(&format!("/admin/providers/{name}"), body)
                        .await?;
                    println!("provider {name} saved");
                }
                ProviderCmd::List => cli::print_providers(&c.get("/admin/providers").await?),
                ProviderCmd::Health { name } => {
                    let v = match &name {
                        Some(n) => c.get(&format!("/admin/providers/{n}/health")).await?,
                        None => c.get("/admin/health/providers").await?,
                    };
                    let probes_ok = cli::print_health(&v);
                    let targets = c.get("/admin/health/targets").await?;
                    let targets = match &name {
                        Some(n) => filter_provider(targets, n),
                        None => targets,
                    };
                    cli::print_target_health(&targets);
                    if !probes_ok {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                ProviderCmd::Remove { name } => {
                    c.delete(&format!("/admin/providers/{name}")).await?;
                    println!("provider {name} removed");
                }
            }
        }
        Cmd::Key { cmd } => access_cli::key(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Consumer { cmd } => {
            access_cli::consumer(&cli::AdminClient::from_env()?, cmd).await?;
        }
        Cmd::Api { cmd } => access_cli::api(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Function { cmd } => {
            function_cli::function(&cli::AdminClient::from_env()?, cmd).await?
        }
        Cmd::Models { cmd } => models_cli::models(cmd).await?,
        Cmd::Kb { cmd } => kb_cli::kb(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Token { cmd } => access_cli::token(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Secrets { cmd } => access_cli::secrets(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Plan { cmd } => billing_cli::plan(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Price { cmd } => billing_cli::price(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Logs { cmd } => logs_cli::logs(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Analytics { cmd } => logs_cli::analytics(&cli::AdminClient::from_env()?, cmd).await?,
        Cmd::Model { cmd } => {
            let c = cli::AdminClient::from_env()?;
            match cmd {
                ModelCmd::Add {
                    name,
                    targets,
                    fallbacks,
                } => {
                    c.call_put(
                        &format!("/admin/models/{name}"),
                        cli::model_body(&name, &targets, &fallbacks)?,
                    )
                    .await?;
                    println!("model {name} saved");
                }
                ModelCmd::List => {
                    for m in c
                        .get("/admin/models")
                        .await?
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        println!("{}", serde_json::to_string(m)?);
                    }
                }
                ModelCmd::Remove { name } => {
                    c.delete(&format!("/admin/models/{name}")).await?;
                    println!("model {name} removed");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Only the rows of one provider.
fn filter_provider(v: serde_json::Value, provider: &str) -> serde_json::Value {
    match v {
        serde_json::Value::Array(rows) => serde_json::Value::Array(
            rows.into_iter()
                .filter(|r| r.get("provider").and_then(|p| p.as_str()) == Some(provider))
                .collect(),
        ),
        other => other,
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}
