//! Python observations into rows: walk the structure, resolve each leaf's
//! value, check everything, and only then write. A failure at any step
//! leaves the destination row exactly as it was.

use numpy::npyffi::{self, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};

use pufferrs_core::copy::Strided;
use pufferrs_core::dtype::{DType, Value};
use pufferrs_core::error::Error;
use pufferrs_core::layout::{Key, Layout, Leaf, Rule, format_path, format_shape, quote};

use crate::errors::type_name;
use crate::numpy_arrays::{dtype_of, strided};
use crate::tree::Tree;

/// Copies larger than this run with the GIL released.
const DETACH_BYTES: usize = 64 * 1024;

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

/// One observation (or a batch of them, along a leading axis), each leaf's
/// source resolved against the layout, in leaf order.
pub struct Resolved<'py> {
    sources: Vec<Source<'py>>,
    /// `Some(B)` when every source carries a leading batch axis of size B.
    batch: Option<usize>,
}

impl Resolved<'_> {
    pub fn is_batched(&self) -> bool {
        self.batch.is_some()
    }

    /// The batch size; 0 for a batched layout without leaves.
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
    /// Whether leaves carry a leading batch axis.
    pub batched: bool,
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
        let mut resolved = Resolved { sources: Vec::with_capacity(self.layout.leaves.len()), batch: None };
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
                let source = self.source(&self.layout.leaves[*i], obj, path, &mut out.batch)?;
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

    /// Resolves one leaf's value and checks its shape and dtype.
    fn source<'py>(
        &self,
        leaf: &Leaf,
        obj: &Bound<'py, PyAny>,
        path: &[Key],
        batch: &mut Option<usize>,
    ) -> Result<Source<'py>, Error> {
        if let Rule::Text { .. } = leaf.rule {
            return self.text_source(leaf, obj, path, batch);
        }
        let source = read_source(obj).map_err(|reason| self.mismatch(path, reason))?;
        let shape: &[usize] = match &source {
            Source::Array { array, .. } => array.shape(),
            Source::Scalar { .. } | Source::Codes { .. } => &[],
        };
        let expected: Vec<usize> = if self.batched {
            let b = *batch.get_or_insert(shape.first().copied().unwrap_or(0));
            std::iter::once(b).chain(leaf.shape.iter().copied()).collect()
        } else {
            leaf.shape.clone()
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
    /// batched.
    fn text_source<'py>(
        &self,
        leaf: &Leaf,
        obj: &Bound<'py, PyAny>,
        path: &[Key],
        batch: &mut Option<usize>,
    ) -> Result<Source<'py>, Error> {
        let encode = |item: &Bound<'py, PyAny>| -> Result<Vec<Value>, String> {
            let text = item.cast::<PyString>().map_err(|_| format!("expected a str, got {}", type_name(item)))?;
            leaf.encode_text(&text.to_cow().map_err(|e| e.to_string())?)
        };
        if !self.batched {
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
        let expected = *batch.get_or_insert(count);
        if count != expected {
            return Err(self.mismatch(path, format!("expected a batch of {expected} str, got {count}")));
        }
        Ok(Source::Codes { codes, dtype: leaf.dtype })
    }

    /// Checks every value the way it will be stored: it must fit the leaf's
    /// dtype and satisfy the leaf's rule (ranges, {0, 1}, bounds if asked).
    pub fn check(&self, resolved: &Resolved<'_>, check_bounds: bool) -> Result<(), Error> {
        for (leaf, source) in self.layout.leaves.iter().zip(&resolved.sources) {
            let converts = source.dtype() != leaf.dtype;
            if !converts && !leaf.checks_values(check_bounds) {
                continue;
            }
            let check = |index: usize, value: Value| -> Result<(), Error> {
                let fail = |reason: String| {
                    let per_obs = leaf.len().max(1);
                    let element = match resolved.batch {
                        Some(_) if leaf.shape.is_empty() => format!("[{}]", index / per_obs),
                        Some(_) => {
                            let inner = leaf.element_index(index % per_obs);
                            format!("[{}, {}", index / per_obs, &inner[1..])
                        }
                        None => leaf.element_index(index),
                    };
                    Error::Mismatch { path: format_path(&self.root(), &leaf.path) + &element, reason }
                };
                let stored =
                    leaf.dtype.cast(value).ok_or_else(|| fail(format!("{value} does not fit {}", leaf.dtype)))?;
                if leaf.checks_values(check_bounds) {
                    leaf.check(index % leaf.len().max(1), stored).map_err(fail)?;
                }
                Ok(())
            };
            match source {
                Source::Scalar { value, .. } => check(0, *value)?,
                Source::Array { array, dtype, .. } => strided(array, *dtype).try_for_each_value(check)?,
                Source::Codes { .. } => {}
            }
        }
        Ok(())
    }

    /// Writes checked sources into `rows`: one row, or one per batch entry.
    pub fn write(&self, py: Python<'_>, resolved: &Resolved<'_>, rows: &mut [&mut [u8]]) {
        let jobs: Vec<Job<'_>> = self
            .layout
            .leaves
            .iter()
            .zip(&resolved.sources)
            .map(|(leaf, source)| match source {
                Source::Array { array, dtype, .. } => Job::Array(leaf, strided(array, *dtype)),
                Source::Scalar { value, .. } => Job::Scalar(leaf, *value),
                Source::Codes { codes, .. } => Job::Codes(leaf, codes),
            })
            .collect();
        let total = rows.len() * self.layout.row_bytes;
        let work = Work { layout: self.layout, jobs, batched: resolved.batch.is_some() };
        if total > DETACH_BYTES {
            let mut work = AssertSend((work, rows));
            py.detach(move || {
                let AssertSend((work, rows)) = &mut work;
                work.run(rows)
            });
        } else {
            work.run(rows);
        }
    }
}

enum Job<'a> {
    Array(&'a Leaf, Strided<'a>),
    Scalar(&'a Leaf, Value),
    Codes(&'a Leaf, &'a [Value]),
}

struct Work<'a> {
    layout: &'a Layout,
    jobs: Vec<Job<'a>>,
    batched: bool,
}

impl Work<'_> {
    fn run(&self, rows: &mut [&mut [u8]]) {
        for (b, row) in rows.iter_mut().enumerate() {
            for gap in &self.layout.padding {
                row[gap.clone()].fill(0);
            }
            for job in &self.jobs {
                match job {
                    Job::Scalar(leaf, value) => {
                        let stored = leaf.dtype.cast(*value).expect("checked by Reader::check");
                        leaf.dtype.write(stored, &mut row[leaf.offset..]);
                    }
                    Job::Codes(leaf, codes) => {
                        let (len, size) = (leaf.len(), leaf.dtype.itemsize());
                        let codes = if self.batched { &codes[b * len..(b + 1) * len] } else { codes };
                        for (i, &code) in codes.iter().enumerate() {
                            leaf.dtype.write(code, &mut row[leaf.offset + i * size..leaf.offset + (i + 1) * size]);
                        }
                    }
                    Job::Array(leaf, source) => {
                        let source = if self.batched { source.at(b) } else { *source };
                        let dst = &mut row[leaf.offset..leaf.offset + leaf.nbytes()];
                        if source.dtype == leaf.dtype {
                            source.copy_to(dst);
                        } else {
                            source.convert_to(leaf.dtype, dst);
                        }
                    }
                }
            }
        }
    }
}

/// Moves borrowed work across `py.detach`.
struct AssertSend<T>(T);
// SAFETY: the work only reads numpy memory kept alive by the `Resolved`
// sources and writes the caller's rows; both outlive the detached closure,
// which runs on this same thread. No Python object is touched in it.
unsafe impl<T> Send for AssertSend<T> {}

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
        let value = obj.extract::<i128>().map_err(|_| format!("{obj} is too large"))?;
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
