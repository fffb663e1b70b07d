//! Key paths and their positions in the original TOML text, for diagnostics.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::Location;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a value, displayed as `workflows.research.steps[1].agent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The path of a top-level key.
    pub(crate) fn top(key: &str) -> Self {
        Self(vec![Seg::Key(key.to_owned())])
    }

    /// This path extended by a table key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }

    /// Whether `prefix` (plain keys) is a prefix of this path.
    pub(crate) fn starts_with(&self, prefix: &[String]) -> bool {
        prefix.len() <= self.0.len()
            && prefix
                .iter()
                .zip(&self.0)
                .all(|(p, seg)| matches!(seg, Seg::Key(k) if k == p))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `key` can be written unquoted in TOML (`[A-Za-z0-9_-]+`); names must be bare keys.
pub(crate) fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The original text parsed with spans, to find where a key path is written.
pub(crate) struct Locator<'a> {
    text: &'a str,
    root: Option<DeTable<'a>>,
}

impl<'a> Locator<'a> {
    /// Parses `text`; a text that does not parse locates nothing.
    pub(crate) fn new(text: &'a str) -> Self {
        let root = DeTable::parse(text).ok().map(Spanned::into_inner);
        Self { text, root }
    }

    /// Position of the value at `path` (a table's header for tables), if it is written in the text.
    pub(crate) fn locate(&self, path: &[Seg]) -> Option<Location> {
        self.span(path).map(|span| location(self.text, span.start))
    }

    /// Position of `path`, or of its longest prefix written in the text (where a missing key
    /// belongs).
    pub(crate) fn locate_nearest(&self, path: &[Seg]) -> Option<Location> {
        (1..=path.len())
            .rev()
            .find_map(|len| self.locate(&path[..len]))
    }

    /// The position of a byte offset.
    pub(crate) fn location(&self, offset: usize) -> Location {
        location(self.text, offset)
    }

    fn span(&self, path: &[Seg]) -> Option<Range<usize>> {
        let (first, rest) = path.split_first()?;
        let Seg::Key(first) = first else {
            return None;
        };
        let mut current = lookup(self.root.as_ref()?, first)?;
        for seg in rest {
            current = match (current.get_ref(), seg) {
                (DeValue::Table(table), Seg::Key(key)) => lookup(table, key)?,
                (DeValue::Array(array), Seg::Index(index)) => array.get(*index)?,
                (DeValue::Array(array), Seg::Key(key)) => array.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current.span())
    }

    /// The key path of the innermost key or value written around byte `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> KeyPath {
        let mut best = Best {
            offset,
            len: usize::MAX,
            path: Vec::new(),
        };
        if let Some(root) = &self.root {
            visit_table(root, &mut Vec::new(), &mut best);
        }
        KeyPath(best.path)
    }
}

fn lookup<'t, 'a>(table: &'t DeTable<'a>, key: &str) -> Option<&'t Spanned<DeValue<'a>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// The smallest span found so far that contains `offset`.
struct Best {
    offset: usize,
    len: usize,
    path: Vec<Seg>,
}

impl Best {
    fn consider(&mut self, span: Range<usize>, path: &[Seg]) {
        let end = span.end.max(span.start + 1);
        let len = end - span.start;
        let contains = span.start <= self.offset && self.offset < end;
        if contains && (len < self.len || (len == self.len && path.len() > self.path.len())) {
            self.len = len;
            self.path = path.to_vec();
        }
    }
}

fn visit_table(table: &DeTable<'_>, path: &mut Vec<Seg>, best: &mut Best) {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        best.consider(key.span(), path);
        visit_value(value, path, best);
        path.pop();
    }
}

fn visit_value(value: &Spanned<DeValue<'_>>, path: &mut Vec<Seg>, best: &mut Best) {
    best.consider(value.span(), path);
    match value.get_ref() {
        DeValue::Table(table) => visit_table(table, path, best),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                path.push(Seg::Index(index));
                visit_value(item, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn location(text: &str, offset: usize) -> Location {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// Where `path` is written in the TOML `text`, as 1-based (line, column) of its value (of the
/// header for a table). Numeric segments index arrays: `["workflows", "research", "steps", "1"]`.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let segs: Vec<Seg> = path.iter().map(|key| Seg::Key((*key).to_owned())).collect();
    Locator::new(text)
        .locate(&segs)
        .map(|at| (at.line, at.column))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[agents.researcher]
model = "fast"
tools = ["a", "calc"]

[[workflows.w.steps]]
name = "one"

[[workflows.w.steps]]
name = "two"
"#;

    #[test]
    fn locates_values_headers_and_array_items() {
        assert_eq!(
            locate(TEXT, &["agents", "researcher", "model"]),
            Some((2, 9))
        );
        assert_eq!(locate(TEXT, &["agents", "researcher"]), Some((1, 1)));
        assert_eq!(
            locate(TEXT, &["agents", "researcher", "tools", "1"]),
            Some((3, 15))
        );
        assert_eq!(
            locate(TEXT, &["workflows", "w", "steps", "1", "name"]),
            Some((9, 8))
        );
        assert_eq!(locate(TEXT, &["agents", "nobody"]), None);
        assert_eq!(locate("not = [toml", &["not"]), None);
    }

    #[test]
    fn path_at_finds_innermost_key() {
        let locator = Locator::new(TEXT);
        let offset = TEXT.find("\"calc\"").unwrap_or_default();
        assert_eq!(
            locator.path_at(offset).to_string(),
            "agents.researcher.tools[1]"
        );
        let offset = TEXT.find("name = \"two\"").unwrap_or_default();
        assert_eq!(
            locator.path_at(offset).to_string(),
            "workflows.w.steps[1].name"
        );
    }

    #[test]
    fn columns_count_characters() {
        let text = "a = \"é\"\nb = 1";
        assert_eq!(location(text, text.find('b').unwrap_or_default()).line, 2);
        assert_eq!(location("é = 1", "é = ".len()).column, 5);
    }
}
