//! GAE over numpy arrays: every argument is checked and viewed, without a
//! copy, as the core's strided matrix, then one core call fills `out`.

use numpy::{PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

use pufferrs_core::dtype::DType;
use pufferrs_core::error::Error;
use pufferrs_core::gae::{Matrix, MatrixMut, Steps, StoredOutcomes, advantages, fold_outcomes};

use crate::errors::{Raise, type_name};
use crate::numpy_arrays::{dtype_of, is_writeable};

/// Where an array's elements lie: the lowest one's address, how many
/// elements from there its strides reach, and element `(0, 0)`'s index.
struct Span {
    start: *mut u8,
    len: usize,
    origin: usize,
    shape: [usize; 2],
    strides: [isize; 2],
}

impl Span {
    fn bytes(&self, itemsize: usize) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len * itemsize
    }
}

/// `obj` checked to be a numpy array of `dtype` with `ndim` dimensions
/// (1: an `(N,)` column read as `(N, 1)`), aligned, with strides that are
/// whole elements; `name` is the argument's name in errors.
fn span(name: &str, obj: &Bound<'_, PyAny>, dtype: DType, ndim: usize) -> Result<Span, Error> {
    let expected = || format!("a {ndim}-d numpy array of {}", dtype.name());
    let array = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| Error::Row(format!("{name}: expected {}, got {}", expected(), type_name(obj))))?;
    let got = dtype_of(&array.dtype());
    if got != Ok(dtype) || array.ndim() != ndim {
        let shown = got.map_or_else(|unsupported| unsupported, |d| d.name().to_string());
        return Err(Error::Row(format!("{name}: expected {}, got a {}-d array of {shown}", expected(), array.ndim())));
    }
    let itemsize = dtype.itemsize() as isize;
    if !array.is_aligned() || array.strides().iter().any(|s| s % itemsize != 0) {
        return Err(Error::Row(format!("{name}: the array is not aligned to its items; pass a copy")));
    }
    let (shape, strides) = match (array.shape(), array.strides()) {
        (&[n], &[s]) => ([n, 1], [s / itemsize, 0]),
        (&[n, t], &[s0, s1]) => ([n, t], [s0 / itemsize, s1 / itemsize]),
        _ => unreachable!("ndim was checked"),
    };
    let start = data(obj, dtype);
    if shape.contains(&0) {
        return Ok(Span { start, len: 0, origin: 0, shape, strides });
    }
    // numpy keeps every element of an array inside its memory, so these
    // extents are small and the products cannot overflow.
    let (mut lo, mut hi) = (0isize, 0isize);
    for (&dim, &stride) in shape.iter().zip(&strides) {
        let extent = (dim as isize - 1) * stride;
        lo += extent.min(0);
        hi += extent.max(0);
    }
    // SAFETY: `lo` is the offset of the array's lowest element from element
    // (0, 0), inside the array's memory.
    let start = unsafe { start.offset(lo * itemsize) };
    Ok(Span { start, len: (hi - lo + 1) as usize, origin: (-lo) as usize, shape, strides })
}

/// The address of element (0, 0) of an array already checked to hold `dtype`.
fn data(obj: &Bound<'_, PyAny>, dtype: DType) -> *mut u8 {
    match dtype {
        DType::F32 => obj.cast::<PyArrayDyn<f32>>().map(|a| a.data() as *mut u8),
        _ => obj.cast::<PyArrayDyn<bool>>().map(|a| a.data() as *mut u8),
    }
    .expect("the dtype was checked")
}

fn matrix<'a, T: Copy>(name: &str, span: &Span) -> Result<Matrix<'a, T>, Error> {
    // SAFETY: `span` describes elements that numpy keeps inside the array's
    // memory (aligned, checked in `span`), which the caller's borrow of the
    // array keeps readable while the returned matrix is used; the GIL is
    // held throughout, so no Python code writes it meanwhile. Nothing
    // mutable aliases it: `out` was checked to be disjoint from every input.
    let data = unsafe { std::slice::from_raw_parts(span.start as *const T, span.len) };
    Matrix::new(name, data, span.origin, span.shape, span.strides)
}

/// GAE(`gamma`, `gae_lambda`) of `(N, T)` float32 steps: see
/// `pufferrs.advantages.compute_advantages`, which wraps this for tensors.
#[pyfunction]
#[pyo3(signature = (values, bootstrap, rewards, terminals, truncations, gamma, gae_lambda, final_values = None, out = None, masks = None))]
#[allow(clippy::too_many_arguments)]
pub fn gae<'py>(
    values: &Bound<'py, PyAny>,
    bootstrap: &Bound<'py, PyAny>,
    rewards: &Bound<'py, PyAny>,
    terminals: &Bound<'py, PyAny>,
    truncations: &Bound<'py, PyAny>,
    gamma: f64,
    gae_lambda: f64,
    final_values: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
    masks: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = values.py();
    let final_values = final_values.filter(|f| !f.is_none());
    let masks = masks.filter(|m| !m.is_none());
    let mut inputs = vec![
        ("values", values, DType::F32, 2),
        ("bootstrap", bootstrap, DType::F32, 1),
        ("rewards", rewards, DType::F32, 2),
        ("terminals", terminals, DType::Bool, 2),
        ("truncations", truncations, DType::Bool, 2),
    ];
    inputs.extend(final_values.map(|f| ("final_values", f, DType::F32, 2)));
    inputs.extend(masks.map(|m| ("masks", m, DType::Bool, 2)));
    let spans = inputs
        .iter()
        .map(|&(name, obj, dtype, ndim)| span(name, obj, dtype, ndim))
        .collect::<Result<Vec<_>, _>>()
        .raise()?;
    let out = match out.filter(|o| !o.is_none()) {
        Some(out) => out.clone(),
        // SAFETY: numpy allocates the elements, uninitialised: the kernel
        // writes every one of them before the array is returned, and an
        // error drops the array unread.
        None => unsafe { PyArray2::<f32>::new(py, spans[0].shape, false) }.into_any(),
    };
    let out_span = span("out", &out, DType::F32, 2).raise()?;
    if !out.cast::<PyUntypedArray>().is_ok_and(|o| is_writeable(o)) {
        return Err(Error::Row("out: the array is read-only".into())).raise();
    }
    let written = out_span.bytes(4);
    for (span, &(name, _, dtype, _)) in spans.iter().zip(&inputs) {
        let read = span.bytes(dtype.itemsize());
        if !written.is_empty() && read.start < written.end && written.start < read.end {
            return Err(Error::Row(format!("out: overlaps the memory of {name}; pass an array of its own"))).raise();
        }
    }
    let steps = Steps {
        values: matrix("values", &spans[0]).raise()?,
        bootstrap: matrix("bootstrap", &spans[1]).raise()?,
        rewards: matrix("rewards", &spans[2]).raise()?,
        terminals: matrix("terminals", &spans[3]).raise()?,
        truncations: matrix("truncations", &spans[4]).raise()?,
        final_values: final_values.map(|_| matrix("final_values", &spans[5])).transpose().raise()?,
        masks: masks.map(|_| matrix("masks", &spans[spans.len() - 1])).transpose().raise()?,
    };
    // SAFETY: as in `matrix`; `out` is writeable (checked) and disjoint from
    // every input, so this is the only reference to its elements.
    let data = unsafe { std::slice::from_raw_parts_mut(out_span.start as *mut f32, out_span.len) };
    let mut target = MatrixMut::new("out", data, out_span.origin, out_span.shape, out_span.strides).raise()?;
    advantages(&steps, gamma, gae_lambda, &mut target).raise()?;
    Ok(out)
}

/// A writable matrix over `span`, whose array `obj` was checked to be
/// writeable and to share no memory with the other arrays of the call.
fn matrix_mut<'a, T: Copy>(name: &str, span: &Span) -> Result<MatrixMut<'a, T>, Error> {
    // SAFETY: as in `matrix`; the caller checked that the array is
    // writeable and disjoint from every other array it views, so this is
    // the only reference to these elements while it is used.
    let data = unsafe { std::slice::from_raw_parts_mut(span.start as *mut T, span.len) };
    MatrixMut::new(name, data, span.origin, span.shape, span.strides)
}

/// Folds outcomes that arrive after their step was stored into that step
/// of the `(N, T)` `rewards`, `terminals` and `truncations`, in place, by
/// the rule GAE folds masked steps with (see the core's `fold_outcomes`):
/// `later_rewards[k]`, `later_terminals[k]` and `later_truncations[k]` go
/// to step `(rows[k], steps[k])`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn fold_outcomes_into<'py>(
    rewards: &Bound<'py, PyAny>,
    terminals: &Bound<'py, PyAny>,
    truncations: &Bound<'py, PyAny>,
    rows: PyReadonlyArray1<'py, i64>,
    steps: PyReadonlyArray1<'py, i64>,
    later_rewards: PyReadonlyArray1<'py, f32>,
    later_terminals: PyReadonlyArray1<'py, bool>,
    later_truncations: PyReadonlyArray1<'py, bool>,
) -> PyResult<()> {
    let arrays = [
        ("rewards", rewards, DType::F32),
        ("terminals", terminals, DType::Bool),
        ("truncations", truncations, DType::Bool),
    ];
    let mut spans = Vec::with_capacity(3);
    for &(name, obj, dtype) in &arrays {
        let span = span(name, obj, dtype, 2).raise()?;
        if !obj.cast::<PyUntypedArray>().is_ok_and(|o| is_writeable(o)) {
            return Err(Error::Row(format!("{name}: the array is read-only"))).raise();
        }
        let bytes = span.bytes(dtype.itemsize());
        for (other, &(other_name, _, other_dtype)) in spans.iter().zip(&arrays) {
            let theirs = Span::bytes(other, other_dtype.itemsize());
            if !bytes.is_empty() && bytes.start < theirs.end && theirs.start < bytes.end {
                return Err(Error::Row(format!("{name}: overlaps the memory of {other_name}"))).raise();
            }
        }
        spans.push(span);
    }
    let index = |name: &str, values: &PyReadonlyArray1<'py, i64>| -> Result<Vec<usize>, Error> {
        values
            .as_array()
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| Error::Row(format!("{name}: expected indices, got {v}"))))
            .collect()
    };
    let cells: Vec<(usize, usize)> =
        index("rows", &rows).raise()?.into_iter().zip(index("steps", &steps).raise()?).collect();
    let later: Vec<(f32, bool, bool)> = later_rewards
        .as_array()
        .iter()
        .zip(later_terminals.as_array().iter())
        .zip(later_truncations.as_array().iter())
        .map(|((&r, &term), &trunc)| (r, term, trunc))
        .collect();
    let lengths = [rows.len(), steps.len(), later_rewards.len(), later_terminals.len(), later_truncations.len()];
    if lengths.iter().any(|&n| n != lengths[0]) {
        return Err(Error::Row("rows, steps and the later outcomes must have one length".into())).raise();
    }
    let mut stored = StoredOutcomes {
        rewards: matrix_mut("rewards", &spans[0]).raise()?,
        terminals: matrix_mut("terminals", &spans[1]).raise()?,
        truncations: matrix_mut("truncations", &spans[2]).raise()?,
    };
    fold_outcomes(&mut stored, &cells, &later).raise()
}
