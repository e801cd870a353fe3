//! Extraction in the sandboxed child process (`gateway extract-worker`): the same text as in
//! process, and a worker that blows its memory budget, hangs or dies ends in a clear error
//! while the gateway's own process is untouched.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed setup must fail the test loudly"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use knowledge::extract::{ExtractError, Limits};
use knowledge::ingest::{Extractor, InProcess};
use knowledge::sandbox::Subprocess;

fn worker() -> Subprocess {
    Subprocess {
        program: PathBuf::from(env!("CARGO_BIN_EXE_gateway")),
    }
}

const DOC: &str = "# Refunds\n\nRefunds are issued within fourteen days.\n\n# Shipping\n\nParcels travel for three days.";

#[tokio::test]
async fn the_worker_extracts_what_the_gateway_would() {
    let limits = Limits::default();
    for (name, bytes) in [
        ("faq.md", DOC.as_bytes().to_vec()),
        (
            "data.json",
            br#"{"a": {"b": [1, 2, "three"]}, "c": "text"}"#.to_vec(),
        ),
        (
            "page.html",
            b"<html><body><h1>Title</h1><p>Hello <b>world</b></p></body></html>".to_vec(),
        ),
    ] {
        let inside = InProcess.extract(name, bytes.clone(), &limits).await;
        let outside = worker().extract(name, bytes, &limits).await;
        assert_eq!(outside, inside, "{name}");
        assert!(outside.is_ok(), "{name}: {outside:?}");
    }
}

#[tokio::test]
async fn refusals_come_back_as_the_same_errors() {
    let limits = Limits::default();
    let e = worker()
        .extract("x.exe", b"MZ".to_vec(), &limits)
        .await
        .unwrap_err();
    assert!(matches!(e, ExtractError::Unsupported(_)), "{e:?}");
    let small = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let e = worker()
        .extract("a.txt", vec![b'a'; 100], &small)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ExtractError::TooLarge {
            size: 100,
            limit: 10
        }
    );
}

#[tokio::test]
async fn a_document_over_the_memory_budget_ends_in_an_error() {
    // Five million numbers parse into a value tree of well over 100 MB; the budget is 16 MB.
    let mut json = String::from("[");
    for i in 0..2_500_000 {
        json.push_str(if i == 0 { "0" } else { ",0" });
    }
    json.push(']');
    let limits = Limits {
        max_memory: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let started = Instant::now();
    let e = worker()
        .extract("numbers.json", json.clone().into_bytes(), &limits)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ExtractError::Invalid("extraction exceeded its memory budget".into())
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The budget, not the document, was the problem: with the default one it extracts.
    let ok = worker()
        .extract("numbers.json", json.into_bytes(), &Limits::default())
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

fn script(dir: &tempfile::TempDir, body: &str) -> Subprocess {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("worker.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Subprocess { program: path }
}

#[tokio::test]
async fn a_hanging_worker_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        deadline: Duration::from_millis(500),
        ..Limits::default()
    };
    let started = Instant::now();
    // `exec`: the worker is one process, as the gateway's own is (a shell's child would keep
    // the pipe open after the shell is killed).
    let e = script(&dir, "exec sleep 30")
        .extract("faq.md", DOC.as_bytes().to_vec(), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ExtractError::Invalid(m) if m.contains("deadline")),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_worker_that_dies_or_babbles_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    let e = script(&dir, "cat >/dev/null; exit 7")
        .extract("faq.md", DOC.as_bytes().to_vec(), &limits)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ExtractError::Invalid("the extraction worker failed (exit code 7)".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let e = script(&dir, "cat >/dev/null; echo not json")
        .extract("faq.md", DOC.as_bytes().to_vec(), &limits)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ExtractError::Invalid("the extraction worker gave no answer".into())
    );
}
