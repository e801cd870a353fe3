use super::{TestResult, backends};
use crate::StoreError;
use crate::knowledge::{ChunkInput, KbInput, KbPatch};

fn kb(name: &str) -> KbInput {
    KbInput {
        name: name.into(),
        embedding_model: "local/minilm".into(),
        chunk_tokens: 200,
        overlap_tokens: 40,
    }
}

fn chunk(ordinal: i64, text: &str, v: [f32; 3]) -> ChunkInput {
    ChunkInput {
        ordinal,
        heading: Some("Intro".into()),
        text: text.into(),
        tokens: text.split_whitespace().count() as i64,
        vector: v.to_vec(),
    }
}

#[tokio::test]
async fn a_document_goes_from_queued_to_ready_and_is_searchable_only_in_its_base() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let a = store.create_kb(&kb("alpha")).await?;
        let other = store.create_kb(&kb("beta")).await?;
        assert!(!a.locked);
        let doc = store
            .put_document(&a.id, "../etc/guide.md", b"# Guide", "ab")
            .await?;
        assert_eq!(
            (doc.name.as_str(), doc.status.as_str()),
            ("guide.md", "queued")
        );
        // The first upload locks the embedding model.
        let locked = store
            .update_kb(
                "alpha",
                &KbPatch {
                    embedding_model: Some("openai/text-embedding-3-small".into()),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(locked, Err(StoreError::Conflict(_))), "{locked:?}");

        let claim = store.claim_document(0).await?.ok_or("nothing to claim")?;
        assert_eq!(claim.document.id, doc.id);
        assert_eq!(claim.content, b"# Guide");
        // Claimed once: a second worker finds nothing (the claim is fresh).
        assert!(store.claim_document(0).await?.is_none());
        let token = store
            .renew_claim(&doc.id, claim.token)
            .await?
            .ok_or("lost claim")?;
        // The stale token no longer finishes anything.
        assert!(!store.finish_document(&claim, claim.token, &[]).await?);
        let chunks = [
            chunk(
                0,
                "Refunds are issued within fourteen days of purchase",
                [1.0, 0.0, 0.0],
            ),
            chunk(
                1,
                "Shipping to Norway takes three business days",
                [0.0, 1.0, 0.0],
            ),
        ];
        assert!(store.finish_document(&claim, token, &chunks).await?);
        let doc = store.get_document(&a.id, "guide.md").await?.ok_or("gone")?;
        assert_eq!((doc.status.as_str(), doc.chunks), ("ready", 2));

        // A chunk in the other base with the same words.
        store.put_document(&other.id, "b.txt", b"x", "cd").await?;
        let c2 = store.claim_document(0).await?.ok_or("nothing to claim")?;
        assert!(
            store
                .finish_document(
                    &c2,
                    c2.token,
                    &[chunk(0, "refunds refunds refunds", [1.0, 0.0, 0.0])]
                )
                .await?
        );

        let hits = store
            .search_text(&a.id, "What is the refund policy?", 10)
            .await?;
        assert_eq!(hits.len(), 1, "{hits:?}");
        let found = store.get_chunks(&a.id, &[hits[0].0]).await?;
        assert!(found[0].text.starts_with("Refunds"), "{found:?}");
        assert_eq!(found[0].document, "guide.md");
        // Asking base A for base B's chunk id returns nothing.
        let b_hits = store.search_text(&other.id, "refunds", 10).await?;
        assert_eq!(b_hits.len(), 1);
        assert!(store.get_chunks(&a.id, &[b_hits[0].0]).await?.is_empty());

        let set = store.load_vectors(&a.id).await?;
        assert_eq!((set.dim, set.ids.len(), set.vectors.len()), (3, 2, 6));
        assert_eq!(&set.vectors[3..6], &[0.0, 1.0, 0.0]);

        // Re-upload replaces: the old chunks leave the index at once.
        let v0 = store.kb_version(&a.id).await?.ok_or("gone")?;
        store
            .put_document(&a.id, "guide.md", b"# Guide v2", "ef")
            .await?;
        assert!(store.kb_version(&a.id).await?.ok_or("gone")? > v0);
        assert!(store.search_text(&a.id, "refunds", 10).await?.is_empty());
        assert_eq!(store.list_documents(&a.id).await?.len(), 1);

        // A failed document keeps its reason.
        let c3 = store.claim_document(0).await?.ok_or("nothing to claim")?;
        assert!(
            store
                .fail_document(&c3.document.id, c3.token, "not a PDF")
                .await?
        );
        let doc = store.get_document(&a.id, "guide.md").await?.ok_or("gone")?;
        assert_eq!(
            (doc.status.as_str(), doc.error.as_deref()),
            ("error", Some("not a PDF"))
        );

        assert!(store.delete_document(&other.id, "b.txt").await?);
        assert!(
            store
                .search_text(&other.id, "refunds", 10)
                .await?
                .is_empty()
        );
        assert!(store.delete_kb("alpha").await?);
        assert!(store.get_kb("alpha").await?.is_none());
    }
    b.finish().await
}

#[tokio::test]
async fn a_stale_claim_is_taken_over_and_the_old_worker_cannot_finish() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        let a = store.create_kb(&kb("gamma")).await?;
        store.put_document(&a.id, "a.txt", b"hello", "00").await?;
        let first = store.claim_document(0).await?.ok_or("nothing to claim")?;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // Everything claimed before now counts as stale: a restarted worker takes it over.
        let second = store
            .claim_document(crate::columns::now_ms())
            .await?
            .ok_or("stale claim not taken over")?;
        assert_eq!(first.document.id, second.document.id);
        assert!(
            !store
                .finish_document(&first, first.token, &[chunk(0, "x", [1.0, 0.0, 0.0])])
                .await?
        );
        assert!(
            store
                .finish_document(&second, second.token, &[chunk(0, "x", [1.0, 0.0, 0.0])])
                .await?
        );
        // Mixed vector lengths are refused whole.
        store.put_document(&a.id, "b.txt", b"hello", "01").await?;
        let c = store.claim_document(0).await?.ok_or("nothing to claim")?;
        let bad = store
            .finish_document(
                &c,
                c.token,
                &[ChunkInput {
                    vector: vec![1.0; 4],
                    ..chunk(0, "y", [0.0; 3])
                }],
            )
            .await;
        assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
        assert!(
            store
                .create_kb(&KbInput {
                    chunk_tokens: 10,
                    ..kb("tiny")
                })
                .await
                .is_err()
        );
        assert!(store.create_kb(&kb("gamma")).await.is_err());
    }
    b.finish().await
}
