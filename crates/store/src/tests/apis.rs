use serde_json::json;

use super::{TestResult, backends};
use crate::{ApiInput, StoreError};

fn api(slug: &str) -> ApiInput {
    ApiInput {
        name: Some("Support bot".into()),
        auth: "keys_or_jwt".into(),
        settings: json!({
            "jwt": {"issuer": "https://id.example.com", "audience": ["gateway"]},
            "ip_allow": ["10.0.0.0/8"],
            "note": "ünïcode ✓"
        }),
        ..ApiInput::new(slug)
    }
}

#[tokio::test]
async fn api_round_trip_and_upsert_keeps_identity() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let input = api("support");
        let created = store.create_api(&input).await?;
        assert_eq!(created.slug, "support", "{:?}", store.backend());
        assert_eq!(created.name.as_deref(), Some("Support bot"));
        assert_eq!(created.auth, "keys_or_jwt");
        assert_eq!(created.settings, input.settings);
        assert!(created.enabled);
        assert_eq!(created.created_at, created.updated_at);
        assert_eq!(store.get_api("support").await?.as_ref(), Some(&created));

        let changed = ApiInput {
            name: None,
            auth: "public".into(),
            settings: json!({}),
            enabled: false,
            ..api("support")
        };
        let updated = store.upsert_api(&changed).await?;
        assert_eq!(updated.id, created.id);
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(
            (updated.name, updated.auth.as_str(), updated.enabled),
            (None, "public", false)
        );

        let fresh = store.upsert_api(&ApiInput::new("a-first")).await?;
        assert_eq!(fresh.auth, "keys");
        let slugs: Vec<String> = store
            .list_apis()
            .await?
            .into_iter()
            .map(|a| a.slug)
            .collect();
        assert_eq!(slugs, ["a-first", "support"]);

        assert!(store.delete_api("support").await?);
        assert!(!store.delete_api("support").await?);
        assert!(store.get_api("support").await?.is_none());
    }
    b.finish().await
}

#[tokio::test]
async fn a_taken_slug_is_a_conflict() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let created = store.create_api(&api("dup")).await?;
        match store.create_api(&ApiInput::new("dup")).await {
            Err(StoreError::Conflict(message)) => assert!(message.contains("dup")),
            other => {
                return Err(
                    format!("{:?}: expected Conflict, got {other:?}", store.backend()).into(),
                );
            }
        }
        assert_eq!(store.get_api("dup").await?, Some(created));
    }
    b.finish().await
}

#[tokio::test]
async fn reserved_and_malformed_slugs_are_refused() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let long = "a".repeat(65);
        let bad = [
            "v1",
            "admin",
            "healthz",
            "readyz",
            "metrics",
            "",
            "-leading-dash",
            "Upper",
            "has space",
            "slash/inside",
            "dot.ted",
            "ünï",
            "x'; DROP TABLE apis; --",
            long.as_str(),
        ];
        for slug in bad {
            match store.create_api(&ApiInput::new(slug)).await {
                Err(StoreError::Invalid(message)) => {
                    assert!(message.contains("slug"), "{slug}: {message}");
                }
                other => return Err(format!("{slug:?}: expected Invalid, got {other:?}").into()),
            }
            assert!(matches!(
                store.upsert_api(&ApiInput::new(slug)).await,
                Err(StoreError::Invalid(_))
            ));
        }
        assert!(store.get_api("x'; DROP TABLE apis; --").await?.is_none());
        for slug in ["v2", "0", "admin-tools", &"a".repeat(64)] {
            store.create_api(&ApiInput::new(slug)).await?;
        }
        assert_eq!(store.list_apis().await?.len(), 4, "{:?}", store.backend());
    }
    b.finish().await
}

#[tokio::test]
async fn invalid_api_input_is_refused() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let bad = [
            ApiInput {
                auth: "basic".into(),
                ..ApiInput::new("a")
            },
            ApiInput {
                settings: json!(["not", "an", "object"]),
                ..ApiInput::new("a")
            },
            ApiInput {
                name: Some(" padded".into()),
                ..ApiInput::new("a")
            },
        ];
        for input in &bad {
            assert!(
                matches!(store.create_api(input).await, Err(StoreError::Invalid(_))),
                "{input:?}"
            );
        }
        assert!(store.list_apis().await?.is_empty());
    }
    b.finish().await
}
