//! Python observations into rows, step one: `Reader::resolve` walks the
//! structure with the GIL held and finds each leaf's value, checking
//! structure, shapes and dtypes; `Reader::checker` says what a value must
//! be. `store` (step two) checks the values and writes the rows.

use numpy::npyffi::{self, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};

use pufferrs_core::dtype::{DType, Value};
use pufferrs_core::error::Error;
use pufferrs_core::layout::{Layout, Leaf, Rule};
use pufferrs_core::names::{Key, format_path, format_shape, quote};

use crate::errors::type_name;
use crate::numpy_arrays::dtype_of;
use crate::tree::Tree;

/// One leaf's value as found in the observation.
pub enum Source<'py> {
    /// A numpy array, or an array numpy made from a Python sequence (`weak`).
    Array { array: Bound<'py, PyUntypedArray>, dtype: DType, weak: bool },
    /// A Python number (`weak`) or a numpy scalar, read already.
    Scalar { value: Value, dtype: DType, weak: bool },
    /// A string leaf's codes, encoded already (one row's after another
    /// when batched); valid by construction.
    Codes { codes: Vec<Value>, dtype: DType },
}

impl Source<'_> {
    fn dtype(&self) -> DType {
        match self {
            Source::Array { dtype, .. } | Source::Scalar { dtype, .. } | Source::Codes { dtype, .. } => *dtype,
        }
    }

    fn weak(&self) -> bool {
        match self {
            Source::Array { weak, .. } | Source::Scalar { weak, .. } => *weak,
            Source::Codes { .. } => false,
        }
    }
}

/// How many observations one read takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// One observation: leaves have no batch axis.
    One,
    /// A batch along a leading axis of every leaf, as long as the first
    /// leaf's.
    Any,
    /// A batch of exactly this many (the rows of a given `out`).
    Of(usize),
}

/// One observation (or a batch of them, along a leading axis), each leaf's
/// source resolved against the layout, in leaf order.
pub struct Resolved<'py> {
    pub sources: Vec<Source<'py>>,
    /// The batch size once known, for a batched read.
    batch: Option<usize>,
    /// The leaf whose leading axis set `batch`; None when `out` set it.
    batch_leaf: Option<usize>,
}

impl Resolved<'_> {
    /// The batch size; 0 for a batched read of a layout without leaves.
    pub fn batch_size(&self) -> usize {
        self.batch.unwrap_or(0)
    }
}

/// How one call of flatten reads its input.
pub struct Reader<'a> {
    pub layout: &'a Layout,
    pub tree: &'a Tree,
    /// What error messages call the observation, e.g. `obs`.
    pub name: &'a str,
    /// The observation's position in a list of them (`obs[3]`), if any.
    pub index: Option<usize>,
    pub batch: Batch,
}

impl Reader<'_> {
    /// The observation's name in error messages, made only when one is
    /// raised: the hot path allocates nothing for it.
    fn root(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}]", self.name),
            None => self.name.to_string(),
        }
    }

    fn mismatch(&self, path: &[Key], reason: String) -> Error {
        Error::Mismatch { path: format_path(&self.root(), path), reason }
    }

    /// Walks `obs` along the layout and resolves every leaf, checking
    /// structure, shapes and dtypes.
    pub fn resolve<'py>(&self, obs: &Bound<'py, PyAny>) -> Result<Resolved<'py>, Error> {
        let batch = match self.batch {
            Batch::Of(size) => Some(size),
            Batch::One | Batch::Any => None,
        };
        let sources = Vec::with_capacity(self.layout.leaves.len());
        let mut resolved = Resolved { sources, batch, batch_leaf: None };
        let mut path = Vec::new();
        self.walk(self.tree, obs, &mut path, &mut resolved)?;
        Ok(resolved)
    }

    fn walk<'py>(
        &self,
        tree: &Tree,
        obj: &Bound<'py, PyAny>,
        path: &mut Vec<Key>,
        out: &mut Resolved<'py>,
    ) -> Result<(), Error> {
        match tree {
            Tree::Leaf(i) => {
                let source = self.source(*i, obj, path, out)?;
                out.sources.push(source);
            }
            Tree::Tuple(items) => {
                let seq = match obj.cast::<PyTuple>() {
                    Ok(t) => t.as_sequence().clone(),
                    Err(_) => match obj.cast::<PyList>() {
                        Ok(l) => l.as_sequence().clone(),
                        Err(_) => {
                            let reason = format!("expected a tuple of {} items, got {}", items.len(), type_name(obj));
                            return Err(self.mismatch(path, reason));
                        }
                    },
                };
                let len = seq.len().unwrap_or(0);
                if len != items.len() {
                    let reason = format!("expected a tuple of {} items, got {len}", items.len());
                    return Err(self.mismatch(path, reason));
                }
                for (i, child) in items.iter().enumerate() {
                    let item = seq.get_item(i).map_err(|e| self.mismatch(path, e.to_string()))?;
                    path.push(Key::Index(i));
                    self.walk(child, &item, path, out)?;
                    path.pop();
                }
            }
            Tree::Dict(items) => {
                let keys = || items.iter().map(|(k, _, _)| quote(k)).collect::<Vec<_>>().join(", ");
                let expected = || format!("expected a dict with keys [{}]", keys());
                let mapping = match obj.cast::<PyDict>() {
                    Ok(dict) => dict.as_mapping().clone(),
                    Err(_) => obj
                        .cast::<PyMapping>()
                        .map_err(|_| self.mismatch(path, format!("{}, got {}", expected(), type_name(obj))))?
                        .clone(),
                };
                for (key, py_key, child) in items {
                    let value = match mapping.get_item(py_key.bind(obj.py())) {
                        Ok(value) => value,
                        Err(_) => {
                            return Err(self.mismatch(path, format!("missing key {}; {}", quote(key), expected())));
                        }
                    };
                    path.push(Key::Name(key.clone()));
                    self.walk(child, &value, path, out)?;
                    path.pop();
                }
                let len = mapping.len().unwrap_or(0);
                if len != items.len() {
                    let extra = self.extra_keys(&mapping, items);
                    return Err(self.mismatch(path, format!("unexpected keys [{extra}]; {}", expected())));
                }
            }
        }
        Ok(())
    }

    /// The keys of `mapping` that the layout does not have, as reprs.
    fn extra_keys(&self, mapping: &Bound<'_, PyMapping>, items: &[(String, Py<PyString>, Tree)]) -> String {
        let Ok(keys) = mapping.keys() else { return String::new() };
        let known =
            |key: &Bound<'_, PyAny>| key.extract::<String>().is_ok_and(|k| items.iter().any(|(name, ..)| *name == k));
        let extra: Vec<String> = keys
            .iter()
            .filter(|key| !known(key))
            .map(|key| key.repr().map(|r| r.to_string()).unwrap_or_default())
            .collect();
        extra.join(", ")
    }

    /// Resolves leaf `index`'s value and checks its shape (batch axis
    /// included) and dtype.
    fn source<'py>(
        &self,
        index: usize,
        obj: &Bound<'py, PyAny>,
        path: &[Key],
        resolved: &mut Resolved<'py>,
    ) -> Result<Source<'py>, Error> {
        let leaf = &self.layout.leaves[index];
        if let Rule::Text { .. } = leaf.rule {
            return self.text_source(index, obj, path, resolved);
        }
        let source = read_source(obj).map_err(|reason| self.mismatch(path, reason))?;
        let shape: &[usize] = match &source {
            Source::Array { array, .. } => array.shape(),
            Source::Scalar { .. } | Source::Codes { .. } => &[],
        };
        let expected: Vec<usize> = match self.batch {
            Batch::One => leaf.shape.clone(),
            Batch::Any | Batch::Of(_) => {
                let got = match shape.split_first() {
                    Some((&got, _)) if shape.len() == leaf.shape.len() + 1 => got,
                    _ => {
                        let expected = batch_shape(resolved.batch, &leaf.shape);
                        return Err(
                            self.mismatch(path, format!("expected shape {expected}, got {}", format_shape(shape)))
                        );
                    }
                };
                self.agree_batch(index, got, path, resolved)?;
                std::iter::once(got).chain(leaf.shape.iter().copied()).collect()
            }
        };
        if shape != expected {
            let reason = format!("expected shape {}, got {}", format_shape(&expected), format_shape(shape));
            return Err(self.mismatch(path, reason));
        }
        let (src, dst) = (source.dtype(), leaf.dtype);
        if !dst.accepts(src, source.weak()) {
            let reason = format!("expected {dst} values, got {src}, which does not cast safely (same_kind)");
            return Err(self.mismatch(path, reason));
        }
        Ok(source)
    }

    /// Encodes a string leaf's value: a `str`, or a sequence of them when
    /// batched (one observation's codes after another).
    fn text_source<'py>(
        &self,
        index: usize,
        obj: &Bound<'py, PyAny>,
        path: &[Key],
        resolved: &mut Resolved<'py>,
    ) -> Result<Source<'py>, Error> {
        let leaf = &self.layout.leaves[index];
        let encode = |item: &Bound<'py, PyAny>| -> Result<Vec<Value>, String> {
            let text = item.cast::<PyString>().map_err(|_| format!("expected a str, got {}", type_name(item)))?;
            leaf.encode_text(&text.to_cow().map_err(|e| e.to_string())?)
        };
        if self.batch == Batch::One {
            let codes = encode(obj).map_err(|reason| self.mismatch(path, reason))?;
            return Ok(Source::Codes { codes, dtype: leaf.dtype });
        }
        let items = match obj.cast::<PyString>() {
            Ok(_) => Err(()),
            Err(_) => obj.try_iter().map_err(|_| ()),
        };
        let items =
            items.map_err(|_| self.mismatch(path, format!("expected a batch of str, got {}", type_name(obj))))?;
        let mut codes = Vec::new();
        let mut count = 0;
        for (b, item) in items.enumerate() {
            let item = item.map_err(|e| self.mismatch(path, e.to_string()))?;
            let mut element = path.to_vec();
            element.push(Key::Index(b));
            codes.extend(encode(&item).map_err(|reason| self.mismatch(&element, reason))?);
            count += 1;
        }
        self.agree_batch(index, count, path, resolved)?;
        Ok(Source::Codes { codes, dtype: leaf.dtype })
    }

    /// Checks that leaf `index`'s batch of `got` agrees with the batch size
    /// set so far (by `out`, or by the first batched leaf), or sets it.
    fn agree_batch(&self, index: usize, got: usize, path: &[Key], resolved: &mut Resolved<'_>) -> Result<(), Error> {
        match resolved.batch {
            None => (resolved.batch, resolved.batch_leaf) = (Some(got), Some(index)),
            Some(size) if size != got => {
                let reason = match resolved.batch_leaf {
                    Some(first) => {
                        let first = format_path(&self.root(), &self.layout.leaves[first].path);
                        format!("expected a batch of {size} (the batch size of {first}), got {got}")
                    }
                    None => format!("expected a batch of {size}, got {got}"),
                };
                return Err(self.mismatch(path, reason));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// What checks element `index` (C order, batch axis included) of
    /// `leaf`'s source and gives the value as the leaf stores it: it must
    /// fit the leaf's dtype and satisfy the leaf's rule (ranges, {0, 1},
    /// bounds if asked).
    pub fn checker<'l>(
        &'l self,
        leaf: &'l Leaf,
        check_bounds: bool,
    ) -> impl Fn(usize, Value) -> Result<Value, Error> + 'l {
        // Per leaf, not per element: this runs for every value stored.
        let per_obs = leaf.len().max(1);
        let rules = leaf.checks_values(check_bounds);
        move |index, value| {
            let Some(stored) = leaf.dtype.cast(value) else {
                return Err(self.element_error(leaf, index, format!("{value} does not fit {}", leaf.dtype)));
            };
            if rules {
                let element = if index < per_obs { index } else { index % per_obs };
                leaf.check(element, stored).map_err(|reason| self.element_error(leaf, index, reason))?;
            }
            Ok(stored)
        }
    }

    /// The error for element `index` (C order, batch axis included) of
    /// `leaf`'s source, with its full index: `obs['a'][3, 1]`.
    #[cold]
    fn element_error(&self, leaf: &Leaf, index: usize, reason: String) -> Error {
        let per_obs = leaf.len().max(1);
        let element = match self.batch {
            Batch::One => leaf.element_index(index),
            _ if leaf.shape.is_empty() => format!("[{}]", index / per_obs),
            _ => {
                let inner = leaf.element_index(index % per_obs);
                format!("[{}, {}", index / per_obs, &inner[1..])
            }
        };
        Error::Mismatch { path: format_path(&self.root(), &leaf.path) + &element, reason }
    }
}

/// A batch as `Layout.flatten_batch` takes it, resolved: a list of
/// observations (one read each), or one structure whose leaves carry a
/// leading batch axis. `rows`, when the destination sets the batch size,
/// is checked here. Returns the reads and the batch size.
pub fn resolve_batch<'a, 'py>(
    reader: impl Fn(Option<usize>, Batch) -> Reader<'a>,
    obs: &Bound<'py, PyAny>,
    rows: Option<usize>,
) -> Result<(Vec<(Reader<'a>, Resolved<'py>)>, usize), Error> {
    let Ok(list) = obs.cast::<PyList>() else {
        let reader = reader(None, rows.map_or(Batch::Any, Batch::Of));
        let resolved = reader.resolve(obs)?;
        let size = resolved.batch_size();
        return Ok((vec![(reader, resolved)], size));
    };
    if let Some(rows) = rows.filter(|&rows| rows != list.len()) {
        let reason = format!("expected a batch of {rows}, got {}", list.len());
        return Err(Error::Mismatch { path: reader(None, Batch::One).name.to_string(), reason });
    }
    let mut items = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let reader = reader(Some(i), Batch::One);
        let resolved = reader.resolve(&item)?;
        items.push((reader, resolved));
    }
    Ok((items, list.len()))
}

/// A batched shape for messages: `(4, 2)`, or `(B, 2)` while the batch
/// size is unknown.
fn batch_shape(batch: Option<usize>, leaf_shape: &[usize]) -> String {
    let size = batch.map_or_else(|| "B".to_string(), |b| b.to_string());
    let dims: Vec<String> = std::iter::once(size).chain(leaf_shape.iter().map(usize::to_string)).collect();
    match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    }
}

fn numpy_asarray(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(ASARRAY.get_or_try_init(py, || py.import("numpy")?.getattr("asarray").map(Bound::unbind))?.bind(py))
}

/// What `obj` holds, as a source: Python numbers are read directly, numpy
/// arrays are used as they are, anything else goes through `numpy.asarray`.
fn read_source<'py>(obj: &Bound<'py, PyAny>) -> Result<Source<'py>, String> {
    let py = obj.py();
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        let dtype = dtype_of(&array.dtype()).map_err(|d| format!("got an array of unsupported {d}"))?;
        return Ok(Source::Array { array: array.clone(), dtype, weak: false });
    }
    if obj.is_instance_of::<PyBool>() {
        let value = Value::Int(obj.is_truthy().unwrap_or(false) as i128);
        return Ok(Source::Scalar { value, dtype: DType::Bool, weak: true });
    }
    if obj.is_instance_of::<PyInt>() {
        // i64 first: with the limited API an i128 is read through several
        // int operations.
        let value = match obj.extract::<i64>() {
            Ok(value) => value as i128,
            Err(_) => obj.extract::<i128>().map_err(|_| format!("{obj} is too large"))?,
        };
        return Ok(Source::Scalar { value: Value::Int(value), dtype: DType::I64, weak: true });
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        let value = obj.extract::<f64>().map_err(|e| e.to_string())?;
        return Ok(Source::Scalar { value: Value::Float(value), dtype: DType::F64, weak: true });
    }
    // SAFETY: the type object is numpy's static `generic` scalar type.
    let generic = unsafe { npyffi::get_type_object(py, npyffi::NpyTypes::PyGenericArrType_Type) };
    // SAFETY: both pointers are valid type objects / live objects.
    if unsafe { pyo3::ffi::PyObject_TypeCheck(obj.as_ptr(), generic) } != 0 {
        return read_numpy_scalar(obj);
    }
    let array = numpy_asarray(py)
        .and_then(|asarray| asarray.call1((obj,)))
        .map_err(|_| format!("expected an array, got {}", type_name(obj)))?;
    let array =
        array.cast_into::<PyUntypedArray>().map_err(|_| format!("expected an array, got {}", type_name(obj)))?;
    let dtype = dtype_of(&array.dtype()).map_err(|_| format!("expected numbers, got {}", type_name(obj)))?;
    Ok(Source::Array { array, dtype, weak: true })
}

fn read_numpy_scalar<'py>(obj: &Bound<'py, PyAny>) -> Result<Source<'py>, String> {
    let py = obj.py();
    // SAFETY: `obj` is a numpy scalar; DescrFromScalar returns a new
    // reference to its dtype.
    let descr: Bound<'py, PyArrayDescr> = unsafe {
        let ptr = PY_ARRAY_API.PyArray_DescrFromScalar(py, obj.as_ptr());
        Bound::from_owned_ptr_or_err(py, ptr as *mut pyo3::ffi::PyObject)
            .map_err(|e| e.to_string())?
            .cast_into_unchecked()
    };
    let dtype = dtype_of(&descr).map_err(|d| format!("got a scalar of unsupported {d}"))?;
    let mut buf = [0u8; 8];
    // SAFETY: the scalar's dtype is one of ours, at most 8 bytes, so its
    // value fits `buf`; ScalarAsCtype copies exactly itemsize bytes.
    unsafe { PY_ARRAY_API.PyArray_ScalarAsCtype(py, obj.as_ptr(), buf.as_mut_ptr().cast()) };
    Ok(Source::Scalar { value: dtype.read(&buf), dtype, weak: false })
}
