use serde_json::json;

use super::{TestResult, backends};
use crate::columns::now_ms;
use crate::{ConsumerInput, KeyInput, KeyView, Store, StoreError};

fn digest(n: u64) -> String {
    format!("{n:064x}")
}

async fn consumer(store: &Store, name: &str) -> TestResult<String> {
    Ok(store.create_consumer(&ConsumerInput::new(name)).await?.id)
}

fn scoped(consumer_id: &str, n: u64) -> KeyInput {
    KeyInput {
        scopes: json!({"apis": ["support"], "models": ["gpt-4o", "claude-sonnet"]}),
        expires_at: Some(4_000_000_000_000),
        rpm: Some(600),
        ..KeyInput::new(
            Some(consumer_id.to_owned()),
            format!("key {n}"),
            digest(n),
            format!("gw-{n:04}"),
        )
    }
}

#[tokio::test]
async fn a_key_is_found_by_its_hash() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let created = store.create_key(&scoped(&owner, 1)).await?;
        assert_eq!(created.consumer_id.as_deref(), Some(owner.as_str()));
        assert_eq!(created.hash, digest(1));
        assert_eq!(created.prefix, "gw-0001");
        assert_eq!(
            created.scopes,
            json!({"apis": ["support"], "models": ["gpt-4o", "claude-sonnet"]})
        );
        assert_eq!(
            (created.expires_at, created.rpm),
            (Some(4_000_000_000_000), Some(600))
        );
        assert_eq!(created.created_at, created.updated_at);
        assert_eq!((created.last_used_at, created.revoked_at), (None, None));
        assert!(created.is_usable_at(now_ms()));

        let found = store.find_key_by_hash(&digest(1)).await?;
        assert_eq!(found.as_ref(), Some(&created), "{:?}", store.backend());
        assert_eq!(store.get_key(&created.id).await?.as_ref(), Some(&created));
        assert!(store.find_key_by_hash(&digest(2)).await?.is_none());

        let own = store
            .create_key(&KeyInput::new(None, "ops", digest(2), "gw-ops"))
            .await?;
        assert_eq!(own.consumer_id, None);
        assert_eq!(own.scopes, json!({}));
        let all: Vec<String> = store
            .list_keys(None)
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(all, [created.id.clone(), own.id.clone()], "creation order");
        let alices: Vec<String> = store
            .list_keys(Some(&owner))
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(alices, [created.id]);
    }
    b.finish().await
}

#[tokio::test]
async fn a_stored_hash_cannot_be_issued_twice() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        store.create_key(&scoped(&owner, 7)).await?;
        match store.create_key(&scoped(&owner, 7)).await {
            Err(StoreError::Conflict(message)) => {
                assert!(!message.contains(&digest(7)), "the hash is not echoed");
            }
            other => return Err(format!("expected Conflict, got {other:?}").into()),
        }
        assert_eq!(
            store.list_keys(None).await?.len(),
            1,
            "{:?}",
            store.backend()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn injection_looking_and_malformed_hashes_are_just_not_found() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        store.create_key(&scoped(&owner, 1)).await?;
        store.create_key(&scoped(&owner, 0xabc)).await?;
        let upper = digest(0xabc).to_uppercase();
        let probes = [
            "' OR '1'='1",
            "x' OR 1=1; --",
            "'; DROP TABLE gateway_keys; --",
            "",
            "%",
            upper.as_str(),
            &digest(1)[..63],
        ];
        for probe in probes {
            assert!(store.find_key_by_hash(probe).await?.is_none(), "{probe:?}");
            assert!(store.find_admin_token_by_hash(probe).await?.is_none());
        }
        // Sixty-four characters, but not hex: still nothing.
        let sneaky = format!("{}' OR ''='", "a".repeat(55));
        assert_eq!(sneaky.len(), 64);
        assert!(store.find_key_by_hash(&sneaky).await?.is_none());
        // Lookups that do reach the database bind the text; it matches nothing.
        for probe in ["' OR '1'='1", "x' OR 1=1; --", "alice' --"] {
            assert!(store.get_key(probe).await?.is_none(), "{probe:?}");
            assert!(store.get_consumer(probe).await?.is_none());
            assert!(store.get_consumer_by_name(probe).await?.is_none());
            assert!(store.list_keys(Some(probe)).await?.is_empty());
        }
        assert_eq!(
            store.list_keys(None).await?.len(),
            2,
            "{:?}",
            store.backend()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn invalid_key_input_is_refused() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let base = scoped(&owner, 1);
        let bad = [
            KeyInput {
                hash: "abc".into(),
                ..base.clone()
            },
            KeyInput {
                hash: digest(0xabc).to_uppercase(),
                ..base.clone()
            },
            KeyInput {
                hash: format!("{}' --", "0".repeat(59)),
                ..base.clone()
            },
            KeyInput {
                scopes: json!(["support"]),
                ..base.clone()
            },
            KeyInput {
                scopes: json!({"apis": "support"}),
                ..base.clone()
            },
            KeyInput {
                scopes: json!({"models": [1, 2]}),
                ..base.clone()
            },
            KeyInput {
                rpm: Some(0),
                ..base.clone()
            },
            KeyInput {
                label: String::new(),
                ..base.clone()
            },
            KeyInput {
                prefix: String::new(),
                ..base.clone()
            },
        ];
        for input in &bad {
            assert!(
                matches!(store.create_key(input).await, Err(StoreError::Invalid(_))),
                "{input:?}"
            );
        }
        assert!(matches!(
            store
                .create_key(&KeyInput::new(Some("no-such".into()), "k", digest(9), "p"))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store.list_keys(None).await?.is_empty(),
            "{:?}",
            store.backend()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn a_revoked_key_shows_revoked_at_and_reaches_the_change_feed() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let key = store.create_key(&scoped(&owner, 1)).await?;
        let other = store.create_key(&scoped(&owner, 2)).await?;
        let since = now_ms() + 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            store.keys_changed_since(since).await?.is_empty(),
            "nothing changed yet"
        );

        let revoked = store.revoke_key(&key.id).await?.ok_or("key vanished")?;
        let at = revoked.revoked_at.ok_or("revoked_at not set")?;
        assert_eq!(revoked.updated_at, at);
        assert!(at >= since);
        assert!(!revoked.is_usable_at(at));
        assert_eq!(
            store.find_key_by_hash(&key.hash).await?,
            Some(revoked.clone())
        );

        let changed = store.keys_changed_since(since).await?;
        assert_eq!(
            changed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            [key.id.as_str()],
            "{:?}",
            store.backend()
        );
        let view = store.list_keys(None).await?;
        let listed = view.iter().find(|k| k.id == key.id).ok_or("not listed")?;
        assert_eq!(listed.revoked_at, Some(at));

        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let again = store.revoke_key(&key.id).await?.ok_or("key vanished")?;
        assert_eq!(again, revoked, "revoking again changes nothing");
        assert!(store.revoke_key("no-such-key").await?.is_none());
        assert!(
            store
                .get_key(&other.id)
                .await?
                .is_some_and(|k| k.revoked_at.is_none())
        );
    }
    b.finish().await
}

#[tokio::test]
async fn rotation_keeps_the_old_key_until_the_grace_ends() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let old = store.create_key(&scoped(&owner, 1)).await?;
        let before = now_ms();
        let grace = 60_000;
        let (fresh, ended) = store
            .rotate_key(
                &old.id,
                &KeyInput::rotated_from(&old, digest(2), "gw-0002"),
                grace,
            )
            .await?;
        let after = now_ms();

        assert_ne!(fresh.id, old.id);
        assert_eq!(fresh.hash, digest(2));
        assert_eq!(
            (
                &fresh.consumer_id,
                &fresh.label,
                &fresh.scopes,
                fresh.expires_at,
                fresh.rpm
            ),
            (
                &old.consumer_id,
                &old.label,
                &old.scopes,
                old.expires_at,
                old.rpm
            ),
            "the successor copies the old key's terms"
        );
        assert!(fresh.revoked_at.is_none() && fresh.is_usable_at(after));

        assert_eq!(ended.id, old.id);
        let until = ended.expires_at.ok_or("old key got no expiry")?;
        assert!((before + grace..=after + grace).contains(&until), "{until}");
        assert!(ended.updated_at >= before);
        assert!(ended.revoked_at.is_none());
        assert!(ended.is_usable_at(after), "still valid during the grace");
        assert!(!ended.is_usable_at(until), "and not after it");
        assert_eq!(
            store.find_key_by_hash(&old.hash).await?,
            Some(ended.clone())
        );

        let changed: Vec<String> = store
            .keys_changed_since(before)
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert!(changed.contains(&old.id) && changed.contains(&fresh.id));

        // A second rotation never extends the old key: the earlier expiry wins.
        let (_, twice) = store
            .rotate_key(
                &old.id,
                &KeyInput::rotated_from(&old, digest(3), "gw-0003"),
                grace * 10,
            )
            .await?;
        assert_eq!(twice.expires_at, Some(until), "{:?}", store.backend());
        let (_, now_over) = store
            .rotate_key(
                &old.id,
                &KeyInput::rotated_from(&old, digest(4), "gw-0004"),
                0,
            )
            .await?;
        assert!(now_over.expires_at.is_some_and(|at| at < until));
    }
    b.finish().await
}

#[tokio::test]
async fn rotation_refuses_revoked_missing_and_moved_keys() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let thief = consumer(store, "mallory").await?;
        let key = store.create_key(&scoped(&owner, 1)).await?;

        let moved = KeyInput {
            consumer_id: Some(thief),
            ..KeyInput::rotated_from(&key, digest(2), "gw-2")
        };
        assert!(matches!(
            store.rotate_key(&key.id, &moved, 1000).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store
                .rotate_key(
                    &key.id,
                    &KeyInput::rotated_from(&key, digest(2), "gw-2"),
                    -1
                )
                .await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store
                .rotate_key(
                    "no-such",
                    &KeyInput::rotated_from(&key, digest(2), "gw-2"),
                    0
                )
                .await,
            Err(StoreError::NotFound(_))
        ));

        let revoked = store.revoke_key(&key.id).await?.ok_or("key vanished")?;
        match store
            .rotate_key(
                &key.id,
                &KeyInput::rotated_from(&key, digest(2), "gw-2"),
                1000,
            )
            .await
        {
            Err(StoreError::Invalid(message)) => assert!(message.contains("revoked")),
            other => return Err(format!("expected Invalid, got {other:?}").into()),
        }
        assert_eq!(
            store.get_key(&key.id).await?,
            Some(revoked),
            "old key untouched"
        );
        assert!(
            store.find_key_by_hash(&digest(2)).await?.is_none(),
            "no successor made"
        );
        assert_eq!(
            store.list_keys(None).await?.len(),
            1,
            "{:?}",
            store.backend()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn touching_keys_records_use_without_moving_updated_at() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let one = store.create_key(&scoped(&owner, 1)).await?;
        let two = store.create_key(&scoped(&owner, 2)).await?;
        let since = now_ms() + 1;
        let t = since + 10_000;

        store
            .touch_keys(&[
                (two.id.clone(), t + 5),
                (one.id.clone(), t),
                ("no-such-key".into(), t),
                (one.id.clone(), t - 1),
            ])
            .await?;
        let one_now = store.get_key(&one.id).await?.ok_or("one vanished")?;
        let two_now = store.get_key(&two.id).await?.ok_or("two vanished")?;
        assert_eq!(one_now.last_used_at, Some(t), "{:?}", store.backend());
        assert_eq!(two_now.last_used_at, Some(t + 5));
        assert_eq!(one_now.updated_at, one.updated_at, "use is not a change");
        assert_eq!(two_now.updated_at, two.updated_at);
        assert!(store.keys_changed_since(since).await?.is_empty());

        // An older stamp (from a slower instance) never moves last_used_at back.
        store.touch_keys(&[(one.id.clone(), t - 500)]).await?;
        let one_later = store.get_key(&one.id).await?.ok_or("one vanished")?;
        assert_eq!(one_later.last_used_at, Some(t));
        store.touch_keys(&[]).await?;
    }
    b.finish().await
}

#[tokio::test]
async fn updating_a_consumer_reaches_its_keys_in_the_change_feed() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let key = store.create_key(&scoped(&owner, 1)).await?;
        let since = now_ms() + 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let suspended = ConsumerInput {
            status: "suspended".into(),
            ..ConsumerInput::new("alice")
        };
        store.update_consumer(&owner, &suspended).await?;
        let changed = store.keys_changed_since(since).await?;
        assert_eq!(
            changed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            [key.id.as_str()],
            "{:?}",
            store.backend()
        );
        assert!(
            changed.iter().all(|k| k.revoked_at.is_none()),
            "suspended, not revoked"
        );
    }
    b.finish().await
}

#[tokio::test]
async fn the_hash_never_reaches_a_view_or_a_listing() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let owner = consumer(store, "alice").await?;
        let record = store.create_key(&scoped(&owner, 0xfeed)).await?;
        let body = serde_json::to_string(&KeyView::from(&record))?;
        assert!(!body.contains(&record.hash), "{body}");
        assert!(!body.contains("\"hash\""));
        assert!(body.contains("gw-"));
        let listing = serde_json::to_string(&store.list_keys(None).await?)?;
        assert!(!listing.contains(&record.hash));
        assert!(!listing.contains("\"hash\""));
    }
    b.finish().await
}

/// The two hot reads (every authenticated request, every instance's 500 ms poll) use indexes.
/// Checked on SQLite's plan; PostgreSQL's planner rightly scans a table this small.
#[tokio::test]
async fn the_hot_key_reads_use_indexes() -> TestResult {
    let b = backends().await?;
    for store in b.iter().filter(|s| s.backend() == crate::Backend::Sqlite) {
        for (plan_sql, index) in [
            (
                "EXPLAIN QUERY PLAN SELECT id FROM gateway_keys WHERE hash = $1",
                "sqlite_autoindex_gateway_keys",
            ),
            (
                "EXPLAIN QUERY PLAN SELECT id FROM gateway_keys WHERE updated_at >= $1 \
                 ORDER BY updated_at ASC, id ASC",
                "gateway_keys_updated_at",
            ),
        ] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(plan_sql)
                .bind("x")
                .fetch_all(&store.pool)
                .await?;
            assert!(
                plan.iter().any(|(.., detail)| detail.contains(index)),
                "{plan_sql}: {plan:?}"
            );
        }
    }
    b.finish().await
}
