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
use crate::text::text_dtype;

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

/// `offset` rounded up to a multiple of `align`; None if that overflows.
fn align_up(offset: usize, align: usize) -> Option<usize> {
    offset.checked_next_multiple_of(align)
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
    fn bad_spaces_are_refused_with_their_path() {
        let space = dict(vec![("a", dict(vec![("b", Space::Discrete { dtype: I64, n: 0, start: 0 })]))]);
        let err = Layout::new(&space, "obs").unwrap_err();
        assert_eq!(err.to_string(), "obs['a']['b']: Discrete needs n >= 1, got 0");
        let huge = Space::MultiBinary { dtype: U8, shape: vec![usize::MAX / 2, 4] };
        assert!(matches!(Layout::new(&huge, "obs"), Err(Error::UnsupportedSpace { .. })));
    }

    #[test]
    fn nesting_is_refused_past_max_depth_with_its_path() {
        let nest = |depth: usize| (0..depth).fold(discrete(I8), |inner, _| Space::Tuple(vec![inner]));
        let layout = Layout::new(&nest(MAX_DEPTH), "obs").unwrap();
        assert_eq!(layout.leaves[0].path.len(), MAX_DEPTH);
        let err = Layout::new(&nest(MAX_DEPTH + 1), "obs").unwrap_err();
        let path = format!("obs{}", "[0]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            err,
            Error::UnsupportedSpace { path, reason: format!("Dicts and Tuples nest at most {MAX_DEPTH} deep") }
        );
        // Deeper ones are refused at the same place, without walking them.
        assert_eq!(
            Layout::new(&nest(10 * MAX_DEPTH), "obs").unwrap_err().to_string().matches("[0]").count(),
            MAX_DEPTH + 1
        );
    }

    #[test]
    fn rows_too_large_for_memory_are_refused() {
        let half = Space::MultiBinary { dtype: U8, shape: vec![usize::MAX / 2 + 1] };
        let err = Layout::new(&Space::Tuple(vec![discrete(I8), half.clone()]), "obs").unwrap_err();
        assert_eq!(err.to_string(), "obs: the row would not fit in memory");
        let err = Layout::new(&dict(vec![("a", half.clone()), ("b", half)]), "obs").unwrap_err();
        assert!(matches!(err, Error::UnsupportedSpace { .. }));
        let big = Space::MultiBinary { dtype: I64, shape: vec![usize::MAX / 8] };
        assert!(Layout::new(&big, "obs").is_err(), "rows longer than isize::MAX bytes");
    }

    fn arbitrary_space() -> impl proptest::strategy::Strategy<Value = Space> {
        use proptest::prelude::*;
        let dtypes = proptest::sample::select(crate::dtype::ALL.to_vec());
        let leaf = (dtypes, proptest::collection::vec(0usize..4, 0..3)).prop_map(|(dtype, shape)| {
            if shape.is_empty() && dtype.kind() != crate::dtype::Kind::Float {
                Space::Discrete { dtype, n: 3, start: 0 }
            } else {
                Space::MultiBinary { dtype, shape }
            }
        });
        leaf.prop_recursive(5, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Space::Tuple),
                proptest::collection::vec(("[a-c]{1,2}", inner), 0..4).prop_map(Space::Dict),
            ]
        })
    }

    proptest::proptest! {
        /// Any nesting: every leaf on a multiple of its item size, inside
        /// the row, apart from the others, and the padding is exactly what
        /// no leaf covers.
        #[test]
        fn layouts_are_aligned_disjoint_and_covered(space in arbitrary_space()) {
            let layout = Layout::new(&space, "obs").unwrap();
            let mut covered = vec![false; layout.row_bytes];
            for leaf in &layout.leaves {
                proptest::prop_assert_eq!(leaf.offset % leaf.dtype.itemsize(), 0);
                proptest::prop_assert!(leaf.offset + leaf.nbytes() <= layout.row_bytes);
                for byte in &mut covered[leaf.offset..leaf.offset + leaf.nbytes()] {
                    proptest::prop_assert!(!*byte, "leaves overlap");
                    *byte = true;
                }
            }
            for gap in &layout.padding {
                for byte in &mut covered[gap.clone()] {
                    proptest::prop_assert!(!*byte, "padding covers a leaf");
                    *byte = true;
                }
            }
            proptest::prop_assert!(covered.iter().all(|&b| b));
            proptest::prop_assert_eq!(layout.row_bytes % layout.align, 0);
        }
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
}
