//! Word documents: `word/document.xml` out of the zip container, read as XML events.
//!
//! The zip's central directory states every entry's sizes; they are checked before anything is
//! inflated, and the one entry read is inflated through a bound as well, because those sizes are
//! the sender's claim. The XML is never given a DTD: a DOCTYPE is refused, so no entity can be
//! declared, let alone expanded.

use std::io::Read;

use quick_xml::events::{BytesStart, Event};

use super::{ExtractError, Extracted, Limits, Section, invalid};

const DOCUMENT: &str = "word/document.xml";

/// Entries smaller than this are exempt from the compression-ratio check: a short, repetitive
/// XML part can compress past any sane ratio and still cost nothing to inflate.
const RATIO_FLOOR: u64 = 1024 * 1024;

pub(super) fn docx(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| invalid(format!("not a readable DOCX file (bad zip container: {e})")))?;
    if zip.len() > limits.max_zip_entries {
        return Err(invalid(format!(
            "DOCX has {} zip entries; the limit is {}",
            zip.len(),
            limits.max_zip_entries
        )));
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_data(i)
            .map_err(|e| invalid(format!("not a readable DOCX file (bad zip entry: {e})")))?;
        let name = entry.name().map(|n| short(&n)).unwrap_or_default();
        check_size(&name, entry.size(), entry.compressed_size(), limits)?;
        total = total.saturating_add(entry.size());
        if total > limits.max_decompressed {
            return Err(invalid(format!(
                "DOCX expands to more than {} bytes in total; the limit is {} (a zip bomb?)",
                limits.max_decompressed, limits.max_decompressed
            )));
        }
    }
    let file = match zip.by_name(DOCUMENT) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(invalid(format!(
                "not a Word document: the DOCX has no {DOCUMENT}"
            )));
        }
        Err(e) => return Err(invalid(format!("cannot read {DOCUMENT} in the DOCX: {e}"))),
    };
    let packed = file.compressed_size();
    let mut xml = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    file.take(limits.max_decompressed.saturating_add(1))
        .read_to_end(&mut xml)
        .map_err(|e| invalid(format!("cannot inflate {DOCUMENT} in the DOCX: {e}")))?;
    check_size(DOCUMENT, xml.len() as u64, packed, limits)?;
    let xml = String::from_utf8(xml)
        .map_err(|_| invalid(format!("{DOCUMENT} in the DOCX is not UTF-8 text")))?;
    document_xml(&xml, limits)
}

fn check_size(name: &str, size: u64, packed: u64, limits: &Limits) -> Result<(), ExtractError> {
    if size > limits.max_decompressed {
        return Err(invalid(format!(
            "DOCX entry {name} expands to more than {} bytes; the limit is {} (a zip bomb?)",
            limits.max_decompressed, limits.max_decompressed
        )));
    }
    if size > RATIO_FLOOR && size > packed.saturating_mul(limits.max_zip_ratio) {
        return Err(invalid(format!(
            "DOCX entry {name} is compressed more than {}:1; the limit is {}:1 (a zip bomb?)",
            limits.max_zip_ratio, limits.max_zip_ratio
        )));
    }
    Ok(())
}

/// Entry names are the sender's text; only a bounded prefix goes into an error message.
fn short(name: &str) -> String {
    name.chars().take(80).collect()
}

/// What is open while the events stream past: paragraphs (a text box puts one inside another)
/// and tables with the cell being filled.
enum Block {
    Para { text: String, heading: bool },
    Table(Table),
}

#[derive(Default)]
struct Table {
    rows: Vec<String>,
    row: Vec<String>,
    cell: String,
}

struct Body {
    out: Extracted,
    heading: Option<String>,
    paras: Vec<String>,
}

impl Body {
    fn flush(&mut self) {
        if !self.paras.is_empty() || self.heading.is_some() {
            self.out.sections.push(Section {
                heading: self.heading.take(),
                text: std::mem::take(&mut self.paras).join("\n\n"),
            });
        }
    }
}

/// Delivers a finished paragraph or table to the innermost open table cell, else to the body.
fn deliver(stack: &mut [Block], body: &mut Body, text: String, heading: bool) {
    let text = text.trim();
    let table = stack.iter_mut().rev().find_map(|b| match b {
        Block::Table(t) => Some(t),
        Block::Para { .. } => None,
    });
    match table {
        Some(t) if !text.is_empty() => {
            if !t.cell.is_empty() {
                t.cell.push(' ');
            }
            t.cell.push_str(text);
        }
        Some(_) => {}
        None if heading && !text.is_empty() => {
            body.flush();
            body.heading = Some(text.to_string());
        }
        None if !text.is_empty() => body.paras.push(text.to_string()),
        None => {}
    }
}

/// Paragraph style ids Word and LibreOffice give headings: `Heading1`–`Heading9`, `Title`.
fn heading_style(e: &BytesStart) -> bool {
    let Ok(Some(val)) = e.try_get_attribute("w:val") else {
        return false;
    };
    let v: String = val
        .value
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    v == "title"
        || v.strip_prefix("heading")
            .is_some_and(|n| n.len() == 1 && matches!(n.as_bytes()[0], b'1'..=b'9'))
}

fn push_text(stack: &mut [Block], s: &str) {
    if let Some(Block::Para { text, .. }) = stack
        .iter_mut()
        .rev()
        .find(|b| matches!(b, Block::Para { .. }))
    {
        text.push_str(s);
    }
}

/// Paragraphs (`w:p`) from their text runs (`w:t`, `w:tab`, `w:br`); a paragraph styled as a
/// heading starts a section; a table is one paragraph, cells joined by ` | `, rows by newlines.
fn document_xml(xml: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    let bad = |e: &dyn std::fmt::Display| invalid(format!("{DOCUMENT} is not valid XML: {e}"));
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth: usize = 0;
    let mut stack: Vec<Block> = Vec::new();
    let mut body = Body {
        out: Extracted::default(),
        heading: None,
        paras: Vec::new(),
    };
    let mut in_text = false;
    let mut in_tabs = false;
    // `mc:Fallback` repeats what its `mc:Choice` holds (text boxes, mostly): read one of them.
    let mut skip_until: Option<usize> = None;
    loop {
        let event = reader.read_event().map_err(|e| bad(&e))?;
        match event {
            Event::DocType(_) => {
                return Err(invalid(format!(
                    "{DOCUMENT} has a DOCTYPE; DTDs and entity declarations are not allowed \
                     (they can expand without bound or fetch external files)"
                )));
            }
            Event::Start(e) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(invalid(format!(
                        "{DOCUMENT} is nested deeper than {} levels",
                        limits.max_depth
                    )));
                }
                if skip_until.is_some() {
                    continue;
                }
                match e.local_name().as_ref() {
                    "Fallback" => skip_until = Some(depth),
                    "p" => stack.push(Block::Para {
                        text: String::new(),
                        heading: false,
                    }),
                    "t" => in_text = true,
                    "tabs" => in_tabs = true,
                    "tbl" => stack.push(Block::Table(Table::default())),
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if skip_until.is_some() {
                    continue;
                }
                match e.local_name().as_ref() {
                    "tab" | "ptab" if !in_tabs => push_text(&mut stack, "\t"),
                    "br" | "cr" => push_text(&mut stack, "\n"),
                    "pStyle" if heading_style(&e) => {
                        if let Some(Block::Para { heading, .. }) = stack.last_mut() {
                            *heading = true;
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_text && skip_until.is_none() => {
                push_text(&mut stack, &t.xml10_content());
            }
            Event::GeneralRef(r) if in_text && skip_until.is_none() => {
                let c = match r.resolve_char_ref().map_err(|e| bad(&e))? {
                    Some(c) => Some(c),
                    None => match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        // Without a DTD nothing else can be declared.
                        _ => None,
                    },
                };
                if let Some(c) = c {
                    push_text(&mut stack, c.encode_utf8(&mut [0; 4]));
                }
            }
            Event::End(e) => {
                let at = depth;
                depth = depth.saturating_sub(1);
                if let Some(d) = skip_until {
                    if d == at {
                        skip_until = None;
                    }
                    continue;
                }
                match e.local_name().as_ref() {
                    "t" => in_text = false,
                    "tabs" => in_tabs = false,
                    "p" => {
                        if let Some(Block::Para { text, heading }) = stack.pop() {
                            deliver(&mut stack, &mut body, text, heading);
                        }
                    }
                    "tc" => {
                        if let Some(Block::Table(t)) = stack.last_mut() {
                            let cell = std::mem::take(&mut t.cell);
                            t.row.push(cell);
                        }
                    }
                    "tr" => {
                        if let Some(Block::Table(t)) = stack.last_mut() {
                            let row = std::mem::take(&mut t.row);
                            if row.iter().any(|c| !c.is_empty()) {
                                t.rows.push(row.join(" | "));
                            }
                        }
                    }
                    "tbl" => {
                        if let Some(Block::Table(t)) = stack.pop() {
                            deliver(&mut stack, &mut body, t.rows.join("\n"), false);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    body.flush();
    Ok(body.out)
}
