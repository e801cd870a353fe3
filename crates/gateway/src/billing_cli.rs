//! `gateway plan …`, `gateway price …` and the money subcommands of `gateway consumer …`,
//! all through the admin API.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::AdminClient;

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per CLI invocation; boxing buys nothing"
)]
pub enum PlanCmd {
    /// Create a plan for a gateway API. Prices in dollars; `--plan-json` sets any other field.
    Create {
        #[arg(long)]
        api: String,
        #[arg(long)]
        name: String,
        /// free, flat, metered or tiered.
        #[arg(long)]
        kind: String,
        /// Tokens per period (the whole allowance of free/flat; included in metered/tiered).
        #[arg(long)]
        allowance: Option<u64>,
        /// Price per 30-day period (flat) or base price (metered, tiered), in dollars.
        #[arg(long)]
        price_usd: Option<String>,
        /// Metered: dollars per 1,000 tokens beyond the allowance.
        #[arg(long)]
        overage_per_1k_usd: Option<String>,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
        #[arg(long)]
        hard_cap: Option<u64>,
        #[arg(long)]
        trial_days: Option<u32>,
        /// Requests draw on the consumer's prepaid wallet: usd or tokens.
        #[arg(long)]
        wallet: Option<String>,
        /// A JSON object merged into the plan (e.g. tiers, models).
        #[arg(long)]
        plan_json: Option<String>,
    },
    List {
        #[arg(long)]
        api: Option<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum PriceCmd {
    /// Built-in prices and overrides, per million tokens.
    List,
    /// Override a model's price (`gpt-4o` or `provider/model`), dollars per million tokens.
    Set {
        model: String,
        #[arg(long)]
        input: f64,
        #[arg(long)]
        output: f64,
        #[arg(long)]
        cached_input: Option<f64>,
    },
    /// Remove an override (the built-in price applies again).
    Unset { model: String },
}

fn micros(flag: &str, v: &str) -> anyhow::Result<i64> {
    billing::money::parse_micros(v)
        .with_context(|| format!("{flag}: a dollar amount like 5 or 0.002 (at most six decimals)"))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

pub async fn plan(c: &AdminClient, cmd: PlanCmd) -> anyhow::Result<()> {
    match cmd {
        PlanCmd::Create {
            api,
            name,
            kind,
            allowance,
            price_usd,
            overage_per_1k_usd,
            rpm,
            tpm,
            hard_cap,
            trial_days,
            wallet,
            plan_json,
        } => {
            let mut plan = json!({"kind": kind});
            let set = |plan: &mut Value, k: &str, v: Value| {
                if !v.is_null() {
                    plan[k] = v;
                }
            };
            set(&mut plan, "allowance_tokens", json!(allowance));
            if let Some(p) = price_usd {
                plan["price_micros"] = json!(micros("--price-usd", &p)?);
            }
            if let Some(p) = overage_per_1k_usd {
                plan["overage_per_1k_micros"] = json!(micros("--overage-per-1k-usd", &p)?);
            }
            set(&mut plan, "rpm", json!(rpm));
            set(&mut plan, "tpm", json!(tpm));
            set(&mut plan, "hard_cap_tokens", json!(hard_cap));
            set(&mut plan, "trial_days", json!(trial_days));
            set(&mut plan, "wallet", json!(wallet));
            if let Some(extra) = plan_json {
                let extra: Value =
                    serde_json::from_str(&extra).context("--plan-json must be a JSON object")?;
                for (k, v) in extra.as_object().into_iter().flatten() {
                    plan[k] = v.clone();
                }
            }
            let v = c
                .post(
                    "/admin/plans",
                    json!({"api": api, "name": name, "plan": plan}),
                )
                .await?;
            println!(
                "plan {} created for API {} ({})",
                s(&v, "name"),
                s(&v, "api"),
                s(&v, "id")
            );
        }
        PlanCmd::List { api } => {
            let path = match api {
                Some(a) => format!("/admin/plans?api={a}"),
                None => "/admin/plans".into(),
            };
            let v = c.get(&path).await?;
            println!(
                "{:<38} {:<16} {:<16} {:<8} {:>10}",
                "ID", "API", "NAME", "KIND", "PRICE $"
            );
            for p in v.as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<16} {:<16} {:<8} {:>10}",
                    s(p, "id"),
                    s(p, "api"),
                    s(p, "name"),
                    p["plan"]["kind"].as_str().unwrap_or(""),
                    s(p, "price_usd")
                );
            }
        }
        PlanCmd::Delete { id } => {
            c.delete(&format!("/admin/plans/{id}")).await?;
            println!("plan {id} deleted");
        }
    }
    Ok(())
}

pub async fn price(c: &AdminClient, cmd: PriceCmd) -> anyhow::Result<()> {
    match cmd {
        PriceCmd::List => {
            let v = c.get("/admin/prices").await?;
            println!(
                "{:<36} {:>10} {:>10} {:>10}  SOURCE",
                "MODEL", "INPUT", "OUTPUT", "CACHED"
            );
            for p in v.as_array().into_iter().flatten() {
                println!(
                    "{:<36} {:>10} {:>10} {:>10}  {}",
                    s(p, "model"),
                    p["input"],
                    p["output"],
                    if p["cached_input"].is_null() {
                        "-".to_string()
                    } else {
                        p["cached_input"].to_string()
                    },
                    s(p, "source")
                );
            }
        }
        PriceCmd::Set {
            model,
            input,
            output,
            cached_input,
        } => {
            c.call_put(
                &format!("/admin/prices/{model}"),
                json!({"input": input, "output": output, "cached_input": cached_input}),
            )
            .await?;
            println!("price of {model} set (USD per million tokens: {input} in, {output} out)");
        }
        PriceCmd::Unset { model } => {
            c.delete(&format!("/admin/prices/{model}")).await?;
            println!("price override of {model} removed");
        }
    }
    Ok(())
}

pub async fn subscribe(c: &AdminClient, consumer: &str, plan: &str) -> anyhow::Result<()> {
    let v = c
        .post(
            &format!("/admin/consumers/{consumer}/subscriptions"),
            json!({"plan_id": plan}),
        )
        .await?;
    println!(
        "consumer {consumer} subscribed to plan {} on API {}",
        s(&v, "plan_id"),
        s(&v, "api")
    );
    Ok(())
}

pub async fn wallet(c: &AdminClient, consumer: &str) -> anyhow::Result<()> {
    let v = c
        .get(&format!("/admin/consumers/{consumer}/wallet"))
        .await?;
    let u = &v["usd"];
    println!(
        "USD     balance {:>14}  reserved {:>12}  available {:>14}",
        s(u, "balance_usd"),
        s(u, "reserved_usd"),
        s(u, "available_usd")
    );
    let t = &v["tokens"];
    println!(
        "tokens  balance {:>14}  reserved {:>12}  available {:>14}",
        t["balance"], t["reserved"], t["available"]
    );
    Ok(())
}

pub async fn top_up(
    c: &AdminClient,
    consumer: &str,
    usd: Option<String>,
    tokens: Option<i64>,
    idempotency_key: Option<String>,
    note: Option<String>,
) -> anyhow::Result<()> {
    let mut body = match (usd, tokens) {
        (Some(u), None) => json!({"amount_usd": u}),
        (None, Some(t)) => json!({"tokens": t}),
        _ => anyhow::bail!("give exactly one of --usd and --tokens"),
    };
    if let Some(n) = note {
        body["note"] = json!(n);
    }
    let headers: Vec<(&str, &str)> = idempotency_key
        .as_deref()
        .map(|k| vec![("idempotency-key", k)])
        .unwrap_or_default();
    let v = c
        .post_with(
            &format!("/admin/consumers/{consumer}/wallet/top-up"),
            body,
            &headers,
        )
        .await?;
    let w = &v["wallet"];
    let balance = if w["unit"] == "usd" {
        format!("${}", s(w, "balance_usd"))
    } else {
        format!("{} tokens", w["balance"])
    };
    if v["replayed"].as_bool() == Some(true) {
        println!("already credited under this idempotency key; balance {balance}");
    } else {
        println!("credited; balance {balance}");
    }
    Ok(())
}

pub async fn invoice(
    c: &AdminClient,
    consumer: &str,
    csv: bool,
    period: &str,
) -> anyhow::Result<()> {
    let path = format!("/admin/consumers/{consumer}/invoice?period={period}");
    if csv {
        print!("{}", c.get_text(&format!("{path}&format=csv")).await?);
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(&c.get(&path).await?)?);
    Ok(())
}
