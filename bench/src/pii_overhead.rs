//! `pii-overhead`: the CPU the PII guard adds per KB of prompt.
//!
//! It runs `pipeline::pii::guard_chat` (scan every message's text, redact in place) in one
//! thread over prompts of 1, 16 and 64 KB in three shapes: ordinary prose with no findings,
//! prose dense with findings (an e-mail, a phone number, a card number and a key every ~200
//! bytes), and a hostile soup of digits, separators and `@` built to exercise every matcher's
//! backtracking limits. Each prompt is cloned per iteration (as a request's body would be
//! parsed fresh); the clone's cost is measured alone and subtracted. The budget is 20 µs per KB.

#[path = "allocator.rs"]
mod allocator;

use std::hint::black_box;
use std::time::Instant;

use access::stages::PiiSettings;
use anyhow::bail;
use wire::openai::{ChatRequest, Message, Role};

const BUDGET_US_PER_KB: f64 = 20.0;

fn prose(n: usize) -> String {
    let words = "the quick brown fox jumps over the lazy dog while our support team reviews \
                 the ticket about invoice 4471 and version 2.3.1 of the mobile app ";
    words.repeat(n / words.len() + 1)[..n].to_string()
}

fn dense(n: usize) -> String {
    let chunk = "Contact jane.doe@example.com or +1 415 555 0100 about card 4111 1111 1111 1111 \
                 and the key sk-proj-abcdefghijklmnop1234 (ssn 123-45-6789) thanks. ";
    let mut s = chunk.repeat(n / chunk.len() + 1);
    s.truncate(n);
    s
}

fn hostile(n: usize) -> String {
    let chunk = "1 2-3.4 (5) @a.b@ 9999999999999999999999 key AAAA0000aaaa1111bbbb +1+2+3 a@a@a ";
    let mut s = chunk.repeat(n / chunk.len() + 1);
    s.truncate(n);
    s
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        model: "gpt-4o".into(),
        messages: vec![Message::text(Role::User, text)],
        ..Default::default()
    }
}

fn per_iter_ns(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 + 1 {
        f();
    }
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() -> anyhow::Result<()> {
    let settings = PiiSettings::default();
    println!("| prompt | size | findings | guard µs | µs per KB |");
    println!("|---|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for (shape, make) in [
        ("prose", prose as fn(usize) -> String),
        ("dense", dense),
        ("hostile", hostile),
    ] {
        for kb in [1usize, 16, 64] {
            let text = make(kb * 1024);
            let req = request(&text);
            let iterations = (20_000 / kb as u32).max(50);
            let clone_ns = per_iter_ns(iterations, || {
                black_box(req.clone());
            });
            let mut findings = 0;
            let total_ns = per_iter_ns(iterations, || {
                let mut r = req.clone();
                findings = pipeline::pii::guard_chat(black_box(&mut r), &settings).total();
                black_box(r);
            });
            let guard_us = (total_ns - clone_ns).max(0.0) / 1000.0;
            let per_kb = guard_us / kb as f64;
            worst = worst.max(per_kb);
            println!("| {shape} | {kb} KB | {findings} | {guard_us:.2} | {per_kb:.2} |");
        }
    }
    println!();
    println!("worst case: {worst:.2} µs per KB (budget {BUDGET_US_PER_KB} µs)");
    if worst > BUDGET_US_PER_KB {
        bail!("the PII guard costs {worst:.2} µs per KB, over the {BUDGET_US_PER_KB} µs budget");
    }
    Ok(())
}
