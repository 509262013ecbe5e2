//! `pufferrs._native.store_exact`: a batch that is exactly the array of a
//! one-leaf layout (the leaf's dtype, the batch's shape, the row the leaf
//! as-is), checked by the leaf's own checker and copied into a span of
//! rows in one pass. `Layout.flatten_batch` says the same of such a batch
//! with a walk and a store per row, whose fixed cost grows with the rows
//! (about 50 ns a row); a vector env that steps a thousand rows at once
//! hands over its batches here, once per step, and takes `flatten_batch`
//! for everything else.

use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

use pufferrs_core::dtype::{DType, Value};
use pufferrs_core::layout::Rule;

use crate::flatten::Batch;
use crate::layout::PyLayout;
use crate::numpy_arrays::{dtype_of, row_start, strided};

/// Stores `values` into the rows of `out` (`(n, row_bytes)` uint8, one
/// C-contiguous span) when `values` is a numpy array of exactly `layout`'s
/// one leaf, batched `n` times, and every value passes the leaf's checks
/// (`check_bounds`: its Box bounds too). True when it wrote the rows; false,
/// having written nothing, otherwise: `flatten_batch` then stores the batch
/// or says what is wrong with it.
#[pyfunction]
#[pyo3(signature = (layout, values, out, check_bounds = false))]
pub fn store_exact(
    layout: &Bound<'_, PyLayout>,
    values: &Bound<'_, PyAny>,
    out: &Bound<'_, PyUntypedArray>,
    check_bounds: bool,
) -> bool {
    let layout = layout.get();
    let core = layout.core();
    let [leaf] = core.leaves.as_slice() else { return false };
    // Strings are codes plus a length, and bools are normalised to 0/1 as
    // they are stored: both take the general path.
    if leaf.offset != 0
        || leaf.nbytes() != core.row_bytes
        || leaf.dtype == DType::Bool
        || matches!(leaf.rule, Rule::Text { .. })
    {
        return false;
    }
    let Ok(array) = values.cast::<PyUntypedArray>() else { return false };
    let rows = match out.shape() {
        [rows, _] => *rows,
        _ => return false,
    };
    let shape = array.shape();
    if shape.first() != Some(&rows) || shape[1..] != leaf.shape[..] || dtype_of(&array.dtype()) != Ok(leaf.dtype) {
        return false;
    }
    let Ok(start) = row_start(out, None, rows * core.row_bytes) else { return false };
    let source = strided(array, leaf.dtype);
    // Staged whole before a row changes: all or nothing, and a source that
    // overlaps the rows is read before they change.
    let mut staging = vec![0u8; rows * core.row_bytes];
    if !leaf.checks_values(check_bounds) {
        source.store_as(leaf.dtype, &mut staging);
    } else if let Rule::Discrete { .. } = leaf.rule {
        // A Discrete leaf's rule is one interval for every value: the
        // leaf's own check of the smallest and the largest value is its
        // check of them all, without a call per value.
        source.store_as(leaf.dtype, &mut staging);
        let itemsize = leaf.dtype.itemsize();
        let (mut lo, mut hi) = (i128::MAX, i128::MIN);
        for chunk in staging.chunks_exact(itemsize) {
            match leaf.dtype.read(chunk) {
                Value::Int(v) => (lo, hi) = (lo.min(v), hi.max(v)),
                Value::Float(_) => return false,
            }
        }
        if rows > 0 && (leaf.check(0, Value::Int(lo)).is_err() || leaf.check(0, Value::Int(hi)).is_err()) {
            return false;
        }
    } else {
        let reader = layout.reader(None, Batch::Of(rows));
        if source.try_store_as(leaf.dtype, &mut staging, reader.checker(leaf, check_bounds)).is_err() {
            return false;
        }
    }
    // SAFETY: `row_start` checked that `out` is writeable, C-contiguous and
    // `rows * row_bytes` bytes long from `start`, kept alive by the borrow
    // of `out`; `staging` is our own allocation, so the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(staging.as_ptr(), start, staging.len()) };
    true
}
