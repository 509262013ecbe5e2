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
                ("items", Space::MultiDiscrete { dtype: I64, shape: vec![8], nvec: vec![10; 8], start: vec![0; 8] }),
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
    let space = dict(vec![("inner", dict(vec![("a", discrete(I64)), ("b", boxed(U8, &[]))])), ("c", boxed(U8, &[]))]);
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
