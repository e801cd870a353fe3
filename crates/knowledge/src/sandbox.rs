//! Extraction in a child process: a hostile upload that slips past the parsers' own limits can
//! exhaust only the child's memory (an address-space limit) and CPU time (a CPU limit, and a
//! wall-clock deadline after which the parent kills it), never the gateway's.
//!
//! The parent ([`Subprocess`]) runs `PROGRAM extract-worker` with an empty environment, writes one
//! JSON header line (`name`, `limits`, `len`) and the file's bytes to its stdin, and reads one JSON
//! answer from its stdout. The child ([`worker_main`]) limits itself before it reads a byte.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::extract::{ExtractError, Extracted, Limits};
use crate::ingest::{ExtractFuture, Extractor, deadline_exceeded};

/// The subcommand the gateway binary dispatches to [`worker_main`].
pub const WORKER_ARG: &str = "extract-worker";

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    limits: Limits,
    len: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Ok(Extracted),
    Unsupported(String),
    TooLarge { size: usize, limit: usize },
    Invalid(String),
}

impl From<Result<Extracted, ExtractError>> for Answer {
    fn from(r: Result<Extracted, ExtractError>) -> Answer {
        match r {
            Ok(x) => Answer::Ok(x),
            Err(ExtractError::Unsupported(s)) => Answer::Unsupported(s),
            Err(ExtractError::TooLarge { size, limit }) => Answer::TooLarge { size, limit },
            Err(ExtractError::Invalid(s)) => Answer::Invalid(s),
        }
    }
}

impl From<Answer> for Result<Extracted, ExtractError> {
    fn from(a: Answer) -> Self {
        match a {
            Answer::Ok(x) => Ok(x),
            Answer::Unsupported(s) => Err(ExtractError::Unsupported(s)),
            Answer::TooLarge { size, limit } => Err(ExtractError::TooLarge { size, limit }),
            Answer::Invalid(s) => Err(ExtractError::Invalid(s)),
        }
    }
}

/// The largest header line the worker reads.
const MAX_HEADER: u64 = 64 * 1024;

/// The child's side: limits itself, reads the job from stdin, answers on stdout. Returns the
/// process exit code.
pub fn worker_main() -> i32 {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the newline: the file's bytes follow it on the same pipe.
    while header.len() as u64 <= MAX_HEADER {
        match input.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => header.push(byte[0]),
            _ => return 2,
        }
    }
    let Ok(job) = serde_json::from_slice::<Header>(&header) else {
        return 2;
    };
    if limit_self(&job.limits).is_err() {
        return 3;
    }
    if job.len > job.limits.max_bytes.saturating_add(1) {
        return answer(&Answer::TooLarge {
            size: job.len,
            limit: job.limits.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(job.len);
    if (&mut input)
        .take(job.len as u64)
        .read_to_end(&mut bytes)
        .is_err()
        || bytes.len() != job.len
    {
        return 2;
    }
    let result = crate::extract::extract(&job.name, &bytes, &job.limits);
    answer(&Answer::from(result))
}

fn answer(a: &Answer) -> i32 {
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, a).is_ok() && out.flush().is_ok();
    if written { 0 } else { 2 }
}

/// Address space (the memory budget plus room for the binary and its threads) and CPU seconds.
fn limit_self(limits: &Limits) -> std::io::Result<()> {
    let memory = limits.max_memory.saturating_add(BASELINE_ADDRESS_SPACE);
    rlimit::setrlimit(rlimit::Resource::AS, memory, memory)?;
    let cpu = limits.deadline.as_secs().saturating_add(1);
    rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu.saturating_add(1))?;
    // A crash must not leave a core file with the document in it.
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0)?;
    Ok(())
}

/// What the worker's own mappings take before it parses anything (the binary, its libraries,
/// the allocator's first reservations).
const BASELINE_ADDRESS_SPACE: u64 = 512 * 1024 * 1024;

/// Runs extraction in `program extract-worker`, one child per document.
pub struct Subprocess {
    pub program: PathBuf,
}

impl Subprocess {
    /// The running executable as the worker (the gateway binary has the subcommand).
    pub fn current_exe() -> std::io::Result<Subprocess> {
        Ok(Subprocess {
            program: std::env::current_exe()?,
        })
    }
}

fn invalid(m: impl Into<String>) -> ExtractError {
    ExtractError::Invalid(m.into())
}

/// Kills the child when the extraction is abandoned (deadline, or the caller went away).
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Extractor for Subprocess {
    fn extract<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        limits: &'a Limits,
    ) -> ExtractFuture<'a> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let deadline = started + limits.deadline;
            let header = Header {
                name: name.to_string(),
                limits: limits.clone(),
                len: bytes.len(),
            };
            let mut line = serde_json::to_vec(&header)
                .map_err(|e| invalid(format!("cannot describe the job: {e}")))?;
            line.push(b'\n');
            let child = std::process::Command::new(&self.program)
                .arg(WORKER_ARG)
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| invalid(format!("cannot start the extraction worker: {e}")))?;
            let mut child = Reaper(child);
            let mut stdin = child
                .0
                .stdin
                .take()
                .ok_or_else(|| invalid("the extraction worker has no stdin"))?;
            let stdout = child
                .0
                .stdout
                .take()
                .ok_or_else(|| invalid("the extraction worker has no stdout"))?;
            // A worker that refuses early closes the pipe: its answer says why.
            tokio::task::spawn_blocking(move || {
                let _ = stdin
                    .write_all(&line)
                    .and_then(|()| stdin.write_all(&bytes));
            });
            // Text out is bounded by the decompression budget (and JSON escaping).
            let cap = limits
                .max_decompressed
                .saturating_mul(2)
                .saturating_add(1024 * 1024);
            let read = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                stdout.take(cap + 1).read_to_end(&mut out).map(|_| out)
            });
            let out = match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(Ok(out))) => out,
                Ok(_) => return Err(invalid("cannot read the extraction worker's answer")),
                Err(_) => return Err(deadline_exceeded(limits)),
            };
            if out.len() as u64 > cap {
                return Err(invalid("the extracted text is larger than the limit"));
            }
            // The answer is complete once stdout closes; the exit follows at once.
            let status = loop {
                match child.0.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    Ok(None) => return Err(deadline_exceeded(limits)),
                    Err(e) => return Err(invalid(format!("the extraction worker vanished: {e}"))),
                }
            };
            if !status.success() {
                return Err(invalid(worker_failure(status)));
            }
            let answer: Answer = serde_json::from_slice(&out)
                .map_err(|_| invalid("the extraction worker gave no answer"))?;
            answer.into()
        })
    }
}

/// Why a worker that gave no answer stopped, in the operator's words.
fn worker_failure(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        // SIGXCPU: the CPU limit.
        Some(24) => "extraction exceeded its CPU time budget".into(),
        // SIGABRT/SIGSEGV/SIGKILL after an allocation failed under the address-space limit.
        Some(6 | 9 | 11) => "extraction exceeded its memory budget".into(),
        Some(s) => format!("the extraction worker was stopped by signal {s}"),
        None => match status.code() {
            Some(3) => "the extraction worker could not limit itself".into(),
            Some(c) => format!("the extraction worker failed (exit code {c})"),
            None => "the extraction worker failed".into(),
        },
    }
}
