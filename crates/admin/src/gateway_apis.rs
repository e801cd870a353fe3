//! Gateway APIs as operators write them (YAML `apis:`, the admin API, `gateway api …`): slug,
//! auth mode, IP rules, JWT settings. Changing an API's auth mode never changes its URL: the
//! slug is the path.

use access::api::{Api, ApiSettings, AuthMode};
use access::ip::IpRules;
use access::jwt::JwtConfig;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{ApiInput, ApiRecord};

use crate::api::{Shared, audit, body, reload};
use crate::catalog::DefError;
use crate::error::AdminError;

/// A gateway API definition.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDef {
    /// The first path segment: `/{slug}/v1/...` (`default` serves the bare `/v1/...`).
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `public`, `keys` (default), `jwt` or `keys_or_jwt`.
    #[serde(default = "keys")]
    pub auth: AuthMode,
    /// Allow/block lists, checked before any authentication.
    #[serde(default, skip_serializing_if = "IpRules::is_empty")]
    pub ip: IpRules,
    /// Required for `jwt` and `keys_or_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Requests and tokens per minute across all consumers of the API.
    #[serde(default, skip_serializing_if = "access::api::ApiLimits::is_empty")]
    pub limits: access::api::ApiLimits,
    /// Prompt/response bodies in the request log (opt-in, capped).
    #[serde(default, skip_serializing_if = "access::api::LogSettings::is_default")]
    pub log: access::api::LogSettings,
    /// The PII guard on prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<access::stages::PiiSettings>,
    /// Input/output moderation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<access::stages::ModerationSettings>,
    /// Retrieval from a knowledge base (by name), injected before the question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<access::stages::RagSettings>,
    /// A function (by name) called before the LLM stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_hook: Option<String>,
    /// A function (by name) told about each response once it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_hook: Option<String>,
    /// A function (by name) that replaces the LLM stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn keys() -> AuthMode {
    AuthMode::Keys
}

fn yes() -> bool {
    true
}

impl ApiDef {
    pub fn api(&self) -> Api {
        Api {
            slug: self.slug.clone(),
            auth: self.auth,
            settings: ApiSettings {
                ip: self.ip.clone(),
                jwt: self.jwt.clone(),
                limits: self.limits,
                log: self.log,
                pii: self.pii.clone(),
                moderation: self.moderation.clone(),
                rag: self.rag.clone(),
                pre_hook: self.pre_hook.clone(),
                post_hook: self.post_hook.clone(),
                function: self.function.clone(),
            },
            enabled: self.enabled,
        }
    }

    /// Validates; `path` names the definition in errors (`apis[2]: settings.jwt: …`).
    pub fn check(&self, path: &str) -> Result<Api, DefError> {
        let api = self.api();
        api.validate()
            .map_err(|e| DefError::new(path, e.to_string()))?;
        Ok(api)
    }

    pub fn to_input(&self) -> Result<ApiInput, DefError> {
        let settings = serde_json::to_value(self.api().settings)
            .map_err(|e| DefError::new(format!("apis.{}", self.slug), e.to_string()))?;
        Ok(ApiInput {
            slug: self.slug.clone(),
            name: self.name.clone(),
            auth: self.auth.as_str().to_string(),
            settings,
            enabled: self.enabled,
        })
    }

    pub fn from_record(r: &ApiRecord) -> Result<ApiDef, DefError> {
        let path = format!("apis.{}", r.slug);
        let auth = AuthMode::parse(&r.auth)
            .ok_or_else(|| DefError::new(format!("{path}.auth"), "unknown auth mode"))?;
        let settings: ApiSettings = serde_json::from_value(r.settings.clone())
            .map_err(|e| DefError::new(format!("{path}.settings"), e.to_string()))?;
        Ok(ApiDef {
            slug: r.slug.clone(),
            name: r.name.clone(),
            auth,
            ip: settings.ip,
            jwt: settings.jwt,
            limits: settings.limits,
            log: settings.log,
            pii: settings.pii,
            moderation: settings.moderation,
            rag: settings.rag,
            pre_hook: settings.pre_hook,
            post_hook: settings.post_hook,
            function: settings.function,
            enabled: r.enabled,
        })
    }
}

pub async fn list_apis(State(s): State<Shared>) -> Result<Json<Vec<ApiDef>>, AdminError> {
    let rows = s.store.list_apis().await?;
    Ok(Json(
        rows.iter()
            .map(ApiDef::from_record)
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

pub async fn get_api(
    State(s): State<Shared>,
    Path(slug): Path<String>,
) -> Result<Json<ApiDef>, AdminError> {
    let r = s
        .store
        .get_api(&slug)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("gateway API '{slug}'")))?;
    Ok(Json(ApiDef::from_record(&r)?))
}

pub async fn create_api(
    State(s): State<Shared>,
    raw: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let def: ApiDef = body(&raw)?;
    def.check(&format!("apis.{}", def.slug))?;
    crate::functions::check_references(&s, &def).await?;
    s.store.create_api(&def.to_input()?).await?;
    audit(&s, "api.create", &def.slug, json!({"auth": def.auth})).await;
    reload(&s).await?;
    Ok((StatusCode::CREATED, Json(def)).into_response())
}

pub async fn put_api(
    State(s): State<Shared>,
    Path(slug): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<ApiDef>, AdminError> {
    let mut v: serde_json::Value = body(&raw)?;
    if let Some(obj) = v.as_object_mut() {
        match obj.get("slug").and_then(serde_json::Value::as_str) {
            Some(x) if x != slug => {
                return Err(AdminError::BadBody(
                    "`slug` in the body differs from the path".into(),
                ));
            }
            _ => {
                obj.insert("slug".into(), serde_json::Value::String(slug.clone()));
            }
        }
    }
    let def: ApiDef = serde_path_to_error::deserialize(v)
        .map_err(|e| AdminError::BadBody(format!("invalid body: {}: {}", e.path(), e.inner())))?;
    def.check(&format!("apis.{}", def.slug))?;
    crate::functions::check_references(&s, &def).await?;
    s.store.upsert_api(&def.to_input()?).await?;
    audit(&s, "api.update", &slug, json!({"auth": def.auth})).await;
    reload(&s).await?;
    Ok(Json(def))
}

pub async fn delete_api(
    State(s): State<Shared>,
    Path(slug): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !s.store.delete_api(&slug).await? {
        return Err(AdminError::NotFound(format!("gateway API '{slug}'")));
    }
    audit(&s, "api.delete", &slug, serde_json::Value::Null).await;
    reload(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}
