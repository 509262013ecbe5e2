//! A block's rows of a vector env's shared arrays, as the bindings that
//! step envs (`env_block`, `episode_rows`) hold them: per-row cells, the
//! block's span of every array that `pufferrs_core::episodes` writes, and
//! the writer of observations into a row.

use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use pufferrs_core::dtype::DType;
use pufferrs_core::episodes::Rows;
use pufferrs_core::error::Error;

use crate::errors::{Raise, type_name};
use crate::flatten::Batch;
use crate::layout::PyLayout;
use crate::numpy_arrays::{dtype_of, row_start, strided};
use crate::store::store;
use crate::tree::Tree;

/// The elements `first, first + 1, ...` of one array of the buffers: for
/// each, the address of its `bytes` bytes.
pub(crate) struct Cells {
    /// Keeps the memory that `starts` points into alive.
    _array: Py<PyUntypedArray>,
    pub(crate) starts: Vec<*mut u8>,
    pub(crate) bytes: usize,
}

// SAFETY: `starts` point into memory that `_array` keeps alive; they are
// only used by the bindings' methods, which run with the GIL held, so no
// two threads use them at once.
unsafe impl Send for Cells {}
// SAFETY: as above.
unsafe impl Sync for Cells {}

impl Cells {
    /// Rows `first..first + count` of `arrays[name]`, checked to be a
    /// writeable array of `dtype` whose rows are C-contiguous and `bytes`
    /// long.
    pub(crate) fn new(
        arrays: &Bound<'_, PyDict>,
        name: &str,
        dtype: DType,
        bytes: usize,
        first: usize,
        count: usize,
    ) -> PyResult<Cells> {
        let refuse = |reason: String| Error::Buffers(format!("{name}: {reason}"));
        let array = arrays
            .get_item(name)?
            .ok_or_else(|| refuse("missing".into()))
            .raise()?
            .cast_into::<PyUntypedArray>()
            .map_err(|e| refuse(format!("expected a numpy array, got {}", type_name(e.into_inner().as_any()))))
            .raise()?;
        if dtype_of(&array.dtype()) != Ok(dtype) {
            return Err(refuse(format!("expected an array of {}", dtype.name()))).raise();
        }
        let rows = array.shape().first().copied().unwrap_or(0);
        if first + count > rows {
            return Err(refuse(format!("rows {first}..{} do not fit its {rows} rows", first + count))).raise();
        }
        let starts = (first..first + count)
            .map(|i| row_start(&array, Some(i as i128), bytes).map_err(|e| refuse(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .raise()?;
        Ok(Cells { _array: array.unbind(), starts, bytes })
    }

    pub(crate) fn row(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: `row_start` checked that `bytes` writeable bytes start
        // there, kept alive by `_array`; `&mut self` makes this the only
        // reference made through `self`. Other views of the buffers are
        // numpy arrays, read and written through raw pointers, and not
        // while this method runs: the GIL is held.
        unsafe { std::slice::from_raw_parts_mut(self.starts[i], self.bytes) }
    }

    pub(crate) fn bytes(&self, i: usize) -> &[u8] {
        // SAFETY: as in `row`; `&self` rules out a mutable slice made
        // through `self` meanwhile.
        unsafe { std::slice::from_raw_parts(self.starts[i], self.bytes) }
    }

    /// The address of the first cell, checked to be followed by the others
    /// with no gap (one span) and aligned for `T`.
    pub(crate) fn span<T>(&self, name: &str) -> PyResult<*mut T> {
        let first = self.starts.first().copied().unwrap_or(std::ptr::null_mut());
        let contiguous = self.starts.iter().enumerate().all(|(i, &start)| start == first.wrapping_add(i * self.bytes));
        if self.starts.is_empty() || !contiguous || (first as usize) % std::mem::align_of::<T>() != 0 {
            return Err(Error::Buffers(format!("{name}: the block's rows must be one aligned span"))).raise();
        }
        Ok(first.cast())
    }
}

/// The block's rows of every array the episode bookkeeping writes, each one
/// span (as `RolloutBuffers` lays them out).
pub(crate) struct BlockRows {
    /// Keep the memory that the spans point into alive.
    _cells: Vec<Cells>,
    count: usize,
    row_bytes: usize,
    observations: *mut u8,
    final_observations: *mut u8,
    rewards: *mut f32,
    terminals: *mut u8,
    truncations: *mut u8,
    masks: *mut u8,
    episode_returns: *mut f64,
    episode_lengths: *mut i64,
}

// SAFETY: as for `Cells`: the spans are kept alive by `_cells` and only
// used with the GIL held.
unsafe impl Send for BlockRows {}
// SAFETY: as above.
unsafe impl Sync for BlockRows {}

impl BlockRows {
    /// Rows `first..first + count` of `arrays` (by their
    /// `RolloutBuffers.array` names), observation rows `row_bytes` long.
    pub(crate) fn new(arrays: &Bound<'_, PyDict>, first: usize, count: usize, row_bytes: usize) -> PyResult<Self> {
        let cells = |name: &str, dtype: DType, bytes: usize| Cells::new(arrays, name, dtype, bytes, first, count);
        let observations = cells("observations", DType::U8, row_bytes)?;
        let final_observations = cells("final_observations", DType::U8, row_bytes)?;
        let rewards = cells("rewards", DType::F32, 4)?;
        let terminals = cells("terminals", DType::Bool, 1)?;
        let truncations = cells("truncations", DType::Bool, 1)?;
        let masks = cells("masks", DType::Bool, 1)?;
        let episode_returns = cells("episode_returns", DType::F64, 8)?;
        let episode_lengths = cells("episode_lengths", DType::I64, 8)?;
        Ok(BlockRows {
            count,
            row_bytes,
            observations: observations.span("observations")?,
            final_observations: final_observations.span("final_observations")?,
            rewards: rewards.span("rewards")?,
            terminals: terminals.span("terminals")?,
            truncations: truncations.span("truncations")?,
            masks: masks.span("masks")?,
            episode_returns: episode_returns.span("episode_returns")?,
            episode_lengths: episode_lengths.span("episode_lengths")?,
            _cells: vec![
                observations,
                final_observations,
                rewards,
                terminals,
                truncations,
                masks,
                episode_returns,
                episode_lengths,
            ],
        })
    }

    pub(crate) fn rows(&mut self) -> Rows<'_> {
        let (n, bytes) = (self.count, self.count * self.row_bytes);
        // SAFETY: `span` checked that each array's `n` rows are one span,
        // aligned for its type, which `_cells` keeps mapped; `&mut self`
        // makes these the only references made through `self`, and the
        // spans are distinct arrays. Other views of the buffers are numpy
        // arrays, not used while the GIL is held here; the bool arrays'
        // bytes are read as bytes, never as `bool`.
        unsafe {
            Rows {
                row_bytes: self.row_bytes,
                observations: std::slice::from_raw_parts_mut(self.observations, bytes),
                final_observations: std::slice::from_raw_parts_mut(self.final_observations, bytes),
                rewards: std::slice::from_raw_parts_mut(self.rewards, n),
                terminals: std::slice::from_raw_parts_mut(self.terminals, n),
                truncations: std::slice::from_raw_parts_mut(self.truncations, n),
                masks: std::slice::from_raw_parts_mut(self.masks, n),
                episode_returns: std::slice::from_raw_parts_mut(self.episode_returns, n),
                episode_lengths: std::slice::from_raw_parts_mut(self.episode_lengths, n),
            }
        }
    }
}

/// Writes observations into rows with a layout's flatten: a bad observation
/// changes nothing.
pub(crate) struct RowWriter {
    layout: Py<PyLayout>,
    /// The dtype and shape of the layout's one leaf when the row is that
    /// leaf as-is (a plain Box, values unchecked): an array of exactly that
    /// dtype and shape is then copied without the general resolve and check.
    plain: Option<(DType, Vec<usize>)>,
    /// Whether observations are checked against their Box bounds too.
    check_bounds: bool,
}

impl RowWriter {
    pub(crate) fn new(layout: Bound<'_, PyLayout>, check_bounds: bool) -> RowWriter {
        let reader = layout.get().reader(None, Batch::One);
        // Bools are normalised to 0/1 by `store`, so they take its path.
        let plain = match (reader.tree, reader.layout.leaves.as_slice()) {
            (Tree::Leaf(_), [leaf])
                if leaf.offset == 0
                    && leaf.nbytes() == reader.layout.row_bytes
                    && leaf.dtype != DType::Bool
                    && !leaf.checks_values(check_bounds) =>
            {
                Some((leaf.dtype, leaf.shape.clone()))
            }
            _ => None,
        };
        RowWriter { layout: layout.unbind(), plain, check_bounds }
    }

    pub(crate) fn row_bytes(&self) -> usize {
        self.layout.get().core().row_bytes
    }

    /// Flattens `obs` into `row`, as `Layout.flatten_into` does.
    pub(crate) fn write(&self, py: Python<'_>, obs: &Bound<'_, PyAny>, row: &mut [u8]) -> PyResult<()> {
        if let (Some((dtype, shape)), Ok(array)) = (&self.plain, obs.cast::<PyUntypedArray>()) {
            let source = strided(array, *dtype);
            let span = (row.as_ptr() as usize, row.as_ptr() as usize + row.len());
            if array.shape() == shape.as_slice() && dtype_of(&array.dtype()) == Ok(*dtype) && !source.overlaps(span) {
                // What `store` does for this case, minus its walk: the
                // values need no check and the row is the leaf.
                source.store_as(*dtype, row);
                return Ok(());
            }
        }
        let start = row.as_mut_ptr();
        let layout = self.layout.get();
        let reader = layout.reader(None, Batch::One);
        let resolved = reader.resolve(obs).raise()?;
        // SAFETY: `start` addresses the row's `row_bytes` writeable bytes,
        // kept mapped by the caller; the slice is not used again during the
        // store, so no Rust reference reads or writes those bytes meanwhile.
        unsafe { store(py, layout.core(), &[(reader, resolved)], &[start], self.check_bounds) }.raise()
    }
}
