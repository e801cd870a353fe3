//! `gateway key|consumer|api|token …`: consumers, their keys, gateway APIs and admin tokens,
//! through the admin API. Raw keys and tokens are printed once, when issued.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::AdminClient;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Issue a gateway key (printed once).
    Create {
        #[arg(long)]
        label: String,
        /// Requests per minute for this key.
        #[arg(long)]
        rate_limit: Option<i64>,
        /// Consumer id or name the key belongs to.
        #[arg(long)]
        consumer: Option<String>,
        /// Gateway API slugs the key is valid for (repeat; default: all).
        #[arg(long = "api")]
        apis: Vec<String>,
        /// Models the key may call (repeat; default: all).
        #[arg(long = "model")]
        models: Vec<String>,
        /// When the key stops working: a duration from now (`30d`, `12h`) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
    },
    List {
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Revoke a key: every instance refuses it within a second.
    Revoke { id: String },
    /// Issue a replacement; the old key keeps working for the grace period (default 1d).
    Rotate {
        id: String,
        #[arg(long, default_value = "1d")]
        grace: String,
    },
}

#[derive(Subcommand)]
pub enum ConsumerCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        external_id: Option<String>,
        /// A JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// Requests per minute across all the consumer's keys.
        #[arg(long)]
        rpm: Option<i64>,
        /// Tokens per minute across all the consumer's keys.
        #[arg(long)]
        tpm: Option<i64>,
    },
    /// Set (or with `--clear`, remove) the consumer-wide RPM/TPM limits.
    Limits {
        id: String,
        #[arg(long)]
        rpm: Option<i64>,
        #[arg(long)]
        tpm: Option<i64>,
        #[arg(long)]
        clear: bool,
    },
    List,
    Show {
        id: String,
    },
    /// Refuse the consumer's keys and tokens until activated again.
    Suspend {
        id: String,
    },
    Activate {
        id: String,
    },
    /// Delete the consumer; its keys are revoked.
    Delete {
        id: String,
    },
    /// Subscribe the consumer to a plan (or move it to another one).
    Subscribe {
        consumer: String,
        plan: String,
    },
    /// Wallet balances (USD and tokens).
    Wallet {
        consumer: String,
    },
    /// Credit the prepaid wallet.
    TopUp {
        consumer: String,
        #[arg(long)]
        usd: Option<String>,
        #[arg(long)]
        tokens: Option<i64>,
        /// Retrying with the same key credits once.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// The consumer's invoice (current or previous period).
    Invoice {
        consumer: String,
        #[arg(long)]
        csv: bool,
        #[arg(long, default_value = "current")]
        period: String,
    },
}

#[derive(Subcommand)]
pub enum ApiCmd {
    /// Publish a gateway API at `/{slug}/v1/...`.
    Create {
        slug: String,
        #[command(flatten)]
        opts: ApiOpts,
    },
    /// Change an API's settings (its URL stays the same).
    Update {
        slug: String,
        #[command(flatten)]
        opts: ApiOpts,
    },
    List,
    Show {
        slug: String,
    },
    Delete {
        slug: String,
    },
}

#[derive(clap::Args)]
pub struct ApiOpts {
    #[arg(long)]
    name: Option<String>,
    /// public, keys, jwt or keys_or_jwt.
    #[arg(long)]
    auth: Option<String>,
    /// CIDR allowed to call (repeat); replaces the list.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// CIDR refused (repeat); replaces the list.
    #[arg(long = "block")]
    block: Vec<String>,
    /// A JSON file with the JWT settings (jwks_url, issuer, audience, …).
    #[arg(long)]
    jwt_file: Option<std::path::PathBuf>,
    #[arg(long)]
    disabled: bool,
    /// A JSON file with stage settings (`pii`, `moderation`, `rag`, `pre_hook`,
    /// `post_hook`, `function`), merged into the API.
    #[arg(long)]
    stages_file: Option<std::path::PathBuf>,
    /// Answer from this knowledge base (the RAG stage, default retrieval settings; tune them
    /// with --stages-file `{"rag": {...}}`).
    #[arg(long)]
    rag: Option<String>,
    /// The function called before the model.
    #[arg(long)]
    pre_hook: Option<String>,
    /// The function told about each response.
    #[arg(long)]
    post_hook: Option<String>,
    /// The function that replaces the model (a function-backed API).
    #[arg(long)]
    function: Option<String>,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Issue an admin token (printed once).
    Create {
        #[arg(long)]
        name: String,
        /// admin or viewer (read only).
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SecretsCmd {
    /// Re-encrypt every stored secret under a new key, with no downtime. With the key in the
    /// data directory, a new key is generated and written there. With GATEWAY_ENCRYPTION_KEY,
    /// first restart every instance with the new key in GATEWAY_ENCRYPTION_KEY and the old one
    /// in GATEWAY_ENCRYPTION_KEY_PREVIOUS, then run this.
    RotateKey,
}

pub async fn secrets(c: &AdminClient, cmd: SecretsCmd) -> anyhow::Result<()> {
    match cmd {
        SecretsCmd::RotateKey => {
            let v = c.post("/admin/secrets/rotate-key", json!({})).await?;
            println!(
                "secrets sealed under key {}: {} re-encrypted",
                s(&v, "key_id"),
                v["resealed"].as_u64().unwrap_or(0)
            );
            if v["generated"].as_bool() == Some(true) {
                eprintln!(
                    "a new key was generated and written to the data directory's encryption.key"
                );
            }
            let previous: Vec<&str> = v["previous_key_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !previous.is_empty() {
                eprintln!(
                    "older keys still accepted for reading: {} (remove them once every instance runs with the new key)",
                    previous.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// `30d`, `12h`, `90m`, `45s` as seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let Ok(n) = n.parse::<u64>() else {
        bail!("'{s}' is not a duration like 30d, 12h or 90m");
    };
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("'{s}' is not a duration like 30d, 12h or 90m"),
    };
    Ok(n.saturating_mul(mult))
}

fn expires_at(v: &str) -> anyhow::Result<String> {
    if v.parse::<jiff::Timestamp>().is_ok() {
        return Ok(v.to_string());
    }
    let secs = parse_duration(v).with_context(|| {
        format!("--expires: '{v}' is neither a duration (30d, 12h) nor an RFC 3339 time")
    })?;
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(
            i64::try_from(secs).unwrap_or(i64::MAX),
        ))
        .context("expiry is too far in the future")?;
    Ok(at.to_string())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn time(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_i64)
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or("-".into(), |t| t.strftime("%Y-%m-%d %H:%M").to_string())
}

fn print_issued(v: &Value) {
    println!("{}", s(v, "key"));
    eprintln!(
        "key {} ({}) created: it is shown only this once, store it now",
        s(v, "id"),
        s(v, "prefix")
    );
}

pub async fn key(c: &AdminClient, cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create {
            label,
            rate_limit,
            consumer,
            apis,
            models,
            expires,
        } => {
            let mut body = json!({"label": label, "apis": apis, "models": models});
            if let Some(r) = rate_limit {
                body["rate_limit"] = json!(r);
            }
            if let Some(c) = consumer {
                body["consumer"] = json!(c);
            }
            if let Some(e) = expires {
                body["expires_at"] = json!(expires_at(&e)?);
            }
            print_issued(&c.post("/admin/keys", body).await?);
        }
        KeyCmd::List { consumer } => {
            let path = match consumer {
                Some(c) => format!("/admin/keys?consumer={c}"),
                None => "/admin/keys".into(),
            };
            let v = c.get(&path).await?;
            println!(
                "{:<38} {:<14} {:<20} {:<9} {:<17} {:<17}",
                "ID", "PREFIX", "LABEL", "STATE", "EXPIRES", "LAST USED"
            );
            for k in v.as_array().into_iter().flatten() {
                let state = if k.get("revoked_at").is_some_and(|r| !r.is_null()) {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<38} {:<14} {:<20} {:<9} {:<17} {:<17}",
                    s(k, "id"),
                    s(k, "prefix"),
                    s(k, "label"),
                    state,
                    time(k, "expires_at"),
                    time(k, "last_used_at")
                );
            }
        }
        KeyCmd::Revoke { id } => {
            c.post(&format!("/admin/keys/{id}/revoke"), json!({}))
                .await?;
            println!("key {id} revoked");
        }
        KeyCmd::Rotate { id, grace } => {
            let grace = parse_duration(&grace)?;
            let v = c
                .post(
                    &format!("/admin/keys/{id}/rotate"),
                    json!({"grace_secs": grace}),
                )
                .await?;
            print_issued(&v);
            eprintln!("the old key {id} keeps working for {grace} s");
        }
    }
    Ok(())
}

pub async fn consumer(c: &AdminClient, cmd: ConsumerCmd) -> anyhow::Result<()> {
    let set_status = |id: String, status: &'static str| async move {
        let mut cur = c.get(&format!("/admin/consumers/{id}")).await?;
        let body = json!({
            "name": cur["name"].take(), "email": cur["email"].take(),
            "external_id": cur["external_id"].take(), "metadata": cur["metadata"].take(),
            "status": status, "rpm": cur["rpm"].take(), "tpm": cur["tpm"].take(),
        });
        c.call_put(&format!("/admin/consumers/{id}"), body).await?;
        println!("consumer {id} {status}");
        anyhow::Ok(())
    };
    match cmd {
        ConsumerCmd::Limits {
            id,
            rpm,
            tpm,
            clear,
        } => {
            let mut cur = c.get(&format!("/admin/consumers/{id}")).await?;
            let keep = |v: Option<i64>, old: Value| {
                if clear {
                    Value::Null
                } else {
                    v.map_or(old, Value::from)
                }
            };
            let body = json!({
                "name": cur["name"].take(), "email": cur["email"].take(),
                "external_id": cur["external_id"].take(), "metadata": cur["metadata"].take(),
                "status": cur["status"].take(),
                "rpm": keep(rpm, cur["rpm"].take()), "tpm": keep(tpm, cur["tpm"].take()),
            });
            let v = c.call_put(&format!("/admin/consumers/{id}"), body).await?;
            println!("consumer {id}: rpm {} tpm {}", s(&v, "rpm"), s(&v, "tpm"));
        }
        ConsumerCmd::Create {
            name,
            email,
            external_id,
            metadata,
            rpm,
            tpm,
        } => {
            let metadata: Value = match metadata {
                Some(m) => serde_json::from_str(&m).context("--metadata must be a JSON object")?,
                None => json!({}),
            };
            let v = c
                .post(
                    "/admin/consumers",
                    json!({"name": name, "email": email, "external_id": external_id, "metadata": metadata, "rpm": rpm, "tpm": tpm}),
                )
                .await?;
            println!("consumer {} created ({})", s(&v, "name"), s(&v, "id"));
        }
        ConsumerCmd::List => {
            let v = c.get("/admin/consumers").await?;
            println!(
                "{:<38} {:<24} {:<28} {:<10}",
                "ID", "NAME", "EMAIL", "STATUS"
            );
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<24} {:<28} {:<10}",
                    s(r, "id"),
                    s(r, "name"),
                    s(r, "email"),
                    s(r, "status")
                );
            }
        }
        ConsumerCmd::Show { id } => {
            let v = c.get(&format!("/admin/consumers/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ConsumerCmd::Suspend { id } => set_status(id, "suspended").await?,
        ConsumerCmd::Activate { id } => set_status(id, "active").await?,
        ConsumerCmd::Delete { id } => {
            c.delete(&format!("/admin/consumers/{id}")).await?;
            println!("consumer {id} deleted; its keys are revoked");
        }
        ConsumerCmd::Subscribe { consumer, plan } => {
            crate::billing_cli::subscribe(c, &consumer, &plan).await?;
        }
        ConsumerCmd::Wallet { consumer } => crate::billing_cli::wallet(c, &consumer).await?,
        ConsumerCmd::TopUp {
            consumer,
            usd,
            tokens,
            idempotency_key,
            note,
        } => {
            crate::billing_cli::top_up(c, &consumer, usd, tokens, idempotency_key, note).await?;
        }
        ConsumerCmd::Invoice {
            consumer,
            csv,
            period,
        } => crate::billing_cli::invoice(c, &consumer, csv, &period).await?,
    }
    Ok(())
}

fn apply(mut body: Value, o: ApiOpts) -> anyhow::Result<Value> {
    if let Some(n) = o.name {
        body["name"] = json!(n);
    }
    if let Some(a) = o.auth {
        body["auth"] = json!(a);
    }
    if !o.allow.is_empty() || !o.block.is_empty() {
        body["ip"] = json!({"allow": o.allow, "block": o.block});
    }
    if let Some(f) = o.jwt_file {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let jwt: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        body["jwt"] = jwt;
    }
    if o.disabled {
        body["enabled"] = json!(false);
    }
    if let Some(f) = o.stages_file {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let stages: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        for (k, v) in stages.as_object().into_iter().flatten() {
            body[k.as_str()] = v.clone();
        }
    }
    if let Some(kb) = o.rag {
        body["rag"] = json!({"knowledge_base": kb});
    }
    for (k, v) in [
        ("pre_hook", o.pre_hook),
        ("post_hook", o.post_hook),
        ("function", o.function),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    Ok(body)
}

pub async fn api(c: &AdminClient, cmd: ApiCmd) -> anyhow::Result<()> {
    match cmd {
        ApiCmd::Create { slug, opts } => {
            let body = apply(json!({"slug": slug}), opts)?;
            c.post("/admin/apis", body).await?;
            println!("gateway API {slug} published at /{slug}/v1");
        }
        ApiCmd::Update { slug, opts } => {
            let current = c.get(&format!("/admin/apis/{slug}")).await?;
            let body = apply(current, opts)?;
            c.call_put(&format!("/admin/apis/{slug}"), body).await?;
            println!("gateway API {slug} updated");
        }
        ApiCmd::List => {
            let v = c.get("/admin/apis").await?;
            println!(
                "{:<24} {:<12} {:<8} {:<30}",
                "SLUG", "AUTH", "ENABLED", "PATH"
            );
            for a in v.as_array().into_iter().flatten() {
                let slug = s(a, "slug");
                let path = if slug == "default" {
                    "/v1".to_string()
                } else {
                    format!("/{slug}/v1")
                };
                let enabled = a.get("enabled").and_then(Value::as_bool).unwrap_or(true);
                println!(
                    "{:<24} {:<12} {:<8} {:<30}",
                    slug,
                    s(a, "auth"),
                    enabled,
                    path
                );
            }
        }
        ApiCmd::Show { slug } => {
            let v = c.get(&format!("/admin/apis/{slug}")).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ApiCmd::Delete { slug } => {
            c.delete(&format!("/admin/apis/{slug}")).await?;
            println!("gateway API {slug} deleted");
        }
    }
    Ok(())
}

pub async fn token(c: &AdminClient, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let v = c
                .post("/admin/tokens", json!({"name": name, "role": role}))
                .await?;
            println!("{}", s(&v, "token"));
            eprintln!(
                "admin token {} ({}, {}) created: shown only this once",
                s(&v, "id"),
                s(&v, "name"),
                s(&v, "role")
            );
        }
        TokenCmd::List => {
            let v = c.get("/admin/tokens").await?;
            println!("{:<38} {:<20} {:<8} {:<9}", "ID", "NAME", "ROLE", "STATE");
            for t in v.as_array().into_iter().flatten() {
                let state = if t.get("revoked_at").is_some_and(|r| !r.is_null()) {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<38} {:<20} {:<8} {:<9}",
                    s(t, "id"),
                    s(t, "name"),
                    s(t, "role"),
                    state
                );
            }
        }
        TokenCmd::Revoke { id } => {
            c.post(&format!("/admin/tokens/{id}/revoke"), json!({}))
                .await?;
            println!("admin token {id} revoked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3_600);
        assert_eq!(parse_duration("90m").unwrap(), 5_400);
        assert_eq!(parse_duration("45").unwrap(), 45);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn expiry_accepts_a_time_or_a_duration() {
        assert_eq!(
            expires_at("2027-01-01T00:00:00Z").unwrap(),
            "2027-01-01T00:00:00Z"
        );
        let later: jiff::Timestamp = expires_at("1d").unwrap().parse().unwrap();
        let diff = later.as_second() - jiff::Timestamp::now().as_second();
        assert!((86_390..=86_400).contains(&diff), "{diff}");
    }
}
