use super::{TestResult, backends};
use crate::{AdminTokenInput, StoreError};

fn token(name: &str, role: &str, n: u64) -> AdminTokenInput {
    AdminTokenInput {
        name: name.into(),
        role: role.into(),
        hash: format!("{n:064x}"),
        prefix: format!("adm-{n}"),
    }
}

#[tokio::test]
async fn admin_tokens_are_found_by_hash_and_never_show_it() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let ops = store.create_admin_token(&token("ops", "admin", 1)).await?;
        let viewer = store
            .create_admin_token(&token("dashboards", "viewer", 2))
            .await?;
        assert_eq!((ops.role.as_str(), ops.prefix.as_str()), ("admin", "adm-1"));
        assert_eq!((ops.last_used_at, ops.revoked_at), (None, None));

        let found = store
            .find_admin_token_by_hash(&format!("{:064x}", 1))
            .await?;
        assert_eq!(found.as_ref(), Some(&ops), "{:?}", store.backend());
        assert!(
            store
                .find_admin_token_by_hash(&format!("{:064x}", 3))
                .await?
                .is_none()
        );

        let names: Vec<String> = store
            .list_admin_tokens()
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["dashboards", "ops"]);
        let body = serde_json::to_string(&store.list_admin_tokens().await?)?;
        assert!(!body.contains(&format!("{:064x}", 1)) && !body.contains("\"hash\""));
        assert_eq!(viewer.role, "viewer");
    }
    b.finish().await
}

#[tokio::test]
async fn a_taken_admin_token_name_is_a_conflict() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store.create_admin_token(&token("ops", "admin", 1)).await?;
        match store.create_admin_token(&token("ops", "viewer", 2)).await {
            Err(StoreError::Conflict(message)) => assert!(message.contains("ops")),
            other => return Err(format!("expected Conflict, got {other:?}").into()),
        }
        assert!(matches!(
            store.create_admin_token(&token("other", "admin", 1)).await,
            Err(StoreError::Conflict(_))
        ));
        for bad in [
            token("x", "root", 3),
            token("", "admin", 3),
            AdminTokenInput {
                hash: "not-hex".into(),
                ..token("x", "admin", 3)
            },
        ] {
            assert!(
                matches!(
                    store.create_admin_token(&bad).await,
                    Err(StoreError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            store.list_admin_tokens().await?.len(),
            1,
            "{:?}",
            store.backend()
        );
    }
    b.finish().await
}

#[tokio::test]
async fn revoking_and_touching_admin_tokens() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let ops = store.create_admin_token(&token("ops", "admin", 1)).await?;
        let hash = format!("{:064x}", 1);

        store.touch_admin_token(&ops.id, 5_000).await?;
        store.touch_admin_token(&ops.id, 4_000).await?;
        store.touch_admin_token("no-such", 4_000).await?;
        let used = store.find_admin_token_by_hash(&hash).await?.ok_or("gone")?;
        assert_eq!(used.last_used_at, Some(5_000), "{:?}", store.backend());

        assert!(store.revoke_admin_token(&ops.id).await?);
        let revoked = store.find_admin_token_by_hash(&hash).await?.ok_or("gone")?;
        let at = revoked.revoked_at.ok_or("not revoked")?;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(store.revoke_admin_token(&ops.id).await?, "idempotent");
        let still = store.find_admin_token_by_hash(&hash).await?.ok_or("gone")?;
        assert_eq!(
            still.revoked_at,
            Some(at),
            "the first revocation time stays"
        );
        assert!(!store.revoke_admin_token("no-such").await?);
    }
    b.finish().await
}
