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
use crate::names::{Key, format_path};

/// How deep Dicts and Tuples may nest: a leaf sits inside at most this
/// many of them. Every walk of a space (describing it in Python, reading
/// the description, placing leaves, flattening, unflattening) takes stack
/// per level; at this depth they stay far inside Python's default
/// recursion limit and a few tens of KiB of native stack, even on threads
/// with small stacks. Spaces met in practice nest a handful deep.
pub const MAX_DEPTH: usize = 64;

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

impl Space {
    /// A space of gymnasium class `kind` that is none of the above.
    pub fn unsupported_kind(kind: &str) -> Space {
        Space::Unsupported(match kind {
            "Sequence" | "Graph" => format!("{kind} has no fixed size, so it has no flat row"),
            _ => format!(
                "{kind} spaces are not supported (supported: Box, Discrete, MultiDiscrete, MultiBinary, Text, Dict, Tuple)"
            ),
        })
    }

    /// A space nested deeper than `MAX_DEPTH`, left undescribed.
    pub fn too_deep() -> Space {
        Space::Unsupported(too_deep())
    }

    /// A leaf space of gymnasium class `kind` whose dtype is not one a row
    /// stores.
    pub fn unsupported_dtype(kind: &str, dtype: &str) -> Space {
        Space::Unsupported(format!("{kind} of dtype {dtype} is not a numeric dtype pufferrs stores"))
    }
}

fn too_deep() -> String {
    format!("Dicts and Tuples nest at most {MAX_DEPTH} deep")
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
    #[inline]
    pub fn check(&self, index: usize, value: Value) -> std::result::Result<(), String> {
        // The test alone, small enough to inline into the copy loops that
        // call it for every element; the message is made apart.
        let in_range = |start: i128, n: i128| matches!(value, Value::Int(v) if start <= v && v - start < n);
        let fits = match &self.rule {
            Rule::Box { low, high } => value.is_finite() && value.within(low[index], high[index]),
            Rule::Discrete { n, start } => in_range(*start, *n),
            Rule::MultiDiscrete { nvec, start } => in_range(start[index], nvec[index]),
            Rule::MultiBinary => matches!(value, Value::Int(0 | 1)),
            // Character codes (0 pads), then the length.
            Rule::Text { charset, max_length, .. } if index < *max_length => in_range(0, charset.len() as i128 + 1),
            Rule::Text { min_length, max_length, .. } => {
                in_range(*min_length as i128, (*max_length - *min_length) as i128 + 1)
            }
        };
        if fits { Ok(()) } else { Err(self.refusal(index, value)) }
    }

    /// What `check` says of a value that does not fit.
    #[cold]
    fn refusal(&self, index: usize, value: Value) -> String {
        match &self.rule {
            Rule::Box { .. } if !value.is_finite() => format!("expected a finite value, got {value}"),
            Rule::Box { low, high } => format!("expected a value in [{}, {}], got {value}", low[index], high[index]),
            Rule::Discrete { n, start } => format!("expected a value in [{start}, {}), got {value}", start + n),
            Rule::MultiDiscrete { nvec, start } => {
                format!("expected a value in [{}, {}), got {value}", start[index], start[index] + nvec[index])
            }
            Rule::MultiBinary => format!("expected 0 or 1, got {value}"),
            Rule::Text { charset, max_length, .. } if index < *max_length => {
                format!("expected a character code in [0, {}], got {value}", charset.len())
            }
            Rule::Text { min_length, max_length, .. } => {
                format!("expected a length in [{min_length}, {max_length}], got {value}")
            }
        }
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
        let placed = builder.place(space)?;
        // Pointer offsets into a row must fit an isize.
        let row_bytes = placed.size;
        if row_bytes > isize::MAX as usize {
            return Err(builder.too_large());
        }
        let mut padding = Vec::new();
        let mut covered = 0;
        let spans = builder.leaves.iter().map(|l| (l.offset, l.offset + l.nbytes()));
        for (start, end) in spans.chain([(row_bytes, row_bytes)]) {
            if start > covered {
                padding.push(covered..start);
            }
            covered = covered.max(end);
        }
        Ok(Layout { root: placed.node, leaves: builder.leaves, row_bytes, align: placed.align, padding })
    }

    /// The dtype shared by every leaf, if there is one.
    pub fn common_dtype(&self) -> Option<DType> {
        let first = self.leaves.first()?.dtype;
        self.leaves.iter().all(|l| l.dtype == first).then_some(first)
    }
}

/// A space placed at offset 0: its node, its size (padding included) and
/// its alignment.
struct Placed {
    node: Node,
    size: usize,
    align: usize,
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

    fn too_large(&self) -> Error {
        self.unsupported("the row would not fit in memory".into())
    }

    /// Places `space` at offset 0, its leaves at offsets relative to it. A
    /// record places each member at the next multiple of the member's
    /// alignment and moves the member's leaves there; since the record
    /// itself lands on a multiple of the largest member alignment, relative
    /// offsets stay aligned wherever it goes.
    fn place(&mut self, space: &Space) -> Result<Placed> {
        if self.path.len() > MAX_DEPTH {
            return Err(self.unsupported(too_deep()));
        }
        let members: Vec<&Space> = match space {
            Space::Dict(items) => items.iter().map(|(_, member)| member).collect(),
            Space::Tuple(items) => items.iter().collect(),
            leaf => {
                let leaf = self.leaf(leaf)?;
                let (size, align) = (leaf.nbytes(), leaf.dtype.itemsize());
                self.leaves.push(leaf);
                return Ok(Placed { node: Node::Leaf(self.leaves.len() - 1), size, align });
            }
        };
        let (mut end, mut align) = (0usize, 1usize);
        let mut nodes = Vec::with_capacity(members.len());
        for (i, member) in members.into_iter().enumerate() {
            self.path.push(match space {
                Space::Dict(items) => Key::Name(items[i].0.clone()),
                _ => Key::Index(i),
            });
            let first_leaf = self.leaves.len();
            let placed = self.place(member)?;
            let start = align_up(end, placed.align).ok_or_else(|| self.too_large())?;
            end = start.checked_add(placed.size).ok_or_else(|| self.too_large())?;
            self.path.pop();
            for leaf in &mut self.leaves[first_leaf..] {
                leaf.offset += start;
            }
            align = align.max(placed.align);
            nodes.push(placed.node);
        }
        let size = align_up(end, align).ok_or_else(|| self.too_large())?;
        let node = match space {
            Space::Dict(items) => Node::Dict(items.iter().map(|(key, _)| key.clone()).zip(nodes).collect()),
            _ => Node::Tuple(nodes),
        };
        Ok(Placed { node, size, align })
    }

    /// A leaf space at offset 0, checked.
    fn leaf(&self, space: &Space) -> Result<Leaf> {
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
        Ok(Leaf { path: self.path.clone(), dtype, shape, offset: 0, rule })
    }
}

/// The dtype of a `Text` leaf (see `Rule::Text`): the narrowest unsigned
/// one that holds `0..=largest`. Placing leaves is this module's; `text`
/// only encodes into them, so the rule lives here.
fn text_dtype(largest: usize) -> DType {
    match largest {
        0..=0xff => DType::U8,
        0x100..=0xffff => DType::U16,
        _ => DType::U32,
    }
}

/// `offset` rounded up to a multiple of `align`; None if that overflows.
fn align_up(offset: usize, align: usize) -> Option<usize> {
    offset.checked_next_multiple_of(align)
}

#[cfg(test)]
mod tests;
