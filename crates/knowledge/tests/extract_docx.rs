//! DOCX extraction against documents built here with the zip writer, and against hostile
//! containers: bombs (honest and lying headers), too many entries, DTDs, deep nesting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use knowledge::extract::{Extracted, Limits, extract};
use proptest::prelude::*;
use zip::write::SimpleFileOptions;

const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn docx(body: &str) -> Vec<u8> {
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {W}><w:body>{body}</w:body></w:document>"#
    );
    zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", xml.as_bytes()),
    ])
}

fn para(style: Option<&str>, runs: &str) -> String {
    let ppr = style
        .map(|s| format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#))
        .unwrap_or_default();
    format!("<w:p>{ppr}{runs}</w:p>")
}

fn run(t: &str) -> String {
    format!(r#"<w:r><w:t xml:space="preserve">{t}</w:t></w:r>"#)
}

/// Rewrites the uncompressed size `name` declares, in its local header and the central directory.
fn lie_about_size(zip: &mut [u8], name: &str, size: u32) {
    let n = name.as_bytes();
    let mut i = 0;
    while i + 46 <= zip.len() {
        let u16_at = |z: &[u8], o: usize| u16::from_le_bytes([z[o], z[o + 1]]) as usize;
        if zip[i..].starts_with(b"PK\x03\x04")
            && zip[i + 30..].starts_with(n)
            && u16_at(zip, i + 26) == n.len()
        {
            zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
        }
        if zip[i..].starts_with(b"PK\x01\x02")
            && zip[i + 46..].starts_with(n)
            && u16_at(zip, i + 28) == n.len()
        {
            zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
        }
        i += 1;
    }
}

fn err(name: &str, bytes: &[u8], limits: &Limits) -> String {
    let started = Instant::now();
    let r = extract(name, bytes, limits);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    match r {
        Err(e) => e.to_string(),
        Ok(e) => unreachable!("expected an error, got {e:?}"),
    }
}

fn headings(e: &Extracted) -> Vec<Option<&str>> {
    e.sections.iter().map(|s| s.heading.as_deref()).collect()
}

#[test]
fn docx_paragraphs_headings_and_tables() {
    let body = [
        para(None, &(run("Welcome to ") + &run("Acme &amp; Co."))),
        para(Some("Title"), &run("Acme handbook")),
        para(None, &run("Everything staff need.")),
        para(Some("Heading1"), &run("Refunds")),
        para(
            None,
            &format!(
                "{}<w:r><w:tab/><w:t>within</w:t><w:br/><w:t>14 days</w:t></w:r>",
                run("Refunds are paid")
            ),
        ),
        // Tab stops in paragraph properties are layout, not text.
        format!(
            r#"<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>{}</w:p>"#,
            run("Second paragraph.")
        ),
        format!(
            "<w:tbl><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr></w:tbl>",
            para(None, &run("Plan")),
            para(None, &run("Price")),
            para(None, &run("Pro")),
            para(Some("Heading2"), &run("20 EUR"))
        ),
        para(Some("Heading2"), &run("Shipping")),
        para(None, &run("Three days.")),
        // Text boxes come twice: the drawing and its legacy fallback. One copy is read.
        format!(
            r#"<w:p><w:r><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><mc:Choice Requires="wps"><w:txbxContent>{}</w:txbxContent></mc:Choice><mc:Fallback><w:txbxContent>{}</w:txbxContent></mc:Fallback></mc:AlternateContent></w:r></w:p>"#,
            para(None, &run("Boxed note.")),
            para(None, &run("Boxed note."))
        ),
    ]
    .concat();
    let e = extract("handbook.docx", &docx(&body), &Limits::default()).unwrap();
    assert_eq!(
        headings(&e),
        vec![
            None,
            Some("Acme handbook"),
            Some("Refunds"),
            Some("Shipping")
        ],
        "{e:#?}"
    );
    assert_eq!(e.sections[0].text, "Welcome to Acme & Co.");
    assert_eq!(e.sections[1].text, "Everything staff need.");
    assert_eq!(
        e.sections[2].text,
        "Refunds are paid\twithin\n14 days\n\nSecond paragraph.\n\nPlan | Price\nPro | 20 EUR"
    );
    assert_eq!(e.sections[3].text, "Three days.\n\nBoxed note.");
}

#[test]
fn docx_without_document_xml_is_refused() {
    let z = zip_of(&[("word/other.xml", b"<x/>")]);
    let e = err("a.docx", &z, &Limits::default());
    assert!(e.contains("word/document.xml"), "{e}");
}

#[test]
fn docx_bomb_with_honest_sizes_is_refused_before_inflating() {
    // A 200 MB entry, claimed honestly: refused from the directory, nothing inflated.
    let mut z = docx(&para(None, &run("small")));
    lie_about_size(&mut z, "word/document.xml", 200 * 1024 * 1024);
    let e = err("bomb.docx", &z, &Limits::default());
    assert!(e.contains("the limit is 52428800"), "{e}");

    // 2 MB of zeros packs into about 2 KB: over the 100:1 ratio.
    let zeros = vec![0u8; 2 * 1024 * 1024];
    let z = zip_of(&[
        ("word/media/blob.bin", &zeros),
        ("word/document.xml", b"<a/>"),
    ]);
    let e = err("ratio.docx", &z, &Limits::default());
    assert!(e.contains("the limit is 100:1"), "{e}");
}

#[test]
fn docx_bomb_with_lying_header_is_stopped_while_inflating() {
    // document.xml claims 100 bytes but inflates to 4 MB; the limit is 1 MB.
    let mut xml = format!("<w:document {W}><w:body><w:p><w:r><w:t>").into_bytes();
    xml.resize(4 * 1024 * 1024, b'a');
    let mut z = zip_of(&[("word/document.xml", &xml)]);
    lie_about_size(&mut z, "word/document.xml", 100);
    let limits = Limits {
        max_decompressed: 1024 * 1024,
        ..Limits::default()
    };
    let e = err("liar.docx", &z, &limits);
    // The zip reader notices the lie itself; the bound on the read is there in case it did not.
    assert!(
        e.contains("the limit is 1048576") || e.contains("larger than its declared"),
        "{e}"
    );
}

#[test]
fn docx_with_too_many_entries_is_refused() {
    let names: Vec<String> = (0..2_001).map(|i| format!("f{i}")).collect();
    let mut entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    entries.push(("word/document.xml", b"<a/>"));
    let e = err("many.docx", &zip_of(&entries), &Limits::default());
    assert!(e.contains("the limit is 2000"), "{e}");
}

#[test]
fn docx_doctype_and_entities_are_refused() {
    let xml = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><w:document {W}><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p></w:body></w:document>"#
    );
    let z = zip_of(&[("word/document.xml", xml.as_bytes())]);
    let e = err("lol.docx", &z, &Limits::default());
    assert!(e.contains("DOCTYPE"), "{e}");
}

#[test]
fn docx_nesting_is_bounded() {
    let deep = "<w:p>".repeat(10_000);
    let e = err("deep.docx", &docx(&deep), &Limits::default());
    assert!(e.contains("deeper than 64 levels"), "{e}");
}

#[test]
fn docx_with_broken_xml_or_zip_is_refused() {
    let e = err("bad.docx", &docx("<w:p><w:r></w:p>"), &Limits::default());
    assert!(e.contains("not valid XML"), "{e}");
    let mut z = docx(&para(None, &run("text")));
    z.truncate(z.len() / 2);
    let e = err("cut.docx", &z, &Limits::default());
    assert!(!e.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn docx_random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2_000)) {
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.extend(tail);
        let _ = extract("f.docx", &bytes, &Limits::default());
    }

    #[test]
    fn docx_damaged_containers_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut z = docx(&[para(Some("Heading1"), &run("Head")), para(None, &run("Body text."))].concat());
        for (at, b) in flips {
            let i = at.index(z.len());
            if i >= 4 {
                z[i] = b;
            }
        }
        let _ = extract("f.docx", &z, &Limits::default());
    }
}
