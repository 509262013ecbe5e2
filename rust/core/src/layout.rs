//! The flat-row layout of a space: where every leaf lives in a row of bytes.
//!
//! Offsets follow C struct rules, nested: a leaf is aligned to its item size,
//! a Dict or Tuple to the largest alignment inside it, and every Dict or
//! Tuple is padded at its end to a multiple of its alignment. The row is then
//! byte-for-byte numpy's `align=True` structured dtype of the same space, and
//! any batch of rows can be viewed leaf by leaf as `(B, ...)` arrays of the
//! leaf's own dtype without copying.

use crate::dtype::{DType, Value};
use crate::error::{Error, Result};

/// A space as the Python side describes a gymnasium space.
#[derive(Debug, Clone, PartialEq)]
pub enum Space {
    Box {
        dtype: DType,
        shape: Vec<usize>,
        low: Vec<Value>,
        high: Vec<Value>,
    },
    Discrete {
        dtype: DType,
        n: i128,
        start: i128,
    },
    MultiDiscrete {
        dtype: DType,
        shape: Vec<usize>,
        nvec: Vec<i128>,
        start: Vec<i128>,
    },
    MultiBinary {
        dtype: DType,
        shape: Vec<usize>,
    },
    /// A string of `min_length..=max_length` characters of `charset`
    /// (gymnasium's `Text`); its leaf is described at [`Rule::Text`].
    Text {
        charset: Vec<char>,
        min_length: usize,
        max_length: usize,
    },
    Dict(Vec<(String, Space)>),
    Tuple(Vec<Space>),
    /// A space with no flat row, and why; `Layout::new` refuses it with its
    /// path.
    Unsupported(String),
}

/// Characters a string space that lists none (MiniGrid's mission spaces)
/// may hold: printable ASCII, space to tilde.
pub const STRING_CHARSET: std::ops::RangeInclusive<char> = ' '..='~';

/// The longest string such a space holds when its user does not say.
pub const DEFAULT_STRING_LENGTH: usize = 128;

impl Space {
    /// A string-valued space that is not `Text`: read as `Text` over
    /// [`STRING_CHARSET`] of at most `max_length` characters, none required.
    pub fn string(max_length: usize) -> Space {
        Space::Text { charset: STRING_CHARSET.collect(), min_length: 0, max_length }
    }

    /// A space of gymnasium class `kind` that is none of the above.
    pub fn unsupported_kind(kind: &str) -> Space {
        Space::Unsupported(match kind {
            "Sequence" | "Graph" => format!("{kind} has no fixed size, so it has no flat row"),
            _ => format!(
                "{kind} spaces are not supported (supported: Box, Discrete, MultiDiscrete, MultiBinary, Text, Dict, Tuple)"
            ),
        })
    }

    /// A leaf space of gymnasium class `kind` whose dtype is not one a row
    /// stores.
    pub fn unsupported_dtype(kind: &str, dtype: &str) -> Space {
        Space::Unsupported(format!("{kind} of dtype {dtype} is not a numeric dtype pufferrs stores"))
    }
}

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

/// What values a leaf accepts, beyond fitting its dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Bounds are checked only when asked (`check_bounds`).
    Box {
        low: Vec<Value>,
        high: Vec<Value>,
    },
    Discrete {
        n: i128,
        start: i128,
    },
    MultiDiscrete {
        nvec: Vec<i128>,
        start: Vec<i128>,
    },
    MultiBinary,
    /// A string as `max_length` codes, then its length: a character's code
    /// is one plus its position in the charset sorted by code point (so
    /// that the codes do not depend on the order a set was listed in), and
    /// 0 pads. The leaf's dtype is the narrowest unsigned one that holds
    /// every code and the length.
    Text {
        charset: Vec<char>,
        min_length: usize,
        max_length: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub path: Vec<Key>,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub rule: Rule,
}

impl Leaf {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn nbytes(&self) -> usize {
        self.len() * self.dtype.itemsize()
    }

    /// Whether `check` has anything to say about this leaf's values.
    pub fn checks_values(&self, check_bounds: bool) -> bool {
        check_bounds || !matches!(self.rule, Rule::Box { .. })
    }

    /// Checks the stored value of element `index` (C order) against the
    /// leaf's rule; the error says what was expected.
    pub fn check(&self, index: usize, value: Value) -> std::result::Result<(), String> {
        match &self.rule {
            Rule::Box { .. } if !value.is_finite() => Err(format!("expected a finite value, got {value}")),
            Rule::Box { low, high } if !value.within(low[index], high[index]) => {
                Err(format!("expected a value in [{}, {}], got {value}", low[index], high[index]))
            }
            Rule::Box { .. } => Ok(()),
            Rule::Discrete { n, start } => check_range(value, *start, *n),
            Rule::MultiDiscrete { nvec, start } => check_range(value, start[index], nvec[index]),
            Rule::MultiBinary if matches!(value, Value::Int(0 | 1)) => Ok(()),
            Rule::MultiBinary => Err(format!("expected 0 or 1, got {value}")),
            Rule::Text { charset, max_length, .. } if index < *max_length => {
                check_range(value, 0, charset.len() as i128 + 1)
            }
            Rule::Text { min_length, max_length, .. } => {
                check_range(value, *min_length as i128, (*max_length - *min_length) as i128 + 1)
            }
        }
    }

    /// The codes of `text` in a `Text` leaf (see [`Rule::Text`]); the error
    /// says which character or how much length does not fit.
    pub fn encode_text(&self, text: &str) -> std::result::Result<Vec<Value>, String> {
        let Rule::Text { charset, min_length, max_length } = &self.rule else {
            return Err("not a string leaf".into());
        };
        let mut codes = vec![Value::Int(0); max_length + 1];
        let mut length = 0;
        for c in text.chars() {
            if length == *max_length {
                let n = text.chars().count();
                return Err(format!("expected at most {max_length} characters, got {n}: {}", quote(text)));
            }
            let Ok(position) = charset.binary_search(&c) else {
                return Err(format!(
                    "character {} of {} is not in the space's charset",
                    quote(&c.to_string()),
                    quote(text)
                ));
            };
            codes[length] = Value::Int(position as i128 + 1);
            length += 1;
        }
        if length < *min_length {
            return Err(format!("expected at least {min_length} characters, got {length}: {}", quote(text)));
        }
        codes[*max_length] = Value::Int(length as i128);
        Ok(codes)
    }

    /// The string that `codes` (a `Text` leaf's values) encode.
    pub fn decode_text(&self, codes: &[i128]) -> std::result::Result<String, String> {
        let Rule::Text { charset, max_length, .. } = &self.rule else {
            return Err("not a string leaf".into());
        };
        if codes.len() != max_length + 1 {
            return Err(format!("expected {} codes, got {}", max_length + 1, codes.len()));
        }
        let length = usize::try_from(codes[*max_length]).ok().filter(|&n| n <= *max_length);
        let length = length.ok_or_else(|| format!("length {} is not in [0, {max_length}]", codes[*max_length]))?;
        codes[..length]
            .iter()
            .map(|&code| {
                usize::try_from(code - 1)
                    .ok()
                    .and_then(|i| charset.get(i).copied())
                    .ok_or_else(|| format!("code {code} is not a character of the charset"))
            })
            .collect()
    }

    /// The numpy-style index of element `index` (C order), e.g. `[1, 2]`;
    /// empty for a scalar leaf.
    pub fn element_index(&self, mut index: usize) -> String {
        if self.shape.is_empty() {
            return String::new();
        }
        let mut parts = vec![0; self.shape.len()];
        for (part, &dim) in parts.iter_mut().zip(&self.shape).rev() {
            *part = index % dim;
            index /= dim;
        }
        let parts: Vec<String> = parts.iter().map(usize::to_string).collect();
        format!("[{}]", parts.join(", "))
    }
}

fn check_range(value: Value, start: i128, n: i128) -> std::result::Result<(), String> {
    match value {
        Value::Int(v) if start <= v && v < start + n => Ok(()),
        _ => Err(format!("expected a value in [{start}, {}), got {value}", start + n)),
    }
}

/// The shape of the nested structure, with leaves as indices into `leaves`.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Dict(Vec<(String, Node)>),
    Tuple(Vec<Node>),
    Leaf(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub root: Node,
    pub leaves: Vec<Leaf>,
    pub row_bytes: usize,
    /// The largest item size of any leaf (1 when there are none).
    pub align: usize,
    /// Byte ranges of the row that no leaf covers; flatten zeroes them so
    /// that equal observations give equal rows.
    pub padding: Vec<std::ops::Range<usize>>,
}

impl Layout {
    pub fn new(space: &Space, root: &str) -> Result<Layout> {
        let mut builder = Builder { root, leaves: Vec::new(), path: Vec::new() };
        let (node, row_bytes) = builder.place(space, 0)?;
        let mut padding = Vec::new();
        let mut covered = 0;
        let spans = builder.leaves.iter().map(|l| (l.offset, l.offset + l.nbytes()));
        for (start, end) in spans.chain([(row_bytes, row_bytes)]) {
            if start > covered {
                padding.push(covered..start);
            }
            covered = covered.max(end);
        }
        Ok(Layout { root: node, leaves: builder.leaves, row_bytes, align: space_align(space), padding })
    }

    /// The dtype shared by every leaf, if there is one.
    pub fn common_dtype(&self) -> Option<DType> {
        let first = self.leaves.first()?.dtype;
        self.leaves.iter().all(|l| l.dtype == first).then_some(first)
    }
}

fn leaf_dtype(space: &Space) -> Option<DType> {
    match space {
        Space::Box { dtype, .. }
        | Space::Discrete { dtype, .. }
        | Space::MultiDiscrete { dtype, .. }
        | Space::MultiBinary { dtype, .. } => Some(*dtype),
        Space::Text { charset, max_length, .. } => Some(text_dtype(charset.len().max(*max_length))),
        Space::Dict(_) | Space::Tuple(_) | Space::Unsupported(_) => None,
    }
}

/// The narrowest unsigned dtype that holds `0..=largest`.
fn text_dtype(largest: usize) -> DType {
    match largest {
        0..=0xff => DType::U8,
        0x100..=0xffff => DType::U16,
        _ => DType::U32,
    }
}

fn children(space: &Space) -> Vec<&Space> {
    match space {
        Space::Dict(items) => items.iter().map(|(_, s)| s).collect(),
        Space::Tuple(items) => items.iter().collect(),
        _ => Vec::new(),
    }
}

/// A leaf aligns to its item size, a record to the most demanding member.
fn space_align(space: &Space) -> usize {
    match leaf_dtype(space) {
        Some(dtype) => dtype.itemsize(),
        None => children(space).into_iter().map(space_align).max().unwrap_or(1),
    }
}

fn align_up(offset: usize, align: usize) -> usize {
    offset.div_ceil(align) * align
}

struct Builder<'a> {
    root: &'a str,
    leaves: Vec<Leaf>,
    path: Vec<Key>,
}

impl Builder<'_> {
    fn unsupported(&self, reason: String) -> Error {
        Error::UnsupportedSpace { path: format_path(self.root, &self.path), reason }
    }

    /// Places `space` at the first offset at or after `cursor` that suits its
    /// alignment; returns its node and the offset just past it (padding
    /// included).
    fn place(&mut self, space: &Space, cursor: usize) -> Result<(Node, usize)> {
        let start = align_up(cursor, space_align(space));
        match space {
            Space::Dict(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                let mut end = start;
                for (key, child) in items {
                    self.path.push(Key::Name(key.clone()));
                    let (node, child_end) = self.place(child, end)?;
                    self.path.pop();
                    nodes.push((key.clone(), node));
                    end = child_end;
                }
                Ok((Node::Dict(nodes), start + align_up(end - start, space_align(space))))
            }
            Space::Tuple(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                let mut end = start;
                for (i, child) in items.iter().enumerate() {
                    self.path.push(Key::Index(i));
                    let (node, child_end) = self.place(child, end)?;
                    self.path.pop();
                    nodes.push(node);
                    end = child_end;
                }
                Ok((Node::Tuple(nodes), start + align_up(end - start, space_align(space))))
            }
            leaf => {
                let leaf = self.leaf(leaf, start)?;
                let end = start
                    .checked_add(leaf.nbytes())
                    .ok_or_else(|| self.unsupported("the row would not fit in memory".into()))?;
                self.leaves.push(leaf);
                Ok((Node::Leaf(self.leaves.len() - 1), end))
            }
        }
    }

    fn leaf(&self, space: &Space, offset: usize) -> Result<Leaf> {
        let (dtype, shape, rule) = match space.clone() {
            Space::Box { dtype, shape, low, high } => (dtype, shape, Rule::Box { low, high }),
            Space::Discrete { dtype, n, start } => {
                if n < 1 {
                    return Err(self.unsupported(format!("Discrete needs n >= 1, got {n}")));
                }
                (dtype, Vec::new(), Rule::Discrete { n, start })
            }
            Space::MultiDiscrete { dtype, shape, nvec, start } => {
                if let Some(n) = nvec.iter().find(|&&n| n < 1) {
                    return Err(self.unsupported(format!("MultiDiscrete needs every nvec >= 1, got {n}")));
                }
                (dtype, shape, Rule::MultiDiscrete { nvec, start })
            }
            Space::MultiBinary { dtype, shape } => (dtype, shape, Rule::MultiBinary),
            Space::Text { mut charset, min_length, max_length } => {
                charset.sort_unstable();
                charset.dedup();
                if min_length > max_length || max_length >= u32::MAX as usize || charset.len() >= u32::MAX as usize {
                    let reason =
                        format!("Text needs min_length <= max_length < 2**32, got {min_length} and {max_length}");
                    return Err(self.unsupported(reason));
                }
                let dtype = text_dtype(charset.len().max(max_length));
                (dtype, vec![max_length + 1], Rule::Text { charset, min_length, max_length })
            }
            Space::Unsupported(reason) => return Err(self.unsupported(reason)),
            Space::Dict(_) | Space::Tuple(_) => unreachable!("records are placed by `place`"),
        };
        let len = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.itemsize()).map(|_| n))
            .ok_or_else(|| self.unsupported(format!("shape {shape:?} is too large")))?;
        let per_element: &[usize] = match &rule {
            Rule::Box { low, high } => &[low.len(), high.len()],
            Rule::MultiDiscrete { nvec, start } => &[nvec.len(), start.len()],
            Rule::Discrete { .. } | Rule::MultiBinary | Rule::Text { .. } => &[],
        };
        if per_element.iter().any(|&n| n != len) {
            return Err(self.unsupported(format!("bounds do not match shape {shape:?}")));
        }
        Ok(Leaf { path: self.path.clone(), dtype, shape, offset, rule })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DType::*;

    fn boxed(dtype: DType, shape: &[usize]) -> Space {
        let n = shape.iter().product();
        Space::Box { dtype, shape: shape.to_vec(), low: vec![Value::Float(-1.0); n], high: vec![Value::Float(1.0); n] }
    }

    fn discrete(dtype: DType) -> Space {
        Space::Discrete { dtype, n: 5, start: 0 }
    }

    fn dict(items: Vec<(&str, Space)>) -> Space {
        Space::Dict(items.into_iter().map(|(k, s)| (k.to_string(), s)).collect())
    }

    fn offsets(layout: &Layout) -> Vec<usize> {
        layout.leaves.iter().map(|l| l.offset).collect()
    }

    #[test]
    fn reference_space_is_aligned() {
        let space = dict(vec![
            ("image", boxed(U8, &[3, 64, 64])),
            ("vector", boxed(F32, &[32])),
            (
                "inv",
                dict(vec![
                    (
                        "items",
                        Space::MultiDiscrete { dtype: I64, shape: vec![8], nvec: vec![10; 8], start: vec![0; 8] },
                    ),
                    ("hp", discrete(I64)),
                ]),
            ),
            ("tuple", Space::Tuple(vec![boxed(F32, &[4]), discrete(I64)])),
        ]);
        let layout = Layout::new(&space, "obs").unwrap();
        // image 12288 B; vector at 12288 (4-aligned); inv at 12416 (8-aligned):
        // items 64 B, hp 8 B; tuple at 12488: 16 B of floats, then an int64.
        assert_eq!(offsets(&layout), vec![0, 12288, 12416, 12480, 12488, 12504]);
        assert_eq!(layout.row_bytes, 12512);
        assert_eq!(layout.align, 8);
        assert_eq!(layout.common_dtype(), None);
    }

    #[test]
    fn nested_record_gets_trailing_padding() {
        // inner = {a: int64, b: uint8} is 16 bytes (9 used + 7 padding), so
        // the uint8 after it sits at 16, not 9, and the row pads to 24.
        let space =
            dict(vec![("inner", dict(vec![("a", discrete(I64)), ("b", boxed(U8, &[]))])), ("c", boxed(U8, &[]))]);
        let layout = Layout::new(&space, "obs").unwrap();
        assert_eq!(offsets(&layout), vec![0, 8, 16]);
        assert_eq!(layout.row_bytes, 24);
        assert_eq!(layout.padding, vec![9..16, 17..24]);
    }

    #[test]
    fn every_offset_is_a_multiple_of_its_itemsize() {
        let space = Space::Tuple(vec![
            boxed(Bool, &[3]),
            boxed(F16, &[]),
            dict(vec![("x", boxed(U8, &[1])), ("y", boxed(F64, &[2]))]),
            boxed(I32, &[0]),
            Space::MultiBinary { dtype: I8, shape: vec![5] },
        ]);
        let layout = Layout::new(&space, "obs").unwrap();
        for leaf in &layout.leaves {
            assert_eq!(leaf.offset % leaf.dtype.itemsize(), 0, "{:?}", leaf.path);
        }
        assert_eq!(layout.row_bytes % layout.align, 0);
        assert_eq!(offsets(&layout), vec![0, 4, 8, 16, 32, 32]);
    }

    #[test]
    fn dict_of_only_discretes_shares_their_dtype() {
        let space = dict(vec![("a", discrete(I64)), ("b", discrete(I64))]);
        let layout = Layout::new(&space, "obs").unwrap();
        assert_eq!(layout.common_dtype(), Some(I64));
        assert_eq!(layout.row_bytes, 16);
    }

    #[test]
    fn paths_read_like_indexing() {
        let path = [Key::Name("inv".into()), Key::Index(1), Key::Name("it's".into())];
        assert_eq!(format_path("obs", &path), r#"obs['inv'][1]["it's"]"#);
        let both = [Key::Name(r#"'"\"#.into())];
        assert_eq!(format_path("x", &both), r#"x['\'"\\']"#);
    }

    #[test]
    fn bad_spaces_are_refused_with_their_path() {
        let space = dict(vec![("a", dict(vec![("b", Space::Discrete { dtype: I64, n: 0, start: 0 })]))]);
        let err = Layout::new(&space, "obs").unwrap_err();
        assert_eq!(err.to_string(), "obs['a']['b']: Discrete needs n >= 1, got 0");
        let huge = Space::MultiBinary { dtype: U8, shape: vec![usize::MAX / 2, 4] };
        assert!(matches!(Layout::new(&huge, "obs"), Err(Error::UnsupportedSpace { .. })));
    }

    #[test]
    fn rules_check_values() {
        let space =
            Space::MultiDiscrete { dtype: I64, shape: vec![2, 2], nvec: vec![2, 3, 4, 5], start: vec![0, 1, 0, -2] };
        let layout = Layout::new(&space, "obs").unwrap();
        let leaf = &layout.leaves[0];
        assert!(leaf.check(1, Value::Int(3)).is_ok());
        assert_eq!(leaf.check(3, Value::Int(3)).unwrap_err(), "expected a value in [-2, 3), got 3");
        assert_eq!(leaf.element_index(3), "[1, 1]");
        let b = Layout::new(&boxed(F32, &[]), "obs").unwrap();
        assert!(b.leaves[0].check(0, Value::Float(f64::NAN)).is_err());
        assert!(b.leaves[0].check(0, Value::Float(1.5)).is_err());
        assert!(b.leaves[0].check(0, Value::Float(1.0)).is_ok());
    }

    #[test]
    fn text_is_codes_then_length() {
        let space = dict(vec![
            ("a", discrete(I64)),
            ("s", Space::Text { charset: vec!['b', 'a', ' ', 'a'], min_length: 1, max_length: 4 }),
        ]);
        let layout = Layout::new(&space, "obs").unwrap();
        let leaf = &layout.leaves[1];
        assert_eq!((leaf.dtype, leaf.shape.clone(), leaf.offset), (U8, vec![5], 8));
        let codes = leaf.encode_text("ab a").unwrap();
        let ints: Vec<i128> = codes.iter().map(|v| if let Value::Int(i) = v { *i } else { -1 }).collect();
        assert_eq!(ints, vec![2, 3, 1, 2, 4]);
        assert_eq!(leaf.decode_text(&ints).unwrap(), "ab a");
        assert_eq!(leaf.encode_text("ab").unwrap()[2..], [Value::Int(0), Value::Int(0), Value::Int(2)]);
        assert_eq!(leaf.encode_text("abab a").unwrap_err(), "expected at most 4 characters, got 6: 'abab a'");
        assert_eq!(leaf.encode_text("c").unwrap_err(), "character 'c' of 'c' is not in the space's charset");
        assert_eq!(leaf.encode_text("").unwrap_err(), "expected at least 1 characters, got 0: ''");
        assert!(leaf.check(0, Value::Int(3)).is_ok());
        assert!(leaf.check(0, Value::Int(4)).is_err());
        assert!(leaf.check(4, Value::Int(0)).is_err());
        let long = Layout::new(&Space::string(300), "obs").unwrap();
        assert_eq!((long.leaves[0].dtype, long.leaves[0].shape.clone()), (U16, vec![301]));
    }
}
