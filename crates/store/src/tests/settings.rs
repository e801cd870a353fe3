use super::{TestResult, backends};

#[tokio::test]
async fn settings_set_get_replace_and_delete() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        assert_eq!(store.get_setting("theme").await?, None);
        store.set_setting("theme", "dark").await?;
        assert_eq!(store.get_setting("theme").await?.as_deref(), Some("dark"));
        store.set_setting("theme", "light").await?;
        assert_eq!(store.get_setting("theme").await?.as_deref(), Some("light"));
        assert!(!store.set_setting_if_absent("theme", "neon").await?);
        assert_eq!(store.get_setting("theme").await?.as_deref(), Some("light"));
        assert!(store.delete_setting("theme").await?);
        assert!(!store.delete_setting("theme").await?);
    }
    b.finish().await
}

/// Eight instances racing to store the admin token hash: exactly one write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_if_absent_has_exactly_one_winner() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let value = format!("hash-{i}");
                    let won = store
                        .set_setting_if_absent("admin_token_hash", &value)
                        .await?;
                    Ok::<_, crate::StoreError>((won, value))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (won, value) = task.await??;
            if won {
                winners.push(value);
            }
        }
        assert_eq!(winners.len(), 1, "{:?}: {winners:?}", store.backend());
        let stored = store.get_setting("admin_token_hash").await?;
        assert_eq!(stored.as_ref(), winners.first());
    }
    b.finish().await
}
