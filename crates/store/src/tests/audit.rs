use serde_json::json;

use super::{TestResult, backends};
use crate::{AuditInput, StoreError};

#[tokio::test]
async fn audit_lists_newest_first_within_the_limit() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let mut appended = Vec::new();
        for i in 0..5 {
            let entry = AuditInput {
                actor: "admin".into(),
                action: format!("provider.upsert.{i}"),
                target: (i % 2 == 0).then(|| format!("p{i}")),
                detail: json!({"i": i, "fields": ["priority"]}),
            };
            appended.push(store.append_audit(&entry).await?);
        }
        let newest: Vec<_> = appended.iter().rev().cloned().collect();
        assert_eq!(
            store.list_audit(100).await?,
            newest,
            "{:?}",
            store.backend()
        );
        let page = store.list_audit(3).await?;
        assert_eq!(page.as_slice(), newest.get(..3).ok_or("short")?);
        assert_eq!(page.first().and_then(|r| r.target.as_deref()), Some("p4"));
        assert_eq!(page.get(1).and_then(|r| r.target.as_deref()), None);
        assert!(store.list_audit(0).await?.is_empty());
    }
    b.finish().await
}

#[tokio::test]
async fn audit_detail_must_be_an_object() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let entry = AuditInput {
            actor: "admin".into(),
            action: "x".into(),
            target: None,
            detail: json!("text"),
        };
        assert!(matches!(
            store.append_audit(&entry).await,
            Err(StoreError::Invalid(_))
        ));
    }
    b.finish().await
}
