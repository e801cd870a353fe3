//! Where the test models are: `scripts/test-models.sh` prints the variables.

use std::path::PathBuf;

/// The path in `var`; without it the test fails, unless `GATEWAY_TEST_MODELS=skip` (then `None`
/// and the test returns early).
#[allow(clippy::panic, reason = "a test without its model must fail loudly")]
pub fn model_path(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var("GATEWAY_TEST_MODELS").as_deref() == Ok("skip") => {
            eprintln!("{var} is not set and GATEWAY_TEST_MODELS=skip: skipping");
            None
        }
        _ => panic!(
            "{var} is not set: run `eval \"$(scripts/test-models.sh)\"` first \
             (or set GATEWAY_TEST_MODELS=skip to skip the model tests)"
        ),
    }
}
