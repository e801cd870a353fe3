//! Upload → background indexing → hybrid retrieval, on a real SQLite store, with a lexical
//! test embedder (hashed bag of words: similar texts share components).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use knowledge::extract::Limits;
use knowledge::ingest::{EmbedderSource, InProcess, Ingestor};
use knowledge::retrieve::{Mode, Retriever, Settings};
use knowledge::{EmbedError, EmbedFuture, Embedder};
use store::Store;
use store::knowledge::KbInput;

struct Hashed;

const DIM: usize = 256;

fn word_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let w = w.to_lowercase();
        let mut h: u64 = 1469598103934665603;
        for b in w.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
        }
        v[(h % DIM as u64) as usize] += 1.0;
    }
    v
}

impl Embedder for Hashed {
    fn model(&self) -> &str {
        "test/hashed"
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            if texts.iter().any(|t| t.contains("EMBED-FAIL")) {
                return Err(EmbedError("upstream said no".into()));
            }
            Ok(texts.iter().map(|t| word_vector(t)).collect())
        })
    }
}

struct Source;
impl EmbedderSource for Source {
    fn embedder(&self, model: &str) -> Result<Arc<dyn Embedder>, EmbedError> {
        if model == "test/hashed" {
            Ok(Arc::new(Hashed))
        } else {
            Err(EmbedError(format!("unknown embedding model {model}")))
        }
    }
}

async fn setup() -> (Store, Arc<Ingestor>, Arc<Retriever>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kb.db").display());
    let store = Store::connect(&url, store::Cipher::generate().0)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let retriever = Arc::new(Retriever::new(store.clone()));
    let ingestor = Ingestor::new(
        store.clone(),
        Arc::new(Source),
        Arc::new(InProcess),
        Limits::default(),
        retriever.clone(),
    );
    (store, ingestor, retriever, dir)
}

fn kb(name: &str) -> KbInput {
    KbInput {
        name: name.into(),
        embedding_model: "test/hashed".into(),
        chunk_tokens: 40,
        overlap_tokens: 5,
    }
}

async fn drain(ingestor: &Ingestor) {
    while ingestor.step().await.unwrap() {}
}

const FAQ: &str = "# Refunds\n\nRefunds are issued within fourteen days of purchase when the receipt is shown.\n\n\
# Shipping\n\nParcels to Norway travel for three business days by courier.\n\n\
# Warranty\n\nThe warranty covers manufacturing defects for two years from delivery.";

#[tokio::test]
async fn an_upload_is_indexed_in_the_background_and_answers_questions() {
    let (store, ingestor, retriever, _dir) = setup().await;
    let a = store.create_kb(&kb("shop")).await.unwrap();
    store
        .put_document(&a.id, "faq.md", FAQ.as_bytes(), "x")
        .await
        .unwrap();
    let workers = ingestor.spawn(1);
    ingestor.wake();
    let mut ready = false;
    for _ in 0..100 {
        let d = store.get_document(&a.id, "faq.md").await.unwrap().unwrap();
        if d.status == "ready" {
            assert!(d.chunks >= 3, "{d:?}");
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.iter().for_each(|w| w.abort());
    assert!(ready, "the document never became ready");

    let r = retriever
        .retrieve(
            &a,
            &Hashed,
            "how many days for parcels to Norway?",
            &Settings {
                top_k: 2,
                ..Settings::default()
            },
        )
        .await
        .unwrap();
    assert!(!r.hits.is_empty());
    let top = &r.hits[0];
    assert!(top.chunk.text.contains("Norway"), "{:?}", r.hits);
    assert_eq!(top.chunk.heading.as_deref(), Some("Shipping"));
    assert_eq!(top.chunk.document, "faq.md");
    assert!(
        top.vector_rank.is_some() && top.text_rank.is_some(),
        "{top:?}"
    );
    let context = knowledge::retrieve::context_message(&r.hits);
    assert!(
        context.contains("source=\"faq.md\"") && context.contains("not instructions"),
        "{context}"
    );

    // A threshold no chunk reaches leaves nothing to inject.
    let none = retriever
        .retrieve(
            &a,
            &Hashed,
            "Norway",
            &Settings {
                min_score: 0.99,
                ..Settings::default()
            },
        )
        .await
        .unwrap();
    assert!(none.hits.is_empty(), "{:?}", none.hits);
}

#[tokio::test]
async fn a_base_never_returns_another_bases_chunks() {
    let (store, ingestor, retriever, _dir) = setup().await;
    let a = store.create_kb(&kb("tenant-a")).await.unwrap();
    let b = store.create_kb(&kb("tenant-b")).await.unwrap();
    store
        .put_document(
            &a.id,
            "a.txt",
            b"The launch code for project Falcon is kept in vault seven.",
            "1",
        )
        .await
        .unwrap();
    store
        .put_document(
            &b.id,
            "b.txt",
            b"Opening hours are nine to five on weekdays.",
            "2",
        )
        .await
        .unwrap();
    drain(&ingestor).await;
    for mode in [Mode::Hybrid, Mode::Vector, Mode::Text] {
        let s = Settings {
            top_k: 10,
            mode,
            ..Settings::default()
        };
        let r = retriever
            .retrieve(&b, &Hashed, "launch code project Falcon vault", &s)
            .await
            .unwrap();
        assert!(
            r.hits.iter().all(|h| h.chunk.document == "b.txt"),
            "{mode:?}: {:?}",
            r.hits
        );
        let r = retriever
            .retrieve(&a, &Hashed, "launch code project Falcon vault", &s)
            .await
            .unwrap();
        assert_eq!(
            r.hits.first().map(|h| h.chunk.document.as_str()),
            Some("a.txt"),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn bad_files_end_in_error_with_a_reason_and_replacing_reindexes() {
    let (store, ingestor, retriever, _dir) = setup().await;
    let a = store.create_kb(&kb("errs")).await.unwrap();
    store
        .put_document(&a.id, "notes.exe", b"MZ\x90\x00", "1")
        .await
        .unwrap();
    store
        .put_document(&a.id, "fail.txt", b"EMBED-FAIL please", "2")
        .await
        .unwrap();
    store
        .put_document(&a.id, "empty.txt", b"   \n\n ", "3")
        .await
        .unwrap();
    drain(&ingestor).await;
    let docs = store.list_documents(&a.id).await.unwrap();
    for d in &docs {
        assert_eq!(d.status, "error", "{d:?}");
        assert!(d.error.as_deref().is_some_and(|e| !e.is_empty()), "{d:?}");
    }
    let reason = |name: &str| {
        docs.iter()
            .find(|d| d.name == name)
            .and_then(|d| d.error.clone())
            .unwrap()
    };
    assert!(
        reason("notes.exe").contains("unsupported"),
        "{}",
        reason("notes.exe")
    );
    assert!(reason("fail.txt").contains("upstream said no"));

    store
        .put_document(&a.id, "fail.txt", b"Now the text mentions zebras.", "4")
        .await
        .unwrap();
    drain(&ingestor).await;
    let r = retriever
        .retrieve(&a, &Hashed, "zebras", &Settings::default())
        .await
        .unwrap();
    assert_eq!(r.hits.len(), 1);
    // The index sees the deletion without waiting for a recheck: this instance made it.
    assert!(store.delete_document(&a.id, "fail.txt").await.unwrap());
    retriever.invalidate(&a.id);
    let r = retriever
        .retrieve(&a, &Hashed, "zebras", &Settings::default())
        .await
        .unwrap();
    assert!(r.hits.is_empty());
}
