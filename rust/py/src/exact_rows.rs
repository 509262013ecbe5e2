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
    let bytes = rows * core.row_bytes;
    if !leaf.checks_values(check_bounds) && !source.overlaps((start as usize, start as usize + bytes)) {
        // Nothing to check, so nothing can fail part-way, and nothing of
        // the source is in the rows: straight into them, without staging
        // (a thousand CartPole observations a step, 16 KB zeroed and
        // copied once more otherwise).
        // SAFETY: `row_start` checked that `out` is writeable, C-contiguous
        // and `bytes` long from `start`, kept alive by the borrow of `out`
        // and written by nobody else while we hold the GIL; the source's
        // elements lie outside those bytes (checked above), so this slice
        // aliases none of what `store_as` reads.
        let rows_out = unsafe { std::slice::from_raw_parts_mut(start, bytes) };
        source.store_as(leaf.dtype, rows_out);
        return true;
    }
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
        let Some((lo, hi)) = int_range(leaf.dtype, &staging) else { return false };
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

/// The smallest and the largest of the integers of `dtype` in `bytes`
/// (`(i128::MAX, i128::MIN)` when there are none); None for a float dtype.
/// Read in each type's own width, a loop the compiler vectorises: a
/// thousand actions take well under a microsecond.
fn int_range(dtype: DType, bytes: &[u8]) -> Option<(i128, i128)> {
    macro_rules! range_of {
        ($t:ty) => {{
            let (mut lo, mut hi) = (<$t>::MAX, <$t>::MIN);
            for chunk in bytes.chunks_exact(std::mem::size_of::<$t>()) {
                let v = <$t>::from_ne_bytes(chunk.try_into().expect("one item"));
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if bytes.is_empty() { Some((i128::MAX, i128::MIN)) } else { Some((lo as i128, hi as i128)) }
        }};
    }
    match dtype {
        DType::I8 => range_of!(i8),
        DType::I16 => range_of!(i16),
        DType::I32 => range_of!(i32),
        DType::I64 => range_of!(i64),
        DType::U8 => range_of!(u8),
        DType::U16 => range_of!(u16),
        DType::U32 => range_of!(u32),
        DType::U64 => range_of!(u64),
        DType::Bool | DType::F16 | DType::F32 | DType::F64 => {
            // Not an integer dtype of a Discrete leaf as stored: read each
            // value, as the leaf's checker would.
            let (mut lo, mut hi) = (i128::MAX, i128::MIN);
            for chunk in bytes.chunks_exact(dtype.itemsize()) {
                match dtype.read(chunk) {
                    Value::Int(v) => (lo, hi) = (lo.min(v), hi.max(v)),
                    Value::Float(_) => return None,
                }
            }
            Some((lo, hi))
        }
    }
}
