use serde_json::json;

use super::{TestResult, backends};
use crate::{ConsumerInput, KeyInput, StoreError};

fn alice() -> ConsumerInput {
    ConsumerInput {
        email: Some("alice@example.com".into()),
        external_id: Some("idp|alice".into()),
        metadata: json!({"team": "support", "cost_center": 42}),
        ..ConsumerInput::new("alice")
    }
}

fn digest(n: u64) -> String {
    format!("{n:064x}")
}

#[tokio::test]
async fn consumer_round_trip_and_update() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let created = store.create_consumer(&alice()).await?;
        assert_eq!(created.name, "alice", "{:?}", store.backend());
        assert_eq!(created.email.as_deref(), Some("alice@example.com"));
        assert_eq!(created.external_id.as_deref(), Some("idp|alice"));
        assert_eq!(
            created.metadata,
            json!({"team": "support", "cost_center": 42})
        );
        assert_eq!(created.status, "active");
        assert_eq!(
            store.get_consumer(&created.id).await?.as_ref(),
            Some(&created)
        );
        assert_eq!(
            store.get_consumer_by_name("alice").await?.as_ref(),
            Some(&created)
        );

        let changed = ConsumerInput {
            name: "alice-renamed".into(),
            email: None,
            status: "suspended".into(),
            ..alice()
        };
        let updated = store.update_consumer(&created.id, &changed).await?;
        assert_eq!(updated.id, created.id);
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(
            (
                updated.name.as_str(),
                updated.email,
                updated.status.as_str()
            ),
            ("alice-renamed", None, "suspended")
        );
        assert!(store.get_consumer_by_name("alice").await?.is_none());

        store.create_consumer(&ConsumerInput::new("bob")).await?;
        let names: Vec<String> = store
            .list_consumers()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["alice-renamed", "bob"]);

        assert!(matches!(
            store.update_consumer("no-such-id", &alice()).await,
            Err(StoreError::NotFound(_))
        ));
    }
    b.finish().await
}

#[tokio::test]
async fn taken_names_and_external_ids_are_conflicts() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let first = store.create_consumer(&alice()).await?;
        let same_name = ConsumerInput {
            external_id: Some("idp|other".into()),
            ..alice()
        };
        match store.create_consumer(&same_name).await {
            Err(StoreError::Conflict(message)) => assert!(message.contains("alice"), "{message}"),
            other => return Err(format!("expected Conflict, got {other:?}").into()),
        }
        let same_external = ConsumerInput {
            external_id: Some("idp|alice".into()),
            ..ConsumerInput::new("carol")
        };
        match store.create_consumer(&same_external).await {
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("external_id"), "{message}");
            }
            other => return Err(format!("expected Conflict, got {other:?}").into()),
        }

        // Any number of consumers may have no external id.
        store.create_consumer(&ConsumerInput::new("x")).await?;
        let y = store.create_consumer(&ConsumerInput::new("y")).await?;
        assert!(matches!(
            store
                .update_consumer(&y.id, &ConsumerInput::new("alice"))
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.get_consumer(&first.id).await?, Some(first));
        assert_eq!(
            store.list_consumers().await?.len(),
            3,
            "{:?}",
            store.backend()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn invalid_consumer_input_is_refused() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let bad = [
            ConsumerInput::new(""),
            ConsumerInput {
                status: "deleted".into(),
                ..ConsumerInput::new("a")
            },
            ConsumerInput {
                metadata: json!("text"),
                ..ConsumerInput::new("a")
            },
            ConsumerInput {
                external_id: Some(String::new()),
                ..ConsumerInput::new("a")
            },
        ];
        for input in &bad {
            assert!(
                matches!(
                    store.create_consumer(input).await,
                    Err(StoreError::Invalid(_))
                ),
                "{input:?}"
            );
        }
        assert!(store.list_consumers().await?.is_empty());
    }
    b.finish().await
}

/// Twenty callers (say, twenty first requests with one new JWT subject, spread over instances)
/// all get the same consumer, and only one row is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_or_create_under_concurrency_makes_one_consumer() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .find_or_create_consumer_by_external_id("idp|dana", "dana")
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await??.id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{:?}", store.backend());
        let all = store.list_consumers().await?;
        assert_eq!(all.len(), 1);
        let dana = all.first().ok_or("no consumer")?;
        assert_eq!(
            (
                dana.name.as_str(),
                dana.external_id.as_deref(),
                dana.status.as_str()
            ),
            ("dana", Some("idp|dana"), "active")
        );
    }
    b.finish().await
}

#[tokio::test]
async fn find_or_create_derives_a_name_when_the_hint_is_taken() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let local = store.create_consumer(&ConsumerInput::new("erin")).await?;
        let federated = store
            .find_or_create_consumer_by_external_id("idp|erin", "erin")
            .await?;
        assert_ne!(federated.id, local.id, "{:?}", store.backend());
        assert!(federated.name.starts_with("erin-"), "{}", federated.name);
        assert_eq!(federated.name.len(), "erin-".len() + 6);
        assert_eq!(federated.external_id.as_deref(), Some("idp|erin"));

        let again = store
            .find_or_create_consumer_by_external_id("idp|erin", "someone else")
            .await?;
        assert_eq!(again, federated, "found by external id, the hint ignored");

        let long_hint = "é".repeat(100);
        let long = store
            .find_or_create_consumer_by_external_id("idp|long", &long_hint)
            .await?;
        assert_eq!(long.name, long_hint);
        let longer = store
            .find_or_create_consumer_by_external_id("idp|long2", &long_hint)
            .await?;
        assert!(longer.name.len() <= 200, "derived names stay valid");
        assert_eq!(store.list_consumers().await?.len(), 4);
    }
    b.finish().await
}

#[tokio::test]
async fn deleting_a_consumer_revokes_its_keys_and_keeps_them() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let frank = store.create_consumer(&ConsumerInput::new("frank")).await?;
        let other = store.create_consumer(&ConsumerInput::new("gina")).await?;
        let k1 = store
            .create_key(&KeyInput::new(
                Some(frank.id.clone()),
                "one",
                digest(1),
                "gw-1",
            ))
            .await?;
        let k2 = store
            .create_key(&KeyInput::new(
                Some(frank.id.clone()),
                "two",
                digest(2),
                "gw-2",
            ))
            .await?;
        let k3 = store
            .create_key(&KeyInput::new(
                Some(other.id.clone()),
                "three",
                digest(3),
                "gw-3",
            ))
            .await?;

        assert!(store.delete_consumer(&frank.id).await?);
        assert!(!store.delete_consumer(&frank.id).await?);
        assert!(store.get_consumer(&frank.id).await?.is_none());

        for key in [&k1, &k2] {
            let found = store
                .find_key_by_hash(&key.hash)
                .await?
                .ok_or("a deleted consumer's key row was deleted")?;
            assert!(found.revoked_at.is_some(), "{:?}", store.backend());
            assert_eq!(found.consumer_id.as_deref(), Some(frank.id.as_str()));
            assert!(!found.is_usable_at(found.created_at));
        }
        let revoked_at = store
            .get_key(&k1.id)
            .await?
            .and_then(|k| k.revoked_at)
            .ok_or("not revoked")?;
        let changed: Vec<String> = store
            .keys_changed_since(revoked_at)
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert!(
            changed.contains(&k1.id) && changed.contains(&k2.id),
            "caches hear of it"
        );
        let untouched = store.get_key(&k3.id).await?.ok_or("k3 vanished")?;
        assert!(untouched.revoked_at.is_none());
        assert_eq!(store.list_keys(Some(&frank.id)).await?.len(), 2);

        assert!(matches!(
            store
                .create_key(&KeyInput::new(
                    Some(frank.id.clone()),
                    "late",
                    digest(4),
                    "gw-4"
                ))
                .await,
            Err(StoreError::NotFound(_))
        ));
    }
    b.finish().await
}
