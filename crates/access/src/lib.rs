//! Consumer access: who may call a gateway API, decided before any body is read.
//!
//! Map of the crate:
//! - [`keys`]: the gateway key format (`gw_live_<random>`), generation, the SHA-256 digest that
//!   is all the store keeps, the display prefix, and a cheap shape check that rejects garbage
//!   before any lookup.
//! - [`ip`]: allow/block lists of CIDRs and the client address (socket peer, or
//!   `X-Forwarded-For` walked from the right past trusted proxies).
//! - [`jwt`]: bring-your-own-JWT: the per-API [`jwt::JwtConfig`], JWKS parsing and the token
//!   verifier (asymmetric algorithms only, signature before claims).
//! - [`jwks`]: the per-URL JWKS cache in front of the verifier (single-flight, rate-limited
//!   refresh on unknown `kid`, last good set kept when the issuer is down).
//!
//! - [`stages`]: per-API stage settings (PII guard, moderation, hooks, function backend),
//!   validated at load.
//!
//! Nothing here touches the store or HTTP types beyond header values: the data plane's edge
//! composes these pieces with its key cache and the configuration snapshot.

pub mod api;
pub mod ip;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod stages;

#[cfg(test)]
mod test_tokens;
