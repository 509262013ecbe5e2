//! How pufferrs names values in its messages, the way a Python user would
//! write them: paths as indexing (`obs['inv'][1]`), strings as `repr`,
//! shapes as tuples. The one formatter of each, shared with Python.

/// One step of a path into a nested space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Name(String),
    Index(usize),
}

/// Formats a path as the user would index it: `obs['inv']['items']`.
pub fn format_path(root: &str, path: &[Key]) -> String {
    let mut s = root.to_string();
    for key in path {
        match key {
            Key::Name(name) => s.push_str(&format!("[{}]", quote(name))),
            Key::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A string literal the way Python's `repr` writes it: backslashes,
/// quotes, control characters and the common invisible separators escaped
/// (Python escapes a few rarer non-printable code points too).
pub fn quote(s: &str) -> String {
    let delimiter = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(delimiter);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == delimiter => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || ('\x7f'..='\u{a0}').contains(&c) || c == '\u{ad}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{1680}'
            | '\u{2000}'..='\u{200f}'
            | '\u{2028}'..='\u{202f}'
            | '\u{205f}'..='\u{2064}'
            | '\u{3000}'
            | '\u{feff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(delimiter);
    out
}

/// A shape the way Python writes a tuple: `()`, `(8,)`, `(3, 64, 64)`.
pub fn format_shape(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_indexing() {
        let path = [Key::Name("inv".into()), Key::Index(1), Key::Name("it's".into())];
        assert_eq!(format_path("obs", &path), r#"obs['inv'][1]["it's"]"#);
        let both = [Key::Name(r#"'"\"#.into())];
        assert_eq!(format_path("x", &both), r#"x['\'"\\']"#);
    }
}
