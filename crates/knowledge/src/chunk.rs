//! Chunking by structure: a section's paragraphs, then sentences, then (only for a sentence
//! longer than a chunk) word windows, packed greedily up to `size_tokens`. The next chunk
//! starts with the previous one's last whole pieces up to `overlap_tokens`, so a fact split
//! across a boundary is still found whole. Chunks never cross a section (heading) boundary.

use crate::TokenCounter;
use crate::extract::Extracted;

#[derive(Debug, Clone, Copy)]
pub struct ChunkSettings {
    pub size_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        ChunkSettings {
            size_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ordinal: u32,
    pub heading: Option<String>,
    pub text: String,
    pub tokens: usize,
}

/// Sentences of a paragraph: split after `.`, `!` or `?` followed by whitespace.
fn sentences(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = p.as_bytes();
    for i in 0..b.len() {
        if matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1).is_some_and(u8::is_ascii_whitespace) {
            let s = p[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let s = p[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

/// The pieces of a section, each at most `size` tokens (a single over-long word excepted).
fn pieces(text: &str, size: usize, counter: &dyn TokenCounter) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        for s in sentences(para) {
            let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
            let n = counter.count(&s);
            if n <= size {
                out.push((s, n));
                continue;
            }
            // A sentence longer than a chunk: whole words, as many as fit.
            let mut cur = String::new();
            for w in s.split(' ') {
                let next = if cur.is_empty() {
                    w.to_string()
                } else {
                    format!("{cur} {w}")
                };
                if !cur.is_empty() && counter.count(&next) > size {
                    let n = counter.count(&cur);
                    out.push((std::mem::replace(&mut cur, w.to_string()), n));
                } else {
                    cur = next;
                }
            }
            if !cur.is_empty() {
                let n = counter.count(&cur);
                out.push((cur, n));
            }
        }
    }
    out
}

pub fn chunk(doc: &Extracted, settings: &ChunkSettings, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let size = settings.size_tokens.max(1);
    let overlap = settings.overlap_tokens.min(size.saturating_sub(1));
    let mut out: Vec<Chunk> = Vec::new();
    for section in &doc.sections {
        let ps = pieces(&section.text, size, counter);
        let mut cur: Vec<usize> = Vec::new();
        let mut cur_tokens = 0;
        let emit = |out: &mut Vec<Chunk>, cur: &[usize]| {
            let text = cur
                .iter()
                .map(|i| ps[*i].0.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Chunk {
                ordinal: u32::try_from(out.len()).unwrap_or(u32::MAX),
                heading: section.heading.clone(),
                tokens: counter.count(&text),
                text,
            });
        };
        for (i, (_, n)) in ps.iter().enumerate() {
            if !cur.is_empty() && cur_tokens + n > size {
                emit(&mut out, &cur);
                // Carry the last whole pieces that fit in the overlap (and leave room for this one).
                let mut keep = Vec::new();
                let mut kept = 0;
                for j in cur.iter().rev() {
                    let t = ps[*j].1;
                    if kept + t > overlap || kept + t + n > size {
                        break;
                    }
                    kept += t;
                    keep.push(*j);
                }
                keep.reverse();
                cur = keep;
                cur_tokens = kept;
            }
            cur.push(i);
            cur_tokens += n;
        }
        // Every chunk ends with at least one piece the previous one did not have.
        if !cur.is_empty() {
            emit(&mut out, &cur);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WordCounter;
    use crate::extract::Section;
    use proptest::prelude::*;

    /// A document of unique words (`w0 w1 …`) in sentences and paragraphs, so the chunks can
    /// be stitched back unambiguously.
    fn doc(shape: &[Vec<usize>]) -> (Extracted, Vec<String>) {
        let mut n = 0;
        let mut words = Vec::new();
        let mut paras = Vec::new();
        for para in shape {
            let mut sents = Vec::new();
            for len in para {
                let s: Vec<String> = (0..*len)
                    .map(|_| {
                        n += 1;
                        format!("w{n}")
                    })
                    .collect();
                words.extend(s.iter().cloned());
                sents.push(format!("{}.", s.join(" ")));
            }
            paras.push(sents.join(" "));
        }
        if let Some(last) = words.last_mut() {
            last.push('.');
        }
        (
            Extracted {
                sections: vec![Section {
                    heading: Some("H".into()),
                    text: paras.join("\n\n"),
                }],
            },
            words,
        )
    }

    fn strip(w: &str) -> String {
        w.trim_end_matches('.').to_string()
    }

    proptest! {
        #[test]
        fn no_text_is_lost_overlap_is_honoured_and_sizes_hold(
            shape in prop::collection::vec(prop::collection::vec(1usize..40, 1..6), 1..8),
            size in 5usize..60,
            overlap in 0usize..20,
        ) {
            let (d, words) = doc(&shape);
            let s = ChunkSettings { size_tokens: size, overlap_tokens: overlap };
            let chunks = chunk(&d, &s, &WordCounter);
            prop_assert!(!chunks.is_empty());
            let mut stitched: Vec<String> = Vec::new();
            let mut prev: Vec<String> = Vec::new();
            for c in &chunks {
                let cw: Vec<String> = c.text.split_whitespace().map(strip).collect();
                prop_assert!(!cw.is_empty());
                prop_assert!(cw.len() <= size, "chunk of {} words > {}", cw.len(), size);
                prop_assert_eq!(c.heading.as_deref(), Some("H"));
                // The shared prefix with the previous chunk's tail is the overlap.
                let k = (0..=cw.len().min(prev.len())).rev()
                    .find(|k| prev[prev.len() - k..] == cw[..*k]).unwrap_or(0);
                prop_assert!(k <= overlap, "overlap {} > {}", k, overlap);
                stitched.extend(cw[k..].iter().cloned());
                prev = cw;
            }
            let want: Vec<String> = words.iter().map(|w| strip(w)).collect();
            prop_assert_eq!(stitched, want);
            prop_assert_eq!(chunk(&d, &s, &WordCounter), chunks);
        }
    }

    #[test]
    fn the_overlap_repeats_whole_sentences() {
        let d = Extracted {
            sections: vec![Section {
                heading: None,
                text: "One two three. Four five six. Seven eight nine.".into(),
            }],
        };
        let c = chunk(
            &d,
            &ChunkSettings {
                size_tokens: 6,
                overlap_tokens: 3,
            },
            &WordCounter,
        );
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "One two three. Four five six.",
                "Four five six. Seven eight nine."
            ]
        );
    }
}
