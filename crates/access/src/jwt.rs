//! Bring-your-own-JWT: verifying a consumer's bearer token against the issuer's JWKS.
//!
//! The gateway never holds a shared secret with the issuer, so only asymmetric algorithms exist
//! here: `HS*` and `none` cannot even be configured ([`Alg`] has no such variant). A token's
//! `alg` must be in the API's [`JwtConfig::algorithms`] *and* fit the key it selects (RSA keys
//! verify `RS*`/`PS*`, P-256 keys `ES256`, P-384 keys `ES384`, Ed25519 keys `EdDSA`, and a key's
//! own `alg` member narrows that further): the classic "verify an HS256 MAC keyed with the RSA
//! public key" confusion has nothing to stand on.
//!
//! Order of work in [`verify`]: size and shape, header (forbidden members, `alg`, `typ`, `kid`),
//! key selection, signature over `header.payload`, and only then the claims (`iss`, `aud`,
//! `exp`, `nbf`, `iat`, the consumer claim). Nothing is read from the payload before the
//! signature checks out.
//!
//! Errors ([`JwtError`]) carry only static text: never the token, a claim value or key material.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest configurable clock leeway, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Longest accepted consumer id, in characters.
pub const MAX_CONSUMER_ID_CHARS: usize = 256;
const MAX_CLAIM_PATH_CHARS: usize = 256;
const MAX_URL_CHARS: usize = 2048;
const MAX_ISSUER_CHARS: usize = 2048;
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
/// Header members that would let the token choose its own key or extend the rules.
const FORBIDDEN_HEADERS: [&str; 5] = ["jku", "x5u", "jwk", "x5c", "crit"];

// ---------------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------------

/// An accepted JWS algorithm, named as in JOSE (RFC 7518, RFC 8037). Symmetric `HS*` and
/// `none` are deliberately absent.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// Every accepted algorithm, which is also the default allow-list.
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name (`"RS256"`, `"EdDSA"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Exact (case-sensitive, as JOSE requires) lookup of a JOSE name.
    fn from_jose(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn fits(self, kind: &KeyKind) -> bool {
        matches!(
            (self, kind),
            (
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
                KeyKind::Rsa { .. }
            ) | (Alg::ES256, KeyKind::P256(_))
                | (Alg::ES384, KeyKind::P384(_))
                | (Alg::EdDSA, KeyKind::Ed25519(_))
        )
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(a) = Alg::from_jose(s) {
            return Ok(a);
        }
        let shown: String = s.chars().take(32).collect();
        if s.eq_ignore_ascii_case("none") {
            Err("\"none\" (unsigned tokens) is not accepted".to_string())
        } else if s.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("HS")) {
            Err(format!("{shown} is symmetric and not accepted"))
        } else {
            Err(format!(
                "unknown algorithm {shown:?}; accepted: RS256, RS384, RS512, PS256, PS384, \
                 PS512, ES256, ES384, EdDSA"
            ))
        }
    }
}

impl Serialize for Alg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Per-API bring-your-own-JWT settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Where the issuer publishes its JWKS (`https://id.example.com/.well-known/jwks.json`).
    pub jwks_url: String,
    /// Exact value the `iss` claim must have.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. A single string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Algorithms a token may use (default: all of [`Alg::ALL`]).
    #[serde(default = "default_algorithms", deserialize_with = "algorithm_list")]
    pub algorithms: Vec<Alg>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30, at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Claim holding the consumer id; dots walk nested objects (`"org.user_id"`).
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
}

fn default_algorithms() -> Vec<Alg> {
    Alg::ALL.to_vec()
}

fn default_leeway() -> u64 {
    30
}

fn default_consumer_claim() -> String {
    "sub".to_string()
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

fn algorithm_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Alg>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| {
            n.parse::<Alg>()
                .map_err(|e| de::Error::custom(format!("algorithms: {e}")))
        })
        .collect()
}

impl JwtConfig {
    /// Checks the settings; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !is_http_url(&self.jwks_url) {
            return Err("jwks_url: must be an http(s) URL".into());
        }
        if self.issuer.is_empty() {
            return Err("issuer: required".into());
        }
        if self.issuer.chars().count() > MAX_ISSUER_CHARS {
            return Err(format!("issuer: at most {MAX_ISSUER_CHARS} characters"));
        }
        if self.audience.is_empty() {
            return Err("audience: at least one required".into());
        }
        if self.audience.iter().any(|a| a.is_empty()) {
            return Err("audience: entries must not be empty".into());
        }
        if self.algorithms.is_empty() {
            return Err("algorithms: at least one required".into());
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!("leeway_secs: at most {MAX_LEEWAY_SECS}"));
        }
        let c = &self.consumer_claim;
        if c.is_empty() || c.chars().count() > MAX_CLAIM_PATH_CHARS {
            return Err(format!(
                "consumer_claim: must be 1-{MAX_CLAIM_PATH_CHARS} characters"
            ));
        }
        if c.split('.').any(str::is_empty) {
            return Err("consumer_claim: empty path segment".into());
        }
        Ok(())
    }
}

fn is_http_url(url: &str) -> bool {
    if url.len() > MAX_URL_CHARS || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    !host.is_empty() && !host.starts_with(':')
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a token was refused. Only static text: no token bytes, claim values or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token algorithm not allowed")]
    AlgNotAllowed,
    #[error("forbidden token header: {0}")]
    ForbiddenHeader(&'static str),
    #[error("token type not accepted")]
    BadType,
    #[error("no key with the token's kid")]
    UnknownKid,
    #[error("the token's key does not fit its algorithm")]
    KeyMismatch,
    #[error("no single key fits the token (kid missing)")]
    NoKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lacks claim: {0}")]
    MissingClaim(&'static str),
    #[error("token claim has a bad value: {0}")]
    InvalidClaim(&'static str),
    #[error("invalid JWKS document")]
    JwksInvalid,
    #[error("issuer keys unavailable")]
    JwksUnavailable,
}

impl JwtError {
    /// A short, fixed message suitable for a 401 body.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "token too large",
            JwtError::Malformed(_) => "malformed token",
            JwtError::AlgNotAllowed => "token algorithm not allowed",
            JwtError::ForbiddenHeader(_) => "forbidden token header",
            JwtError::BadType => "token type not accepted",
            JwtError::UnknownKid => "unknown signing key",
            JwtError::KeyMismatch => "signing key does not fit the algorithm",
            JwtError::NoKey => "no signing key for token",
            JwtError::BadSignature => "invalid token signature",
            JwtError::WrongIssuer => "wrong token issuer",
            JwtError::WrongAudience => "wrong token audience",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid",
            JwtError::MissingClaim(_) => "token lacks a required claim",
            JwtError::InvalidClaim(_) => "token claim invalid",
            JwtError::JwksInvalid => "issuer keys invalid",
            JwtError::JwksUnavailable => "issuer keys unavailable",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JWKS
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum KeyKind {
    /// Big-endian modulus and exponent, leading zeros stripped.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point `0x04 ‖ x ‖ y`.
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The key's own `alg` member, when it has one.
    alg: Option<Alg>,
    kind: KeyKind,
}

impl Key {
    fn fits(&self, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg) && alg.fits(&self.kind)
    }

    fn verifies(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        match &self.kind {
            KeyKind::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    Alg::ES256 | Alg::ES384 | Alg::EdDSA => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            KeyKind::P256(point) => {
                alg == Alg::ES256
                    && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(msg, sig)
                        .is_ok()
            }
            KeyKind::P384(point) => {
                alg == Alg::ES384
                    && UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                        .verify(msg, sig)
                        .is_ok()
            }
            KeyKind::Ed25519(x) => {
                alg == Alg::EdDSA
                    && UnparsedPublicKey::new(&signature::ED25519, x)
                        .verify(msg, sig)
                        .is_ok()
            }
        }
    }
}

/// A parsed JWK set: the signing keys the verifier can use. Keys of unknown types or curves,
/// encryption keys and keys that fail the checks (RSA under 2048 bits, wrong point lengths)
/// are left out rather than failing the set.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Vec<Key>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("keys", &self.keys.len())
            .field("kids", &self.kids())
            .finish()
    }
}

impl Jwks {
    /// Parses an RFC 7517 set `{"keys": [...]}`. Fails only if the document itself is not such
    /// a set; unusable keys are skipped, so the result may be empty.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, JwtError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwtError::JwksInvalid)?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err(JwtError::JwksInvalid);
        };
        let keys = list
            .iter()
            .filter_map(|k| k.as_object().and_then(parse_jwk))
            .collect();
        Ok(Jwks { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the usable keys that have one, in document order.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

fn b64_member(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn strip_leading_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

fn parse_jwk(k: &Map<String, Value>) -> Option<Key> {
    let str_member = |name: &str| k.get(name).and_then(Value::as_str);
    if k.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return None;
    }
    if let Some(ops) = k.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|o| o.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return None;
        }
    }
    let kid = match k.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let alg = match k.get("alg") {
        None => None,
        // RFC 9864's fully specified name for the only EdDSA curve supported here.
        Some(Value::String(s)) if s == "Ed25519" => Some(Alg::EdDSA),
        // An `alg` we do not verify (HS*, RSA-OAEP, ES512, ...) means the key is not for us.
        Some(Value::String(s)) => Some(Alg::from_jose(s)?),
        Some(_) => return None,
    };
    let kind = match str_member("kty")? {
        "RSA" => {
            let n = b64_member(str_member("n")?)?;
            let e = b64_member(str_member("e")?)?;
            let n = strip_leading_zeros(&n).to_vec();
            let e = strip_leading_zeros(&e).to_vec();
            let bits = bit_len(&n);
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) || e.is_empty() || e.len() > 8 {
                tracing::warn!(bits, "JWKS: skipping an RSA key outside 2048-8192 bits");
                return None;
            }
            KeyKind::Rsa { n, e }
        }
        "EC" => {
            let (len, p384) = match str_member("crv")? {
                "P-256" => (32, false),
                "P-384" => (48, true),
                _ => return None,
            };
            let x = b64_member(str_member("x")?)?;
            let y = b64_member(str_member("y")?)?;
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if p384 {
                KeyKind::P384(point)
            } else {
                KeyKind::P256(point)
            }
        }
        "OKP" => {
            if str_member("crv")? != "Ed25519" {
                return None;
            }
            let x = b64_member(str_member("x")?)?;
            if x.len() != signature::ED25519_PUBLIC_KEY_LEN {
                return None;
            }
            KeyKind::Ed25519(x)
        }
        _ => return None,
    };
    // A key whose declared `alg` contradicts its own type is inconsistent: leave it out.
    if alg.is_some_and(|a| !a.fits(&kind)) {
        return None;
    }
    Some(Key { kid, alg, kind })
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// A verified token: who is calling, per whom, until when.
#[derive(Clone, PartialEq, Eq)]
pub struct Verified {
    pub consumer_id: String,
    pub issuer: String,
    pub expires_at: Option<i64>,
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The consumer id is a claim value: keep it out of logs that print this.
        f.debug_struct("Verified")
            .field(
                "consumer_id",
                &format_args!("<{} bytes>", self.consumer_id.len()),
            )
            .field("issuer", &self.issuer)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A JSON object whose top-level member names are unique (RFC 7515 §4: duplicate header
/// members are refused rather than resolved).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<UniqueObject, A::Error> {
                let mut m = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    if m.contains_key(&k) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    let v: Value = a.next_value()?;
                    m.insert(k, v);
                }
                Ok(UniqueObject(m))
            }
        }
        d.deserialize_map(V)
    }
}

fn decode_segment(s: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed(what))
}

fn parse_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    serde_json::from_slice::<UniqueObject>(bytes)
        .map(|o| o.0)
        .map_err(|_| JwtError::Malformed(what))
}

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, possibly fractional. Rounded toward
/// the stricter side by the caller's choice; out-of-range values saturate.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
    round: Round,
) -> Result<Option<i64>, JwtError> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(JwtError::InvalidClaim(name));
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() => Ok(Some(match round {
            // `as` saturates at the i64 bounds.
            Round::Down => f.floor() as i64,
            Round::Up => f.ceil() as i64,
        })),
        _ => Err(JwtError::InvalidClaim(name)),
    }
}

fn consumer_id(claims: &Map<String, Value>, path: &str) -> Result<String, JwtError> {
    let mut segments = path.split('.');
    let first = segments.next().unwrap_or("");
    let mut cur = claims.get(first);
    for seg in segments {
        cur = cur.and_then(|v| v.as_object()).and_then(|o| o.get(seg));
    }
    match cur {
        None | Some(Value::Null) => Err(JwtError::MissingClaim("consumer")),
        Some(Value::String(s)) => {
            if s.is_empty()
                || s.chars().count() > MAX_CONSUMER_ID_CHARS
                || s.chars().any(char::is_control)
            {
                Err(JwtError::InvalidClaim("consumer"))
            } else {
                Ok(s.clone())
            }
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(JwtError::InvalidClaim("consumer")),
    }
}

/// Verifies `token` (the compact JWS, without `Bearer `) against `jwks` under `cfg` at
/// `now_unix` (seconds since the epoch). See the module documentation for the rules.
pub fn verify(
    token: &str,
    cfg: &JwtConfig,
    jwks: &Jwks,
    now_unix: i64,
) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (h64, p64, s64) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(JwtError::Malformed("expected three segments")),
    };

    // Header.
    let header = parse_object(&decode_segment(h64, "header encoding")?, "header")?;
    for name in FORBIDDEN_HEADERS {
        if header.contains_key(name) {
            return Err(JwtError::ForbiddenHeader(name));
        }
    }
    let alg = match header.get("alg") {
        Some(Value::String(s)) => match Alg::from_jose(s) {
            Some(a) if cfg.algorithms.contains(&a) => a,
            _ => return Err(JwtError::AlgNotAllowed),
        },
        _ => return Err(JwtError::Malformed("alg header")),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("at+jwt") => {}
        Some(_) => return Err(JwtError::BadType),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(JwtError::Malformed("kid header")),
    };

    // The rest of the structure, still without trusting anything.
    let payload = decode_segment(p64, "payload encoding")?;
    let sig = decode_segment(s64, "signature encoding")?;
    if payload.is_empty() {
        return Err(JwtError::Malformed("empty payload"));
    }
    if sig.is_empty() {
        return Err(JwtError::Malformed("empty signature"));
    }

    // Key selection.
    let candidates: Vec<&Key> = match kid {
        Some(kid) => {
            let named: Vec<&Key> = jwks
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                return Err(JwtError::UnknownKid);
            }
            let fitting: Vec<&Key> = named.into_iter().filter(|k| k.fits(alg)).collect();
            if fitting.is_empty() {
                return Err(JwtError::KeyMismatch);
            }
            fitting
        }
        None => {
            let fitting: Vec<&Key> = jwks.keys.iter().filter(|k| k.fits(alg)).collect();
            if fitting.len() != 1 {
                return Err(JwtError::NoKey);
            }
            fitting
        }
    };

    // Signature over the exact bytes received: `header.payload`.
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if !candidates
        .iter()
        .any(|k| k.verifies(alg, signing_input, &sig))
    {
        return Err(JwtError::BadSignature);
    }

    // Claims, now that they are the issuer's.
    let claims = parse_object(&payload, "payload")?;
    match claims.get("iss") {
        None => return Err(JwtError::MissingClaim("iss")),
        Some(Value::String(iss)) if *iss == cfg.issuer => {}
        Some(_) => return Err(JwtError::WrongIssuer),
    }
    let aud_ok = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(a)) => cfg.audience.contains(a),
        Some(Value::Array(list)) => {
            let mut any = false;
            for a in list {
                let Value::String(a) = a else {
                    return Err(JwtError::InvalidClaim("aud"));
                };
                any |= cfg.audience.contains(a);
            }
            any
        }
        Some(_) => return Err(JwtError::InvalidClaim("aud")),
    };
    if !aud_ok {
        return Err(JwtError::WrongAudience);
    }
    // Leeway is capped here too, in case a config skipped `validate`.
    let leeway = cfg.leeway_secs.min(MAX_LEEWAY_SECS) as i64;
    let Some(exp) = numeric_date(&claims, "exp", Round::Down)? else {
        return Err(JwtError::MissingClaim("exp"));
    };
    if now_unix > exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    let horizon = now_unix.saturating_add(leeway);
    for name in ["nbf", "iat"] {
        if numeric_date(&claims, name, Round::Up)?.is_some_and(|t| t > horizon) {
            return Err(JwtError::NotYetValid);
        }
    }
    let consumer_id = consumer_id(&claims, &cfg.consumer_claim)?;
    Ok(Verified {
        consumer_id,
        issuer: cfg.issuer.clone(),
        expires_at: Some(exp),
    })
}

#[cfg(test)]
mod tests;
