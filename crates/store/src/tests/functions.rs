use wire::secret::Secret;

use super::{TestResult, backends};
use crate::{FunctionInput, FunctionView, StoreError};

fn input(name: &str, secret: Option<&str>) -> FunctionInput {
    FunctionInput {
        name: name.into(),
        url: "https://hooks.example.com/pre".into(),
        secret: secret.map(Secret::new),
        deadline_ms: 2000,
        failure_mode: "fail_open".into(),
    }
}

#[tokio::test]
async fn functions_are_created_updated_listed_and_deleted() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        assert!(
            store
                .put_function(&input("pre", Some("s3cret-s3cret-s3cret")))
                .await?
        );
        let mut changed = input("pre", None);
        changed.deadline_ms = 5000;
        changed.failure_mode = "fail_closed".into();
        // An update without a secret keeps the stored one.
        assert!(!store.put_function(&changed).await?);
        let f = store.get_function("pre").await?.ok_or("missing")?;
        assert_eq!(f.secret.expose(), "s3cret-s3cret-s3cret");
        assert_eq!(
            (f.deadline_ms, f.failure_mode.as_str()),
            (5000, "fail_closed")
        );
        let view = serde_json::to_string(&FunctionView::from(&f))?;
        assert!(!view.contains("s3cret"), "{view}");
        assert!(view.contains("\"has_secret\":true"));
        store
            .put_function(&input("post", Some("another-secret-123")))
            .await?;
        let names: Vec<String> = store
            .list_functions()
            .await?
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["post", "pre"]);
        assert!(store.delete_function("pre").await?);
        assert!(!store.delete_function("pre").await?);
        assert!(store.get_function("pre").await?.is_none());
    }
    b.finish().await
}

#[tokio::test]
async fn function_inputs_are_validated() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        for bad in [
            input("new", None),
            input("bad name", Some("long-enough-secret")),
            input("short", Some("tiny")),
            FunctionInput {
                deadline_ms: 30_001,
                ..input("slow", Some("long-enough-secret"))
            },
            FunctionInput {
                url: "ftp://x".into(),
                ..input("ftp", Some("long-enough-secret"))
            },
            FunctionInput {
                failure_mode: "maybe".into(),
                ..input("mode", Some("long-enough-secret"))
            },
        ] {
            assert!(
                matches!(store.put_function(&bad).await, Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
    b.finish().await
}

#[tokio::test]
async fn function_secrets_are_sealed_and_resealed_on_rotation() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store
            .put_function(&input("pre", Some("plain-text-secret-1")))
            .await?;
        let raw: Vec<u8> = sqlx::query_scalar("SELECT secret FROM functions WHERE name = 'pre'")
            .fetch_one(&store.pool)
            .await?;
        assert!(!String::from_utf8_lossy(&raw).contains("plain-text-secret-1"));
        let ring = store.keyring().rotated(crate::Cipher::generate().0);
        assert!(store.rotate_encryption(Some(ring)).await? >= 1);
        let f = store.get_function("pre").await?.ok_or("missing")?;
        assert_eq!(f.secret.expose(), "plain-text-secret-1");
    }
    b.finish().await
}
