use super::*;

fn entry(name: &str, kind: &str, models: &[&str], priority: i64) -> ProviderEntry {
    ProviderEntry {
        name: name.into(),
        kind: ProviderKind::parse(kind).unwrap_or(ProviderKind::OpenAi),
        models: models.iter().map(|m| m.to_string()).collect(),
        priority,
    }
}

fn table() -> RoutingTable {
    RoutingTable::new(
        vec![
            entry("oai", "openai", &[], 0),
            entry("claude", "anthropic", &[], 0),
            entry("gem", "gemini", &[], 0),
            entry("co", "cohere", &[], 0),
            entry("low", "openai_compatible", &["llama-3"], 1),
            entry("high", "openai_compatible", &["llama-3"], 5),
        ],
        vec![Route::new(
            "gpt-4o",
            vec![Target::new("claude", "claude-x")],
        )],
    )
}

fn first(t: &RoutingTable, m: &str) -> Option<(String, String)> {
    t.resolve(m).ok().and_then(|r| {
        r.targets
            .first()
            .map(|t| (t.provider.clone(), t.model.clone()))
    })
}

#[test]
fn default_patterns_pick_the_vendor() {
    let t = table();
    assert_eq!(
        first(&t, "gpt-4o-mini"),
        Some(("oai".into(), "gpt-4o-mini".into()))
    );
    assert_eq!(first(&t, "o3-mini"), Some(("oai".into(), "o3-mini".into())));
    assert_eq!(
        first(&t, "claude-sonnet-4-5"),
        Some(("claude".into(), "claude-sonnet-4-5".into()))
    );
    assert_eq!(
        first(&t, "gemini-2.0-flash"),
        Some(("gem".into(), "gemini-2.0-flash".into()))
    );
    assert_eq!(
        first(&t, "command-r-plus"),
        Some(("co".into(), "command-r-plus".into()))
    );
}

#[test]
fn an_alias_overrides_the_patterns() {
    assert_eq!(
        first(&table(), "gpt-4o"),
        Some(("claude".into(), "claude-x".into()))
    );
}

#[test]
fn provider_slash_model_addresses_a_provider_directly() {
    let t = table();
    assert_eq!(
        first(&t, "oai/gpt-4o"),
        Some(("oai".into(), "gpt-4o".into()))
    );
    // Only the first slash splits: upstream names may contain slashes.
    assert_eq!(
        first(&t, "low/meta/llama"),
        Some(("low".into(), "meta/llama".into()))
    );
    assert_eq!(
        t.resolve("nobody/x"),
        Err(RouteError::UnknownProvider(
            "nobody/x".into(),
            "nobody".into()
        ))
    );
}

#[test]
fn unclaimed_names_go_to_the_highest_priority_lister() {
    let t = table();
    assert_eq!(
        first(&t, "llama-3"),
        Some(("high".into(), "llama-3".into()))
    );
    assert_eq!(
        t.resolve("mystery"),
        Err(RouteError::UnknownModel("mystery".into()))
    );
}

#[test]
fn local_models_answer_every_name_only_when_nothing_else_is_configured() {
    let fresh = RoutingTable::new(
        vec![entry("local", "local", &["smollm2", "minilm"], i64::MIN)],
        vec![],
    );
    assert_eq!(
        first(&fresh, "gpt-4o-mini"),
        Some(("local".into(), "gpt-4o-mini".into()))
    );
    assert_eq!(
        first(&fresh, "local/smollm2"),
        Some(("local".into(), "smollm2".into()))
    );
    // A provider name nobody configured stays an error, not a silent local answer.
    assert!(fresh.resolve("openai/gpt-4o").is_err());

    let mixed = RoutingTable::new(
        vec![
            entry("local", "local", &["smollm2"], i64::MIN),
            entry("oai", "openai", &["shared"], 0),
        ],
        vec![],
    );
    assert_eq!(
        first(&mixed, "gpt-4o"),
        Some(("oai".into(), "gpt-4o".into()))
    );
    assert_eq!(
        first(&mixed, "smollm2"),
        Some(("local".into(), "smollm2".into()))
    );
    assert_eq!(
        first(&mixed, "local/smollm2"),
        Some(("local".into(), "smollm2".into()))
    );
    // A misspelt name is an error once real providers exist.
    assert!(mixed.resolve("no-such-model").is_err());
}
