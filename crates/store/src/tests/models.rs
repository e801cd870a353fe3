use serde_json::json;

use super::{TestResult, backends};
use crate::{ModelInput, StoreError};

fn route(name: &str) -> ModelInput {
    ModelInput {
        name: name.into(),
        targets: json!([
            {"provider": "openai", "model": "gpt-4o", "weight": 3},
            {"provider": "azure-east", "model": "gpt-4o"}
        ]),
        fallbacks: json!({"rate_limit": ["claude-sonnet"], "context_length": ["gpt-4.1"]}),
        options: json!({
            "context_window": 128000,
            "input_per_million": 2.5,
            "output_per_million": 10.0,
            "cached_input_per_million": 1.25,
            "note": "ünïcode ✓",
            "capabilities": {"tools": true, "vision": null}
        }),
    }
}

#[tokio::test]
async fn model_json_round_trips() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let input = route("smart");
        let created = store.upsert_model(&input).await?;
        assert_eq!(created.targets, input.targets, "{:?}", store.backend());
        assert_eq!(created.fallbacks, input.fallbacks);
        assert_eq!(created.options, input.options);
        assert_eq!(store.get_model("smart").await?.as_ref(), Some(&created));

        let changed = ModelInput {
            targets: json!([{"provider": "anthropic", "model": "claude-sonnet"}]),
            ..route("smart")
        };
        let updated = store.upsert_model(&changed).await?;
        assert_eq!(updated.id, created.id);
        assert_eq!(updated.created_at, created.created_at);
        assert_eq!(updated.targets, changed.targets);

        store.upsert_model(&ModelInput::new("alpha")).await?;
        let names: Vec<String> = store
            .list_models()
            .await?
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["alpha", "smart"]);

        let body = serde_json::to_value(&updated)?;
        assert_eq!(body["options"]["input_per_million"], 2.5);

        assert!(store.delete_model("smart").await?);
        assert!(!store.delete_model("smart").await?);
        assert!(store.get_model("smart").await?.is_none());
    }
    b.finish().await
}

#[tokio::test]
async fn creating_a_taken_model_name_is_a_conflict() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store.create_model(&route("dup")).await?;
        assert!(
            matches!(
                store.create_model(&ModelInput::new("dup")).await,
                Err(StoreError::Conflict(_))
            ),
            "{:?}",
            store.backend()
        );
        let kept = store.get_model("dup").await?.ok_or("row lost")?;
        assert_eq!(kept.targets, route("dup").targets);
    }
    b.finish().await
}

#[tokio::test]
async fn model_json_of_the_wrong_shape_is_refused() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let bad = [
            ModelInput {
                targets: json!({"provider": "openai"}),
                ..ModelInput::new("m")
            },
            ModelInput {
                fallbacks: json!([]),
                ..ModelInput::new("m")
            },
            ModelInput {
                options: json!(1),
                ..ModelInput::new("m")
            },
            ModelInput::new(""),
        ];
        for input in &bad {
            assert!(matches!(
                store.upsert_model(input).await,
                Err(StoreError::Invalid(_))
            ));
        }
        assert!(store.list_models().await?.is_empty());
    }
    b.finish().await
}
