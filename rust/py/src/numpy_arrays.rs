//! The few places where pufferrs touches numpy's C API: reading an array's
//! memory, and making arrays that view memory some other array owns.

use numpy::npyffi::{self, NPY_ARRAY_WRITEABLE, PY_ARRAY_API, npy_intp};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

use pufferrs_core::copy::{Strided, is_c_contiguous};
use pufferrs_core::dtype::DType;
use pufferrs_core::error::Error;

/// The core dtype of a numpy dtype, or a description of why there is none.
pub fn dtype_of(descr: &Bound<'_, PyArrayDescr>) -> Result<DType, String> {
    let unsupported = || format!("dtype {}", descr.str().map(|s| s.to_string()).unwrap_or_default());
    if descr.is_native_byteorder() == Some(false) {
        return Err(format!("{} (non-native byte order)", unsupported()));
    }
    let dtype = match (descr.kind(), descr.itemsize()) {
        (b'b', 1) => DType::Bool,
        (b'i', 1) => DType::I8,
        (b'i', 2) => DType::I16,
        (b'i', 4) => DType::I32,
        (b'i', 8) => DType::I64,
        (b'u', 1) => DType::U8,
        (b'u', 2) => DType::U16,
        (b'u', 4) => DType::U32,
        (b'u', 8) => DType::U64,
        (b'f', 2) => DType::F16,
        (b'f', 4) => DType::F32,
        (b'f', 8) => DType::F64,
        _ => return Err(unsupported()),
    };
    Ok(dtype)
}

/// Refuses rows whose dtype is not plain data. Rows may be numeric, bool
/// or raw bytes (`V`) of any width; never a dtype that holds references
/// (object, or a structure with an object field), whose bytes are pointers
/// that a write would corrupt and a view would leak, nor strings, dates or
/// structures, whose bytes mean something else than a row. `what` names
/// the array in the message.
pub fn check_rows_dtype(what: &str, descr: &Bound<'_, PyArrayDescr>) -> Result<(), Error> {
    let plain = !descr.has_object()
        && !descr.has_fields()
        && !descr.has_subarray()
        && matches!(descr.kind(), b'b' | b'i' | b'u' | b'f' | b'c' | b'V');
    if plain {
        return Ok(());
    }
    let name = descr.str().map(|s| s.to_string()).unwrap_or_default();
    Err(Error::Row(format!("{what}: dtype {name} cannot hold rows (rows are numbers, bools or raw bytes)")))
}

pub fn descr<'py>(py: Python<'py>, dtype: DType) -> PyResult<Bound<'py, PyArrayDescr>> {
    PyArrayDescr::new(py, dtype.name())
}

fn data(array: &Bound<'_, PyUntypedArray>) -> *mut u8 {
    // SAFETY: `array` is a live ndarray, so its object header is readable.
    unsafe { (*array.as_array_ptr()).fields.data.cast::<u8>() }
}

pub fn is_writeable(array: &Bound<'_, PyUntypedArray>) -> bool {
    // SAFETY: as in `data`.
    unsafe { (*array.as_array_ptr()).fields.flags & NPY_ARRAY_WRITEABLE != 0 }
}

/// The array's memory as the core sees it; valid while `array` is borrowed.
pub fn strided<'a>(array: &'a Bound<'_, PyUntypedArray>, dtype: DType) -> Strided<'a> {
    // SAFETY: numpy guarantees that data, shape and strides describe readable
    // memory owned (directly or through its base) by `array`, which the
    // borrow keeps alive for 'a.
    unsafe { Strided::new(data(array), dtype, array.shape(), array.strides()) }
}

/// Where one row of `out` starts: the whole array when `index` is None, else
/// `out[index]` (negative from the end), checked to be writeable, of a
/// plain dtype, C-contiguous and `row_bytes` long. The `row_bytes` bytes
/// from there stay valid while `out` is alive.
pub fn row_start(out: &Bound<'_, PyUntypedArray>, index: Option<i128>, row_bytes: usize) -> Result<*mut u8, Error> {
    if !is_writeable(out) {
        return Err(Error::Row("out is read-only".into()));
    }
    let dtype = out.dtype();
    check_rows_dtype("out", &dtype)?;
    let itemsize = dtype.itemsize();
    let (shape, strides) = (out.shape(), out.strides());
    let (offset, shape, strides) = match index {
        None => (0, shape, strides),
        Some(_) if shape.is_empty() => return Err(Error::Row("index given but out is 0-d".into())),
        Some(i) => {
            let rows = shape[0] as i128;
            let row = if i < 0 { i + rows } else { i };
            if !(0..rows).contains(&row) {
                return Err(Error::Row(format!("index {i} is out of range for {rows} rows")));
            }
            // numpy keeps every row inside the array, so this offset fits.
            (row as isize * strides[0], &shape[1..], &strides[1..])
        }
    };
    let nbytes = shape.iter().product::<usize>() * itemsize;
    if nbytes != row_bytes {
        return Err(Error::Row(format!(
            "a row of out holds {nbytes} bytes (shape {shape:?}, itemsize {itemsize}); the layout needs {row_bytes}"
        )));
    }
    if !is_c_contiguous(shape, strides, itemsize) {
        return Err(Error::Row("a row of out must be C-contiguous".into()));
    }
    // SAFETY: the index was checked against the first axis, so the row
    // starts inside `out`'s data.
    Ok(unsafe { data(out).offset(offset) })
}

/// A new zero-filled C-ordered array.
pub fn zeros<'py>(
    py: Python<'py>,
    dtype: &Bound<'py, PyArrayDescr>,
    dims: &[usize],
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let mut dims: Vec<npy_intp> = dims.iter().map(|&d| d as npy_intp).collect();
    // SAFETY: PyArray_Zeros steals a reference to the descr, which we give it
    // by `into_ptr` on a clone; `dims` outlives the call. It returns a new
    // reference or NULL with an exception set.
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_Zeros(
            py,
            dims.len() as i32,
            dims.as_mut_ptr(),
            dtype.clone().into_ptr() as *mut npyffi::PyArray_Descr,
            0,
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// A new array of `dtype` and `dims` holding a copy of `bytes` (C order,
/// exactly the array's size).
pub fn copy_of<'py>(
    py: Python<'py>,
    dtype: &Bound<'py, PyArrayDescr>,
    dims: &[usize],
    bytes: &[u8],
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let array = zeros(py, dtype, dims)?;
    let nbytes = dims.iter().product::<usize>() * dtype.itemsize();
    assert_eq!(bytes.len(), nbytes, "copy_of: bytes do not fill the array");
    // SAFETY: `array` is new, C-ordered and `nbytes` long, so its data
    // holds `bytes`; nothing else references it yet.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data(&array), nbytes) };
    Ok(array)
}

/// An array of `dtype` over `base`'s memory at `byte_offset`, with the
/// given shape and byte strides; it keeps `base` alive and is writeable when
/// `base` is.
///
/// # Safety
/// Every element the shape and strides address, starting `byte_offset`
/// bytes into `base`'s data, must lie inside `base`'s memory.
pub unsafe fn view<'py>(
    base: &Bound<'py, PyUntypedArray>,
    dtype: &Bound<'py, PyArrayDescr>,
    byte_offset: usize,
    dims: &[usize],
    strides: &[isize],
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the caller vouches that the elements lie inside `base`'s
    // memory, which `base` keeps valid while it lives.
    // `wrapping_add`: an empty array's offset may point past its (empty)
    // memory, which is fine as long as nothing is read there.
    unsafe { view_of(base.as_any(), data(base).wrapping_add(byte_offset), dtype, dims, strides, is_writeable(base)) }
}

/// An array of `dtype` over memory at `ptr` that `owner` keeps valid, with
/// the given shape and byte strides. The array holds a reference to `owner`
/// (its numpy base), so the memory outlives every view of it. The one place
/// pufferrs makes arrays over memory it does not allocate through numpy.
///
/// # Safety
/// Every element the shape and strides address from `ptr` must lie in
/// memory that stays valid, and writeable if `writeable`, as long as
/// `owner` is alive.
pub unsafe fn view_of<'py>(
    owner: &Bound<'py, PyAny>,
    ptr: *mut u8,
    dtype: &Bound<'py, PyArrayDescr>,
    dims: &[usize],
    strides: &[isize],
    writeable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    let mut dims: Vec<npy_intp> = dims.iter().map(|&d| d as npy_intp).collect();
    let mut strides: Vec<npy_intp> = strides.to_vec();
    let flags = if writeable { NPY_ARRAY_WRITEABLE } else { 0 };
    // SAFETY: the caller vouches for the memory. PyArray_NewFromDescr steals
    // the descr reference given by `into_ptr` and returns a new reference or
    // NULL with an exception set; SetBaseObject steals the reference to
    // `owner` given by `into_ptr`, which keeps the memory valid as long as
    // the array (numpy releases the reference if it fails).
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            dtype.clone().into_ptr() as *mut npyffi::PyArray_Descr,
            dims.len() as i32,
            dims.as_mut_ptr(),
            strides.as_mut_ptr(),
            ptr as *mut std::ffi::c_void,
            flags,
            std::ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, ptr)?;
        if PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            array.as_ptr() as *mut npyffi::PyArrayObject,
            owner.clone().into_ptr(),
        ) < 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}
