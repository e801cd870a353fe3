//! `gateway kb …`: knowledge bases through the admin API — create, upload with progress,
//! document status, and the test query that shows exactly what an API would inject.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::AdminClient;

#[derive(Subcommand)]
pub enum KbCmd {
    /// Create a knowledge base (its embedding model locks after the first upload).
    Create {
        name: String,
        /// local/minilm (default), or a provider's embedding model (openai/text-embedding-3-small).
        #[arg(long, default_value = "local/minilm")]
        model: String,
        #[arg(long, default_value_t = 200)]
        chunk_tokens: u32,
        #[arg(long, default_value_t = 40)]
        overlap_tokens: u32,
    },
    List,
    /// Upload files to an API's knowledge base (or a base by name) and follow their indexing.
    Upload {
        /// The API whose `rag.knowledge_base` receives the files, or a knowledge base's name.
        target: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Return once uploaded, without waiting for indexing.
        #[arg(long)]
        no_wait: bool,
    },
    /// Documents of a knowledge base with their status.
    Docs {
        kb: String,
    },
    /// Remove one document (and its chunks).
    Rm {
        kb: String,
        document: String,
    },
    /// Delete a knowledge base with all its documents.
    Delete {
        kb: String,
    },
    /// The chunks an API's RAG stage would inject for a question, with their scores.
    Query {
        /// The API (its rag settings) or, with --kb, a knowledge base.
        target: String,
        question: String,
        #[arg(long)]
        kb: bool,
        #[arg(long)]
        top_k: Option<usize>,
    },
}

/// How the gateway extracts text from uploads: in a child process of its own binary, under
/// memory and CPU limits (`GATEWAY_KB_EXTRACT=in_process` keeps it in the gateway's process).
pub fn extractor() -> Arc<dyn knowledge::ingest::Extractor> {
    if std::env::var("GATEWAY_KB_EXTRACT").is_ok_and(|v| v.trim() == "in_process") {
        return Arc::new(knowledge::ingest::InProcess);
    }
    match knowledge::sandbox::Subprocess::current_exe() {
        Ok(worker) => Arc::new(worker),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the gateway's own binary: extracting in process");
            Arc::new(knowledge::ingest::InProcess)
        }
    }
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

/// The knowledge base an upload target names: an API's, else a base of that name.
async fn resolve(c: &AdminClient, target: &str) -> anyhow::Result<String> {
    if let Ok(api) = c.get(&format!("/admin/apis/{target}")).await
        && let Some(kb) = api.pointer("/rag/knowledge_base").and_then(Value::as_str)
    {
        return Ok(kb.to_string());
    }
    c.get(&format!("/admin/knowledge-bases/{target}"))
        .await
        .with_context(|| {
            format!("'{target}' is neither an API with rag settings nor a knowledge base")
        })?;
    Ok(target.to_string())
}

pub(crate) fn bar(done: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(WIDTH - filled))
}

pub async fn kb(c: &AdminClient, cmd: KbCmd) -> anyhow::Result<()> {
    match cmd {
        KbCmd::Create {
            name,
            model,
            chunk_tokens,
            overlap_tokens,
        } => {
            let v = c
                .post(
                    "/admin/knowledge-bases",
                    json!({"name": name, "embedding_model": model,
                           "chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens}),
                )
                .await?;
            println!(
                "created knowledge base {} (embedding model {})",
                text(&v, "name"),
                text(&v, "embedding_model")
            );
        }
        KbCmd::List => {
            let v = c.get("/admin/knowledge-bases").await?;
            println!(
                "{:<24} {:<36} {:>6} {:>7} {:>7} {:>6}",
                "NAME", "EMBEDDING MODEL", "DOCS", "READY", "CHUNKS", "LOCKED"
            );
            for kb in v.as_array().into_iter().flatten() {
                let d = &kb["documents"];
                println!(
                    "{:<24} {:<36} {:>6} {:>7} {:>7} {:>6}",
                    text(kb, "name"),
                    text(kb, "embedding_model"),
                    d["total"].as_u64().unwrap_or(0),
                    d["ready"].as_u64().unwrap_or(0),
                    d["chunks"].as_u64().unwrap_or(0),
                    if kb["locked"].as_bool().unwrap_or(false) {
                        "yes"
                    } else {
                        "no"
                    }
                );
            }
        }
        KbCmd::Upload {
            target,
            files,
            no_wait,
        } => {
            let kb = resolve(c, &target).await?;
            let mut names = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let name = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("{}: not a file name", f.display()))?
                    .to_string();
                let bytes =
                    std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                eprint!(
                    "\r{} uploading {}/{}: {name}        ",
                    bar(i, files.len()),
                    i + 1,
                    files.len()
                );
                let _ = std::io::stderr().flush();
                c.put_bytes(
                    &format!("/admin/knowledge-bases/{kb}/documents/{}", encode(&name)),
                    bytes,
                )
                .await
                .with_context(|| format!("uploading {name}"))?;
                names.push(name);
            }
            eprintln!(
                "\r{} uploaded {} file(s) to {kb}            ",
                bar(files.len(), files.len()),
                files.len()
            );
            if no_wait {
                return Ok(());
            }
            let mut failed = 0;
            loop {
                let docs = c
                    .get(&format!("/admin/knowledge-bases/{kb}/documents"))
                    .await?;
                let mine: Vec<&Value> = docs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| names.iter().any(|n| n == text(d, "name")))
                    .collect();
                let finished = mine
                    .iter()
                    .filter(|d| matches!(text(d, "status"), "ready" | "error"))
                    .count();
                let chunks: i64 = mine.iter().filter_map(|d| d["chunks"].as_i64()).sum();
                eprint!(
                    "\r{} indexed {finished}/{} ({chunks} chunks)   ",
                    bar(finished, names.len()),
                    names.len()
                );
                let _ = std::io::stderr().flush();
                if finished >= names.len() {
                    eprintln!();
                    for d in mine.iter().filter(|d| text(d, "status") == "error") {
                        failed += 1;
                        eprintln!("  {}: error: {}", text(d, "name"), text(d, "error"));
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if failed > 0 {
                anyhow::bail!("{failed} file(s) could not be indexed");
            }
        }
        KbCmd::Docs { kb } => {
            let v = c
                .get(&format!("/admin/knowledge-bases/{kb}/documents"))
                .await?;
            println!(
                "{:<40} {:<9} {:>7} {:>10}  ERROR",
                "DOCUMENT", "STATUS", "CHUNKS", "BYTES"
            );
            for d in v.as_array().into_iter().flatten() {
                println!(
                    "{:<40} {:<9} {:>7} {:>10}  {}",
                    text(d, "name"),
                    text(d, "status"),
                    d["chunks"].as_i64().unwrap_or(0),
                    d["bytes"].as_i64().unwrap_or(0),
                    d["error"].as_str().unwrap_or("")
                );
            }
        }
        KbCmd::Rm { kb, document } => {
            c.delete(&format!(
                "/admin/knowledge-bases/{kb}/documents/{}",
                encode(&document)
            ))
            .await?;
            println!("removed {document} from {kb}");
        }
        KbCmd::Delete { kb } => {
            c.delete(&format!("/admin/knowledge-bases/{kb}")).await?;
            println!("deleted knowledge base {kb}");
        }
        KbCmd::Query {
            target,
            question,
            kb,
            top_k,
        } => {
            let mut body = json!({"query": question});
            if let Some(k) = top_k {
                body["top_k"] = json!(k);
            }
            let path = if kb {
                format!("/admin/knowledge-bases/{target}/query")
            } else {
                format!("/admin/apis/{target}/rag/query")
            };
            let v = c.post(&path, body).await?;
            let chunks = v["chunks"].as_array().cloned().unwrap_or_default();
            println!(
                "{} chunk(s) from {} (embed {:.1} ms, search {:.1} ms)",
                chunks.len(),
                text(&v, "knowledge_base"),
                v["embed_ms"].as_f64().unwrap_or(0.0),
                v["search_ms"].as_f64().unwrap_or(0.0)
            );
            for (i, h) in chunks.iter().enumerate() {
                println!(
                    "\n#{} {} {}  fused {:.4}  vector {:.3}  text {}",
                    i + 1,
                    text(h, "document"),
                    h["heading"]
                        .as_str()
                        .map(|s| format!("§ {s}"))
                        .unwrap_or_default(),
                    h["fused_score"].as_f64().unwrap_or(0.0),
                    h["vector_score"].as_f64().unwrap_or(0.0),
                    h["text_score"]
                        .as_f64()
                        .map_or("-".to_string(), |t| format!("{t:.3}"))
                );
                println!("{}", text(h, "text"));
            }
        }
    }
    Ok(())
}

/// A document name as one path segment.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
