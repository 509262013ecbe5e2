//! Rows into the nested structure of zero-copy numpy views.

use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use pufferrs_core::copy::is_c_contiguous;
use pufferrs_core::error::Error;
use pufferrs_core::layout::Layout;
use pufferrs_core::names::format_shape;

use crate::errors::{Raise, raise, type_name};
use crate::numpy_arrays::{check_rows_dtype, view};
use crate::tree::Tree;

/// Views `rows` as the layout's nested structure, leading axes kept. Rows
/// are `(..., row)` in any plain dtype whose last axis spans exactly one
/// contiguous row, or `(..., *row_shape)` in the flat dtype. An empty batch
/// gives empty leaves, whatever strides numpy gave it.
pub fn unflatten<'py>(
    layout: &Layout,
    tree: &Tree,
    descrs: &[Py<numpy::PyArrayDescr>],
    row_shape: &[usize],
    rows: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let rows = rows
        .cast::<PyUntypedArray>()
        .map_err(|_| {
            Error::Row(format!(
                "expected a numpy array of rows, got {} (use pufferrs.pytorch.unflatten for tensors)",
                type_name(rows)
            ))
        })
        .raise()?;
    let dtype = rows.dtype();
    check_rows_dtype("rows", &dtype).raise()?;
    let (mut shape, mut strides) = (rows.shape(), rows.strides());
    let itemsize = dtype.itemsize();
    // No element of an empty array is ever addressed, so its strides (numpy
    // gives empty arrays zero strides) do not matter.
    let empty = shape.contains(&0);
    // A plain Box's rows keep its shape: fold those axes into one.
    let folded_shape: Vec<usize>;
    let folded_strides: Vec<isize>;
    if row_shape.len() != 1 && shape.ends_with(row_shape) {
        let lead = shape.len() - row_shape.len();
        if !empty && !is_c_contiguous(&shape[lead..], &strides[lead..], itemsize) {
            return Err(raise(Error::Row("the row axes of rows must be C-contiguous".into())));
        }
        folded_shape = shape[..lead].iter().copied().chain([row_shape.iter().product()]).collect();
        folded_strides = strides[..lead].iter().copied().chain([itemsize as isize]).collect();
        (shape, strides) = (&folded_shape, &folded_strides);
    }
    let Some((&row_len, lead)) = shape.split_last() else {
        return Err(raise(Error::Row("expected rows with at least one axis, got a 0-d array".into())));
    };
    if row_len.checked_mul(itemsize) != Some(layout.row_bytes) {
        return Err(raise(Error::Row(format!(
            "expected rows of {} bytes, got shape {} of {}-byte items",
            layout.row_bytes,
            format_shape(shape),
            itemsize
        ))));
    }
    if !empty && row_len > 1 && strides[strides.len() - 1] != itemsize as isize {
        return Err(raise(Error::Row("the last axis of rows must be contiguous".into())));
    }
    let lead_strides = &strides[..lead.len()];
    let mut views = Vec::with_capacity(layout.leaves.len());
    for (leaf, descr) in layout.leaves.iter().zip(descrs) {
        let dims: Vec<usize> = lead.iter().chain(&leaf.shape).copied().collect();
        let mut leaf_strides = vec![0isize; leaf.shape.len()];
        let mut stride = leaf.dtype.itemsize() as isize;
        for (s, &dim) in leaf_strides.iter_mut().zip(&leaf.shape).rev() {
            *s = stride;
            stride *= dim as isize;
        }
        let all_strides: Vec<isize> = lead_strides.iter().chain(&leaf_strides).copied().collect();
        // SAFETY: the leaf spans [offset, offset + nbytes) inside every row,
        // and rows lie where `lead` and `lead_strides` put them in `rows`:
        // each row starts at an element of `rows` and its `row_bytes` are
        // contiguous (checked above), so every byte a view addresses is a
        // byte of `rows`. An empty array has no row, and its views address
        // nothing.
        views.push(Some(unsafe { view(rows, descr.bind(rows.py()), leaf.offset, &dims, &all_strides)? }));
    }
    build(rows.py(), tree, &mut views)
}

fn build<'py>(py: Python<'py>, tree: &Tree, views: &mut [Option<Bound<'py, PyAny>>]) -> PyResult<Bound<'py, PyAny>> {
    Ok(match tree {
        Tree::Leaf(i) => views[*i].take().expect("each leaf appears once in the tree"),
        Tree::Dict(items) => {
            let dict = PyDict::new(py);
            for (_, key, child) in items {
                dict.set_item(key.bind(py), build(py, child, views)?)?;
            }
            dict.into_any()
        }
        Tree::Tuple(items) => {
            let children = items.iter().map(|child| build(py, child, views)).collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, children)?.into_any()
        }
    })
}
