//! The verifier's forgery matrix, configuration and JWKS parsing.

use super::*;
use crate::test_tokens::*;
use proptest::prelude::*;
use ring::signature::KeyPair as _;
use serde_json::json;

fn check(token: &str) -> Result<Verified, JwtError> {
    verify(token, &cfg(), &std_jwks(), NOW)
}

fn with(payload_patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in payload_patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn rs256(header_extra: Value, payload: &Value) -> String {
    let mut h = json!({"alg": "RS256", "kid": "rsa-a"});
    for (k, v) in header_extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    sign(&h, payload, &signer_for("RS256"))
}

// --- accepted ------------------------------------------------------------------------------

#[test]
fn every_algorithm_verifies_with_its_key() {
    for alg in [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ] {
        let v = check(&token(alg, &claims())).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(v.consumer_id, "user-1", "{alg}");
        assert_eq!(v.issuer, ISSUER);
        assert_eq!(v.expires_at, Some(NOW + 600));
    }
}

#[test]
fn no_kid_is_fine_when_exactly_one_key_fits() {
    let t = sign(&json!({"alg": "ES384"}), &claims(), &signer_for("ES384"));
    assert!(check(&t).is_ok());
    // Two P-256 keys: without a kid the choice is ambiguous.
    let k = &*KEYS;
    let two = Jwks::parse(
        json!({"keys": [jwk_ec(&k.p256, "a"), jwk_ec(&k.p256_b, "b")]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let t = sign(&json!({"alg": "ES256"}), &claims(), &signer_for("ES256"));
    assert_eq!(verify(&t, &cfg(), &two, NOW), Err(JwtError::NoKey));
}

#[test]
fn typ_jwt_and_at_jwt_in_any_case_are_accepted_others_not() {
    for typ in ["JWT", "jwt", "at+jwt", "AT+JWT"] {
        assert!(
            check(&rs256(json!({"typ": typ}), &claims())).is_ok(),
            "{typ}"
        );
    }
    for typ in [json!("JWE"), json!("dpop+jwt"), json!(1)] {
        assert_eq!(
            check(&rs256(json!({"typ": typ}), &claims())),
            Err(JwtError::BadType)
        );
    }
}

#[test]
fn aud_may_be_an_array_containing_an_accepted_value() {
    let t = rs256(json!({}), &with(json!({"aud": ["other", AUDIENCE]})));
    assert!(check(&t).is_ok());
    let mut c = cfg();
    c.audience = vec!["x".into(), AUDIENCE.into()];
    assert!(verify(&rs256(json!({}), &claims()), &c, &std_jwks(), NOW).is_ok());
}

#[test]
fn consumer_claim_paths_and_integers() {
    let payload = with(json!({"org": {"user_id": "u-42", "n": 7}, "num": 12345678901_u64}));
    let t = rs256(json!({}), &payload);
    let mut c = cfg();
    c.consumer_claim = "org.user_id".into();
    assert_eq!(
        verify(&t, &c, &std_jwks(), NOW).unwrap().consumer_id,
        "u-42"
    );
    c.consumer_claim = "org.n".into();
    assert_eq!(verify(&t, &c, &std_jwks(), NOW).unwrap().consumer_id, "7");
    c.consumer_claim = "num".into();
    assert_eq!(
        verify(&t, &c, &std_jwks(), NOW).unwrap().consumer_id,
        "12345678901"
    );
    c.consumer_claim = "org.missing".into();
    assert_eq!(
        verify(&t, &c, &std_jwks(), NOW),
        Err(JwtError::MissingClaim("consumer"))
    );
    c.consumer_claim = "sub.deeper".into();
    assert_eq!(
        verify(&t, &c, &std_jwks(), NOW),
        Err(JwtError::MissingClaim("consumer"))
    );
    c.consumer_claim = "org".into();
    assert_eq!(
        verify(&t, &c, &std_jwks(), NOW),
        Err(JwtError::InvalidClaim("consumer"))
    );
}

#[test]
fn consumer_claim_values_are_checked() {
    for bad in [
        json!(""),
        json!("x".repeat(257)),
        json!(1.5),
        json!(true),
        json!(["a"]),
        json!("a\nb"),
    ] {
        let t = rs256(json!({}), &with(json!({"sub": bad})));
        assert_eq!(check(&t), Err(JwtError::InvalidClaim("consumer")));
    }
    let t = rs256(json!({}), &with(json!({"sub": "é".repeat(256)})));
    assert!(check(&t).is_ok());
    let t = rs256(json!({}), &with(json!({"sub": -3})));
    assert_eq!(check(&t).unwrap().consumer_id, "-3");
    let t = rs256(json!({}), &with(json!({"sub": null})));
    assert_eq!(check(&t), Err(JwtError::MissingClaim("consumer")));
}

// --- algorithm and key confusion ------------------------------------------------------------

#[test]
fn alg_none_with_empty_signature_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let h = b64(json!({"alg": alg, "kid": "rsa-a"}).to_string().as_bytes());
        let p = b64(claims().to_string().as_bytes());
        assert_eq!(
            check(&format!("{h}.{p}.")),
            Err(JwtError::AlgNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let k = &*KEYS;
    let c: RsaPublicKeyComponents<Vec<u8>> = k.rsa_a.public().into();
    let jwk_text = jwk_rsa(&k.rsa_a, "rsa-a").to_string();
    let secrets: [&[u8]; 4] = [k.rsa_a.public().as_ref(), &c.n, jwk_text.as_bytes(), b""];
    for secret in secrets {
        for kid in [Some("rsa-a"), None] {
            let mut h = json!({"alg": "HS256", "typ": "JWT"});
            if let Some(kid) = kid {
                h["kid"] = json!(kid);
            }
            let t = sign(&h, &claims(), &Signer::Hmac256(secret));
            assert_eq!(check(&t), Err(JwtError::AlgNotAllowed));
        }
    }
}

#[test]
fn an_algorithm_must_fit_the_key_type() {
    // ES256 header naming the RSA key, signed with the P-256 key.
    let t = sign(
        &json!({"alg": "ES256", "kid": "rsa-a"}),
        &claims(),
        &signer_for("ES256"),
    );
    assert_eq!(check(&t), Err(JwtError::KeyMismatch));
    // RS256 naming the EC key.
    let t = sign(
        &json!({"alg": "RS256", "kid": "p256"}),
        &claims(),
        &signer_for("RS256"),
    );
    assert_eq!(check(&t), Err(JwtError::KeyMismatch));
    // ES384 against a P-256 key and ES256 against a P-384 key.
    let t = sign(
        &json!({"alg": "ES384", "kid": "p256"}),
        &claims(),
        &signer_for("ES384"),
    );
    assert_eq!(check(&t), Err(JwtError::KeyMismatch));
    let t = sign(
        &json!({"alg": "ES256", "kid": "p384"}),
        &claims(),
        &signer_for("ES256"),
    );
    assert_eq!(check(&t), Err(JwtError::KeyMismatch));
    let t = sign(
        &json!({"alg": "EdDSA", "kid": "rsa-a"}),
        &claims(),
        &signer_for("EdDSA"),
    );
    assert_eq!(check(&t), Err(JwtError::KeyMismatch));
}

#[test]
fn a_keys_own_alg_is_honoured() {
    let k = &*KEYS;
    let mut jwk = jwk_rsa(&k.rsa_a, "rsa-a");
    jwk["alg"] = json!("RS256");
    let set = Jwks::parse(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
    assert!(verify(&token("RS256", &claims()), &cfg(), &set, NOW).is_ok());
    assert_eq!(
        verify(&token("PS256", &claims()), &cfg(), &set, NOW),
        Err(JwtError::KeyMismatch)
    );
    assert_eq!(
        verify(&token("RS512", &claims()), &cfg(), &set, NOW),
        Err(JwtError::KeyMismatch)
    );
}

#[test]
fn header_alg_must_be_in_the_config() {
    let mut c = cfg();
    c.algorithms = vec![Alg::ES256];
    assert!(verify(&token("ES256", &claims()), &c, &std_jwks(), NOW).is_ok());
    for alg in ["RS256", "PS256", "ES384", "EdDSA"] {
        assert_eq!(
            verify(&token(alg, &claims()), &c, &std_jwks(), NOW),
            Err(JwtError::AlgNotAllowed),
            "{alg}"
        );
    }
    // Names outside JOSE's exact spelling, or unsupported ones.
    for alg in ["rs256", "ES512", "RS1", "EdDsa"] {
        let t = sign(
            &json!({"alg": alg, "kid": "rsa-a"}),
            &claims(),
            &signer_for("RS256"),
        );
        assert_eq!(check(&t), Err(JwtError::AlgNotAllowed), "{alg}");
    }
    let t = sign(&json!({"kid": "rsa-a"}), &claims(), &signer_for("RS256"));
    assert_eq!(check(&t), Err(JwtError::Malformed("alg header")));
    let t = sign(
        &json!({"alg": 256, "kid": "rsa-a"}),
        &claims(),
        &signer_for("RS256"),
    );
    assert_eq!(check(&t), Err(JwtError::Malformed("alg header")));
}

#[test]
fn headers_that_bring_their_own_key_or_rules_are_refused() {
    let k = &*KEYS;
    let cases = [
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("jwk", jwk_rsa(&k.rsa_b, "rsa-a")),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
    ];
    for (name, value) in cases {
        let t = rs256(json!({ name: value }), &claims());
        assert_eq!(check(&t), Err(JwtError::ForbiddenHeader(name)), "{name}");
    }
}

#[test]
fn duplicate_header_members_are_refused() {
    let h = r#"{"alg":"RS256","kid":"rsa-a","alg":"none"}"#;
    let input = format!(
        "{}.{}",
        b64(h.as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let t = format!("{input}.{}", b64(&sign_input(&input, &signer_for("RS256"))));
    assert_eq!(check(&t), Err(JwtError::Malformed("header")));
}

// --- keys and signatures --------------------------------------------------------------------

#[test]
fn unknown_kid() {
    let t = sign(
        &json!({"alg": "RS256", "kid": "nope"}),
        &claims(),
        &signer_for("RS256"),
    );
    assert_eq!(check(&t), Err(JwtError::UnknownKid));
    let t = sign(
        &json!({"alg": "RS256", "kid": 7}),
        &claims(),
        &signer_for("RS256"),
    );
    assert_eq!(check(&t), Err(JwtError::Malformed("kid header")));
}

#[test]
fn tampered_payload_keeps_the_old_signature_and_fails() {
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let t = token(alg, &claims());
        let sig = t.rsplit('.').next().unwrap();
        let head = t.split('.').next().unwrap();
        let evil = b64(with(json!({"sub": "admin"})).to_string().as_bytes());
        assert_eq!(
            check(&format!("{head}.{evil}.{sig}")),
            Err(JwtError::BadSignature),
            "{alg}"
        );
        // Header swapped too (same alg, different key id spelling is unknown; keep it).
        let head2 = b64(json!({"alg": alg, "kid": kid_for(alg), "typ": "jwt"})
            .to_string()
            .as_bytes());
        let body = t.split('.').nth(1).unwrap();
        assert_eq!(
            check(&format!("{head2}.{body}.{sig}")),
            Err(JwtError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn a_different_key_under_the_same_kid_fails() {
    let k = &*KEYS;
    let cases = [
        (
            "RS256",
            "rsa-a",
            Signer::Rsa(&k.rsa_b, &signature::RSA_PKCS1_SHA256),
        ),
        (
            "PS256",
            "rsa-a",
            Signer::Rsa(&k.rsa_b, &signature::RSA_PSS_SHA256),
        ),
        ("ES256", "p256", Signer::Ec(&k.p256_b)),
    ];
    for (alg, kid, signer) in cases {
        let t = sign(&json!({"alg": alg, "kid": kid}), &claims(), &signer);
        assert_eq!(check(&t), Err(JwtError::BadSignature), "{alg}");
    }
}

#[test]
fn rs_and_ps_signatures_are_not_interchangeable() {
    let t = sign(
        &json!({"alg": "PS256", "kid": "rsa-a"}),
        &claims(),
        &signer_for("RS256"),
    );
    assert_eq!(check(&t), Err(JwtError::BadSignature));
    let t = sign(
        &json!({"alg": "RS384", "kid": "rsa-a"}),
        &claims(),
        &signer_for("RS256"),
    );
    assert_eq!(check(&t), Err(JwtError::BadSignature));
}

// --- structure ------------------------------------------------------------------------------

#[test]
fn padding_and_foreign_characters_are_refused() {
    let t = token("RS256", &claims());
    let segs: Vec<&str> = t.split('.').collect();
    let variants = [
        format!("{}=.{}.{}", segs[0], segs[1], segs[2]),
        format!("{}.{}=.{}", segs[0], segs[1], segs[2]),
        format!("{}.{}.{}==", segs[0], segs[1], segs[2]),
        format!("{}.+{}.{}", segs[0], &segs[1][1..], segs[2]),
        format!("{}./{}.{}", segs[0], &segs[1][1..], segs[2]),
        format!(
            "{}.{}.{}",
            segs[0],
            segs[1],
            segs[2].replacen(|c: char| c.is_ascii_alphanumeric(), "/", 1)
        ),
        format!("{} .{}.{}", segs[0], segs[1], segs[2]),
        format!("{}.{}.{}\n", segs[0], segs[1], segs[2]),
        format!("{}.{}.{}", segs[0], segs[1], &segs[2][..segs[2].len() - 1]),
    ];
    for v in variants {
        assert!(matches!(check(&v), Err(JwtError::Malformed(_))), "{v}");
    }
    // Header bytes that are base64 of something with non-zero trailing bits.
    let h = b64(br#"{"alg":"RS256","kid":"rsa-a"}"#);
    let last = h.chars().last().unwrap();
    assert!(!h.len().is_multiple_of(4));
    {
        let mut h2 = h[..h.len() - 1].to_string();
        let bumped = URL_SAFE_NO_PAD_ALPHABET
            .chars()
            .skip_while(|c| *c != last)
            .nth(1)
            .unwrap_or('A');
        h2.push(bumped);
        let input = format!("{h2}.{}", segs[1]);
        let t = format!("{input}.{}", b64(&sign_input(&input, &signer_for("RS256"))));
        assert_eq!(check(&t), Err(JwtError::Malformed("header encoding")));
    }
}

const URL_SAFE_NO_PAD_ALPHABET: &str =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn segment_counts_and_size() {
    let t = token("RS256", &claims());
    assert_eq!(
        check(&format!("{t}.{}", "AAAA")),
        Err(JwtError::Malformed("expected three segments"))
    );
    assert_eq!(
        check(&format!("{t}.")),
        Err(JwtError::Malformed("expected three segments"))
    );
    let two: Vec<&str> = t.splitn(3, '.').take(2).collect();
    assert_eq!(
        check(&two.join(".")),
        Err(JwtError::Malformed("expected three segments"))
    );
    assert!(check("").is_err());
    assert!(check("..").is_err());
    let big = rs256(json!({}), &with(json!({"pad": "x".repeat(17 * 1024)})));
    assert_eq!(check(&big), Err(JwtError::TooLarge));
    let header = b64(b"[1,2]");
    assert_eq!(
        check(&format!("{header}.{}.AAAA", b64(b"{}"))),
        Err(JwtError::Malformed("header"))
    );
}

#[test]
fn payload_must_be_a_json_object() {
    for body in [&b"[1]"[..], b"\"x\"", b"not json", br#"{"iss":1,"iss":2}"#] {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "RS256", "kid": "rsa-a"})
                .to_string()
                .as_bytes()),
            b64(body)
        );
        let t = format!("{input}.{}", b64(&sign_input(&input, &signer_for("RS256"))));
        assert_eq!(check(&t), Err(JwtError::Malformed("payload")));
    }
}

// --- claims ---------------------------------------------------------------------------------

#[test]
fn issuer_must_match_exactly() {
    for iss in [
        json!("https://id.example.com/"),
        json!("https://ID.example.com"),
        json!(["https://id.example.com"]),
    ] {
        let t = rs256(json!({}), &with(json!({ "iss": iss })));
        assert_eq!(check(&t), Err(JwtError::WrongIssuer));
    }
    let t = rs256(json!({}), &with(json!({"iss": null})));
    assert_eq!(check(&t), Err(JwtError::MissingClaim("iss")));
}

#[test]
fn audience_must_match() {
    for aud in [
        json!("other"),
        json!(["a", "b"]),
        json!([]),
        json!("Gateway"),
    ] {
        let t = rs256(json!({}), &with(json!({ "aud": aud })));
        assert_eq!(check(&t), Err(JwtError::WrongAudience));
    }
    for aud in [json!(1), json!([AUDIENCE, 1]), json!({"a": AUDIENCE})] {
        let t = rs256(json!({}), &with(json!({ "aud": aud })));
        assert_eq!(check(&t), Err(JwtError::InvalidClaim("aud")));
    }
    let t = rs256(json!({}), &with(json!({"aud": null})));
    assert_eq!(check(&t), Err(JwtError::MissingClaim("aud")));
}

#[test]
fn expiry_with_leeway() {
    let at = |exp: Value| check(&rs256(json!({}), &with(json!({ "exp": exp, "iat": null }))));
    assert!(at(json!(NOW)).is_ok());
    assert!(at(json!(NOW - 30)).is_ok(), "within the 30 s leeway");
    assert_eq!(at(json!(NOW - 31)), Err(JwtError::Expired));
    assert_eq!(at(json!(NOW - 100_000)), Err(JwtError::Expired));
    assert_eq!(at(json!(i64::MIN)), Err(JwtError::Expired));
    assert!(at(json!(u64::MAX)).is_ok());
    assert!(at(json!((NOW - 30) as f64 + 0.5)).is_ok());
    assert_eq!(at(json!((NOW - 31) as f64 + 0.5)), Err(JwtError::Expired));
    assert_eq!(at(json!("9999999999")), Err(JwtError::InvalidClaim("exp")));
    assert_eq!(at(json!(null)), Err(JwtError::MissingClaim("exp")));
    let mut c = cfg();
    c.leeway_secs = 0;
    let t = rs256(json!({}), &with(json!({"exp": NOW - 1})));
    assert_eq!(verify(&t, &c, &std_jwks(), NOW), Err(JwtError::Expired));
    // A leeway beyond the maximum is capped at verification too.
    c.leeway_secs = 10_000;
    let t = rs256(json!({}), &with(json!({"exp": NOW - 301})));
    assert_eq!(verify(&t, &c, &std_jwks(), NOW), Err(JwtError::Expired));
}

#[test]
fn not_before_and_issued_at_in_the_future() {
    for name in ["nbf", "iat"] {
        let at = |t: Value| check(&rs256(json!({}), &with(json!({ name: t }))));
        assert!(at(json!(NOW)).is_ok());
        assert!(at(json!(NOW + 30)).is_ok());
        assert_eq!(at(json!(NOW + 31)), Err(JwtError::NotYetValid), "{name}");
        assert_eq!(
            at(json!((NOW + 30) as f64 + 0.1)),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(at(json!(NOW + 3600)), Err(JwtError::NotYetValid));
        assert_eq!(at(json!("0")), Err(JwtError::InvalidClaim(name)));
    }
}

#[test]
fn claims_are_not_read_before_the_signature() {
    // An expired token from a foreign key says "bad signature", not "expired".
    let k = &*KEYS;
    let t = sign(
        &json!({"alg": "ES256", "kid": "p256"}),
        &with(json!({"exp": 0, "iss": "evil"})),
        &Signer::Ec(&k.p256_b),
    );
    assert_eq!(check(&t), Err(JwtError::BadSignature));
}

// --- errors never leak ----------------------------------------------------------------------

#[test]
fn errors_and_debug_output_carry_no_token_or_claim_data() {
    let secret_sub = "sub-SECRET-7731";
    let t = rs256(
        json!({}),
        &with(json!({"sub": secret_sub, "aud": "other-SECRET"})),
    );
    let e = check(&t).unwrap_err();
    for text in [format!("{e:?}"), e.to_string(), e.reason().to_string()] {
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains(&t[..20]));
    }
    let ok = check(&rs256(json!({}), &with(json!({"sub": secret_sub})))).unwrap();
    assert!(!format!("{ok:?}").contains("SECRET"));
    let set = format!("{:?}", std_jwks());
    let n = jwk_rsa(&KEYS.rsa_a, "x")["n"].as_str().unwrap().to_string();
    assert!(!set.contains(&n[..16]));
    assert!(set.contains("rsa-a"));
}

#[test]
fn every_error_has_a_reason() {
    let all = [
        JwtError::TooLarge,
        JwtError::Malformed("x"),
        JwtError::AlgNotAllowed,
        JwtError::ForbiddenHeader("jku"),
        JwtError::BadType,
        JwtError::UnknownKid,
        JwtError::KeyMismatch,
        JwtError::NoKey,
        JwtError::BadSignature,
        JwtError::WrongIssuer,
        JwtError::WrongAudience,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::MissingClaim("exp"),
        JwtError::InvalidClaim("exp"),
        JwtError::JwksInvalid,
        JwtError::JwksUnavailable,
    ];
    for e in all {
        assert!(!e.reason().is_empty());
        assert!(e.reason().len() < 64);
    }
}

// --- JWKS parsing ---------------------------------------------------------------------------

#[test]
fn jwks_parses_supported_keys_and_skips_the_rest() {
    let k = &*KEYS;
    let mut enc = jwk_rsa(&k.rsa_b, "enc");
    enc["use"] = json!("enc");
    let mut hs = jwk_rsa(&k.rsa_b, "hs");
    hs["alg"] = json!("HS256");
    let mut oaep = jwk_rsa(&k.rsa_b, "oaep");
    oaep["alg"] = json!("RSA-OAEP");
    let mut wrong_alg = jwk_ec(&k.p256_b, "ec-rs");
    wrong_alg["alg"] = json!("RS256");
    let mut ops = jwk_ec(&k.p256_b, "ops");
    ops["key_ops"] = json!(["encrypt"]);
    let mut short_x = jwk_ec(&k.p256_b, "short");
    short_x["x"] = json!(b64(&[1; 31]));
    let weak_n = {
        let mut n = vec![0xC5u8; 128];
        n[127] |= 1;
        n
    };
    let doc = json!({"keys": [
        jwk_rsa(&k.rsa_a, "rsa-a"),
        {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "weak", "n": b64(&weak_n), "e": "AQAB"},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(&[9; 32])},
        {"kty": "RSA", "kid": "bad-b64", "n": "a=b", "e": "AQAB"},
        "not an object",
        enc, hs, oaep, wrong_alg, ops, short_x,
        jwk_ec(&k.p384, "p384"),
        jwk_ed(&k.ed, "ed"),
        {"kty": "EC", "crv": "P-256", "x": b64(&k.p256.public_key().as_ref()[1..33]), "y": b64(&k.p256.public_key().as_ref()[33..])},
    ]});
    let set = Jwks::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.kids(), vec!["rsa-a", "p384", "ed"]);
    assert_eq!(set.len(), 4);
    // The kid-less P-256 key serves kid-less ES256 tokens.
    let t = sign(&json!({"alg": "ES256"}), &claims(), &signer_for("ES256"));
    assert!(verify(&t, &cfg(), &set, NOW).is_ok());
}

#[test]
fn rsa_moduli_with_a_leading_zero_are_accepted() {
    let c: RsaPublicKeyComponents<Vec<u8>> = KEYS.rsa_a.public().into();
    let mut n = vec![0];
    n.extend_from_slice(&c.n);
    let doc = json!({"keys": [{"kty": "RSA", "kid": "rsa-a", "n": b64(&n), "e": b64(&c.e)}]});
    let set = Jwks::parse(doc.to_string().as_bytes()).unwrap();
    assert!(verify(&token("RS256", &claims()), &cfg(), &set, NOW).is_ok());
}

#[test]
fn jwks_documents_that_are_not_sets_fail() {
    for doc in [&b"nope"[..], b"[]", b"{}", br#"{"keys": {}}"#, b""] {
        assert_eq!(Jwks::parse(doc).unwrap_err(), JwtError::JwksInvalid);
    }
    assert!(Jwks::parse(br#"{"keys": []}"#).unwrap().is_empty());
}

// --- configuration --------------------------------------------------------------------------

#[test]
fn config_defaults_and_one_or_many_audience() {
    let c = cfg();
    assert_eq!(c.audience, vec![AUDIENCE.to_string()]);
    assert_eq!(c.algorithms, Alg::ALL.to_vec());
    assert_eq!(c.leeway_secs, 30);
    assert_eq!(c.consumer_claim, "sub");
    assert_eq!(c.validate(), Ok(()));
    let many: JwtConfig = serde_json::from_value(json!({
        "jwks_url": JWKS_URL, "issuer": ISSUER, "audience": ["a", "b"],
        "algorithms": ["ES256", "EdDSA"], "leeway_secs": 0, "consumer_claim": "org.id",
    }))
    .unwrap();
    assert_eq!(many.audience, vec!["a", "b"]);
    assert_eq!(many.algorithms, vec![Alg::ES256, Alg::EdDSA]);
    assert_eq!(many.validate(), Ok(()));
    // Round trip.
    let back: JwtConfig = serde_json::from_str(&serde_json::to_string(&many).unwrap()).unwrap();
    assert_eq!(back, many);
    assert_eq!(serde_json::to_value(Alg::EdDSA).unwrap(), json!("EdDSA"));
}

#[test]
fn symmetric_and_none_algorithms_cannot_be_configured() {
    for (alg, needle) in [
        ("HS256", "algorithms: HS256 is symmetric and not accepted"),
        ("HS512", "HS512 is symmetric"),
        ("none", "\"none\""),
        ("ES512", "unknown algorithm"),
    ] {
        let err = serde_json::from_value::<JwtConfig>(json!({
            "jwks_url": JWKS_URL, "issuer": ISSUER, "audience": "a", "algorithms": ["RS256", alg],
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains(needle), "{err}");
        assert!(serde_json::from_value::<Alg>(json!(alg)).is_err());
    }
}

#[test]
fn config_rejects_unknown_fields_and_bad_values() {
    assert!(
        serde_json::from_value::<JwtConfig>(json!({
            "jwks_url": JWKS_URL, "issuer": ISSUER, "audience": "a", "secret": "x",
        }))
        .is_err()
    );
    type Mutation = Box<dyn Fn(&mut JwtConfig)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|c| c.jwks_url = "ftp://x/jwks".into()),
            "jwks_url: must be an http(s) URL",
        ),
        (Box::new(|c| c.jwks_url = "https://".into()), "jwks_url:"),
        (
            Box::new(|c| c.jwks_url = "https:// x.example/".into()),
            "jwks_url:",
        ),
        (Box::new(|c| c.jwks_url = "jwks.json".into()), "jwks_url:"),
        (Box::new(|c| c.issuer = String::new()), "issuer:"),
        (
            Box::new(|c| c.audience.clear()),
            "audience: at least one required",
        ),
        (Box::new(|c| c.audience = vec![String::new()]), "audience:"),
        (Box::new(|c| c.algorithms.clear()), "algorithms:"),
        (Box::new(|c| c.leeway_secs = 301), "leeway_secs:"),
        (
            Box::new(|c| c.consumer_claim = String::new()),
            "consumer_claim:",
        ),
        (
            Box::new(|c| c.consumer_claim = "a..b".into()),
            "consumer_claim:",
        ),
        (
            Box::new(|c| c.consumer_claim = "x".repeat(257)),
            "consumer_claim:",
        ),
    ];
    for (mutate, needle) in cases {
        let mut c = cfg();
        mutate(&mut c);
        let err = c.validate().unwrap_err();
        assert!(err.starts_with(needle), "{err} !~ {needle}");
    }
    let mut c = cfg();
    c.jwks_url = "http://127.0.0.1:8080/jwks".into();
    c.leeway_secs = 300;
    assert_eq!(c.validate(), Ok(()));
}

// --- fuzzing --------------------------------------------------------------------------------

fn valid_token() -> &'static str {
    static T: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| token("ES256", &claims()));
    &T
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_verify(s in "\\PC{0,400}") {
        prop_assert!(check(&s).is_err());
    }

    #[test]
    fn arbitrary_segments_never_verify(
        h in proptest::collection::vec(any::<u8>(), 0..200),
        p in proptest::collection::vec(any::<u8>(), 0..200),
        s in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let t = format!("{}.{}.{}", b64(&h), b64(&p), b64(&s));
        prop_assert!(check(&t).is_err());
        // And with a plausible header.
        let t = format!("{}.{}.{}", b64(br#"{"alg":"ES256","kid":"p256"}"#), b64(&p), b64(&s));
        prop_assert!(check(&t).is_err());
    }

    #[test]
    fn any_single_byte_change_to_a_valid_token_fails(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let t = valid_token();
        let mut bytes = t.as_bytes().to_vec();
        let i = idx.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let s = String::from_utf8_lossy(&bytes);
        // Changing the last character may only flip unused trailing bits: the strict decoder
        // refuses those, so every change fails.
        prop_assert!(check(&s).is_err());
    }
}
