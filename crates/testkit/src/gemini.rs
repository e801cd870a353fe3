//! gemini emulator routes (to be filled in).

use axum::Router;

use crate::emulator::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
}
