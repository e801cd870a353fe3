//! Knowledge bases: their documents (with a live status), the uploads waiting to be indexed,
//! and the chunks with their vectors and full-text index.
//!
//! Every chunk query takes the knowledge base's id and filters by it inside the statement:
//! whatever a caller asks, a search of one base never returns another base's chunk.
//!
//! Ingestion is a queue in the table itself: an upload is a `queued` document; a worker claims
//! one with a conditional update (stamping `claimed_at`, its claim token), refreshes the stamp
//! while it works, and finishes or fails it only while the stamp is still its own. A claim whose
//! stamp went stale (its instance died) is taken over; so a restart loses no upload.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::batch::{list, placeholders};
use crate::columns::{bool_column, new_id, now_ms};
use crate::{Store, StoreError};

/// What the admin writes when creating a knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub struct KbInput {
    pub name: String,
    pub embedding_model: String,
    pub chunk_tokens: i64,
    pub overlap_tokens: i64,
}

impl KbInput {
    /// What `create_kb` accepts; the message starts with the field's name.
    pub fn check(&self) -> Result<(), StoreError> {
        if !valid_name(&self.name) {
            return Err(StoreError::Invalid(
                "name: 1-64 letters, digits, '-' or '_'".into(),
            ));
        }
        if self.embedding_model.trim().is_empty() || self.embedding_model.len() > 200 {
            return Err(StoreError::Invalid(
                "embedding_model: a model name such as local/minilm or openai/text-embedding-3-small"
                    .into(),
            ));
        }
        check_sizes(self.chunk_tokens, self.overlap_tokens)
    }
}

/// A change to a knowledge base; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KbPatch {
    pub embedding_model: Option<String>,
    pub chunk_tokens: Option<i64>,
    pub overlap_tokens: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KbRecord {
    pub id: String,
    pub name: String,
    pub embedding_model: String,
    /// Set by the first indexed document; every later vector must have it.
    pub dim: Option<i64>,
    pub chunk_tokens: i64,
    pub overlap_tokens: i64,
    /// The embedding model can no longer change (a document was uploaded).
    pub locked: bool,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentRecord {
    pub id: String,
    pub kb_id: String,
    pub name: String,
    pub bytes: i64,
    pub sha256: String,
    /// `queued`, `indexing`, `ready` or `error`.
    pub status: String,
    pub error: Option<String>,
    pub chunks: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A document claimed for indexing, with its bytes and the claim token that finishing needs.
#[derive(Debug, Clone)]
pub struct Claim {
    pub document: DocumentRecord,
    pub kb: KbRecord,
    pub content: Vec<u8>,
    pub token: i64,
}

/// One chunk as the indexer writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkInput {
    pub ordinal: i64,
    pub heading: Option<String>,
    pub text: String,
    pub tokens: i64,
    pub vector: Vec<f32>,
}

/// A chunk as retrieval shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRecord {
    pub id: i64,
    pub document: String,
    pub ordinal: i64,
    pub heading: Option<String>,
    pub text: String,
}

/// Every vector of one base, for the in-process index, as of `version`.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    pub version: i64,
    pub dim: usize,
    pub ids: Vec<i64>,
    /// `ids.len() × dim` components, row-major.
    pub vectors: Vec<f32>,
}

const KB_COLUMNS: &str = "id, name, embedding_model, dim, chunk_tokens, overlap_tokens, locked, version, created_at, updated_at";
const DOC_COLUMNS: &str =
    "id, kb_id, name, bytes, sha256, status, error, chunks, created_at, updated_at";

fn kb_row(row: &AnyRow) -> Result<KbRecord, StoreError> {
    Ok(KbRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        embedding_model: row.try_get("embedding_model")?,
        dim: row.try_get("dim")?,
        chunk_tokens: row.try_get("chunk_tokens")?,
        overlap_tokens: row.try_get("overlap_tokens")?,
        locked: bool_column(row, "locked")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn doc_row(row: &AnyRow) -> Result<DocumentRecord, StoreError> {
    Ok(DocumentRecord {
        id: row.try_get("id")?,
        kb_id: row.try_get("kb_id")?,
        name: row.try_get("name")?,
        bytes: row.try_get("bytes")?,
        sha256: row.try_get("sha256")?,
        status: row.try_get("status")?,
        error: row.try_get("error")?,
        chunks: row.try_get("chunks")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_sizes(chunk_tokens: i64, overlap_tokens: i64) -> Result<(), StoreError> {
    if !(16..=8192).contains(&chunk_tokens) {
        return Err(StoreError::Invalid(
            "chunk_tokens: between 16 and 8192".into(),
        ));
    }
    if overlap_tokens < 0 || overlap_tokens >= chunk_tokens {
        return Err(StoreError::Invalid(
            "overlap_tokens: at least 0 and less than chunk_tokens".into(),
        ));
    }
    Ok(())
}

/// A document's display name: its file name without any directory part, as the operator sees
/// it. The bytes are stored under the document's generated id, never under this name.
pub fn document_name(name: &str) -> Result<String, StoreError> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name).trim();
    let ok = (1..=200).contains(&base.len())
        && base != "."
        && base != ".."
        && !base.chars().any(|c| c.is_control());
    if ok {
        Ok(base.to_string())
    } else {
        Err(StoreError::Invalid(
            "document name: 1-200 printable characters".into(),
        ))
    }
}

/// Little-endian f32s: the vector column's format on both backends.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn decode_vector_into(bytes: &[u8], out: &mut Vec<f32>) {
    for c in bytes.chunks_exact(4) {
        out.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
}

/// The words of a question as a full-text query that cannot be misread as query syntax: each
/// term quoted, any of them may match. `None` when nothing searchable is left.
pub fn fts_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2 && !STOP_WORDS.contains(&w.to_lowercase().as_str()))
        .map(str::to_lowercase)
        .collect();
    terms.sort();
    terms.dedup();
    terms.truncate(32);
    terms
}

/// Words that match nearly every chunk and would only add noise to an any-term query.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "me", "my", "of", "on", "or", "our", "that", "the", "this", "to", "was",
    "we", "what", "when", "where", "which", "who", "why", "will", "with", "you", "your",
];

impl Store {
    pub async fn create_kb(&self, input: &KbInput) -> Result<KbRecord, StoreError> {
        input.check()?;
        let now = now_ms();
        let id = new_id();
        sqlx::query(
            "INSERT INTO knowledge_bases (id, name, embedding_model, chunk_tokens, overlap_tokens, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(&input.name)
        .bind(&input.embedding_model)
        .bind(input.chunk_tokens)
        .bind(input.overlap_tokens)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get_kb(&input.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("knowledge base {}", input.name)))
    }

    pub async fn get_kb(&self, name: &str) -> Result<Option<KbRecord>, StoreError> {
        let sql = format!("SELECT {KB_COLUMNS} FROM knowledge_bases WHERE name = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(kb_row)
            .transpose()
    }

    pub async fn list_kbs(&self) -> Result<Vec<KbRecord>, StoreError> {
        let sql = format!("SELECT {KB_COLUMNS} FROM knowledge_bases ORDER BY name");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(kb_row)
            .collect()
    }

    /// Changes a base's settings. The embedding model is refused once the base is locked: the
    /// stored vectors would no longer share one space with new ones.
    pub async fn update_kb(&self, name: &str, patch: &KbPatch) -> Result<KbRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {KB_COLUMNS} FROM knowledge_bases WHERE name = $1");
        let kb = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(kb_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("knowledge base {name}")))?;
        if let Some(m) = &patch.embedding_model
            && *m != kb.embedding_model
            && kb.locked
        {
            return Err(StoreError::Conflict(format!(
                "knowledge base {name} is locked to embedding model {}: its documents were embedded with it; create a new knowledge base for another model",
                kb.embedding_model
            )));
        }
        let model = patch.embedding_model.clone().unwrap_or(kb.embedding_model);
        let chunk = patch.chunk_tokens.unwrap_or(kb.chunk_tokens);
        let overlap = patch.overlap_tokens.unwrap_or(kb.overlap_tokens);
        check_sizes(chunk, overlap)?;
        sqlx::query(
            "UPDATE knowledge_bases SET embedding_model = $1, chunk_tokens = $2, overlap_tokens = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(&model)
        .bind(chunk)
        .bind(overlap)
        .bind(now_ms())
        .bind(&kb.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_kb(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("knowledge base {name}")))
    }

    /// Deletes a base with its documents, uploads and chunks. Returns whether it existed.
    pub async fn delete_kb(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM knowledge_bases WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        // Chunks first, so the full-text index's delete trigger sees every row.
        sqlx::query("DELETE FROM kb_chunks WHERE kb_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM knowledge_bases WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues an upload. A document of the same name in the base is replaced: its chunks leave
    /// the index in the same transaction. The base locks to its embedding model.
    pub async fn put_document(
        &self,
        kb_id: &str,
        name: &str,
        content: &[u8],
        sha256: &str,
    ) -> Result<DocumentRecord, StoreError> {
        let name = document_name(name)?;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT id FROM kb_documents WHERE kb_id = $1 AND name = $2")
                .bind(kb_id)
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(old) = &old {
            sqlx::query("DELETE FROM kb_chunks WHERE document_id = $1")
                .bind(old)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM kb_documents WHERE id = $1")
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        let bump = i64::from(old.is_some());
        let locked = sqlx::query(
            "UPDATE knowledge_bases SET locked = TRUE, version = version + $1, updated_at = $2 WHERE id = $3",
        )
        .bind(bump)
        .bind(now)
        .bind(kb_id)
        .execute(&mut *tx)
        .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::NotFound("knowledge base".into()));
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO kb_documents (id, kb_id, name, bytes, sha256, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6)",
        )
        .bind(&id)
        .bind(kb_id)
        .bind(&name)
        .bind(i64::try_from(content.len()).unwrap_or(i64::MAX))
        .bind(sha256)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO kb_uploads (document_id, content) VALUES ($1, $2)")
            .bind(&id)
            .bind(content.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.get_document(kb_id, &name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("document {name}")))
    }

    pub async fn get_document(
        &self,
        kb_id: &str,
        name: &str,
    ) -> Result<Option<DocumentRecord>, StoreError> {
        let sql = format!("SELECT {DOC_COLUMNS} FROM kb_documents WHERE kb_id = $1 AND name = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kb_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(doc_row)
            .transpose()
    }

    pub async fn list_documents(&self, kb_id: &str) -> Result<Vec<DocumentRecord>, StoreError> {
        let sql = format!("SELECT {DOC_COLUMNS} FROM kb_documents WHERE kb_id = $1 ORDER BY name");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kb_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(doc_row)
            .collect()
    }

    /// Removes a document and its chunks. Returns whether it existed.
    pub async fn delete_document(&self, kb_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM kb_documents WHERE kb_id = $1 AND name = $2")
                .bind(kb_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM kb_chunks WHERE document_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM kb_documents WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE knowledge_bases SET version = version + 1, updated_at = $1 WHERE id = $2",
        )
        .bind(now_ms())
        .bind(kb_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Claims the oldest queued document, or one whose claim went stale before `stale_before`
    /// (unix ms). `None` when there is nothing to index.
    pub async fn claim_document(&self, stale_before: i64) -> Result<Option<Claim>, StoreError> {
        loop {
            let candidate: Option<String> = sqlx::query_scalar(
                "SELECT id FROM kb_documents WHERE status = 'queued' OR (status = 'indexing' AND claimed_at < $1) \
                 ORDER BY created_at LIMIT 1",
            )
            .bind(stale_before)
            .fetch_optional(&self.pool)
            .await?;
            let Some(id) = candidate else {
                return Ok(None);
            };
            let token = now_ms();
            let claimed = sqlx::query(
                "UPDATE kb_documents SET status = 'indexing', claimed_at = $1, updated_at = $1 \
                 WHERE id = $2 AND (status = 'queued' OR (status = 'indexing' AND claimed_at < $3))",
            )
            .bind(token)
            .bind(&id)
            .bind(stale_before)
            .execute(&self.pool)
            .await?;
            if claimed.rows_affected() == 0 {
                // Another worker took it first; look again.
                continue;
            }
            let sql = format!("SELECT {DOC_COLUMNS} FROM kb_documents WHERE id = $1");
            let Some(document) = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(doc_row)
                .transpose()?
            else {
                continue;
            };
            let sql = format!("SELECT {KB_COLUMNS} FROM knowledge_bases WHERE id = $1");
            let kb = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&document.kb_id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(kb_row)
                .transpose()?;
            let content: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT content FROM kb_uploads WHERE document_id = $1")
                    .bind(&id)
                    .fetch_optional(&self.pool)
                    .await?;
            match (kb, content) {
                (Some(kb), Some(content)) => {
                    return Ok(Some(Claim {
                        document,
                        kb,
                        content,
                        token,
                    }));
                }
                // Deleted or replaced in between: nothing to index.
                _ => continue,
            }
        }
    }

    /// Refreshes a claim so no other worker takes it over. Returns the new token, or `None`
    /// when the claim was lost (the document was deleted, replaced or taken over).
    pub async fn renew_claim(
        &self,
        document_id: &str,
        token: i64,
    ) -> Result<Option<i64>, StoreError> {
        let next = now_ms().max(token + 1);
        let r = sqlx::query(
            "UPDATE kb_documents SET claimed_at = $1 WHERE id = $2 AND status = 'indexing' AND claimed_at = $3",
        )
        .bind(next)
        .bind(document_id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok((r.rows_affected() == 1).then_some(next))
    }

    /// Writes an indexed document's chunks and marks it `ready`, in one transaction, if the
    /// claim is still the caller's. Returns whether it was written.
    pub async fn finish_document(
        &self,
        claim: &Claim,
        token: i64,
        chunks: &[ChunkInput],
    ) -> Result<bool, StoreError> {
        let dim = chunks.first().map(|c| c.vector.len());
        if chunks
            .iter()
            .any(|c| Some(c.vector.len()) != dim || c.vector.is_empty())
        {
            return Err(StoreError::Invalid(
                "every chunk needs a vector of the same length".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let ours = sqlx::query(
            "UPDATE kb_documents SET status = 'ready', error = NULL, chunks = $1, claimed_at = NULL, updated_at = $2 \
             WHERE id = $3 AND status = 'indexing' AND claimed_at = $4",
        )
        .bind(i64::try_from(chunks.len()).unwrap_or(i64::MAX))
        .bind(now)
        .bind(&claim.document.id)
        .bind(token)
        .execute(&mut *tx)
        .await?;
        if ours.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(dim) = dim {
            let dim = i64::try_from(dim).unwrap_or(i64::MAX);
            let stored: Option<i64> =
                sqlx::query_scalar("SELECT dim FROM knowledge_bases WHERE id = $1")
                    .bind(&claim.kb.id)
                    .fetch_one(&mut *tx)
                    .await?;
            if stored.is_some_and(|d| d != dim) {
                return Err(StoreError::Invalid(format!(
                    "vectors have {dim} dimensions; this knowledge base holds {} (was the embedding model changed?)",
                    stored.unwrap_or_default()
                )));
            }
        }
        sqlx::query("DELETE FROM kb_chunks WHERE document_id = $1")
            .bind(&claim.document.id)
            .execute(&mut *tx)
            .await?;
        const WIDTH: usize = 7;
        for part in chunks.chunks(100) {
            let sql = format!(
                "INSERT INTO kb_chunks (kb_id, document_id, ordinal, heading, text, tokens, vector) VALUES {}",
                placeholders(self.backend(), part.len(), WIDTH)
            );
            // Only placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in part {
                q = q
                    .bind(claim.kb.id.clone())
                    .bind(claim.document.id.clone())
                    .bind(c.ordinal)
                    .bind(c.heading.clone())
                    .bind(c.text.clone())
                    .bind(c.tokens)
                    .bind(encode_vector(&c.vector));
            }
            q.execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE knowledge_bases SET version = version + 1, dim = COALESCE(dim, $1), updated_at = $2 WHERE id = $3",
        )
        .bind(dim.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
        .bind(now)
        .bind(&claim.kb.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM kb_uploads WHERE document_id = $1")
            .bind(&claim.document.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a claimed document `error` with the reason and drops its upload.
    pub async fn fail_document(
        &self,
        document_id: &str,
        token: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let reason: String = reason.chars().take(1000).collect();
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE kb_documents SET status = 'error', error = $1, claimed_at = NULL, updated_at = $2 \
             WHERE id = $3 AND status = 'indexing' AND claimed_at = $4",
        )
        .bind(&reason)
        .bind(now_ms())
        .bind(document_id)
        .bind(token)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            sqlx::query("DELETE FROM kb_uploads WHERE document_id = $1")
                .bind(document_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// The version of a base's chunks (grows with every change), or `None` if it is gone.
    pub async fn kb_version(&self, kb_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM knowledge_bases WHERE id = $1")
                .bind(kb_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every vector of a base with the version it belongs to, read in one transaction.
    pub async fn load_vectors(&self, kb_id: &str) -> Result<VectorSet, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query("SELECT version, dim FROM knowledge_bases WHERE id = $1")
            .bind(kb_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound("knowledge base".into()))?;
        let version: i64 = head.try_get("version")?;
        let dim: Option<i64> = head.try_get("dim")?;
        let dim = usize::try_from(dim.unwrap_or(0)).unwrap_or(0);
        let rows = sqlx::query("SELECT id, vector FROM kb_chunks WHERE kb_id = $1 ORDER BY id")
            .bind(kb_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut set = VectorSet {
            version,
            dim,
            ids: Vec::with_capacity(rows.len()),
            vectors: Vec::with_capacity(rows.len() * dim),
        };
        for row in &rows {
            let bytes: Vec<u8> = row.try_get("vector")?;
            if bytes.len() != dim * 4 {
                continue;
            }
            set.ids.push(row.try_get("id")?);
            decode_vector_into(&bytes, &mut set.vectors);
        }
        Ok(set)
    }

    /// Full-text search of one base: chunk ids with a relevance score (higher is better),
    /// best first. BM25 from FTS5 on SQLite, `ts_rank_cd` on PostgreSQL.
    pub async fn search_text(
        &self,
        kb_id: &str,
        query: &str,
        limit: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let terms = fts_terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match self.backend() {
            crate::Backend::Sqlite => {
                let terms = self.selective_terms(terms).await?;
                if terms.is_empty() {
                    return Ok(Vec::new());
                }
                let expr = terms
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                // `ORDER BY rank` (bm25 with default weights, as `bm25()`), not `ORDER BY
                // bm25(...)`: FTS5 then ranks and sorts the matches itself and the tenant filter,
                // which reads each row's content, stops once the limit is met instead of running
                // for every match (kb-retrieval: full-text p99 22 → 11 ms at 100,000 chunks).
                sqlx::query(
                    "SELECT rowid AS id, -rank AS score FROM kb_chunks_fts \
                     WHERE kb_chunks_fts MATCH $1 AND kb_id = $2 ORDER BY rank LIMIT $3",
                )
                .bind(expr)
                .bind(kb_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            crate::Backend::Postgres => {
                let expr = terms.join(" | ");
                sqlx::query(
                    "SELECT id, CAST(ts_rank_cd(tsv, q) AS DOUBLE PRECISION) AS score \
                     FROM kb_chunks, to_tsquery('english', $1) q \
                     WHERE kb_id = $2 AND tsv @@ q ORDER BY score DESC, id LIMIT $3",
                )
                .bind(expr)
                .bind(kb_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("score")?)))
            .collect()
    }

    /// The query terms worth searching for: those in at most 2% of all chunks (at least 1,000).
    /// A term that common says little about relevance (its BM25 weight is near zero) and
    /// makes the search rank a large part of the table; when every term is that common the
    /// vector ranking decides alone.
    async fn selective_terms(&self, terms: Vec<String>) -> Result<Vec<String>, StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM kb_chunks")
            .fetch_one(&self.pool)
            .await?;
        if total < 1000 {
            return Ok(terms);
        }
        let cap = (total / 50).max(1000);
        let mut counted: Vec<(i64, String)> = Vec::with_capacity(terms.len());
        for t in terms {
            // Counted by the index itself (so stemmed as it stems), and only up to the cap:
            // walking a doclist is cheap, ranking it is not.
            let docs: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT rowid FROM kb_chunks_fts WHERE kb_chunks_fts MATCH $1 LIMIT $2)",
            )
            .bind(format!("\"{t}\""))
            .bind(cap + 1)
            .fetch_one(&self.pool)
            .await?;
            counted.push((docs, t));
        }
        counted.sort();
        let keep: Vec<String> = counted
            .iter()
            .filter(|(d, _)| *d <= cap)
            .map(|(_, t)| t.clone())
            .collect();
        Ok(keep)
    }

    /// The chunks with these ids that belong to this base (others are silently absent).
    pub async fn get_chunks(
        &self,
        kb_id: &str,
        ids: &[i64],
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = list(self.backend(), ids.len());
        let kb_param = match self.backend() {
            crate::Backend::Sqlite => "?".to_string(),
            crate::Backend::Postgres => format!("${}", ids.len() + 1),
        };
        let sql = format!(
            "SELECT c.id, d.name AS document, c.ordinal, c.heading, c.text FROM kb_chunks c \
             JOIN kb_documents d ON d.id = c.document_id WHERE c.id IN ({list}) AND c.kb_id = {kb_param}"
        );
        // Only placeholders are interpolated; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        q.bind(kb_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(ChunkRecord {
                    id: r.try_get("id")?,
                    document: r.try_get("document")?,
                    ordinal: r.try_get("ordinal")?,
                    heading: r.try_get("heading")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }
}
