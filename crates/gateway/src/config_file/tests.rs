use super::*;

const GOOD: &str = r#"
providers:
  - {name: openai, kind: openai, api_key: "${OPENAI_API_KEY}"}
  - {name: claude, kind: anthropic, api_key: "${ANTHROPIC_API_KEY}"}
  - {name: local-vllm, kind: openai_compatible, base_url: "http://127.0.0.1:8000/v1"}
models:
  - name: smart                      # what consumers send as "model"
    targets: [{provider: claude, model: claude-sonnet-4-5}]
    fallbacks: {any: [gpt-4o]}
  - name: gpt-4o
    targets: [{provider: openai, model: gpt-4o}]
"#;

fn env(k: &str) -> Option<String> {
    match k {
        "OPENAI_API_KEY" => Some("sk-openai".into()),
        "ANTHROPIC_API_KEY" => Some("sk-ant".into()),
        _ => None,
    }
}

fn parse_str(text: &str) -> Result<ConfigFile, ConfigError> {
    parse("gw.yaml", text, &env, &HashSet::new())
}

#[test]
fn the_issue_example_loads_with_secrets_interpolated() {
    let cfg = parse_str(GOOD).map_err(|e| e.to_string());
    let cfg = cfg.as_ref().ok();
    assert_eq!(cfg.map(|c| c.providers.len()), Some(3));
    let key = cfg
        .and_then(|c| c.providers[0].api_key.as_ref())
        .map(|k| k.expose().to_string());
    assert_eq!(key.as_deref(), Some("sk-openai"));
    assert_eq!(
        cfg.map(|c| c.models[0].fallbacks.any.clone()),
        Some(vec!["gpt-4o".to_string()])
    );
}

#[test]
fn an_unset_variable_names_its_line() {
    let text = "providers:\n  - name: x\n    kind: openai\n    api_key: ${NOPE}\n";
    let e = parse_str(text).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("gw.yaml:4: -: environment variable NOPE is not set")
    );
}

#[test]
fn an_unknown_field_names_file_line_and_field() {
    let text = "providers:\n  - name: x\n    kind: openai\n    api_kee: abc\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref().map(|e| (e.line, e.field.as_str())),
        Some((4, "providers[0].api_kee"))
    );
    assert!(e.is_some_and(|e| e.message.contains("api_kee")));
}

#[test]
fn a_wrong_type_names_the_field() {
    let text = "providers:\n  - name: x\n    kind: openai\n    priority: high\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref().map(|e| (e.line, e.field.as_str())),
        Some((4, "providers[0].priority"))
    );
}

#[test]
fn a_target_naming_an_unknown_provider_points_at_its_line() {
    let text = "providers:\n  - name: a\n    kind: openai\nmodels:\n  - name: m\n    targets:\n      - provider: b\n        model: x\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref().map(|e| (e.line, e.field.as_str())),
        Some((7, "models[0].targets[0].provider"))
    );
}

#[test]
fn a_bad_kind_lists_the_known_ones() {
    let text = "providers:\n  - name: a\n    kind: openia\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref().map(|e| (e.line, e.field.as_str())),
        Some((3, "providers[0].kind"))
    );
    assert!(e.is_some_and(|e| e.message.contains("azure_openai")));
}

#[test]
fn a_secret_is_not_echoed_in_errors() {
    let text = "providers:\n  - name: a\n    kind: openai\n    api_key: ${OPENAI_API_KEY}\n    priority: [1]\n";
    let e = parse_str(text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(!e.contains("sk-openai"), "{e}");
}

#[test]
fn dollar_dollar_escapes() {
    let out = interpolate("a: $${X} ${OPENAI_API_KEY}\n", &env).map(|(t, _)| t);
    assert_eq!(out, Ok("a: ${X} sk-openai\n".to_string()));
}

#[test]
fn comments_are_not_interpolated() {
    let out = interpolate(
        "# key: ${NOPE}\na: 1 # ${NOPE}\nb: x#${OPENAI_API_KEY}\n",
        &env,
    )
    .map(|(t, _)| t);
    assert_eq!(
        out,
        Ok("# key: ${NOPE}\na: 1 # ${NOPE}\nb: x#sk-openai\n".to_string())
    );
}

#[test]
fn a_secret_in_the_wrong_field_is_not_echoed() {
    for field in [
        "priority: ${OPENAI_API_KEY}",
        "kind: ${OPENAI_API_KEY}",
        "deployments: ${OPENAI_API_KEY}",
    ] {
        let text = format!("providers:\n  - name: a\n    kind: openai\n    {field}\n")
            .replace("kind: openai\n    kind:", "kind:");
        let e = parse_str(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.is_empty() && !e.contains("sk-openai"), "{field}: {e}");
    }
}

const STAGES: &str = r#"
functions:
  - name: guard
    url: https://hooks.example.com/pre
    secret: "${HOOK_SECRET}"
    deadline_ms: 1500
    failure_mode: fail_closed
apis:
  - slug: support
    auth: public
    pii: {redact: true, kinds: [email, card]}
    moderation:
      classifier: {kind: openai, provider: openai}
      mode: flag
      output: true
    pre_hook: guard
"#;

fn stage_env(k: &str) -> Option<String> {
    (k == "HOOK_SECRET").then(|| "hook-secret-0123456789".to_string())
}

#[test]
fn functions_and_stage_settings_load_from_yaml() {
    let cfg = parse("gw.yaml", STAGES, &stage_env, &HashSet::new()).map_err(|e| e.to_string());
    let cfg = cfg.as_ref().ok();
    assert_eq!(cfg.map(|c| c.functions[0].deadline_ms), Some(1500));
    let api = cfg.map(|c| c.apis[0].api());
    assert_eq!(
        api.as_ref().and_then(|a| a.settings.pre_hook.as_deref()),
        Some("guard")
    );
    assert!(api.is_some_and(|a| a.settings.moderation.is_some_and(|m| m.output)));
    // The secret never shows in the parsed config's debug output.
    assert!(!format!("{cfg:?}").contains("hook-secret-0123456789"));
}

#[test]
fn stage_settings_errors_name_the_line_and_field() {
    let missing = STAGES.replace("pre_hook: guard", "pre_hook: nope");
    let e = parse("gw.yaml", &missing, &stage_env, &HashSet::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("apis[0].pre_hook") && e.contains("nope"), "{e}");
    let typo = STAGES.replace("mode: flag", "mdoe: flag");
    let e = parse("gw.yaml", &typo, &stage_env, &HashSet::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("mdoe"), "{e}");
    let slow = STAGES.replace("deadline_ms: 1500", "deadline_ms: 60000");
    let e = parse("gw.yaml", &slow, &stage_env, &HashSet::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("functions[0].deadline_ms"), "{e}");
}

#[test]
fn knowledge_bases_load_with_defaults() {
    let text = "knowledge_bases:\n  - {name: help}\n  - {name: legal, embedding_model: openai/text-embedding-3-small, chunk_tokens: 400, overlap_tokens: 0}\n";
    let cfg = parse_str(text).map_err(|e| e.to_string());
    let kbs = cfg.map(|c| c.knowledge_bases);
    let kbs = kbs.as_deref().unwrap_or_default();
    assert_eq!(kbs.len(), 2);
    assert_eq!(
        (
            kbs[0].embedding_model.as_str(),
            kbs[0].chunk_tokens,
            kbs[0].overlap_tokens
        ),
        ("local/minilm", 200, 40)
    );
    assert_eq!(kbs[1].chunk_tokens, 400);
}

#[test]
fn knowledge_base_errors_name_the_line_and_field() {
    let text = "knowledge_bases:\n  - name: help\n  - name: other\n    chunk_tokens: 8\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref()
            .map(|e| (e.line, e.field.as_str(), e.message.as_str())),
        Some((4, "knowledge_bases[1].chunk_tokens", "between 16 and 8192"))
    );
    let text = "knowledge_bases:\n  - name: help\n  - name: help\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref().map(|e| (e.line, e.field.as_str())),
        Some((3, "knowledge_bases[1].name"))
    );
    let text = "knowledge_bases:\n  - name: \"no spaces\"\n";
    let e = parse_str(text).err();
    assert_eq!(
        e.as_ref().map(|e| e.field.as_str()),
        Some("knowledge_bases[0].name")
    );
}
