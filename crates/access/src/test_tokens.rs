//! Test-only signing helpers shared by the verifier's and the cache's tests: fixed RSA keys
//! from `tests/fixtures/` (ring cannot generate RSA keys), fresh EC and Ed25519 keys, JWK
//! rendering and a signer for arbitrary header/payload JSON.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaEncoding, RsaKeyPair,
    RsaPublicKeyComponents,
};
use serde_json::{Value, json};

use crate::jwt::{Jwks, JwtConfig};

pub const ISSUER: &str = "https://id.example.com";
pub const AUDIENCE: &str = "gateway";
pub const JWKS_URL: &str = "https://id.example.com/.well-known/jwks.json";
/// A fixed "now" for tests (2026-01-01T00:00:00Z).
pub const NOW: i64 = 1_767_225_600;

pub struct TestKeys {
    pub rsa_a: RsaKeyPair,
    pub rsa_b: RsaKeyPair,
    pub p256: EcdsaKeyPair,
    pub p256_b: EcdsaKeyPair,
    pub p384: EcdsaKeyPair,
    pub ed: Ed25519KeyPair,
}

pub static KEYS: LazyLock<TestKeys> = LazyLock::new(|| {
    let rng = SystemRandom::new();
    let ec = |alg: &'static signature::EcdsaSigningAlgorithm| {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
    };
    TestKeys {
        rsa_a: RsaKeyPair::from_pkcs8(include_bytes!("../tests/fixtures/rsa2048_a.pk8.der"))
            .unwrap(),
        rsa_b: RsaKeyPair::from_pkcs8(include_bytes!("../tests/fixtures/rsa2048_b.pk8.der"))
            .unwrap(),
        p256: ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        p256_b: ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        p384: ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        ed: Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
            .unwrap(),
    }
});

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn jwk_rsa(kp: &RsaKeyPair, kid: &str) -> Value {
    let c: RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
}

pub fn jwk_ec(kp: &EcdsaKeyPair, kid: &str) -> Value {
    let point = kp.public_key().as_ref();
    let len = (point.len() - 1) / 2;
    let crv = if len == 32 { "P-256" } else { "P-384" };
    json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])})
}

pub fn jwk_ed(kp: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(kp.public_key().as_ref())})
}

/// The standard set: `rsa-a`, `p256`, `p384`, `ed`.
pub fn std_jwks_json() -> Value {
    let k = &*KEYS;
    json!({"keys": [
        jwk_rsa(&k.rsa_a, "rsa-a"),
        jwk_ec(&k.p256, "p256"),
        jwk_ec(&k.p384, "p384"),
        jwk_ed(&k.ed, "ed"),
    ]})
}

pub fn std_jwks() -> Jwks {
    Jwks::parse(std_jwks_json().to_string().as_bytes()).unwrap()
}

pub fn cfg() -> JwtConfig {
    serde_json::from_value(json!({
        "jwks_url": JWKS_URL,
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }))
    .unwrap()
}

pub fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": NOW + 600, "iat": NOW - 10})
}

pub enum Signer<'a> {
    Rsa(&'a RsaKeyPair, &'static dyn RsaEncoding),
    Ec(&'a EcdsaKeyPair),
    Ed(&'a Ed25519KeyPair),
    Hmac256(&'a [u8]),
}

pub fn sign_input(input: &str, signer: &Signer<'_>) -> Vec<u8> {
    let rng = SystemRandom::new();
    match signer {
        Signer::Rsa(kp, enc) => {
            let mut sig = vec![0; kp.public().modulus_len()];
            kp.sign(*enc, &rng, input.as_bytes(), &mut sig).unwrap();
            sig
        }
        Signer::Ec(kp) => kp.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        Signer::Ed(kp) => kp.sign(input.as_bytes()).as_ref().to_vec(),
        Signer::Hmac256(secret) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
        }
    }
}

/// Signs `header.payload` (serialised as given) and returns the compact token.
pub fn sign(header: &Value, payload: &Value, signer: &Signer<'_>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let sig = sign_input(&input, signer);
    format!("{input}.{}", b64(&sig))
}

/// The standard signer for a JOSE algorithm and the matching standard key.
pub fn signer_for(alg: &str) -> Signer<'static> {
    let k = &*KEYS;
    match alg {
        "RS256" => Signer::Rsa(&k.rsa_a, &signature::RSA_PKCS1_SHA256),
        "RS384" => Signer::Rsa(&k.rsa_a, &signature::RSA_PKCS1_SHA384),
        "RS512" => Signer::Rsa(&k.rsa_a, &signature::RSA_PKCS1_SHA512),
        "PS256" => Signer::Rsa(&k.rsa_a, &signature::RSA_PSS_SHA256),
        "PS384" => Signer::Rsa(&k.rsa_a, &signature::RSA_PSS_SHA384),
        "PS512" => Signer::Rsa(&k.rsa_a, &signature::RSA_PSS_SHA512),
        "ES256" => Signer::Ec(&k.p256),
        "ES384" => Signer::Ec(&k.p384),
        "EdDSA" => Signer::Ed(&k.ed),
        other => panic!("no signer for {other}"),
    }
}

/// The standard kid for a JOSE algorithm.
pub fn kid_for(alg: &str) -> &'static str {
    match alg {
        "ES256" => "p256",
        "ES384" => "p384",
        "EdDSA" => "ed",
        _ => "rsa-a",
    }
}

/// A valid token with the standard key for `alg` and the given claims.
pub fn token(alg: &str, payload: &Value) -> String {
    sign(
        &json!({"alg": alg, "typ": "JWT", "kid": kid_for(alg)}),
        payload,
        &signer_for(alg),
    )
}
