//! Resolved observations into rows, step two, all or nothing: every value
//! that must be checked (or that overlaps the rows being written) is read
//! exactly once, checked as it is read, into a staging area, and only then
//! are the rows written. A failure leaves the destination rows exactly as
//! they were; what lands in a row is what was checked, even if another
//! thread rewrites a source meanwhile; and a source that overlaps its
//! destination is read whole before any of it is overwritten (as
//! `numpy.copyto` does).

use pyo3::prelude::*;

use pufferrs_core::copy::Strided;
use pufferrs_core::dtype::Value;
use pufferrs_core::error::Error;
use pufferrs_core::layout::{Layout, Leaf};

use crate::flatten::{Batch, Reader, Resolved, Source};
use crate::numpy_arrays::strided;

/// Stores larger than this run with the GIL released.
const DETACH_BYTES: usize = 64 * 1024;

/// Stores resolved observations into rows, all or nothing: `items` is one
/// batched read for all of `rows`, or one observation per row. Values are
/// checked as they are stored, so this is where a bad value is found.
///
/// # Safety
/// Every pointer in `rows` must address `layout.row_bytes` writeable bytes
/// that the caller keeps alive for the call; no two rows may overlap, and
/// no other Rust reference to them may exist meanwhile.
pub unsafe fn store(
    py: Python<'_>,
    layout: &Layout,
    items: &[(Reader<'_>, Resolved<'_>)],
    rows: &[*mut u8],
    check_bounds: bool,
) -> Result<(), Error> {
    let batched = match items {
        [(reader, resolved)] if reader.batch != Batch::One => {
            if resolved.batch_size() != rows.len() {
                return Err(Error::Row(format!("{} rows for a batch of {}", rows.len(), resolved.batch_size())));
            }
            true
        }
        _ if items.len() != rows.len() => {
            return Err(Error::Row(format!("{} rows for {} observations", rows.len(), items.len())));
        }
        _ => false,
    };
    let row_bytes = layout.row_bytes;
    let first = rows.iter().map(|&p| p as usize).min().unwrap_or(0);
    let last = rows.iter().map(|&p| p as usize).max().unwrap_or(0);
    let extent = (first, last.saturating_add(row_bytes));
    let mut works: Vec<Work<'_>> = items
        .iter()
        .map(|(reader, resolved)| Work::new(reader, resolved, check_bounds, extent))
        .collect::<Result<_, _>>()?;
    if rows.len().saturating_mul(row_bytes) > DETACH_BYTES {
        let mut job = AssertSend((&mut works, rows));
        py.detach(move || {
            let AssertSend((works, rows)) = &mut job;
            // SAFETY: passed on from the caller.
            unsafe { run(works, rows, batched, row_bytes) }
        })
    } else {
        // SAFETY: passed on from the caller.
        unsafe { run(&mut works, rows, batched, row_bytes) }
    }
}

/// Stages every work, then writes every row: `rows` are all for the one
/// work when `batched`, else one per work.
///
/// # Safety
/// As for `store`.
unsafe fn run(works: &mut [Work<'_>], rows: &[*mut u8], batched: bool, row_bytes: usize) -> Result<(), Error> {
    for work in works.iter_mut() {
        work.stage()?;
    }
    for (i, work) in works.iter().enumerate() {
        let rows = if batched { rows } else { &rows[i..i + 1] };
        // SAFETY: the caller vouches for the rows; every staged source was
        // read above, and direct sources do not overlap the rows.
        unsafe { work.write(rows, row_bytes) };
    }
    Ok(())
}

enum Job<'a> {
    /// A value read already; `stage` replaces it by its stored form.
    Scalar(&'a Leaf, Value),
    /// Written straight from the source: any value it holds fits the leaf.
    Direct(&'a Leaf, Strided<'a>),
    /// Read once into the staging area at this byte offset, before any row
    /// is written: its values are checked, or it overlaps the rows.
    Staged(&'a Leaf, Strided<'a>, usize),
}

/// One resolved read, planned: a job per leaf and the staged bytes.
struct Work<'a> {
    reader: &'a Reader<'a>,
    jobs: Vec<Job<'a>>,
    staging: Vec<u8>,
    check_bounds: bool,
}

impl<'a> Work<'a> {
    /// `rows` is the byte range of the rows to be written.
    fn new(
        reader: &'a Reader<'a>,
        resolved: &'a Resolved<'_>,
        check_bounds: bool,
        rows: (usize, usize),
    ) -> Result<Self, Error> {
        let mut staged = 0;
        let jobs = reader
            .layout
            .leaves
            .iter()
            .zip(&resolved.sources)
            .map(|(leaf, source)| match source {
                Source::Scalar { value, .. } => Job::Scalar(leaf, *value),
                Source::Array { array, dtype, .. } => {
                    let source = strided(array, *dtype);
                    let checked = leaf.checks_values(check_bounds) || !leaf.dtype.casts_every(*dtype);
                    if checked || source.overlaps(rows) {
                        let at = staged;
                        staged += source.len() * leaf.dtype.itemsize();
                        Job::Staged(leaf, source, at)
                    } else {
                        Job::Direct(leaf, source)
                    }
                }
            })
            .collect();
        // Staged bytes are at most the rows' own size, but those may be a
        // caller's array too large to hold twice: refuse, do not abort.
        let mut staging = Vec::new();
        staging
            .try_reserve_exact(staged)
            .map_err(|_| Error::Row(format!("no memory for the {staged} bytes of checked values to stage")))?;
        staging.resize(staged, 0);
        Ok(Work { reader, jobs, staging, check_bounds })
    }

    /// Checks every scalar and reads every staged source, checking each
    /// value as it is read. Writes no row.
    fn stage(&mut self) -> Result<(), Error> {
        let Work { reader, jobs, staging, check_bounds } = self;
        for job in jobs {
            match job {
                Job::Scalar(leaf, value) => *value = reader.checker(leaf, *check_bounds)(0, *value)?,
                Job::Staged(leaf, source, at) => {
                    let out = &mut staging[*at..*at + source.len() * leaf.dtype.itemsize()];
                    source.try_store_as(leaf.dtype, out, reader.checker(leaf, *check_bounds))?;
                }
                Job::Direct(..) => {}
            }
        }
        Ok(())
    }

    /// Writes the staged read into `rows`: one row, or one per batch entry.
    ///
    /// # Safety
    /// As for `store`; `stage` has run.
    unsafe fn write(&self, rows: &[*mut u8], row_bytes: usize) {
        let layout = self.reader.layout;
        for (b, &start) in rows.iter().enumerate() {
            // SAFETY: the caller vouches that `start` addresses `row_bytes`
            // writeable bytes that nothing else references meanwhile.
            let row = unsafe { std::slice::from_raw_parts_mut(start, row_bytes) };
            for gap in &layout.padding {
                row[gap.clone()].fill(0);
            }
            for job in &self.jobs {
                match job {
                    Job::Scalar(leaf, value) => leaf.dtype.write(*value, &mut row[leaf.offset..]),
                    Job::Direct(leaf, source) => {
                        let source = if self.reader.batch == Batch::One { *source } else { source.at(b) };
                        source.store_as(leaf.dtype, &mut row[leaf.offset..leaf.offset + leaf.nbytes()]);
                    }
                    Job::Staged(leaf, _, at) => {
                        let (n, from) = (leaf.nbytes(), at + b * leaf.nbytes());
                        row[leaf.offset..leaf.offset + n].copy_from_slice(&self.staging[from..from + n]);
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
