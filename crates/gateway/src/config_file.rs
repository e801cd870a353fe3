//! Config as code: the YAML file named by `GATEWAY_CONFIG`, applied to the store at start (and
//! checked by `gateway config check`). `${VAR}` is replaced by the environment variable's value
//! before parsing; every error names the file, the line and the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use admin::catalog::{ModelDef, ProviderDef, RouterSettings};
use admin::gateway_apis::ApiDef;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub providers: Vec<ProviderDef>,
    #[serde(default)]
    pub models: Vec<ModelDef>,
    /// Circuit breaker policy and the spend figure routing rules read.
    #[serde(default)]
    pub router: Option<RouterSettings>,
    /// Gateway APIs (`default` is the bare `/v1/...`; others are `/{slug}/v1/...`).
    #[serde(default)]
    pub apis: Vec<ApiDef>,
    /// Operators' functions (hooks and function backends), by name.
    #[serde(default)]
    pub functions: Vec<admin::functions::FunctionDef>,
    /// Knowledge bases (their documents are uploaded through the admin API or CLI).
    #[serde(default)]
    pub knowledge_bases: Vec<KbDef>,
}

/// A knowledge base as config: created when missing, its settings updated when present (the
/// embedding model of a base with documents cannot change: the start then fails and says so).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbDef {
    pub name: String,
    #[serde(default = "default_embedding_model")]
    pub embedding_model: String,
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: i64,
    #[serde(default = "default_overlap_tokens")]
    pub overlap_tokens: i64,
}

fn default_embedding_model() -> String {
    "local/minilm".into()
}

fn default_chunk_tokens() -> i64 {
    200
}

fn default_overlap_tokens() -> i64 {
    40
}

impl KbDef {
    pub fn to_input(&self) -> store::knowledge::KbInput {
        store::knowledge::KbInput {
            name: self.name.clone(),
            embedding_model: self.embedding_model.clone(),
            chunk_tokens: self.chunk_tokens,
            overlap_tokens: self.overlap_tokens,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// Reads, interpolates, parses and validates a config file. `existing` are provider names the
/// store already has (a model may target them).
pub fn load(path: &Path, existing: &HashSet<String>) -> Result<ConfigFile, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        field: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &text, &|k| std::env::var(k).ok(), existing)
}

pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    existing: &HashSet<String>,
) -> Result<ConfigFile, ConfigError> {
    let err = |line: usize, field: &str, message: String| ConfigError {
        file: file.to_string(),
        line,
        field: field.to_string(),
        message,
    };
    let (text, used) = interpolate(text, env)
        .map_err(|(line, var)| err(line, "-", format!("environment variable {var} is not set")))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let cfg: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map_or(0, |l| l.line());
        // serde_yaml prefixes the path and appends "at line X column Y": both are in ours.
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg);
        let msg = msg.strip_prefix(&format!("{field}: ")).unwrap_or(msg);
        err(line, &field, redact(msg, &used))
    })?;
    validate(&cfg, existing)
        .map_err(|(path, message)| err(locate(&text, &path), &path, redact(&message, &used)))?;
    Ok(cfg)
}

/// Puts `${VAR}` back wherever an interpolated value would appear in an error message: a
/// variable meant for `api_key` but written into another field must not leak through the error.
fn redact(message: &str, used: &[(String, String)]) -> String {
    let mut out = message.to_string();
    for (name, value) in used {
        if !value.is_empty() {
            out = out.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    out
}

fn validate(cfg: &ConfigFile, existing: &HashSet<String>) -> Result<(), (String, String)> {
    let mut names = existing.clone();
    let mut seen = HashSet::new();
    for (i, p) in cfg.providers.iter().enumerate() {
        let path = format!("providers[{i}]");
        p.spec(&path).map_err(|e| (e.path, e.message))?;
        if !seen.insert(p.name.clone()) {
            return Err((
                format!("{path}.name"),
                format!("provider '{}' is defined twice", p.name),
            ));
        }
        names.insert(p.name.clone());
    }
    if let Some(r) = &cfg.router {
        r.check("router").map_err(|e| (e.path, e.message))?;
    }
    let mut functions = HashSet::new();
    for (i, f) in cfg.functions.iter().enumerate() {
        let path = format!("functions[{i}]");
        if !access::stages::valid_function_name(&f.name) {
            return Err((
                format!("{path}.name"),
                "1-64 letters, digits, '-' or '_'".into(),
            ));
        }
        if !(1..=30_000).contains(&f.deadline_ms) {
            return Err((format!("{path}.deadline_ms"), "between 1 and 30000".into()));
        }
        if !matches!(f.failure_mode.as_str(), "fail_open" | "fail_closed") {
            return Err((
                format!("{path}.failure_mode"),
                "fail_open or fail_closed".into(),
            ));
        }
        if f.secret.as_ref().is_none_or(|s| s.expose().len() < 16) {
            return Err((
                format!("{path}.secret"),
                "required, at least 16 characters".into(),
            ));
        }
        if !functions.insert(f.name.clone()) {
            return Err((
                format!("{path}.name"),
                format!("function '{}' is defined twice", f.name),
            ));
        }
    }
    let mut bases = HashSet::new();
    for (i, kb) in cfg.knowledge_bases.iter().enumerate() {
        let path = format!("knowledge_bases[{i}]");
        if let Err(store::StoreError::Invalid(m)) = kb.to_input().check() {
            let (field, message) = m.split_once(": ").unwrap_or(("name", m.as_str()));
            return Err((format!("{path}.{field}"), message.to_string()));
        }
        if !bases.insert(kb.name.clone()) {
            return Err((
                format!("{path}.name"),
                format!("knowledge base '{}' is defined twice", kb.name),
            ));
        }
    }
    let mut slugs = HashSet::new();
    for (i, a) in cfg.apis.iter().enumerate() {
        let path = format!("apis[{i}]");
        a.check(&path).map_err(|e| (e.path, e.message))?;
        if let Some((field, name)) = a
            .api()
            .settings
            .functions()
            .find(|(_, n)| !functions.contains(*n))
        {
            return Err((
                format!("{path}.{field}"),
                format!("no function named '{name}' in functions:"),
            ));
        }
        if !slugs.insert(a.slug.clone()) {
            return Err((
                format!("{path}.slug"),
                format!("gateway API '{}' is defined twice", a.slug),
            ));
        }
    }
    let mut models = HashSet::new();
    for (i, m) in cfg.models.iter().enumerate() {
        let path = format!("models[{i}]");
        m.check(&path, &names).map_err(|e| (e.path, e.message))?;
        if !models.insert(m.name.clone()) {
            return Err((
                format!("{path}.name"),
                format!("model '{}' is defined twice", m.name),
            ));
        }
    }
    Ok(())
}

/// The variables an interpolation used, with their values (for [`redact`]).
type Used = Vec<(String, String)>;

/// Replaces `${VAR}` outside comments; `$${` escapes a literal `${`. Returns the line and name
/// of the first unset variable.
fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Used), (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut used = Used::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // A comment is everything from a `#` at the start or after white space.
        let cut = line
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with([' ', '\t'])))
            .map_or(line.len(), |(i, _)| i);
        let (mut rest, comment) = line.split_at(cut);
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            match env(name) {
                Some(v) => {
                    out.push_str(&v);
                    used.push((name.to_string(), v));
                }
                None => return Err((n + 1, name.to_string())),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok((out, used))
}

/// The line (1-based) where a field path such as `models[1].targets[0].provider` is written, in
/// block-style YAML; the nearest ancestor found when the exact spot is not (flow style).
fn locate(text: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut from = 0usize;
    let mut min_indent = 0usize;
    let mut found = 0usize;
    for seg in path.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        // The key, at an indentation deeper than its parent's, after the parent's line.
        let Some(at) = (from..lines.len()).find(|&i| {
            let l = lines[i];
            let t = l.trim_start().trim_start_matches("- ");
            indent(l) >= min_indent
                && (t.starts_with(&format!("{key}:")) || t.starts_with(&format!("{{{key}:")))
        }) else {
            break;
        };
        found = at + 1;
        from = at;
        min_indent = indent(lines[at]);
        if let Some(idx) = index {
            // The idx-th list item under the key.
            let mut count = 0;
            let mut hit = None;
            for (i, l) in lines.iter().enumerate().skip(at + 1) {
                let t = l.trim_start();
                if !t.is_empty()
                    && !t.starts_with('#')
                    && indent(l) <= min_indent
                    && !t.starts_with("- ")
                {
                    break;
                }
                if t.starts_with("- ") {
                    if count == idx {
                        hit = Some(i);
                        break;
                    }
                    count += 1;
                }
            }
            match hit {
                Some(i) => {
                    found = i + 1;
                    from = i;
                    min_indent = indent(lines[i]);
                }
                None => break,
            }
        }
    }
    found.max(1)
}

pub fn path_from_env() -> Option<PathBuf> {
    std::env::var("GATEWAY_CONFIG")
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests;
