//! The models of one models directory, loaded on first use and kept: what the `local` provider
//! serves. Every call is synchronous and CPU-bound; callers run it on a blocking thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::catalog::{self, Known, Task};
use crate::chat::ChatModel;
use crate::embed::BertEmbedder;
use crate::error::ModelError;

pub struct Engine {
    dir: PathBuf,
    chat: Mutex<HashMap<&'static str, Arc<ChatModel>>>,
    embed: Mutex<HashMap<&'static str, Arc<BertEmbedder>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

impl Engine {
    pub fn new(dir: impl Into<PathBuf>) -> Engine {
        Engine {
            dir: dir.into(),
            chat: Mutex::default(),
            embed: Mutex::default(),
        }
    }

    /// One engine per directory for the whole process: configuration swaps rebuild providers,
    /// and a model loaded once (hundreds of MB) must not be loaded again.
    pub fn shared(dir: &Path) -> Arc<Engine> {
        static ENGINES: OnceLock<Mutex<HashMap<PathBuf, Arc<Engine>>>> = OnceLock::new();
        let mut engines = ENGINES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        engines
            .entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(Engine::new(dir)))
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The known models whose files are all present.
    pub fn installed(&self) -> Vec<&'static Known> {
        catalog::KNOWN
            .iter()
            .filter(|k| k.installed(&self.dir))
            .collect()
    }

    /// The chat model `name` (loaded now if it is not yet).
    pub fn chat_model(&self, name: &str) -> Result<(&'static Known, Arc<ChatModel>), ModelError> {
        let known = self.known(name, "chat", |t| t == Task::Chat)?;
        let mut cache = self
            .chat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = cache.get(known.name) {
            return Ok((known, m.clone()));
        }
        let m = Arc::new(ChatModel::load(
            &known.dir(&self.dir).join(catalog::GGUF_FILE),
        )?);
        cache.insert(known.name, m.clone());
        Ok((known, m))
    }

    /// The embedder `name` (loaded now if it is not yet).
    pub fn embedder(&self, name: &str) -> Result<(&'static Known, Arc<BertEmbedder>), ModelError> {
        let known = self.known(name, "embedding", |t| matches!(t, Task::Embed(_)))?;
        let Task::Embed(pooling) = known.task else {
            return Err(ModelError::WrongTask {
                name: name.to_string(),
                wanted: "embedding",
            });
        };
        let mut cache = self
            .embed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = cache.get(known.name) {
            return Ok((known, m.clone()));
        }
        let m = Arc::new(BertEmbedder::load(&known.dir(&self.dir), Some(pooling))?);
        cache.insert(known.name, m.clone());
        Ok((known, m))
    }

    fn known(
        &self,
        name: &str,
        wanted: &'static str,
        task: impl Fn(Task) -> bool,
    ) -> Result<&'static Known, ModelError> {
        let known = catalog::find(name).ok_or_else(|| ModelError::Unknown {
            name: name.to_string(),
        })?;
        if !task(known.task) {
            return Err(ModelError::WrongTask {
                name: name.to_string(),
                wanted,
            });
        }
        if !known.installed(&self.dir) {
            return Err(ModelError::NotInstalled {
                name: known.name,
                dir: self.dir.clone(),
            });
        }
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::new(dir.path());
        let err = e.chat_model("smollm2").unwrap_err().to_string();
        assert!(err.contains("gateway models pull smollm2"), "{err}");
        let err = e.embedder("smollm2").unwrap_err().to_string();
        assert!(err.contains("not a local embedding model"), "{err}");
        assert!(matches!(
            e.embedder("nope"),
            Err(ModelError::Unknown { .. })
        ));
        assert!(e.installed().is_empty());
        assert!(Arc::ptr_eq(
            &Engine::shared(dir.path()),
            &Engine::shared(dir.path())
        ));
    }
}
