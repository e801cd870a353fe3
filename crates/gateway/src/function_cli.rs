//! `gateway function put|list|show|delete`: operators' functions (hooks and function backends)
//! through the admin API. The secret is read from an environment variable so that it stays out
//! of shell history; it is never printed.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::AdminClient;

#[derive(Subcommand)]
pub enum FunctionCmd {
    /// Create or replace a function.
    Put {
        name: String,
        /// Where the gateway POSTs (signed; through the egress guard).
        #[arg(long)]
        url: String,
        /// The environment variable holding the signing secret (required for a new function;
        /// omitted: the stored secret is kept).
        #[arg(long)]
        secret_env: Option<String>,
        /// Milliseconds the whole call may take (default 2000, at most 30000).
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// fail_open (default) or fail_closed.
        #[arg(long)]
        failure_mode: Option<String>,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

pub async fn function(c: &AdminClient, cmd: FunctionCmd) -> anyhow::Result<()> {
    match cmd {
        FunctionCmd::Put {
            name,
            url,
            secret_env,
            deadline_ms,
            failure_mode,
        } => {
            let mut body = json!({ "url": url });
            if let Some(var) = secret_env {
                let secret = std::env::var(&var)
                    .with_context(|| format!("environment variable {var} is not set"))?;
                body["secret"] = json!(secret);
            }
            if let Some(d) = deadline_ms {
                body["deadline_ms"] = json!(d);
            }
            if let Some(m) = failure_mode {
                body["failure_mode"] = json!(m);
            }
            let v = c
                .call_put(&format!("/admin/functions/{name}"), body)
                .await?;
            println!(
                "function {name} saved: {} (deadline {} ms, {})",
                text(&v, "url"),
                v["deadline_ms"],
                text(&v, "failure_mode")
            );
        }
        FunctionCmd::List => {
            let v = c.get("/admin/functions").await?;
            println!("{:<24} {:<12} {:<12} URL", "NAME", "DEADLINE", "FAILURE");
            for f in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<12} {:<12} {}",
                    text(f, "name"),
                    format!("{} ms", f["deadline_ms"]),
                    text(f, "failure_mode"),
                    text(f, "url")
                );
            }
        }
        FunctionCmd::Show { name } => {
            let v = c.get(&format!("/admin/functions/{name}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        FunctionCmd::Delete { name } => {
            c.delete(&format!("/admin/functions/{name}")).await?;
            println!("function {name} deleted");
        }
    }
    Ok(())
}
