//! Test kit: provider emulators and fixtures (dev only).
//!
//! One [`emulator::Emulator`] serves every vendor's routes on one loopback port, so a test or the
//! benchmark starts one server for all providers:
//! - [`openai`]: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`, and the Azure
//!   deployment paths (`/openai/deployments/{d}/…?api-version=`) with the `api-key` header.
//! - [`anthropic`]: `POST /v1/messages` with `x-api-key` and `anthropic-version`.
//! - [`moderation`]: OpenAI's `POST /v1/moderations` (deterministic trigger phrases).
//! - [`gemini`]: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//!   `:embedContent`, `:batchEmbedContents`, `GET /v1beta/models`, with `x-goog-api-key` or `?key=`.
//!
//! Answers are deterministic ([`reply`]); faults are scripted through [`emulator::Fault`] — in
//! process with [`emulator::Emulator::push_fault`], or over HTTP with `POST /_emulator/faults`:
//! error statuses in each vendor's own body, delays, hangs, connections closed before a byte,
//! broken streams, refused prefills, for a number of requests or for a time window.
//!
//! Each vendor request is logged ([`emulator::Recorded`], `GET /_emulator/requests`) with when it
//! arrived and how its answer ended (completed, cancelled by the client, faulted on purpose), so a
//! test can count and space the attempts a gateway made and see that it let go of abandoned ones.

pub mod anthropic;
pub mod emulator;
pub mod gemini;
pub mod models;
pub mod moderation;
pub mod openai;
pub mod reply;

pub use emulator::{Emulator, EmulatorConfig, Fault, FaultRule, Outcome, Recorded, Vendor};
