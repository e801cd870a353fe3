//! The PII guard: finds e-mail addresses, phone numbers, payment-card numbers (Luhn-checked),
//! national ids (US SSNs, IBANs with their mod-97 check) and API-key-like secrets in prompt
//! text, and optionally replaces each with `[REDACTED_<KIND>]` before the prompt leaves the
//! gateway (to the classifier, the hooks and the model).
//!
//! Scanning is one left-to-right pass over the bytes with hand-written matchers (no regex, so
//! nothing is compiled per request and the cost is linear in the prompt: every matcher looks at
//! a bounded window or at a run it then skips). Every pattern is ASCII, so findings start and
//! end on character boundaries of any UTF-8 text. The end of a finding counts as a word
//! boundary, so redacting twice finds nothing new (redaction is idempotent).

use access::stages::{PiiKind, PiiSettings};
use wire::openai::{ChatRequest, Content, ContentPart};

/// One finding: a byte range of the text and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    pub kind: PiiKind,
}

/// Findings per kind, in [`PiiKind::all`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u32; 5]);

impl Counts {
    fn slot(kind: PiiKind) -> usize {
        match kind {
            PiiKind::Email => 0,
            PiiKind::Phone => 1,
            PiiKind::Card => 2,
            PiiKind::NationalId => 3,
            PiiKind::Secret => 4,
        }
    }

    pub fn add(&mut self, kind: PiiKind) {
        let s = &mut self.0[Self::slot(kind)];
        *s = s.saturating_add(1);
    }

    pub fn get(&self, kind: PiiKind) -> u32 {
        self.0[Self::slot(kind)]
    }

    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }

    /// `email=1,card=2` (kinds with findings only), for `x-gateway-pii`.
    pub fn header(&self) -> String {
        PiiKind::all()
            .into_iter()
            .filter(|k| self.get(*k) > 0)
            .map(|k| format!("{}={}", k.as_str(), self.get(k)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

fn is_token(b: u8) -> bool {
    is_word(b) || b == b'-'
}

/// Every finding of the kinds `want` names, in order, not overlapping.
pub fn scan(text: &str, want: &[PiiKind]) -> Vec<Finding> {
    let b = text.as_bytes();
    let wants = |k: PiiKind| want.contains(&k);
    let mut out = Vec::new();
    let mut i = 0;
    // Where the last finding ended: a word boundary, as its placeholder will be.
    let mut last_end = usize::MAX;
    // The two previous words, for secrets introduced by "key", "token", …
    let mut context: [(usize, usize); 2] = [(0, 0); 2];
    while i < b.len() {
        let c = b[i];
        let boundary = i == 0 || i == last_end || !is_token(b[i - 1]);
        if c == b'@' && wants(PiiKind::Email) {
            if let Some((s, e)) = email_at(b, i, out.last().map_or(0, |f: &Finding| f.end)) {
                out.push(Finding {
                    start: s,
                    end: e,
                    kind: PiiKind::Email,
                });
                last_end = e;
                i = e;
                continue;
            }
            i += 1;
            continue;
        }
        if !boundary || !(c.is_ascii_alphanumeric() || c == b'+' || c == b'(' || c == b'_') {
            i += 1;
            continue;
        }
        // A number: SSN, card, phone.
        if c.is_ascii_digit() || c == b'+' || c == b'(' {
            match number_at(b, i) {
                Number::Found(e, kind) if wants(kind) && !email_follows(b, e) => {
                    out.push(Finding {
                        start: i,
                        end: e,
                        kind,
                    });
                    last_end = e;
                    i = e;
                    continue;
                }
                Number::Skip(e) => {
                    i = e.max(i + 1);
                    continue;
                }
                _ => {}
            }
            if !c.is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
        }
        // A word: an IBAN or a secret.
        let mut j = i;
        while j < b.len() && is_token(b[j]) {
            j += 1;
        }
        if j < b.len() && b[j] == b'@' || email_follows(b, j) {
            // The local part of an address: the '@' branch takes it.
            i = j;
            continue;
        }
        if wants(PiiKind::NationalId)
            && let Some(e) = iban_at(b, i, last_end)
        {
            out.push(Finding {
                start: i,
                end: e,
                kind: PiiKind::NationalId,
            });
            last_end = e;
            i = e;
            continue;
        }
        if wants(PiiKind::Secret) && secret(b, i, j, &context) {
            out.push(Finding {
                start: i,
                end: j,
                kind: PiiKind::Secret,
            });
            last_end = j;
            i = j;
            continue;
        }
        context = [context[1], (i, j)];
        i = j;
    }
    out
}

/// `local@domain.tld` around the '@' at `at`; the local part never reaches back before `floor`.
fn email_at(b: &[u8], at: usize, floor: usize) -> Option<(usize, usize)> {
    let mut s = at;
    while s > floor && is_local(b[s - 1]) {
        s -= 1;
    }
    // Leading dots and dashes are not part of an address.
    while s < at && !b[s].is_ascii_alphanumeric() {
        s += 1;
    }
    let mut e = at + 1;
    while e < b.len() && is_domain(b[e]) {
        e += 1;
    }
    while e > at + 1 && !b[e - 1].is_ascii_alphanumeric() {
        e -= 1;
    }
    if s == at || e <= at + 1 {
        return None;
    }
    let domain = &b[at + 1..e];
    let tld = domain.rsplit(|c| *c == b'.').next()?;
    let dotted = domain.contains(&b'.');
    (dotted && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)).then_some((s, e))
}

/// Whether an '@' follows a local-part run starting at `e` (the address is the '@' branch's).
fn email_follows(b: &[u8], e: usize) -> bool {
    let mut k = e;
    while k < b.len() && k < e + 64 && is_local(b[k]) {
        k += 1;
    }
    k < b.len() && b[k] == b'@'
}

enum Number {
    Found(usize, PiiKind),
    /// Not a finding; scanning resumes here (past a long run, so no byte is rescanned).
    Skip(usize),
    No,
}

/// Longest number run examined; longer runs (tables of figures) are skipped whole.
const MAX_NUMBER: usize = 32;

fn number_at(b: &[u8], s: usize) -> Number {
    let mut groups: [u8; 8] = [0; 8];
    let mut n_groups = 0usize;
    let mut digits = Vec::with_capacity(20);
    let plus = b[s] == b'+';
    let mut j = s + usize::from(plus);
    let mut seps = 0; // consecutive separators
    let (mut dash_only, mut dot) = (true, false);
    let mut pending = (false, false);
    let mut end = s;
    while j < b.len() {
        let c = b[j];
        if c.is_ascii_digit() {
            // Separators count once a digit follows them (not a sentence's full stop).
            dash_only &= !pending.0;
            dot |= pending.1;
            pending = (false, false);
            if seps > 0 || n_groups == 0 {
                if n_groups == groups.len() {
                    return skip_run(b, j);
                }
                n_groups += 1;
            }
            groups[n_groups - 1] = groups[n_groups - 1].saturating_add(1);
            digits.push(c - b'0');
            seps = 0;
            end = j + 1;
        } else if b" -.()".contains(&c) {
            seps += 1;
            if seps > 2 {
                break;
            }
            if c != b'-' && c != b' ' && n_groups > 0 {
                pending.0 = true;
            }
            if c == b'.' {
                pending.1 = true;
            }
        } else {
            break;
        }
        j += 1;
        if j - s > MAX_NUMBER {
            return skip_run(b, j);
        }
    }
    // The number must end at a word boundary.
    if digits.is_empty() || (end < b.len() && is_word(b[end])) {
        return Number::No;
    }
    let g = &groups[..n_groups];
    let d = digits.len();
    let only_spaces_or_dashes = dash_only;
    let dashed = (s..end).all(|k| b[k].is_ascii_digit() || b[k] == b'-');
    if !plus && dashed && g == [3, 2, 4] && ssn_ok(&digits) {
        return Number::Found(end, PiiKind::NationalId);
    }
    if !plus
        && b[s].is_ascii_digit()
        && only_spaces_or_dashes
        && (13..=19).contains(&d)
        && luhn(&digits)
    {
        return Number::Found(end, PiiKind::Card);
    }
    let phone = if plus {
        (8..=15).contains(&d)
    } else {
        !dot && matches!(g, [3, 3, 4] | [1, 3, 3, 4])
            || dot && g == [3, 3, 4] && (s..end).all(|k| b[k] != b' ')
    };
    if phone {
        // A phone in parentheses keeps its closing one.
        return Number::Found(end, PiiKind::Phone);
    }
    Number::No
}

fn skip_run(b: &[u8], mut j: usize) -> Number {
    while j < b.len() && (b[j].is_ascii_digit() || b" -.()+".contains(&b[j])) {
        j += 1;
    }
    Number::Skip(j)
}

fn ssn_ok(d: &[u8]) -> bool {
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().any(|x| *x != 0);
    area != 0 && area != 666 && area < 900 && group != 0 && serial
}

/// The Luhn check of payment-card numbers.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// An IBAN at `s` (two capital letters, two check digits, 11–30 more letters or digits,
/// optionally in groups of four separated by single spaces) that passes the mod-97 check.
fn iban_at(b: &[u8], s: usize, last_end: usize) -> Option<usize> {
    let head = b.get(s..s + 4)?;
    if !(head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit())
    {
        return None;
    }
    // Ends of candidate prefixes (after each group), longest last.
    let mut ends: Vec<(usize, usize)> = Vec::new(); // (byte end, chars)
    let mut j = s;
    let mut chars = 0;
    while j < b.len() && chars < 34 {
        let c = b[j];
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            chars += 1;
            j += 1;
            if j == b.len() || !(b[j].is_ascii_uppercase() || b[j].is_ascii_digit()) {
                ends.push((j, chars));
            }
        } else if c == b' ' && j + 1 < b.len() && b[j + 1].is_ascii_alphanumeric() {
            j += 1;
        } else {
            break;
        }
    }
    for &(e, n) in ends.iter().rev() {
        let bounded = e == b.len() || !is_word(b[e]) || e == last_end;
        if (15..=34).contains(&n) && bounded && iban_check(&b[s..e]) {
            return Some(e);
        }
    }
    None
}

fn iban_check(raw: &[u8]) -> bool {
    let chars: Vec<u8> = raw.iter().copied().filter(|c| *c != b' ').collect();
    if chars.len() < 15 || chars.iter().any(|c| c.is_ascii_lowercase()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

const PREFIXES: [(&[u8], usize); 8] = [
    (b"sk-", 20),
    (b"sk_live_", 20),
    (b"ghp_", 30),
    (b"gho_", 30),
    (b"ghs_", 30),
    (b"github_pat_", 30),
    (b"xoxb-", 20),
    (b"gw_live_", 20),
];

const CONTEXT_WORDS: [&[u8]; 5] = [b"key", b"token", b"secret", b"password", b"bearer"];

/// A word `b[s..e]` that looks like a credential.
fn secret(b: &[u8], s: usize, e: usize, context: &[(usize, usize); 2]) -> bool {
    let w = &b[s..e];
    if PREFIXES
        .iter()
        .any(|(p, min)| w.len() >= *min && w.starts_with(p))
    {
        return true;
    }
    if w.len() == 20
        && w.starts_with(b"AKIA")
        && w[4..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return true;
    }
    // A long mixed token right after "key", "token", … ("api_key=…", "token: …").
    let mixed =
        w.len() >= 16 && w.iter().any(u8::is_ascii_digit) && w.iter().any(u8::is_ascii_alphabetic);
    mixed
        && context.iter().any(|&(cs, ce)| {
            let word = &b[cs..ce];
            // Our own placeholder (`[REDACTED_SECRET]`) is not a hint: redacting twice must
            // give what redacting once gave.
            let placeholder = word.windows(9).any(|win| win == b"REDACTED_");
            !placeholder
                && CONTEXT_WORDS.iter().any(|k| {
                    word.len() >= k.len()
                        && word.windows(k.len()).any(|win| win.eq_ignore_ascii_case(k))
                })
        })
}

/// `text` with every finding replaced by its placeholder.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.start]);
        out.push_str(f.kind.placeholder());
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Runs the guard over one text: counts, and redacts in place when the settings say so.
pub fn guard_text(text: &mut String, settings: &PiiSettings, counts: &mut Counts) {
    let found = scan(text, &settings.kinds);
    if found.is_empty() {
        return;
    }
    for f in &found {
        counts.add(f.kind);
    }
    if settings.redact {
        *text = redact(text, &found);
    }
}

/// Runs the guard over every message's text of a chat request.
pub fn guard_chat(req: &mut ChatRequest, settings: &PiiSettings) -> Counts {
    let mut counts = Counts::default();
    for m in &mut req.messages {
        match &mut m.content {
            Some(Content::Text(t)) => guard_text(t, settings, &mut counts),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    if let ContentPart::Text { text } = p {
                        guard_text(text, settings, &mut counts);
                    }
                }
            }
            None => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests;
