//! `pufferrs._native.Layout`: the core `Layout` with its Python-facing
//! methods. `pufferrs.Layout` subclasses it to build it from a gymnasium space.

use numpy::{PyArrayDescr, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyString, PyTuple};

use pufferrs_core::dtype::DType;
use pufferrs_core::error::Error;
use pufferrs_core::layout::Layout;
use pufferrs_core::names::{Key, format_path as path_string, format_shape};

use crate::errors::{Raise, raise};
use crate::exact_rows::store_exact;
use crate::flatten::{Batch, Reader, resolve_batch};
use crate::numpy_arrays::{descr, row_start, zeros};
use crate::store::store;
use crate::tree::Tree;
use crate::{spec, unflatten};

/// `obs['inv'][1]`: a path the way a user would index it; the one
/// formatter of paths, shared with Python.
#[pyfunction]
pub fn format_path(root: &str, path: &Bound<'_, PyTuple>) -> PyResult<String> {
    let keys = path
        .iter()
        .map(|key| match key.cast::<PyString>() {
            Ok(name) => Ok(Key::Name(name.to_str()?.to_owned())),
            Err(_) => Ok(Key::Index(key.extract()?)),
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(path_string(root, &keys))
}

/// A row index as Python gives it: an int or anything with `__index__`
/// (numpy integers), but not a bool.
fn row_index(index: &Bound<'_, PyAny>) -> Result<i128, Error> {
    let shown = || index.repr().map(|r| r.to_string()).unwrap_or_else(|_| crate::errors::type_name(index));
    let not_an_int = || Error::Row(format!("index must be an int, got {}", shown()));
    if index.is_instance_of::<PyBool>() {
        return Err(not_an_int());
    }
    match index.extract::<i128>() {
        Ok(index) => Ok(index),
        Err(err) if err.is_instance_of::<PyOverflowError>(index.py()) => {
            Err(Error::Row(format!("index {} is out of range", shown())))
        }
        Err(_) => Err(not_an_int()),
    }
}

/// Where every leaf of a space lives in a flat row of bytes, and the
/// conversions between observations and rows.
#[pyclass(module = "pufferrs._native", name = "Layout", subclass, frozen)]
pub struct PyLayout {
    layout: Layout,
    tree: Tree,
    name: String,
    leaf_dtypes: Vec<Py<PyArrayDescr>>,
    flat_dtype: Py<PyArrayDescr>,
    /// The shape of one row in `flat_dtype` items: `(row_bytes / itemsize,)`,
    /// or a plain Box space's own shape.
    row_shape: Vec<usize>,
}

impl PyLayout {
    /// The core layout.
    pub(crate) fn core(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn reader(&self, index: Option<usize>, batch: Batch) -> Reader<'_> {
        Reader { layout: &self.layout, tree: &self.tree, name: &self.name, index, batch }
    }

    /// `[batch..., *row_shape]`
    fn rows_shape(&self, batch: &[usize]) -> Vec<usize> {
        batch.iter().chain(&self.row_shape).copied().collect()
    }
}

#[pymethods]
impl PyLayout {
    #[new]
    #[pyo3(signature = (spec, name = "obs", row_shape = None))]
    fn new(py: Python<'_>, spec: &Bound<'_, PyAny>, name: &str, row_shape: Option<Vec<usize>>) -> PyResult<Self> {
        let layout = Layout::new(&spec::parse(spec), name).raise()?;
        let leaf_dtypes =
            layout.leaves.iter().map(|l| descr(py, l.dtype).map(Bound::unbind)).collect::<PyResult<_>>()?;
        let flat = layout.common_dtype().unwrap_or(DType::U8);
        let row_len = layout.row_bytes / flat.itemsize();
        let row_shape = row_shape.unwrap_or_else(|| vec![row_len]);
        if row_shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) != Some(row_len) {
            let shape = format_shape(&row_shape);
            return Err(raise(Error::Row(format!("row_shape {shape} does not hold the {row_len} items of a row"))));
        }
        Ok(PyLayout {
            row_shape,
            tree: Tree::new(py, &layout.root),
            name: name.to_string(),
            leaf_dtypes,
            flat_dtype: descr(py, flat)?.unbind(),
            layout,
        })
    }

    /// Bytes in one row, padding included.
    #[getter]
    fn row_bytes(&self) -> usize {
        self.layout.row_bytes
    }

    /// The dtype of flattened rows: the leaves' common dtype, else uint8.
    #[getter]
    fn flat_dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.flat_dtype.bind(py).clone()
    }

    /// The shape of one row in `flat_dtype` items.
    #[getter]
    fn row_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.row_shape)
    }

    /// What errors call the observation, e.g. `obs` or `action`.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// `(path, dtype, shape, offset, nbytes)` for every leaf, in row order.
    fn leaf_tuples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.layout.leaves.iter().zip(&self.leaf_dtypes).map(|(leaf, dtype)| {
            let path = leaf.path.iter().map(|key| match key {
                Key::Name(name) => PyString::new(py, name).into_any(),
                Key::Index(i) => i.into_pyobject(py).expect("usize converts").into_any(),
            });
            let path = PyTuple::new(py, path)?;
            let shape = PyTuple::new(py, &leaf.shape)?;
            PyTuple::new(
                py,
                [
                    path.into_any(),
                    dtype.bind(py).clone().into_any(),
                    shape.into_any(),
                    leaf.offset.into_pyobject(py)?.into_any(),
                    leaf.nbytes().into_pyobject(py)?.into_any(),
                ],
            )
        });
        PyList::new(py, items.collect::<PyResult<Vec<_>>>()?)
    }

    /// One observation as a new row of `flat_dtype`.
    #[pyo3(signature = (obs, *, check_bounds = false))]
    fn flatten<'py>(
        &self,
        py: Python<'py>,
        obs: &Bound<'py, PyAny>,
        check_bounds: bool,
    ) -> PyResult<Bound<'py, PyUntypedArray>> {
        let reader = self.reader(None, Batch::One);
        let resolved = reader.resolve(obs).raise()?;
        let out = zeros(py, self.flat_dtype.bind(py), &self.row_shape)?;
        let start = row_start(&out, None, self.layout.row_bytes).raise()?;
        // SAFETY: `out` is new, holds `row_bytes` bytes from `start`, and
        // lives through the call; nothing else references them.
        unsafe { store(py, &self.layout, &[(reader, resolved)], &[start], check_bounds) }.raise()?;
        Ok(out)
    }

    /// Writes one observation into `out` (a row), or into `out[index]`.
    #[pyo3(signature = (obs, out, index = None, *, check_bounds = false))]
    fn flatten_into<'py>(
        &self,
        py: Python<'py>,
        obs: &Bound<'py, PyAny>,
        out: &Bound<'py, PyUntypedArray>,
        index: Option<&Bound<'py, PyAny>>,
        check_bounds: bool,
    ) -> PyResult<()> {
        let index = index.map(row_index).transpose().raise()?;
        let start = row_start(out, index, self.layout.row_bytes).raise()?;
        let reader = self.reader(None, Batch::One);
        let resolved = reader.resolve(obs).raise()?;
        // SAFETY: `row_start` checked the `row_bytes` bytes from `start`,
        // which `out` keeps alive through the call. No Rust reference to
        // them exists: sources are read through raw pointers, and `store`
        // reads one that overlaps the row before writing it.
        unsafe { store(py, &self.layout, &[(reader, resolved)], &[start], check_bounds) }.raise()
    }

    /// A batch into `(B, row)`: `obs` is a list of observations, or one
    /// structure whose leaves carry a leading batch axis (as gymnasium's
    /// vector envs return). Writes into `out` when given; its rows set the
    /// batch size.
    ///
    /// Into a given `out`, a batch that is exactly a one-leaf layout's
    /// array goes in one pass (`store_exact`: the vector envs' actions and
    /// in-place envs' observations, at every step), not by a walk per row.
    #[pyo3(signature = (obs, out = None, *, check_bounds = false))]
    pub(crate) fn flatten_batch<'py>(
        slf: &Bound<'py, Self>,
        obs: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyUntypedArray>>,
        check_bounds: bool,
    ) -> PyResult<Bound<'py, PyUntypedArray>> {
        if let Some(out) = out
            && store_exact(slf, obs, out, check_bounds)
        {
            return Ok(out.clone());
        }
        let (this, py) = (slf.get(), slf.py());
        let out_rows = match out.map(|out| out.shape().first().copied()) {
            Some(None) => return Err(raise(Error::Row("out must have a leading batch axis, got a 0-d array".into()))),
            Some(rows) => rows,
            None => None,
        };
        let (items, size) = resolve_batch(|index, batch| this.reader(index, batch), obs, out_rows).raise()?;
        let out = match out {
            Some(out) => {
                if size > 1 && out.strides()[0].unsigned_abs() < this.layout.row_bytes {
                    return Err(raise(Error::Row("rows of out overlap".into())));
                }
                out.clone()
            }
            None => zeros(py, this.flat_dtype.bind(py), &this.rows_shape(&[size]))?,
        };
        let starts = (0..size)
            .map(|b| row_start(&out, Some(b as i128), this.layout.row_bytes))
            .collect::<Result<Vec<_>, _>>()
            .raise()?;
        // SAFETY: each start was checked by `row_start` and `out` keeps the
        // memory alive through the call; the rows do not overlap (checked
        // above for a caller's `out`; `zeros` lays them apart), and no Rust
        // reference to them exists.
        unsafe { store(py, &this.layout, &items, &starts, check_bounds) }.raise()?;
        Ok(out)
    }

    /// Rows (`(row,)`, `(B, row)`, `(B, T, row)`, ...) as the nested
    /// structure of zero-copy views, leading axes kept.
    fn unflatten<'py>(&self, rows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        unflatten::unflatten(&self.layout, &self.tree, &self.leaf_dtypes, &self.row_shape, rows)
    }

    /// The string that `codes` (the values of string leaf `leaf`, an index
    /// into `leaf_tuples()`) encode.
    fn decode_text(&self, leaf: usize, codes: Vec<i128>) -> PyResult<String> {
        let found = self.layout.leaves.get(leaf).ok_or_else(|| format!("no leaf {leaf}"));
        let text = found.and_then(|l| l.decode_text(&codes).map_err(|e| path_string(&self.name, &l.path) + ": " + &e));
        text.map_err(|reason| raise(Error::Row(reason)))
    }

    fn __eq__(&self, other: &Bound<'_, PyLayout>) -> bool {
        let other = other.get();
        self.layout == other.layout && self.name == other.name
    }
}
