//! Finds where a field is written in a YAML text, for validation errors.
//!
//! serde_yaml reports positions only for errors it raises itself; once a workload has been
//! deserialized the positions are gone. Rules between fields (phases longer than the time limit,
//! `cas` under the causal checker) are checked afterwards, so this module scans the text again for
//! the field's path. It understands block mappings and sequences (`key:` and `- ` lines, the way
//! workloads are written) and one level of flow collections (`{ count: 5 }`, `[kill, pause]`).
//! Anything fancier (anchors, multi-line flow collections) falls back to the nearest enclosing
//! field it can find, and to 1:1 when it finds nothing: a slightly vague position beats none.

use crate::error::Location;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits `phases[1].mix.cas` into `phases`, `1`, `mix`, `cas`.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_owned()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(index) = stripped[..end].parse() {
                segs.push(Seg::Index(index));
            }
            rest = &stripped[end + 1..];
        }
    }
    segs
}

struct Frame {
    /// Column (0-based, in bytes) of the key or of the `-` that opened this frame.
    indent: usize,
    seg: Seg,
    /// Sequence items seen so far directly under this frame.
    items: usize,
}

/// Where `path` (e.g. `phases[1].duration_secs`) is written in `text`; the nearest enclosing
/// field if the path itself is not found.
pub(crate) fn locate(text: &str, path: &str) -> Location {
    let target = parse_path(path);
    let mut best: Option<(usize, Location)> = None;
    let mut consider = |found: &[Seg], at: Location| {
        let matched = found.len();
        if matched <= target.len()
            && target[..matched] == *found
            && best.is_none_or(|(len, _)| matched > len)
        {
            best = Some((matched, at));
        }
    };

    let mut stack: Vec<Frame> = Vec::new();
    let mut root_items = 0;
    // Lines of a block scalar (`description: |`) are text, not fields: skip those indented
    // deeper than the key that opened it.
    let mut block_scalar_indent: Option<usize> = None;

    for (line_index, raw_line) in text.lines().enumerate() {
        let line_number = line_index + 1;
        let line = strip_comment(raw_line);
        if line.trim().is_empty() {
            continue;
        }
        let mut col = line.len() - line.trim_start_matches(' ').len();
        if let Some(indent) = block_scalar_indent {
            if col > indent {
                continue;
            }
            block_scalar_indent = None;
        }
        if col == 0 && (line.starts_with("---") || line.starts_with("...")) {
            stack.clear();
            continue;
        }

        // Sequence items, possibly several on one line (`- - x`).
        loop {
            let rest = &line[col..];
            if !(rest == "-" || rest.starts_with("- ")) {
                break;
            }
            while stack.last().is_some_and(|f| {
                f.indent > col || (f.indent == col && matches!(f.seg, Seg::Index(_)))
            }) {
                stack.pop();
            }
            let counter = match stack.last_mut() {
                Some(parent) => &mut parent.items,
                None => &mut root_items,
            };
            let index = *counter;
            *counter += 1;
            stack.push(Frame {
                indent: col,
                seg: Seg::Index(index),
                items: 0,
            });
            let segs: Vec<Seg> = stack.iter().map(|f| f.seg.clone()).collect();
            consider(&segs, location(line, line_number, col));
            col += 1;
            col += line[col..].len() - line[col..].trim_start_matches(' ').len();
        }

        let rest = &line[col..];
        let Some((key, value_offset)) = key_at(rest) else {
            // A flow collection as a sequence item: `- { name: a, duration_secs: 5 }`.
            if rest.starts_with('{') || rest.starts_with('[') {
                let segs: Vec<Seg> = stack.iter().map(|f| f.seg.clone()).collect();
                for (seg, offset) in flow_children(rest) {
                    let mut child = segs.clone();
                    child.push(seg);
                    consider(&child, location(line, line_number, col + offset));
                }
            }
            continue;
        };
        while stack.last().is_some_and(|f| f.indent >= col) {
            stack.pop();
        }
        stack.push(Frame {
            indent: col,
            seg: Seg::Key(key),
            items: 0,
        });
        let segs: Vec<Seg> = stack.iter().map(|f| f.seg.clone()).collect();
        consider(&segs, location(line, line_number, col));

        let value_start = col + value_offset;
        let value = line[value_start..].trim_start_matches(' ');
        let value_start = line.len() - value.len();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_indent = Some(col);
        } else if value.starts_with('{') || value.starts_with('[') {
            for (seg, offset) in flow_children(value) {
                let mut child = segs.clone();
                child.push(seg);
                consider(&child, location(line, line_number, value_start + offset));
            }
        }
    }
    best.map_or(Location { line: 1, column: 1 }, |(_, at)| at)
}

fn location(line: &str, line_number: usize, byte_col: usize) -> Location {
    Location {
        line: line_number,
        column: line[..byte_col].chars().count() + 1,
    }
}

/// Cuts a `# comment` off a line, leaving `#` inside quotes alone.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..i],
            None => {}
        }
        previous = c;
    }
    line
}

/// If `text` starts with `key:` (followed by a space or the end), the key and the byte offset
/// just after the colon.
fn key_at(text: &str) -> Option<(String, usize)> {
    let (key, after) = if let Some(quote) = text.chars().next().filter(|c| *c == '"' || *c == '\'')
    {
        let end = text[1..].find(quote)? + 1;
        (text[1..end].to_owned(), end + 1)
    } else {
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(text.len());
        if end == 0 {
            return None;
        }
        (text[..end].to_owned(), end)
    };
    let rest = &text[after..];
    let colon = rest.len() - rest.trim_start_matches(' ').len();
    let rest = &rest[colon..];
    if rest.starts_with(':') && (rest.len() == 1 || rest[1..].starts_with(' ')) {
        Some((key, after + colon + 1))
    } else {
        None
    }
}

/// The direct children of a one-line flow collection, with their byte offsets in `value`:
/// keys of `{ a: 1, b: 2 }`, items of `[x, y]`. Deeper levels are skipped.
fn flow_children(value: &str) -> Vec<(Seg, usize)> {
    let mut children = Vec::new();
    let is_map = value.starts_with('{');
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // True right after the opening bracket or a comma at depth 1: the next token starts a child.
    let mut expecting = false;
    for (i, c) in value.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    expecting = true;
                    continue;
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                expecting = true;
                continue;
            }
            _ => {}
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
        }
        if expecting && depth >= 1 && !c.is_whitespace() {
            expecting = false;
            if is_map {
                if let Some((key, _)) = key_at(&value[i..]) {
                    children.push((Seg::Key(key), i));
                }
            } else {
                let index = children.len();
                children.push((Seg::Index(index), i));
            }
        }
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: x   # a comment: not a key
keys: { count: 5, distribution: zipf }
description: |
  mix: this is text, not a field
mix:
  read: 1
  cas: 2
phases:
- name: a
  duration_secs: 5
-   name: b
    duration_secs: 7
    mix:
      cas: 1
nemesis:
  faults: [kill, pause]
more:
  - { a: 1, b: [x, y] }
";

    fn at(path: &str) -> (usize, usize) {
        let l = locate(TEXT, path);
        (l.line, l.column)
    }

    #[test]
    fn finds_block_and_flow_fields() {
        assert_eq!(at("name"), (1, 1));
        assert_eq!(at("keys.distribution"), (2, 19));
        assert_eq!(at("mix.cas"), (7, 3));
        assert_eq!(at("phases[0].duration_secs"), (10, 3));
        assert_eq!(at("phases[1].duration_secs"), (12, 5));
        assert_eq!(at("phases[1].mix.cas"), (14, 7));
        assert_eq!(at("nemesis.faults[1]"), (16, 18));
        assert_eq!(at("more[0].b"), (18, 13));
    }

    #[test]
    fn falls_back_to_the_nearest_enclosing_field() {
        assert_eq!(at("mix.write"), (5, 1));
        assert_eq!(at("phases[7].name"), (8, 1));
        assert_eq!(at("nowhere"), (1, 1));
        assert_eq!(locate("", "x"), Location { line: 1, column: 1 });
    }
}
