//! Text out of an uploaded file, in reading order with its headings.
//!
//! Every parser here reads untrusted bytes: each bounds its own work (no recursion deeper than
//! [`Limits::max_depth`], no entity expansion, no external fetch) and fails with a reason
//! rather than guessing. Formats that are already readable text (txt, yaml, toml) are taken as
//! text, never parsed: a YAML alias bomb is just its characters.

use std::time::Duration;

mod docx;
mod pdf;

/// Hard limits on what parsing one untrusted upload may cost.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_decompressed: u64,
    pub max_zip_entries: usize,
    pub max_zip_ratio: u64,
    pub max_pdf_pages: usize,
    pub max_pdf_objects: usize,
    pub max_depth: usize,
    pub deadline: Duration,
    pub max_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 5 * 1024 * 1024,
            max_decompressed: 50 * 1024 * 1024,
            max_zip_entries: 2_000,
            max_zip_ratio: 100,
            max_pdf_pages: 2_000,
            max_pdf_objects: 200_000,
            max_depth: 64,
            deadline: Duration::from_secs(30),
            max_memory: 1024 * 1024 * 1024,
        }
    }
}

/// A document as text: sections in reading order, each under its heading (if any); paragraphs
/// inside a section's text are separated by blank lines.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub heading: Option<String>,
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExtractError {
    #[error(
        "unsupported file type {0:?}: upload pdf, txt, md, json, csv, html, xml, yaml, toml or docx"
    )]
    Unsupported(String),
    #[error("file is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> ExtractError {
    ExtractError::Invalid(m.into())
}

pub fn extract(name: &str, bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    if bytes.len() > limits.max_bytes {
        return Err(ExtractError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "yml" | "yaml" | "toml" => Ok(plain(&text(bytes)?)),
        "md" | "markdown" => Ok(markdown(&text(bytes)?)),
        "json" => json(&text(bytes)?, limits),
        "csv" => csv(&text(bytes)?),
        "html" | "htm" => Ok(html(&text(bytes)?)),
        "xml" => xml(&text(bytes)?, limits),
        "pdf" => {
            if !bytes.starts_with(b"%PDF-") {
                return Err(invalid("not a PDF file (it does not start with %PDF-)"));
            }
            pdf::pdf(bytes, limits)
        }
        "docx" => {
            if !bytes.starts_with(b"PK\x03\x04") {
                return Err(invalid("not a DOCX file (it is not a zip container)"));
            }
            docx::docx(bytes, limits)
        }
        _ => Err(ExtractError::Unsupported(ext)),
    }
}

/// UTF-8 text (a BOM dropped); binary content is refused.
fn text(bytes: &[u8]) -> Result<String, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let s = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    let bad = s
        .chars()
        .filter(|c| *c == '\u{FFFD}' || (c.is_control() && !c.is_whitespace()))
        .count();
    if !s.is_empty() && bad * 20 > s.chars().count() {
        return Err(invalid("the file is not text (binary content)"));
    }
    Ok(s)
}

fn plain(s: &str) -> Extracted {
    Extracted {
        sections: vec![Section {
            heading: None,
            text: s.trim().to_string(),
        }],
    }
}

/// Sections at `#` headings; code fences keep their lines.
fn markdown(s: &str) -> Extracted {
    let mut out = Extracted::default();
    let mut heading: Option<String> = None;
    let mut body = String::new();
    let mut fenced = false;
    let flush = |out: &mut Extracted, heading: &Option<String>, body: &mut String| {
        let t = body.trim();
        if !t.is_empty() || heading.is_some() {
            out.sections.push(Section {
                heading: heading.clone(),
                text: t.to_string(),
            });
        }
        body.clear();
    };
    for line in s.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let h = line.trim_start();
        if !fenced && h.starts_with('#') {
            let title = h.trim_start_matches('#');
            if title.starts_with(' ') || title.is_empty() {
                flush(&mut out, &heading, &mut body);
                let title = title.trim();
                heading = (!title.is_empty()).then(|| title.to_string());
                continue;
            }
        }
        body.push_str(line);
        body.push('\n');
    }
    flush(&mut out, &heading, &mut body);
    out.sections.retain(|s| !s.text.is_empty());
    out
}

/// `path.to.key: value` lines, one paragraph per top-level entry.
fn json(s: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    // serde_json refuses nesting beyond 128 levels without recursing further.
    let v: serde_json::Value =
        serde_json::from_str(s).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    let mut lines = Vec::new();
    flatten(&v, String::new(), 0, limits.max_depth, &mut lines)?;
    Ok(Extracted {
        sections: vec![Section {
            heading: None,
            text: lines.join("\n"),
        }],
    })
}

fn flatten(
    v: &serde_json::Value,
    path: String,
    depth: usize,
    max: usize,
    out: &mut Vec<String>,
) -> Result<(), ExtractError> {
    if depth > max {
        return Err(invalid(format!("JSON nested deeper than {max} levels")));
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(v, join(k), depth + 1, max, out)?;
            }
            if depth == 1 {
                out.push(String::new());
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(v, join(&i.to_string()), depth + 1, max, out)?;
                if depth == 0 {
                    out.push(String::new());
                }
            }
        }
        serde_json::Value::String(s) => out.push(format!("{path}: {s}")),
        serde_json::Value::Null => {}
        other => out.push(format!("{path}: {other}")),
    }
    Ok(())
}

/// Each row a paragraph of `header: value` pairs.
fn csv(s: &str) -> Result<Extracted, ExtractError> {
    let mut rows = parse_csv(s);
    if rows.is_empty() {
        return Ok(Extracted::default());
    }
    let header = rows.remove(0);
    let mut paras = Vec::with_capacity(rows.len());
    for row in rows {
        let pairs: Vec<String> = row
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(
                |(i, v)| match header.get(i).filter(|h| !h.trim().is_empty()) {
                    Some(h) => format!("{}: {}", h.trim(), v.trim()),
                    None => v.trim().to_string(),
                },
            )
            .collect();
        if !pairs.is_empty() {
            paras.push(pairs.join("; "));
        }
    }
    Ok(Extracted {
        sections: vec![Section {
            heading: None,
            text: paras.join("\n\n"),
        }],
    })
}

/// RFC 4180 fields: quotes, doubled quotes, separators and newlines inside quotes.
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            ('\r', false) => {}
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|e| *e <= 10);
        let Some(end) = end else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let name = &rest[1..end];
        let ch = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Tags out, `script`/`style` dropped, block elements as paragraph breaks, `h1`–`h6` as section
/// headings. A linear scan: no tree, so nesting depth costs nothing.
fn html(s: &str) -> Extracted {
    let mut out = Extracted::default();
    let mut heading: Option<String> = None;
    let mut body = String::new();
    let mut in_heading: Option<String> = None;
    let mut rest = s;
    let push_text = |t: &str, body: &mut String, in_heading: &mut Option<String>| {
        let t = decode_entities(t);
        match in_heading {
            Some(h) => h.push_str(&t),
            None => body.push_str(&t),
        }
    };
    while let Some(lt) = rest.find('<') {
        push_text(&rest[..lt], &mut body, &mut in_heading);
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = rest[1..gt].trim().to_ascii_lowercase();
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        match name.as_str() {
            "script" | "style" | "noscript" | "template" if !closing => {
                let end = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = lower.find(&end).map_or("", |e| {
                    let after = &rest[e..];
                    after.find('>').map_or("", |g| &after[g + 1..])
                });
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                if closing {
                    if let Some(h) = in_heading.take() {
                        let t = body.trim().to_string();
                        if !t.is_empty() {
                            out.sections.push(Section {
                                heading: heading.clone(),
                                text: collapse(&t),
                            });
                        }
                        body.clear();
                        let h = collapse(&h);
                        heading = (!h.is_empty()).then_some(h);
                    }
                } else {
                    in_heading = Some(String::new());
                }
            }
            "p" | "div" | "br" | "li" | "tr" | "section" | "article" | "table" | "ul" | "ol"
            | "blockquote" | "pre" | "hr" | "dd" | "dt" => body.push_str("\n\n"),
            "td" | "th" => body.push(' '),
            _ => {}
        }
    }
    push_text(rest, &mut body, &mut in_heading);
    let t = body.trim();
    if !t.is_empty() {
        out.sections.push(Section {
            heading,
            text: collapse(t),
        });
    }
    out
}

/// Runs of spaces inside a paragraph become one; paragraphs stay apart.
fn collapse(s: &str) -> String {
    s.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Element text in order; entity declarations are refused (no billion laughs, no external
/// entities), only the predefined and numeric references are decoded.
fn xml(s: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    let upper = s.to_ascii_uppercase();
    if upper.contains("<!ENTITY") {
        return Err(invalid(
            "XML entity declarations are not allowed (they can expand without bound or fetch external files)",
        ));
    }
    let mut depth: usize = 0;
    let mut paras = Vec::new();
    let mut rest = s;
    while let Some(lt) = rest.find('<') {
        let t = decode_entities(rest[..lt].trim());
        if !t.is_empty() {
            paras.push(t);
        }
        rest = &rest[lt..];
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata
                .find("]]>")
                .ok_or_else(|| invalid("unterminated CDATA section"))?;
            let t = cdata[..end].trim();
            if !t.is_empty() {
                paras.push(t.to_string());
            }
            rest = &cdata[end + 3..];
            continue;
        }
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let gt = rest
            .find('>')
            .ok_or_else(|| invalid("unterminated XML tag"))?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        if tag.starts_with('/') {
            depth = depth.saturating_sub(1);
        } else {
            depth += 1;
            if depth > limits.max_depth {
                return Err(invalid(format!(
                    "XML nested deeper than {} levels",
                    limits.max_depth
                )));
            }
        }
    }
    let t = decode_entities(rest.trim());
    if !t.is_empty() {
        paras.push(t);
    }
    Ok(Extracted {
        sections: vec![Section {
            heading: None,
            text: paras.join("\n\n"),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(e: &Extracted) -> String {
        e.sections
            .iter()
            .map(|s| format!("[{}] {}", s.heading.clone().unwrap_or_default(), s.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ok(name: &str, body: &str) -> Extracted {
        extract(name, body.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| unreachable!("{name}: {e}"))
    }

    #[test]
    fn markdown_sections_follow_headings() {
        let e = ok(
            "a.md",
            "Intro line.\n\n# Refunds\n\nWithin 14 days.\n\n## Shipping\nThree days.\n```\n# not a heading\n```\n",
        );
        let heads: Vec<_> = e.sections.iter().map(|s| s.heading.as_deref()).collect();
        assert_eq!(heads, vec![None, Some("Refunds"), Some("Shipping")]);
        assert!(e.sections[2].text.contains("# not a heading"));
    }

    #[test]
    fn html_drops_scripts_and_keeps_headings_and_entities() {
        let e = ok(
            "p.html",
            "<html><head><style>p{}</style><script>alert('x')</script></head><body>\
            <h1>Pricing</h1><p>Plans from &euro;5 &amp; up.</p><p>Cancel&nbsp;anytime.</p><h2>FAQ</h2><div>Ask us.</div></body></html>",
        );
        let s = all(&e);
        assert!(!s.contains("alert") && !s.contains("p{}"), "{s}");
        assert_eq!(e.sections[0].heading.as_deref(), Some("Pricing"));
        assert!(
            e.sections[0].text.contains("& up.")
                && e.sections[0].text.contains("\n\nCancel anytime."),
            "{s}"
        );
        assert_eq!(e.sections[1].heading.as_deref(), Some("FAQ"));
    }

    #[test]
    fn json_and_csv_become_findable_lines() {
        let e = ok(
            "c.json",
            r#"{"plans": [{"name": "pro", "price": 20}], "support": {"email": "help@example.com"}}"#,
        );
        let s = all(&e);
        assert!(
            s.contains("plans.0.name: pro")
                && s.contains("plans.0.price: 20")
                && s.contains("support.email: help@example.com"),
            "{s}"
        );
        let e = ok(
            "t.csv",
            "sku,name,stock\nA1,\"Blue, large\",4\nB2,\"Say \"\"hi\"\"\",0\n",
        );
        let s = all(&e);
        assert!(s.contains("sku: A1; name: Blue, large; stock: 4"), "{s}");
        assert!(s.contains("name: Say \"hi\""), "{s}");
    }

    #[test]
    fn hostile_inputs_end_in_errors_with_reasons() {
        let l = Limits::default();
        let deep = "[".repeat(100_000);
        let err = extract("d.json", deep.as_bytes(), &l).map_err(|e| e.to_string());
        assert!(err.is_err(), "{err:?}");
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        let err = extract("b.xml", laughs.as_bytes(), &l).map_err(|e| e.to_string());
        assert!(err.as_ref().is_err_and(|e| e.contains("entity")), "{err:?}");
        let nested = "<a>".repeat(10_000);
        assert!(extract("n.xml", nested.as_bytes(), &l).is_err());
        // Deep HTML costs a linear scan, nothing more.
        let started = std::time::Instant::now();
        let e = extract(
            "n.html",
            format!(
                "{}deep{}",
                "<div>".repeat(200_000),
                "</div>".repeat(200_000)
            )
            .as_bytes(),
            &l,
        );
        assert!(e.is_ok() && started.elapsed().as_secs() < 5);
        // A YAML alias bomb is text, never expanded.
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
        let e = ok("bomb.yaml", bomb);
        assert!(all(&e).len() < 200);
        assert!(extract("x.pdf", b"MZ not a pdf", &l).is_err());
        assert!(extract("bin.txt", &[0u8, 1, 2, 3, 0, 0, 5, 6, 0, 7][..], &l).is_err());
        let big = vec![b'a'; 11];
        assert!(matches!(
            extract(
                "big.txt",
                &big,
                &Limits {
                    max_bytes: 10,
                    ..Limits::default()
                }
            ),
            Err(ExtractError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), ext in prop::sample::select(vec!["txt","md","json","csv","html","xml","yaml","toml","pdf","docx"])) {
            let _ = extract(&format!("f.{ext}"), &bytes, &Limits::default());
        }

        #[test]
        fn random_markup_never_panics(s in "[<>/a-z&;#!\\[\\]\\- \"=]{0,300}") {
            let _ = extract("f.html", s.as_bytes(), &Limits::default());
            let _ = extract("f.xml", s.as_bytes(), &Limits::default());
            let _ = extract("f.csv", s.as_bytes(), &Limits::default());
        }
    }
}
