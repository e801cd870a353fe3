//! Who is calling, decided before the body is read: the gateway API from the path, the client
//! address against that API's IP rules, then the credential its auth mode asks for. Every
//! rejection happens here, before any upstream call, and no message echoes what was presented.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use access::api::{Api, AuthMode, DEFAULT_API};
use access::{ip, keys};
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::key_cache::{Grant, now_ms};
use crate::error::GatewayError;
use crate::state::{Gateway, Snapshot};

/// Credentials longer than this are refused without being looked at.
const MAX_CREDENTIAL: usize = 8 * 1024;

const MISSING: &str = "Missing gateway key: send it as `Authorization: Bearer gw_…` (the `api_key` of an OpenAI SDK) or as `x-api-key`. Keys are created with `gateway key create`.";
const INVALID: &str = "Invalid gateway key: gateway keys start with `gw_` (for example `gw_live_…`) and are created with `gateway key create`. Check that the key is complete and meant for this gateway.";
const INVALID_TOKEN: &str =
    "Invalid credential: send a gateway key (`gw_…`) or a JWT issued for this API.";

/// Who a request comes from, for the stages after the edge.
#[derive(Debug, Clone)]
pub struct Caller {
    pub api: Arc<Api>,
    pub client_ip: IpAddr,
    /// The consumer, when the credential names one.
    pub consumer_id: Option<String>,
    /// The key used, when one was.
    pub key: Option<Arc<Grant>>,
    /// The consumer's own RPM/TPM across all its credentials.
    pub consumer_limits: super::key_cache::ConsumerLimits,
}

impl Caller {
    /// A key scoped to models may call only those (checked once the body names the model).
    pub fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        match &self.key {
            Some(k) if !k.allows_model(model) => Err(GatewayError::Forbidden {
                code: "model_not_allowed",
                message: format!("This gateway key may not call the model `{model}`."),
            }),
            _ => Ok(()),
        }
    }
}

/// The gateway API a path belongs to: `/v1/…` is the default API, `/{api}/v1/…` a named one.
pub fn api_slug(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.split_once('/') {
        Some((first, _)) if first != "v1" => first,
        _ => DEFAULT_API,
    }
}

/// The edge: resolves the API, checks the client address, authenticates.
pub async fn admit(gw: &Gateway, snap: &Snapshot, parts: &Parts) -> Result<Caller, GatewayError> {
    let slug = api_slug(parts.uri.path());
    let api = snap
        .apis
        .get(slug)
        .filter(|a| a.enabled)
        .ok_or_else(|| GatewayError::ApiNotFound(slug.to_string()))?
        .clone();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes());
    let client_ip = ip::client_ip(peer, forwarded, &snap.trusted_proxies);
    if !api.settings.ip.admits(client_ip) {
        return Err(GatewayError::Forbidden {
            code: "ip_not_allowed",
            message: "Requests from this address are not allowed for this API.".into(),
        });
    }
    let mut caller = Caller {
        api,
        client_ip,
        consumer_id: None,
        key: None,
        consumer_limits: Default::default(),
    };
    let mode = caller.api.auth;
    if mode == AuthMode::Public {
        return Ok(caller);
    }
    let presented = credential(&parts.headers)?;
    if mode.accepts_keys() && keys::shape_ok(presented) {
        let grant = key_grant(gw, presented, &caller.api.slug).await?;
        caller.consumer_id = grant.consumer_id.clone();
        caller.consumer_limits = grant.consumer_limits;
        caller.key = Some(grant);
        return Ok(caller);
    }
    if mode.accepts_jwt() && looks_like_jwt(presented) {
        let (id, limits) = super::jwt::consumer(gw, &caller.api, presented).await?;
        caller.consumer_id = Some(id);
        caller.consumer_limits = limits;
        return Ok(caller);
    }
    Err(GatewayError::Unauthorized(
        if mode.accepts_keys() {
            INVALID
        } else {
            INVALID_TOKEN
        }
        .into(),
    ))
}

/// The one credential of a request: `Authorization: Bearer …`, else `x-api-key`. Two of either
/// is ambiguous and refused.
fn credential(h: &HeaderMap) -> Result<&str, GatewayError> {
    let invalid = || GatewayError::Unauthorized(INVALID.into());
    let mut auth = h.get_all(header::AUTHORIZATION).iter();
    let value = match (auth.next(), auth.next()) {
        (Some(_), Some(_)) => return Err(invalid()),
        (Some(v), None) => {
            let v = v.to_str().map_err(|_| invalid())?;
            let (scheme, rest) = v.split_once(' ').ok_or_else(invalid)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(invalid());
            }
            rest.trim()
        }
        (None, _) => {
            let mut x = h.get_all("x-api-key").iter();
            match (x.next(), x.next()) {
                (Some(_), Some(_)) => return Err(invalid()),
                (Some(v), None) => v.to_str().map_err(|_| invalid())?.trim(),
                (None, _) => return Err(GatewayError::Unauthorized(MISSING.into())),
            }
        }
    };
    if value.is_empty() {
        return Err(GatewayError::Unauthorized(MISSING.into()));
    }
    if value.len() > MAX_CREDENTIAL {
        return Err(invalid());
    }
    Ok(value)
}

fn looks_like_jwt(s: &str) -> bool {
    s.bytes().filter(|b| *b == b'.').count() == 2
}

async fn key_grant(gw: &Gateway, presented: &str, slug: &str) -> Result<Arc<Grant>, GatewayError> {
    let digest = keys::digest(presented);
    let grant = gw
        .keys
        .lookup(&digest)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "key lookup failed");
            GatewayError::AuthUnavailable
        })?
        .ok_or_else(|| GatewayError::Unauthorized(INVALID.into()))?;
    let now = now_ms();
    if grant.revoked {
        return Err(GatewayError::Unauthorized(
            "This gateway key was revoked.".into(),
        ));
    }
    if grant.expired(now) {
        return Err(GatewayError::Unauthorized(
            "This gateway key has expired.".into(),
        ));
    }
    if !grant.consumer_active {
        return Err(GatewayError::Forbidden {
            code: "consumer_suspended",
            message: "The consumer this key belongs to is suspended.".into(),
        });
    }
    if !grant.allows_api(slug) {
        return Err(GatewayError::Forbidden {
            code: "key_scope",
            message: format!("This gateway key is not valid for the gateway API `{slug}`."),
        });
    }
    grant.mark_used(now);
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_come_from_the_first_segment() {
        assert_eq!(api_slug("/v1/chat/completions"), "default");
        assert_eq!(api_slug("/support/v1/chat/completions"), "support");
        assert_eq!(api_slug("/v1"), "default");
        assert_eq!(api_slug(""), "default");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn one_credential_is_taken_and_ambiguity_refused() {
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer gw_x")])).unwrap(),
            "gw_x"
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  gw_x ")])).unwrap(),
            "gw_x"
        );
        assert_eq!(
            credential(&headers(&[("x-api-key", "gw_y")])).unwrap(),
            "gw_y"
        );
        for bad in [
            headers(&[]),
            headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            headers(&[("x-api-key", "a"), ("x-api-key", "b")]),
            headers(&[("authorization", "Basic Zm9vOmJhcg==")]),
            headers(&[("authorization", "gw_x")]),
            headers(&[("authorization", "Bearer ")]),
        ] {
            assert!(matches!(
                credential(&bad),
                Err(GatewayError::Unauthorized(_))
            ));
        }
    }
}
