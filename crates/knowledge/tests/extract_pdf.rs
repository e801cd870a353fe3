//! PDF extraction against documents written here with lopdf, and against hostile files: page
//! and object floods, flate bombs (one stream, many streams, object streams), reference loops,
//! encryption, truncation and garbage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use knowledge::extract::{Limits, extract};
use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, ObjectId, Stream, dictionary};
use proptest::prelude::*;

fn zlib_zeros(n: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len());
        z.write_all(&block[..k]).unwrap();
        left -= k;
    }
    z.finish().unwrap()
}

fn text_ops(lines: &[&str]) -> Vec<u8> {
    let mut ops = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
        Operation::new("TL", vec![14.into()]),
        Operation::new("Td", vec![72.into(), 720.into()]),
    ];
    for l in lines {
        ops.push(Operation::new("Tj", vec![Object::string_literal(*l)]));
        ops.push(Operation::new("T*", vec![]));
    }
    ops.push(Operation::new("ET", vec![]));
    Content { operations: ops }.encode().unwrap()
}

/// A document whose pages all draw `contents[i]` (by index, cycling), with a shared font.
struct Builder {
    doc: Document,
    pages_id: ObjectId,
    kids: Vec<Object>,
}

impl Builder {
    fn new() -> Self {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        Builder {
            doc,
            pages_id,
            kids: Vec::new(),
        }
    }

    fn page(&mut self, contents: Object) -> ObjectId {
        let id = self.doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => self.pages_id,
            "Contents" => contents,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        });
        self.kids.push(id.into());
        id
    }

    fn text_page(&mut self, lines: &[&str]) -> ObjectId {
        let mut s = Stream::new(dictionary! {}, text_ops(lines));
        s.compress().unwrap();
        let c = self.doc.add_object(s);
        self.page(c.into())
    }

    fn finish(mut self, count: Option<i64>) -> Document {
        let font = self.doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        });
        let resources = self
            .doc
            .add_object(dictionary! { "Font" => dictionary! { "F1" => font } });
        let n = self.kids.len() as i64;
        self.doc.objects.insert(
            self.pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages",
                "Kids" => self.kids,
                "Count" => count.unwrap_or(n),
                "Resources" => resources,
            }),
        );
        let catalog = self
            .doc
            .add_object(dictionary! { "Type" => "Catalog", "Pages" => self.pages_id });
        self.doc.trailer.set("Root", catalog);
        self.doc
    }
}

fn save(mut doc: Document) -> Vec<u8> {
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// lopdf's writer drops object streams (it builds its own), so they are written under another
/// type and renamed in the bytes, padded to the same length so the xref offsets still hold.
fn with_object_streams(bytes: Vec<u8>) -> Vec<u8> {
    const FROM: &[u8] = b"/PendingObjStm";
    const TO: &[u8] = b"/ObjStm       ";
    let mut out = bytes;
    let mut i = 0;
    while i + FROM.len() <= out.len() {
        if out[i..].starts_with(FROM) {
            out[i..i + FROM.len()].copy_from_slice(TO);
        }
        i += 1;
    }
    out
}

fn two_pages() -> Document {
    let mut b = Builder::new();
    b.text_page(&["Refunds are paid", "within fourteen days.", "Ask support."]);
    b.text_page(&["Shipping takes", "three working days."]);
    b.finish(None)
}

fn err(bytes: &[u8], limits: &Limits) -> String {
    let started = Instant::now();
    let r = extract("f.pdf", bytes, limits);
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

fn small() -> Limits {
    Limits {
        max_decompressed: 1024 * 1024,
        ..Limits::default()
    }
}

#[test]
fn pdf_text_comes_out_per_page_in_order() {
    for modern in [false, true] {
        let mut doc = two_pages();
        let mut bytes = Vec::new();
        if modern {
            // Object streams and an xref stream: the objects arrive through the unpacking path.
            doc.save_modern(&mut bytes).unwrap();
            assert!(bytes.windows(7).any(|w| w == b"/ObjStm"));
        } else {
            doc.save_to(&mut bytes).unwrap();
        }
        let e = extract("guide.pdf", &bytes, &Limits::default()).unwrap();
        assert_eq!(e.sections.len(), 1);
        assert_eq!(e.sections[0].heading, None);
        assert_eq!(
            e.sections[0].text,
            "Refunds are paid within fourteen days.\n\nAsk support.\n\nShipping takes three working days.",
            "modern: {modern}"
        );
    }
}

#[test]
fn pdf_over_the_page_limit_is_refused() {
    let mut b = Builder::new();
    let c = b
        .doc
        .add_object(Stream::new(dictionary! {}, text_ops(&["x"])));
    for _ in 0..5_000 {
        b.page(c.into());
    }
    let doc = b.finish(None);
    let bytes = save(doc);
    let e = err(&bytes, &Limits::default());
    assert!(e.contains("5000 pages; the limit is 2000"), "{e}");

    // The tree's /Count says 1: the walk counts the leaves itself.
    let mut b = Builder::new();
    let c = b
        .doc
        .add_object(Stream::new(dictionary! {}, text_ops(&["x"])));
    for _ in 0..5_000 {
        b.page(c.into());
    }
    let e = err(&save(b.finish(Some(1))), &Limits::default());
    assert!(e.contains("more than 2000 pages; the limit is 2000"), "{e}");
}

#[test]
fn pdf_over_the_object_limit_is_refused() {
    let bytes = save(two_pages());
    let limits = Limits {
        max_pdf_objects: 3,
        ..Limits::default()
    };
    let e = err(&bytes, &limits);
    assert!(e.contains("the limit is 3"), "{e}");

    // An object stream whose index lists 300 000 members, packed into a few hundred KB.
    let mut doc = two_pages();
    let index: String = (1000..301_000).map(|i| format!("{i} 0 ")).collect();
    let mut content = index.clone().into_bytes();
    content.extend_from_slice(b"null");
    let mut s = Stream::new(
        dictionary! { "Type" => "PendingObjStm", "N" => 300_000, "First" => index.len() as i64 },
        content,
    );
    s.compress().unwrap();
    doc.add_object(s);
    let e = err(&with_object_streams(save(doc)), &Limits::default());
    assert!(e.contains("the limit is 200000"), "{e}");
}

#[test]
fn pdf_flate_bombs_are_refused() {
    // One content stream that inflates to 8 MB, over a 1 MB limit.
    let mut b = Builder::new();
    let c = b.doc.add_object(Stream::new(
        dictionary! { "Filter" => "FlateDecode" },
        zlib_zeros(8 * 1024 * 1024),
    ));
    b.page(c.into());
    let bomb = save(b.finish(None));
    let e = err(&bomb, &small());
    assert!(e.contains("the limit is 1048576"), "{e}");

    // Many streams each under the limit, over it together: the budget is per document.
    let mut b = Builder::new();
    for _ in 0..8 {
        let c = b.doc.add_object(Stream::new(
            dictionary! { "Filter" => "FlateDecode" },
            zlib_zeros(300 * 1024),
        ));
        b.page(c.into());
    }
    let e = err(&save(b.finish(None)), &small());
    assert!(e.contains("the limit is 1048576"), "{e}");

    // A bomb in an object stream, which lopdf would inflate while loading.
    let mut doc = two_pages();
    doc.add_object(Stream::new(
        dictionary! { "Type" => "PendingObjStm", "N" => 1, "First" => 4, "Filter" => "FlateDecode" },
        zlib_zeros(8 * 1024 * 1024),
    ));
    let e = err(&with_object_streams(save(doc)), &small());
    assert!(e.contains("the limit is 1048576"), "{e}");

    // At the default 50 MB limit, a 60 MB bomb.
    let mut b = Builder::new();
    let c = b.doc.add_object(Stream::new(
        dictionary! { "Filter" => "FlateDecode" },
        zlib_zeros(60 * 1024 * 1024),
    ));
    b.page(c.into());
    let e = err(&save(b.finish(None)), &Limits::default());
    assert!(e.contains("the limit is 52428800"), "{e}");
}

#[test]
fn pdf_reference_loops_end_in_errors() {
    // /Kids leads back to the root.
    let mut b = Builder::new();
    b.text_page(&["one"]);
    let root = b.pages_id;
    b.kids.push(root.into());
    let e = err(&save(b.finish(Some(2))), &Limits::default());
    assert!(e.contains("loop"), "{e}");

    // A page that is its own parent (resources are looked up through /Parent).
    let mut b = Builder::new();
    let page = b.text_page(&["one"]);
    let mut doc = b.finish(None);
    let d = doc.get_dictionary_mut(page).unwrap();
    d.set("Parent", page);
    let e = err(&save(doc), &Limits::default());
    assert!(e.contains("loop"), "{e}");
}

#[test]
fn pdf_encrypted_is_refused() {
    let mut doc = two_pages();
    doc.trailer.set(
        "Encrypt",
        dictionary! {
            "Filter" => "Standard", "V" => 1, "R" => 2, "P" => -4,
            "O" => Object::string_literal(vec![0u8; 32]), "U" => Object::string_literal(vec![0u8; 32]),
        },
    );
    let e = err(&save(doc), &Limits::default());
    assert!(e.contains("encrypted PDF"), "{e}");

    let hand =
        b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer\n<</Root 1 0 R /Encrypt 2 0 R>>\n%%EOF";
    let e = err(hand, &Limits::default());
    assert!(e.contains("encrypted PDF"), "{e}");
}

#[test]
fn pdf_truncated_or_garbage_is_refused() {
    let bytes = save(two_pages());
    let e = err(&bytes[..40], &Limits::default());
    assert!(!e.is_empty());
    let e = err(
        b"%PDF-1.7\n\x00\xff garbage ] >> << [[ (((",
        &Limits::default(),
    );
    assert!(!e.is_empty());
    let e = err(b"%PDF-", &Limits::default());
    assert!(!e.is_empty());
    // Deep nesting is lopdf's parser's to bound.
    let mut deep = b"%PDF-1.4\n1 0 obj\n".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    let _ = extract("deep.pdf", &deep, &Limits::default());
    // A truncated file may be partly recoverable; it must not panic either way.
    for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 30] {
        let _ = extract("cut.pdf", &bytes[..cut], &Limits::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pdf_random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2_000)) {
        let mut bytes = b"%PDF-".to_vec();
        bytes.extend(tail);
        let _ = extract("f.pdf", &bytes, &Limits::default());
    }

    #[test]
    fn pdf_damaged_files_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = save(two_pages());
        for (at, b) in flips {
            let i = at.index(bytes.len());
            if i >= 5 {
                bytes[i] = b;
            }
        }
        let _ = extract("f.pdf", &bytes, &Limits::default());
    }
}
