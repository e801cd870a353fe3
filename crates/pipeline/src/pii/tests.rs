use super::*;
use proptest::prelude::*;

fn all() -> PiiSettings {
    PiiSettings::default()
}

fn redacted(text: &str) -> String {
    redact(text, &scan(text, &PiiKind::all()))
}

fn kinds(text: &str) -> Vec<PiiKind> {
    scan(text, &PiiKind::all()).iter().map(|f| f.kind).collect()
}

#[test]
fn finds_each_kind_and_keeps_the_rest() {
    let cases = [
        (
            "mail me at jane.doe+x@example.co.uk, thanks",
            "mail me at [REDACTED_EMAIL], thanks",
        ),
        ("call +44 20 7946 0958 now", "call [REDACTED_PHONE] now"),
        ("or (555) 123-4567.", "or [REDACTED_PHONE]."),
        ("US 555-123-4567 ok", "US [REDACTED_PHONE] ok"),
        ("card 4111 1111 1111 1111!", "card [REDACTED_CARD]!"),
        ("card 4111111111111111", "card [REDACTED_CARD]"),
        ("ssn 123-45-6789.", "ssn [REDACTED_NATIONAL_ID]."),
        (
            "iban DE89 3704 0044 0532 0130 00 please",
            "iban [REDACTED_NATIONAL_ID] please",
        ),
        ("GB82WEST12345698765432", "[REDACTED_NATIONAL_ID]"),
        (
            "use sk-proj-abcdefghijklmnopqrstuvwx here",
            "use [REDACTED_SECRET] here",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED_SECRET]"),
        (
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "[REDACTED_SECRET]",
        ),
        (
            "api_key=9f8e7d6c5b4a39281706abcd",
            "api_key=[REDACTED_SECRET]",
        ),
        (
            "my token: a1b2c3d4e5f6g7h8i9j0",
            "my token: [REDACTED_SECRET]",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(redacted(input), want, "{input}");
    }
}

#[test]
fn ordinary_text_and_failing_checksums_are_kept() {
    for keep in [
        "4111 1111 1111 1112", // Luhn fails
        "4111111111111112",    // Luhn fails
        "version 1.2.3.4 of 2026-12-06",
        "order 12345 shipped in 3 days, 100.5 kg",
        "000-12-3456 is not an SSN",
        "DE89370400440532013001", // mod-97 fails
        "a long ordinary word: internationalization",
        "user@localhost has no domain",
        "key points: abcdefghijklmnopqrstu", // no digits: prose
        "[REDACTED_EMAIL] [REDACTED_SECRET]",
        "café ☕ 東京 — no findings here",
    ] {
        assert_eq!(kinds(keep), vec![], "{keep}");
        assert_eq!(redacted(keep), keep);
    }
}

#[test]
fn detect_only_counts_without_changing_the_text() {
    let settings = PiiSettings {
        redact: false,
        kinds: PiiKind::all(),
    };
    let mut t = "a@b.io and c@d.io, card 4242 4242 4242 4242".to_string();
    let before = t.clone();
    let mut counts = Counts::default();
    guard_text(&mut t, &settings, &mut counts);
    assert_eq!(t, before);
    assert_eq!(counts.header(), "email=2,card=1");
}

#[test]
fn only_the_configured_kinds_are_touched() {
    let settings = PiiSettings {
        redact: true,
        kinds: vec![PiiKind::Email],
    };
    let mut t = "x@y.com 4242 4242 4242 4242".to_string();
    let mut counts = Counts::default();
    guard_text(&mut t, &settings, &mut counts);
    assert_eq!(t, "[REDACTED_EMAIL] 4242 4242 4242 4242");
    assert_eq!(counts.total(), 1);
    let _ = all();
}

#[test]
fn adjacent_findings_are_all_redacted_in_one_pass() {
    let t = "x@y.com+15551234567";
    let once = redacted(t);
    assert_eq!(redacted(&once), once);
}

#[test]
fn long_runs_stay_linear() {
    // A pathological prompt: many '@', dots and digit groups; must not take quadratic time.
    let mut s = String::new();
    for _ in 0..20_000 {
        s.push_str("a.a@1 2 ");
    }
    let t = std::time::Instant::now();
    let _ = scan(&s, &PiiKind::all());
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let f = scan(&s, &PiiKind::all());
        let r = redact(&s, &f);
        prop_assert!(r.is_char_boundary(r.len()));
    }

    #[test]
    fn redaction_is_idempotent(s in "([a-z@.+ 0-9()_-]|sk-|AKIA|DE89 |4111 |x@y.com){0,40}") {
        let once = redacted(&s);
        prop_assert_eq!(redacted(&once), once);
    }

    #[test]
    fn luhn_failing_numbers_are_kept(n in 1_000_000_000_000u64..9_999_999_999_999_999u64) {
        let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
        let s = format!("number {n} end");
        let found = kinds(&s);
        if luhn(&digits) {
            prop_assert_eq!(found, vec![PiiKind::Card]);
        } else {
            prop_assert_eq!(found, vec![]);
        }
    }
}

#[test]
fn a_placeholder_is_not_a_context_word() {
    // Found by the idempotence property: after the first pass the AWS key became
    // `[REDACTED_SECRET]`, whose "SECRET" then made the next word look like a credential.
    let s = "AKIAAKIAAKIAAKIADE89 sk-sk-sk-sk-DE89 ";
    let once = redacted(s);
    assert_eq!(once, "[REDACTED_SECRET] sk-sk-sk-sk-DE89 ");
    assert_eq!(redacted(&once), once);
    // A real hint word still counts.
    assert_eq!(kinds("secret sk-sk-sk-sk-DE89"), vec![PiiKind::Secret]);
}

#[test]
fn parenthesised_phone() {
    assert_eq!(kinds("(555) 123-4567"), vec![PiiKind::Phone]);
}
