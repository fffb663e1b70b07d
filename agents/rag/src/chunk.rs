//! Chunking: a document is cut into spans of its own text, paragraph- and sentence-aware.
//!
//! The text is split into paragraphs (at blank lines), paragraphs into sentences (after
//! `.`, `!` or `?` followed by white space, and at line breaks), and sentences longer than
//! the hard cap into pieces (at a space when there is one). Sentences are then packed into
//! chunks of at most `size` characters; a paragraph that fits in a chunk is never cut
//! (a new chunk starts before it instead). When a cut falls inside a paragraph, the next
//! chunk starts with the last whole sentences of the previous one, at most `overlap`
//! characters. No chunk is longer than `max` characters. Lengths count characters.

/// How to chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Target length (> 0).
    pub size: usize,
    /// Characters of whole sentences repeated from the previous chunk (< size).
    pub overlap: usize,
    /// Hard cap (>= size).
    pub max: usize,
}

impl From<&troupe_config::RagSettings> for ChunkOptions {
    fn from(settings: &troupe_config::RagSettings) -> Self {
        ChunkOptions {
            size: settings.chunk_size,
            overlap: settings.chunk_overlap,
            max: settings.max_chunk,
        }
    }
}

/// One chunk: a span of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The text (`document[start..end]`).
    pub text: String,
    /// Byte offset of its start in the document.
    pub start: usize,
    /// Byte offset of its end.
    pub end: usize,
}

/// A sentence (or piece of one): a byte span, its length in characters and whether it
/// starts a paragraph.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    chars: usize,
    paragraph: usize,
}

/// Cuts `text` into chunks (see the module documentation). Empty text gives no chunk.
pub fn chunk(text: &str, options: &ChunkOptions) -> Vec<Chunk> {
    let size = options.size.max(1);
    let max = options.max.max(size);
    let overlap = options.overlap.min(size.saturating_sub(1));
    let units = units(text, max);
    let mut chunks = Vec::new();
    // Indexes into `units` of the chunk being built.
    let mut current: Vec<usize> = Vec::new();
    let mut current_chars = 0;
    let mut i = 0;
    while i < units.len() {
        let unit = units[i];
        let starts_paragraph = current
            .last()
            .is_some_and(|&last| units[last].paragraph != unit.paragraph);
        let joined = current_chars + usize::from(!current.is_empty()) + unit.chars;
        // Keep a paragraph whole when it fits in a fresh chunk but not in this one.
        let paragraph_chars = paragraph_len(&units[i..]);
        let cut_before_paragraph = starts_paragraph
            && current_chars + 2 + paragraph_chars > size
            && paragraph_chars <= size;
        if !current.is_empty() && (joined > size || cut_before_paragraph) {
            chunks.push(span(text, &units, &current));
            if starts_paragraph {
                current.clear();
                current_chars = 0;
            } else {
                let room = size.saturating_sub(unit.chars + 1);
                let kept = tail_within(&units, &current, overlap, room);
                current = kept;
                current_chars = chars_of(&units, &current);
            }
            continue;
        }
        current_chars = joined;
        current.push(i);
        i += 1;
    }
    if !current.is_empty() {
        chunks.push(span(text, &units, &current));
    }
    chunks
}

/// Characters of the paragraph starting at `units[0]`, sentences joined by one space.
fn paragraph_len(units: &[Unit]) -> usize {
    let Some(first) = units.first() else { return 0 };
    let in_paragraph = units.iter().take_while(|u| u.paragraph == first.paragraph);
    let (count, chars) = in_paragraph.fold((0, 0), |(n, c), u| (n + 1, c + u.chars));
    chars + count - 1
}

/// The last units of `current` whose joined length is at most `overlap` (and `room`).
fn tail_within(units: &[Unit], current: &[usize], overlap: usize, room: usize) -> Vec<usize> {
    let limit = overlap.min(room);
    let mut kept = Vec::new();
    let mut chars = 0;
    for &index in current.iter().rev() {
        let add = units[index].chars + usize::from(!kept.is_empty());
        if chars + add > limit {
            break;
        }
        chars += add;
        kept.insert(0, index);
    }
    // Never carry everything over: the next chunk must make progress.
    if kept.len() == current.len() {
        kept.remove(0);
    }
    kept
}

fn chars_of(units: &[Unit], current: &[usize]) -> usize {
    let sum: usize = current.iter().map(|&i| units[i].chars).sum();
    sum + current.len().saturating_sub(1)
}

fn span(text: &str, units: &[Unit], current: &[usize]) -> Chunk {
    let start = current.first().map_or(0, |&i| units[i].start);
    let end = current.last().map_or(0, |&i| units[i].end);
    Chunk {
        text: text[start..end].to_owned(),
        start,
        end,
    }
}

/// Sentences (trimmed, non-empty), each at most `max` characters.
fn units(text: &str, max: usize) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut paragraph = 0;
    let mut blank_run = false;
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let push = |from: usize, to: usize, paragraph: usize, out: &mut Vec<Unit>| {
        let piece = &text[from..to];
        let trimmed_start = from + (piece.len() - piece.trim_start().len());
        let trimmed_end = to - (piece.len() - piece.trim_end().len());
        if trimmed_start < trimmed_end {
            split_long(text, trimmed_start, trimmed_end, max, paragraph, out);
        }
    };
    let mut k = 0;
    while k < chars.len() {
        let (at, c) = chars[k];
        let next = chars.get(k + 1).map(|&(_, c)| c);
        let end_of = at + c.len_utf8();
        if c == '\n' {
            push(start, end_of, paragraph, &mut out);
            start = end_of;
            // A blank line (only white space up to the next '\n') ends the paragraph.
            let mut j = k + 1;
            while j < chars.len() && chars[j].1 != '\n' && chars[j].1.is_whitespace() {
                j += 1;
            }
            if j < chars.len() && chars[j].1 == '\n' {
                if !blank_run {
                    paragraph += 1;
                }
                blank_run = true;
            } else if j < chars.len() {
                blank_run = false;
            }
        } else if matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace) {
            push(start, end_of, paragraph, &mut out);
            start = end_of;
        }
        k += 1;
    }
    push(start, text.len(), paragraph, &mut out);
    out
}

/// Pushes `text[from..to]` as units of at most `max` characters, cut at a space if possible.
fn split_long(
    text: &str,
    from: usize,
    to: usize,
    max: usize,
    paragraph: usize,
    out: &mut Vec<Unit>,
) {
    let mut from = from;
    loop {
        let piece = &text[from..to];
        let count = piece.chars().count();
        if count <= max {
            out.push(Unit {
                start: from,
                end: to,
                chars: count,
                paragraph,
            });
            return;
        }
        // Byte offset just past `max` characters.
        let limit = piece
            .char_indices()
            .nth(max)
            .map_or(piece.len(), |(at, _)| at);
        let cut = piece[..limit]
            .rfind(char::is_whitespace)
            .filter(|&at| at > 0)
            .unwrap_or(limit);
        let head = piece[..cut].trim_end();
        out.push(Unit {
            start: from,
            end: from + head.len(),
            chars: head.chars().count(),
            paragraph,
        });
        let rest = &piece[cut..];
        from = from + cut + (rest.len() - rest.trim_start().len());
        if from >= to {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(size: usize, overlap: usize, max: usize) -> ChunkOptions {
        ChunkOptions { size, overlap, max }
    }

    #[test]
    fn short_text_is_one_chunk() {
        let chunks = chunk("One sentence. Two sentences.", &opts(100, 10, 200));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "One sentence. Two sentences.");
    }

    #[test]
    fn empty_text_has_no_chunk() {
        assert!(chunk("  \n\n ", &opts(100, 10, 200)).is_empty());
    }

    #[test]
    fn chunks_are_spans_of_the_text() {
        let text = "Alpha beta. Gamma delta!\n\nEpsilon zeta? Eta theta.";
        for c in chunk(text, &opts(15, 5, 20)) {
            assert_eq!(&text[c.start..c.end], c.text);
        }
    }
}
