//! Knowledge bases as operators manage them (`/admin/knowledge-bases`, `gateway kb …`):
//! create one with its embedding model, upload documents (indexed in the background, each with
//! a live status), and run the exact retrieval an API would do (`…/query`,
//! `/admin/apis/{api}/rag/query`): the back end of the dashboard's RAG test chat.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::knowledge::{KbInput, KbPatch, KbRecord};

use crate::api::{Shared, audit, body};
use crate::error::AdminError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbDef {
    pub name: String,
    /// `local/minilm` (default: no key, on this machine), or any provider's embedding model.
    #[serde(default = "minilm")]
    pub embedding_model: String,
    #[serde(default = "two_hundred")]
    pub chunk_tokens: i64,
    #[serde(default = "forty")]
    pub overlap_tokens: i64,
}

fn minilm() -> String {
    "local/minilm".into()
}
fn two_hundred() -> i64 {
    200
}
fn forty() -> i64 {
    40
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KbChange {
    pub embedding_model: Option<String>,
    pub chunk_tokens: Option<i64>,
    pub overlap_tokens: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryDef {
    pub query: String,
    pub top_k: Option<usize>,
    pub min_score: Option<f32>,
    pub mode: Option<String>,
}

async fn kb_of(s: &Shared, name: &str) -> Result<KbRecord, AdminError> {
    s.store
        .get_kb(name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("knowledge base '{name}'")))
}

/// A base with how many of its documents are in each state.
async fn kb_view(s: &Shared, kb: &KbRecord) -> Result<Value, AdminError> {
    let docs = s.store.list_documents(&kb.id).await?;
    let count = |st: &str| docs.iter().filter(|d| d.status == st).count();
    let mut v = serde_json::to_value(kb).map_err(|e| AdminError::BadBody(e.to_string()))?;
    v["documents"] = json!({
        "total": docs.len(), "queued": count("queued"), "indexing": count("indexing"),
        "ready": count("ready"), "error": count("error"),
        "chunks": docs.iter().map(|d| d.chunks).sum::<i64>(),
    });
    Ok(v)
}

fn forget(s: &Shared, name: &str) {
    if let Some(k) = s.gateway.knowledge() {
        k.forget(name);
    }
}

pub async fn list_kbs(State(s): State<Shared>) -> Result<Json<Vec<Value>>, AdminError> {
    let mut out = Vec::new();
    for kb in s.store.list_kbs().await? {
        out.push(kb_view(&s, &kb).await?);
    }
    Ok(Json(out))
}

pub async fn create_kb(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: KbDef = body(&raw)?;
    let kb = s
        .store
        .create_kb(&KbInput {
            name: def.name.clone(),
            embedding_model: def.embedding_model.clone(),
            chunk_tokens: def.chunk_tokens,
            overlap_tokens: def.overlap_tokens,
        })
        .await?;
    audit(
        &s,
        "kb.create",
        &kb.name,
        json!({"embedding_model": kb.embedding_model}),
    )
    .await;
    forget(&s, &kb.name);
    Ok((StatusCode::CREATED, Json(kb_view(&s, &kb).await?)).into_response())
}

pub async fn get_kb(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let kb = kb_of(&s, &name).await?;
    Ok(Json(kb_view(&s, &kb).await?))
}

pub async fn patch_kb(
    State(s): State<Shared>,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let c: KbChange = body(&raw)?;
    let kb = s
        .store
        .update_kb(
            &name,
            &KbPatch {
                embedding_model: c.embedding_model,
                chunk_tokens: c.chunk_tokens,
                overlap_tokens: c.overlap_tokens,
            },
        )
        .await?;
    audit(
        &s,
        "kb.update",
        &name,
        json!({"embedding_model": kb.embedding_model,
        "chunk_tokens": kb.chunk_tokens, "overlap_tokens": kb.overlap_tokens}),
    )
    .await;
    forget(&s, &name);
    Ok(Json(kb_view(&s, &kb).await?))
}

pub async fn delete_kb(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    for r in s.store.list_apis().await? {
        let def = crate::gateway_apis::ApiDef::from_record(&r)?;
        if def
            .api()
            .settings
            .rag
            .as_ref()
            .is_some_and(|r| r.knowledge_base == name)
        {
            return Err(AdminError::Conflict(format!(
                "knowledge base '{name}' is used by API '{}'",
                def.slug
            )));
        }
    }
    if !s.store.delete_kb(&name).await? {
        return Err(AdminError::NotFound(format!("knowledge base '{name}'")));
    }
    audit(&s, "kb.delete", &name, Value::Null).await;
    forget(&s, &name);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_documents(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let kb = kb_of(&s, &name).await?;
    Ok(Json(json!(s.store.list_documents(&kb.id).await?)))
}

pub async fn get_document(
    State(s): State<Shared>,
    Path((name, doc)): Path<(String, String)>,
) -> Result<Json<Value>, AdminError> {
    let kb = kb_of(&s, &name).await?;
    let d = s
        .store
        .get_document(&kb.id, &doc)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("document '{doc}'")))?;
    Ok(Json(json!(d)))
}

/// `PUT …/documents/{name}` with the file as the body: queued for indexing (202). The same
/// name again replaces the document.
pub async fn put_document(
    State(s): State<Shared>,
    Path((name, doc)): Path<(String, String)>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let kb = kb_of(&s, &name).await?;
    let k = s.gateway.knowledge().ok_or_else(|| {
        AdminError::Unavailable("the knowledge base is not running on this gateway".into())
    })?;
    let display = store::knowledge::document_name(&doc)?;
    if !knowledge::supported(&display) {
        return Err(AdminError::BadBody(format!(
            "unsupported file type: '{display}'; upload one of {}",
            knowledge::EXTENSIONS.join(", ")
        )));
    }
    let max = k.ingestor.limits.max_bytes;
    if raw.len() > max {
        return Err(AdminError::TooLarge(format!(
            "'{display}' is {} bytes; the upload limit is {max} bytes",
            raw.len()
        )));
    }
    if raw.is_empty() {
        return Err(AdminError::BadBody("the file is empty".into()));
    }
    let sha = hex::encode(Sha256::digest(&raw));
    let d = s.store.put_document(&kb.id, &display, &raw, &sha).await?;
    k.ingestor.wake();
    audit(
        &s,
        "kb.upload",
        &format!("{name}/{display}"),
        json!({"bytes": raw.len(), "sha256": sha}),
    )
    .await;
    forget(&s, &name);
    Ok((StatusCode::ACCEPTED, Json(json!(d))).into_response())
}

pub async fn delete_document(
    State(s): State<Shared>,
    Path((name, doc)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    let kb = kb_of(&s, &name).await?;
    if !s.store.delete_document(&kb.id, &doc).await? {
        return Err(AdminError::NotFound(format!("document '{doc}'")));
    }
    if let Some(k) = s.gateway.knowledge() {
        k.retriever.invalidate(&kb.id);
    }
    audit(
        &s,
        "kb.delete_document",
        &format!("{name}/{doc}"),
        Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn run_query(
    s: &Shared,
    kb: &KbRecord,
    settings: &access::stages::RagSettings,
    query: &str,
) -> Result<Json<Value>, AdminError> {
    let k = s.gateway.knowledge().ok_or_else(|| {
        AdminError::Unavailable("the knowledge base is not running on this gateway".into())
    })?;
    if query.trim().is_empty() {
        return Err(AdminError::BadBody("query: must not be empty".into()));
    }
    let r = k
        .query(kb, query, settings)
        .await
        .map_err(|e| AdminError::Unavailable(e.to_string()))?;
    let injected = (!r.hits.is_empty()).then(|| knowledge::retrieve::context_message(&r.hits));
    Ok(Json(json!({
        "knowledge_base": kb.name,
        "embedding_model": kb.embedding_model,
        "settings": settings,
        "chunks": r.hits,
        "injected": injected,
        "embed_ms": r.embed_ms,
        "search_ms": r.search_ms,
    })))
}

/// `POST /admin/knowledge-bases/{kb}/query`: retrieval with the given (or default) settings.
pub async fn query_kb(
    State(s): State<Shared>,
    Path(name): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let q: QueryDef = body(&raw)?;
    let kb = kb_of(&s, &name).await?;
    let mut settings: access::stages::RagSettings =
        serde_json::from_value(json!({"knowledge_base": name}))
            .map_err(|e| AdminError::BadBody(e.to_string()))?;
    if let Some(k) = q.top_k {
        settings.top_k = k;
    }
    if let Some(m) = q.min_score {
        settings.min_score = m;
    }
    if let Some(m) = q.mode {
        settings.mode = m;
    }
    let mut check = access::api::Api::new("probe", access::api::AuthMode::Public);
    check.settings.rag = Some(settings.clone());
    check
        .validate()
        .map_err(|e| AdminError::BadBody(e.to_string()))?;
    run_query(&s, &kb, &settings, &q.query).await
}

/// `POST /admin/apis/{api}/rag/query`: exactly what the API's RAG stage would inject.
pub async fn query_api(
    State(s): State<Shared>,
    Path(slug): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let q: QueryDef = body(&raw)?;
    let rec = s
        .store
        .get_api(&slug)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("API '{slug}'")))?;
    let def = crate::gateway_apis::ApiDef::from_record(&rec)?;
    let settings = def
        .api()
        .settings
        .rag
        .clone()
        .ok_or_else(|| AdminError::BadBody(format!("API '{slug}' has no rag settings")))?;
    let kb = kb_of(&s, &settings.knowledge_base).await?;
    run_query(&s, &kb, &settings, &q.query).await
}
