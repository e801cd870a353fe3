use serde_json::json;
use wire::secret::Secret;

use super::{TestResult, backends};
use crate::providers::key_aad;
use crate::{Cipher, Keyring, ProviderInput, ProviderView, Store, StoreError};

const KEY: &str = "sk-test-0123456789abcdef";

fn azure(name: &str) -> ProviderInput {
    ProviderInput {
        base_url: Some("https://example.openai.azure.com".into()),
        api_key: Some(Secret::new(KEY)),
        options: json!({"api_version": "2024-10-21", "deployments": {"gpt-4o": "prod-4o"}}),
        models: vec!["gpt-4o".into(), "gpt-4o-mini".into()],
        priority: 5,
        ..ProviderInput::new(name, "azure_openai")
    }
}

async fn raw_key(store: &Store, name: &str) -> TestResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT api_key FROM providers WHERE name = $1")
            .bind(name)
            .fetch_one(&store.pool)
            .await?,
    )
}

#[tokio::test]
async fn provider_round_trip() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let input = azure("azure-east");
        let created = store.upsert_provider(&input).await?;
        assert_eq!(created.name, "azure-east");
        assert_eq!(created.kind, "azure_openai");
        assert_eq!(created.base_url, input.base_url);
        assert_eq!(created.api_key.as_ref().map(Secret::expose), Some(KEY));
        assert_eq!(created.options, input.options);
        assert_eq!(created.models, input.models);
        assert_eq!((created.priority, created.enabled), (5, true));
        assert_eq!(created.created_at, created.updated_at);

        let fetched = store.get_provider("azure-east").await?;
        assert_eq!(fetched.as_ref(), Some(&created), "{:?}", store.backend());

        let changed = ProviderInput {
            enabled: false,
            priority: -1,
            base_url: None,
            ..azure("azure-east")
        };
        let updated = store.upsert_provider(&changed).await?;
        assert_eq!(updated.id, created.id);
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(
            (updated.enabled, updated.priority, updated.base_url),
            (false, -1, None)
        );

        store
            .upsert_provider(&ProviderInput::new("ollama", "ollama"))
            .await?;
        let names: Vec<String> = store
            .list_providers()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            ["ollama", "azure-east"],
            "priority 0 sorts before -1"
        );

        assert!(store.delete_provider("azure-east").await?);
        assert!(store.get_provider("azure-east").await?.is_none());
        assert!(!store.delete_provider("azure-east").await?);
        assert_eq!(store.list_providers().await?.len(), 1);
    }
    b.finish().await
}

#[tokio::test]
async fn providers_list_by_priority_then_name() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        for (name, priority) in [("b", 1), ("a", 1), ("c", 9), ("d", -3)] {
            let input = ProviderInput {
                priority,
                ..ProviderInput::new(name, "openai")
            };
            store.create_provider(&input).await?;
        }
        let names: Vec<String> = store
            .list_providers()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["c", "a", "b", "d"], "{:?}", store.backend());
    }
    b.finish().await
}

#[tokio::test]
async fn api_key_is_encrypted_at_rest_and_decrypts_back() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let record = store.upsert_provider(&azure("p")).await?;
        let blob = raw_key(store, "p").await?.ok_or("no key stored")?;
        assert!(
            !blob.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "plaintext key found in the column on {:?}",
            store.backend()
        );
        assert_eq!(
            blob.len(),
            5 + 12 + KEY.len() + 16,
            "key id, nonce, ciphertext, tag"
        );
        let opened = store.keyring().open(&blob, &key_aad(&record.id))?;
        assert_eq!(opened.expose(), KEY);

        let keyless = store
            .upsert_provider(&ProviderInput::new("local", "local"))
            .await?;
        assert!(keyless.api_key.is_none());
        assert!(raw_key(store, "local").await?.is_none());
    }
    b.finish().await
}

#[tokio::test]
async fn a_key_copied_onto_another_row_does_not_open() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store.upsert_provider(&azure("victim")).await?;
        let other = ProviderInput {
            api_key: Some(Secret::new("sk-attacker")),
            ..ProviderInput::new("attacker", "openai")
        };
        store.upsert_provider(&other).await?;
        sqlx::query(
            "UPDATE providers SET api_key = (SELECT api_key FROM providers WHERE name = $1) \
             WHERE name = $2",
        )
        .bind("victim")
        .bind("attacker")
        .execute(&store.pool)
        .await?;
        assert!(
            matches!(
                store.get_provider("attacker").await,
                Err(StoreError::Crypto(_))
            ),
            "{:?}",
            store.backend()
        );
        assert!(matches!(
            store.list_providers().await,
            Err(StoreError::Crypto(_))
        ));
        let victim = store
            .get_provider("victim")
            .await?
            .ok_or("victim vanished")?;
        assert_eq!(victim.api_key.as_ref().map(Secret::expose), Some(KEY));
    }
    b.finish().await
}

#[tokio::test]
async fn upsert_without_a_key_keeps_the_stored_key() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store.upsert_provider(&azure("p")).await?;
        let before = raw_key(store, "p").await?;
        let without_key = ProviderInput {
            api_key: None,
            models: vec!["gpt-4.1".into()],
            ..azure("p")
        };
        let kept = store.upsert_provider(&without_key).await?;
        assert_eq!(kept.api_key.as_ref().map(Secret::expose), Some(KEY));
        assert_eq!(kept.models, ["gpt-4.1"]);
        assert_eq!(raw_key(store, "p").await?, before, "ciphertext untouched");

        let rotated = ProviderInput {
            api_key: Some(Secret::new("sk-rotated")),
            ..azure("p")
        };
        let rotated = store.upsert_provider(&rotated).await?;
        assert_eq!(
            rotated.api_key.as_ref().map(Secret::expose),
            Some("sk-rotated")
        );
    }
    b.finish().await
}

#[tokio::test]
async fn creating_a_taken_provider_name_is_a_conflict() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let created = store.create_provider(&azure("dup")).await?;
        let again = store
            .create_provider(&ProviderInput::new("dup", "openai"))
            .await;
        match again {
            Err(StoreError::Conflict(message)) => assert!(message.contains("dup")),
            other => {
                return Err(
                    format!("{:?}: expected Conflict, got {other:?}", store.backend()).into(),
                );
            }
        }
        let fetched = store.get_provider("dup").await?.ok_or("row lost")?;
        assert_eq!(fetched, created, "the failed insert changed nothing");
    }
    b.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_of_one_new_name_make_one_row() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let input = ProviderInput {
                        priority: i,
                        api_key: Some(Secret::new(format!("sk-{i}"))),
                        ..ProviderInput::new("racy", "openai")
                    };
                    store.upsert_provider(&input).await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await??.id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{:?}", store.backend());
        let all = store.list_providers().await?;
        assert_eq!(all.len(), 1);
        let last = all.first().ok_or("no row")?;
        let key = last.api_key.as_ref().ok_or("no key")?;
        assert_eq!(
            key.expose(),
            format!("sk-{}", last.priority),
            "key and row agree"
        );
    }
    b.finish().await
}

#[tokio::test]
async fn invalid_provider_input_is_refused() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let bad = [
            ProviderInput::new("", "openai"),
            ProviderInput::new(" padded", "openai"),
            ProviderInput::new("p", ""),
            ProviderInput {
                options: json!(["not", "an", "object"]),
                ..ProviderInput::new("p", "openai")
            },
            ProviderInput {
                api_key: Some(Secret::new("")),
                ..ProviderInput::new("p", "openai")
            },
        ];
        for input in &bad {
            assert!(
                matches!(
                    store.upsert_provider(input).await,
                    Err(StoreError::Invalid(_))
                ),
                "{input:?}"
            );
        }
        assert!(store.list_providers().await?.is_empty());
    }
    b.finish().await
}

#[tokio::test]
async fn the_key_never_reaches_debug_or_json() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let record = store.upsert_provider(&azure("p")).await?;
        assert!(!format!("{record:?}").contains(KEY));
        let view = ProviderView::from(&record);
        assert!(view.has_api_key);
        let body = serde_json::to_string(&view)?;
        assert!(!body.contains(KEY));
        assert!(!body.contains("\"api_key\""));
    }
    b.finish().await
}

#[tokio::test]
async fn enabling_and_disabling_a_provider() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store.upsert_provider(&azure("p")).await?;
        let off = store.set_provider_enabled("p", false).await?;
        assert!(!off.enabled);
        assert_eq!(off.api_key.as_ref().map(Secret::expose), Some(KEY));
        assert!(store.set_provider_enabled("p", true).await?.enabled);
        assert!(matches!(
            store.set_provider_enabled("missing", true).await,
            Err(StoreError::NotFound(_))
        ));
    }
    b.finish().await
}

#[tokio::test]
async fn rotating_the_encryption_key_reseals_every_key_and_keeps_them_readable() -> TestResult {
    let b = backends().await?;
    for (store, url) in &b.stores {
        for name in ["a", "b", "c"] {
            store.upsert_provider(&azure(name)).await?;
        }
        store
            .upsert_provider(&ProviderInput::new("local", "local"))
            .await?;
        let before = raw_key(store, "a").await?.ok_or("no key stored")?;
        let old = store.keyring();
        let (new, _) = Cipher::generate();
        let next = old.rotated(new.clone());

        // A ring that cannot open what is stored changes nothing.
        let (stranger, _) = Cipher::generate();
        assert!(
            store
                .rotate_encryption(Some(Keyring::from(stranger)))
                .await
                .is_err()
        );
        assert_eq!(raw_key(store, "a").await?, Some(before.clone()));
        assert_eq!(store.keyring().primary_id(), old.primary_id());

        assert_eq!(store.rotate_encryption(Some(next)).await?, 3);
        assert_eq!(store.keyring().primary_id(), new.id());
        let after = raw_key(store, "a").await?.ok_or("no key stored")?;
        assert_ne!(after, before);
        // Sealed under the new key alone: a store with only the new key reads every row.
        let fresh = Store::connect(url, new.clone()).await?;
        for name in ["a", "b", "c"] {
            let p = fresh.get_provider(name).await?.ok_or("provider gone")?;
            assert_eq!(p.api_key.as_ref().map(Secret::expose), Some(KEY));
        }
        // Running it again has nothing left to do.
        assert_eq!(store.rotate_encryption(None).await?, 0);
        fresh.close().await;
    }
    b.finish().await
}
