//! PDFs through lopdf, with every cost lopdf would leave open bounded here first.
//!
//! lopdf bounds each stream it inflates and the nesting of what it parses, but not the sum:
//! a file may hold hundreds of small streams that each inflate to the per-stream limit, and its
//! object streams may declare millions of objects. So object streams are set aside while the
//! file loads and unpacked here against one budget of objects and decompressed bytes, and the
//! streams that text extraction reads (page contents, fonts' ToUnicode maps) are inflated
//! against the same budget before lopdf looks at them.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use lopdf::xref::XrefEntry;
use lopdf::{DecompressError, Document, Error as PdfError, Object, ObjectId};

use super::{ExtractError, Extracted, Limits, Section, invalid};

/// What an object stream's `/Type` becomes while the file loads, so that lopdf leaves it packed.
const DEFERRED: &[u8] = b"KnowledgeDeferredObjStm";

const ENCRYPTED: &str =
    "encrypted PDF: remove the password or encryption and upload the file again";

pub(super) fn pdf(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    // Decrypting is work done for a file that is refused anyway; the trailer's key is plain text.
    if declares_encryption(bytes) {
        return Err(invalid(ENCRYPTED));
    }
    let objects = count_objects(bytes);
    if objects > limits.max_pdf_objects {
        return Err(too_many_objects(limits));
    }
    let max = usize::try_from(limits.max_decompressed).unwrap_or(usize::MAX);
    let options = lopdf::LoadOptions {
        filter: Some(defer_object_streams),
        max_decompressed_size: Some(max),
        ..lopdf::LoadOptions::default()
    };
    let mut doc =
        Document::load_mem_with_options(bytes, options).map_err(|e| reason(&e, limits))?;
    if doc.trailer.has(b"Encrypt") {
        return Err(invalid(ENCRYPTED));
    }
    let mut budget = max;
    unpack_object_streams(&mut doc, limits, &mut budget)?;
    check_page_tree(&doc, limits)?;
    let pages = doc.get_pages();
    if pages.len() > limits.max_pdf_pages {
        return Err(too_many_pages(pages.len(), limits));
    }
    inflate_text_streams(&mut doc, pages.values(), limits, &mut budget)?;

    let mut paras = Vec::new();
    let mut failures = 0usize;
    for number in pages.keys() {
        let mut page = String::new();
        for chunk in doc.extract_text_chunks_with_limit(&[*number], max) {
            match chunk {
                Ok(t) => page.push_str(&t),
                Err(e) if fatal(&e) => return Err(reason(&e, limits)),
                // A font or operator lopdf cannot read costs that text, not the document.
                Err(_) => failures += 1,
            }
        }
        paras.extend(paragraphs(&page));
    }
    if paras.is_empty() && failures > 0 {
        return Err(invalid(
            "no text could be read from this PDF (its fonts or content streams are unreadable)",
        ));
    }
    Ok(Extracted {
        sections: vec![Section {
            heading: None,
            text: paras.join("\n\n"),
        }],
    })
}

/// lopdf keeps the mutated object and ignores the returned one (only `None`, "drop it", counts).
fn defer_object_streams(id: ObjectId, object: &mut Object) -> Option<(ObjectId, Object)> {
    if let Object::Stream(s) = object
        && s.dict.has_type(b"ObjStm")
    {
        s.dict.set("Type", Object::Name(DEFERRED.to_vec()));
    }
    Some((id, Object::Null))
}

/// `/Encrypt` as a key: followed by a reference or a dictionary, not by more name characters
/// (which would make it another name) or a `)` (text that merely mentions it).
fn declares_encryption(bytes: &[u8]) -> bool {
    const KEY: &[u8] = b"/Encrypt";
    bytes.windows(KEY.len() + 1).any(|w| {
        w.starts_with(KEY)
            && w.last()
                .is_some_and(|c| c.is_ascii_whitespace() || *c == b'<' || c.is_ascii_digit())
    })
}

/// Indirect objects written in the file (`12 0 obj`), counted before any is parsed.
fn count_objects(bytes: &[u8]) -> usize {
    bytes
        .windows(5)
        .filter(|w| {
            w[0].is_ascii_whitespace() && &w[1..4] == b"obj" && !w[4].is_ascii_alphanumeric()
        })
        .count()
}

fn too_many_objects(limits: &Limits) -> ExtractError {
    invalid(format!(
        "PDF has more than {} objects; the limit is {}",
        limits.max_pdf_objects, limits.max_pdf_objects
    ))
}

fn too_many_pages(pages: usize, limits: &Limits) -> ExtractError {
    invalid(format!(
        "PDF has {pages} pages; the limit is {}",
        limits.max_pdf_pages
    ))
}

fn bomb(limits: &Limits) -> ExtractError {
    invalid(format!(
        "PDF streams expand to more than {} bytes; the limit is {} (a decompression bomb?)",
        limits.max_decompressed, limits.max_decompressed
    ))
}

/// Errors that end the whole extraction rather than the one font or stream they came from.
fn fatal(e: &PdfError) -> bool {
    matches!(
        e,
        PdfError::Decompress(DecompressError::MemoryLimitExceeded { .. })
            | PdfError::ReferenceCycle(_)
            | PdfError::ReferenceLimit
            | PdfError::RecursionLimit
    )
}

fn reason(e: &PdfError, limits: &Limits) -> ExtractError {
    match e {
        PdfError::Decompress(DecompressError::MemoryLimitExceeded { .. }) => bomb(limits),
        PdfError::ReferenceCycle(_) | PdfError::ReferenceLimit => {
            invalid("PDF objects refer to each other in a loop (a damaged or hostile file)")
        }
        PdfError::RecursionLimit => invalid("PDF objects are nested too deeply"),
        PdfError::Decryption(_) | PdfError::InvalidPassword => invalid(ENCRYPTED),
        e => invalid(format!("unreadable PDF: {e}")),
    }
}

/// Unpacks the object streams set aside at load, as lopdf would have, but against the budgets:
/// an object stream's index is counted before its objects are parsed.
fn unpack_object_streams(
    doc: &mut Document,
    limits: &Limits,
    budget: &mut usize,
) -> Result<(), ExtractError> {
    let mut count = doc.objects.len();
    if count > limits.max_pdf_objects {
        return Err(too_many_objects(limits));
    }
    let deferred: Vec<ObjectId> = doc
        .objects
        .iter()
        .filter(|(_, o)| matches!(o, Object::Stream(s) if s.dict.has_type(DEFERRED)))
        .map(|(id, _)| *id)
        .collect();
    let mut unpacked = BTreeMap::new();
    for id in deferred {
        let Some(Object::Stream(s)) = doc.objects.get_mut(&id) else {
            continue;
        };
        s.dict.set("Type", Object::Name(b"ObjStm".to_vec()));
        let plain = match s.get_plain_content_with_limit(*budget) {
            Ok(p) => p,
            Err(PdfError::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                return Err(bomb(limits));
            }
            // lopdf's lenient load skips an unreadable object stream too.
            Err(_) => continue,
        };
        *budget = budget.saturating_sub(plain.len());
        let first = s
            .dict
            .get(b"First")
            .and_then(Object::as_i64)
            .ok()
            .and_then(|f| usize::try_from(f).ok())
            .unwrap_or(0);
        // Number pairs; comments counted as numbers only overestimate.
        let members = plain
            .get(..first)
            .unwrap_or_default()
            .split(u8::is_ascii_whitespace)
            .filter(|t| !t.is_empty())
            .count()
            / 2;
        count = count.saturating_add(members);
        if count > limits.max_pdf_objects {
            return Err(too_many_objects(limits));
        }
        let mut dict = s.dict.clone();
        dict.remove(b"Filter");
        dict.remove(b"DecodeParms");
        let Ok(stream) = lopdf::ObjectStream::new(&lopdf::Stream::new(dict, plain)) else {
            continue;
        };
        for (member, object) in stream.objects {
            // As lopdf does: a stale copy in another container, or a deleted object, stays out.
            let current = match doc.reference_table.get(member.0) {
                Some(XrefEntry::Compressed { container, .. }) => *container == id.0,
                Some(XrefEntry::Free | XrefEntry::UnusableFree) => false,
                _ => true,
            };
            if current {
                unpacked.entry(member).or_insert(object);
            }
        }
    }
    for (member, object) in unpacked {
        doc.objects.entry(member).or_insert(object);
    }
    Ok(())
}

/// Walks the page tree once, refusing a loop (a `/Kids` entry that leads back to a node already
/// seen), a tree deeper than `max_depth`, or more leaves than `max_pdf_pages`. lopdf's own walk
/// would stop at a loop too, but silently, with pages missing.
fn check_page_tree(doc: &Document, limits: &Limits) -> Result<(), ExtractError> {
    let root = doc
        .catalog()
        .and_then(|c| c.get(b"Pages"))
        .and_then(Object::as_reference)
        .map_err(|_| invalid("unreadable PDF: it has no page tree"))?;
    // The declared count refuses an oversized document before its tree is walked.
    if let Ok(n) = doc
        .get_dictionary(root)
        .and_then(|d| d.get(b"Count"))
        .and_then(Object::as_i64)
        && usize::try_from(n).is_ok_and(|n| n > limits.max_pdf_pages)
    {
        return Err(too_many_pages(
            usize::try_from(n).unwrap_or(usize::MAX),
            limits,
        ));
    }
    let mut seen = HashSet::new();
    let mut pages = 0usize;
    let mut todo = vec![(root, 0usize)];
    while let Some((id, depth)) = todo.pop() {
        if !seen.insert(id) {
            return Err(invalid(
                "PDF page tree refers back to itself (a reference loop in /Kids)",
            ));
        }
        if depth > limits.max_depth {
            return Err(invalid(format!(
                "PDF page tree is nested deeper than {} levels",
                limits.max_depth
            )));
        }
        let node = doc.get_dictionary(id).ok();
        let is_tree = depth == 0 || node.is_some_and(|d| d.has_type(b"Pages"));
        if !is_tree {
            // A leaf that does not load still counts, as lopdf counts it.
            if node.is_none_or(|d| d.get_type().is_err() || d.has_type(b"Page")) {
                pages += 1;
                if pages > limits.max_pdf_pages {
                    return Err(invalid(format!(
                        "PDF has more than {} pages; the limit is {}",
                        limits.max_pdf_pages, limits.max_pdf_pages
                    )));
                }
            }
            continue;
        }
        let kids = node.and_then(|d| d.get_deref(b"Kids", doc).and_then(Object::as_array).ok());
        if let Some(kids) = kids {
            // Reversed onto the stack, so they come off in reading order.
            for kid in kids.iter().rev() {
                if let Ok(kid) = kid.as_reference() {
                    todo.push((kid, depth + 1));
                }
            }
        }
    }
    Ok(())
}

/// Inflates, in place, each stream text extraction reads, against the one budget: lopdf would
/// otherwise inflate them per page, so a shared font map could cost its size once per page.
fn inflate_text_streams<'a>(
    doc: &mut Document,
    pages: impl Iterator<Item = &'a ObjectId>,
    limits: &Limits,
    budget: &mut usize,
) -> Result<(), ExtractError> {
    let mut streams = BTreeSet::new();
    for page in pages {
        streams.extend(doc.get_page_contents(*page));
        let fonts = doc.get_page_fonts(*page).map_err(|e| reason(&e, limits))?;
        for font in fonts.values() {
            for key in [&b"ToUnicode"[..], b"Encoding"] {
                if let Ok(Object::Reference(id)) = font.get(key) {
                    streams.insert(*id);
                }
            }
        }
    }
    for id in streams {
        let Some(Object::Stream(s)) = doc.objects.get_mut(&id) else {
            continue;
        };
        if !s.is_compressed() {
            continue;
        }
        match s.decompress_with_limit(*budget) {
            Ok(()) => *budget = budget.saturating_sub(s.content.len()),
            Err(PdfError::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                return Err(bomb(limits));
            }
            // Left as it is: lopdf reads an undecodable stream's raw bytes, as readers do.
            Err(_) => {}
        }
    }
    Ok(())
}

/// lopdf ends a line at each text object or line move; a line that ends a sentence ends the
/// paragraph, other lines are joined to the next (PDF text wraps with no paragraph marks).
fn paragraphs(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut para = String::new();
    for line in page.lines().map(str::trim) {
        if line.is_empty() {
            if !para.is_empty() {
                out.push(std::mem::take(&mut para));
            }
            continue;
        }
        if !para.is_empty() {
            para.push(' ');
        }
        para.push_str(&line.split_whitespace().collect::<Vec<_>>().join(" "));
        if line.ends_with(['.', '!', '?', ':']) {
            out.push(std::mem::take(&mut para));
        }
    }
    if !para.is_empty() {
        out.push(para);
    }
    out
}
