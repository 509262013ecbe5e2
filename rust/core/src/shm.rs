//! Shared memory for vector envs: one anonymous region per vector env that
//! the parent creates and every worker maps (where each array lives in it
//! is `plan.rs`'s), and the copies between its sections.
//!
//! The region is a memfd, not a POSIX `shm_open` name: it never appears in
//! `/dev/shm`, so nothing can be left behind there, whatever way the parent
//! ends (close, garbage collection, exception, SIGKILL). The kernel frees
//! the memory when the last process holding its fd or a mapping exits.
//! Workers attach by file descriptor, which `multiprocessing` passes to
//! children started with `fork`, `spawn` and `forkserver` alike.

use std::io;
use std::ops::Range;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

#[cfg(target_os = "linux")]
use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
#[cfg(target_os = "linux")]
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create};

/// Regions are whole pages (observations start on one, see `plan.rs`).
pub const PAGE: usize = 4096;

/// A mapping of a memfd that every process of a vector env shares.
#[cfg(target_os = "linux")]
pub struct Region {
    map: MmapRaw,
    /// The creator keeps the fd to hand it to workers; attached regions
    /// need only their mapping.
    fd: Option<OwnedFd>,
}

#[cfg(target_os = "linux")]
impl Region {
    /// A new zero-filled region of `len` bytes (rounded up to a page).
    pub fn create(name: &str, len: usize) -> io::Result<Region> {
        let len = region_len(len)?;
        let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        ftruncate(&fd, len as u64)?;
        // Nobody may resize the file afterwards: a shrink would turn the
        // mappings of every process into SIGBUS traps.
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let map = MmapOptions::new().len(len).map_raw(fd.as_raw_fd())?;
        Ok(Region { map, fd: Some(fd) })
    }

    /// Maps the region behind `fd`, which another process created. The
    /// caller may close `fd` afterwards: the mapping keeps the memory.
    pub fn attach(fd: BorrowedFd<'_>) -> io::Result<Region> {
        // Only a region sealed against shrinking is safe to map: a file that
        // someone could truncate would turn reads of this mapping into
        // SIGBUS.
        let sealed = fcntl_get_seals(fd).is_ok_and(|seals| seals.contains(SealFlags::SHRINK));
        if !sealed {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the file descriptor is not a sealed region"));
        }
        let len = usize::try_from(fstat(fd)?.st_size).map_err(|_| io::Error::other("negative file size"))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the file descriptor holds an empty region"));
        }
        let map = MmapOptions::new().len(len).map_raw(fd.as_raw_fd())?;
        Ok(Region { map, fd: None })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The fd of a region this process created; None for attached ones.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Pointer to `range` of the region, checked to lie inside it.
    pub fn section(&self, range: &Range<usize>) -> Result<*mut u8> {
        section_of(self.as_ptr(), self.len(), range)
    }
}

/// The size a region of `len` bytes gets: at least a page, whole pages,
/// refused past what memory can hold.
pub(crate) fn region_len(len: usize) -> io::Result<usize> {
    len.max(1)
        .checked_next_multiple_of(PAGE)
        .filter(|&len| len <= isize::MAX as usize)
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, format!("{len} bytes do not fit in memory")))
}

/// Pointer to `range` of the `len` bytes mapped at `base`, checked to lie
/// inside them.
pub(crate) fn section_of(base: *mut u8, len: usize, range: &Range<usize>) -> Result<*mut u8> {
    if range.start > range.end || range.end > len {
        return Err(Error::Buffers(format!(
            "bytes {}..{} lie outside the region of {len} bytes",
            range.start, range.end
        )));
    }
    // SAFETY: the offset was just checked to be inside the mapping.
    Ok(unsafe { base.add(range.start) })
}

// SAFETY: the region is plain shared memory; every access to it goes through
// raw pointers or atomics, with the synchronisation of `sync`.
#[cfg(target_os = "linux")]
unsafe impl Sync for Region {}
// SAFETY: as above; the mapping is not tied to the thread that made it.
#[cfg(target_os = "linux")]
unsafe impl Send for Region {}

/// Elsewhere a vector env's region is private to its process.
#[cfg(not(target_os = "linux"))]
pub use crate::local_region::LocalRegion as Region;

/// Copies row blocks between two arrays of `row_bytes`-sized rows: block
/// `k` of `blocks` is `(first_row, rows)` in `src`, written back to back
/// into `dst` in block order (`gather`), or the reverse (`scatter`).
///
/// # Safety
/// `src` and `dst` must be valid for the rows the blocks address, must not
/// overlap, and no other thread or process may write those rows meanwhile.
pub unsafe fn gather_rows(src: *const u8, dst: *mut u8, row_bytes: usize, blocks: &[(usize, usize)]) {
    let mut out = 0;
    for &(first, rows) in blocks {
        let bytes = rows * row_bytes;
        // SAFETY: the caller vouches for both ranges; they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.add(first * row_bytes), dst.add(out), bytes) };
        out += bytes;
    }
}

/// The inverse of `gather_rows`: consecutive rows of `src` go to the blocks
/// of `dst`.
///
/// # Safety
/// As for `gather_rows`.
pub unsafe fn scatter_rows(src: *const u8, dst: *mut u8, row_bytes: usize, blocks: &[(usize, usize)]) {
    let mut read = 0;
    for &(first, rows) in blocks {
        let bytes = rows * row_bytes;
        // SAFETY: the caller vouches for both ranges; they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.add(read), dst.add(first * row_bytes), bytes) };
        read += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_os = "linux")]
    use std::os::fd::AsFd;

    #[cfg(target_os = "linux")]
    fn memfds_of_this_process() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|target| target.to_string_lossy().contains("memfd:pufferrs-test-count"))
            .count()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn create_attach_share_and_free() {
        let region = Region::create("pufferrs-test", 10_000).unwrap();
        assert_eq!(region.len(), 12_288);
        let attached = Region::attach(region.fd().unwrap()).unwrap();
        assert_eq!(attached.len(), region.len());
        assert!(attached.fd().is_none());
        // SAFETY: both mappings are alive, in bounds, and only this thread
        // touches them.
        unsafe {
            assert_eq!(*attached.as_ptr().add(9_999), 0, "memfds start zeroed");
            *region.as_ptr().add(9_999) = 42;
            assert_eq!(*attached.as_ptr().add(9_999), 42, "two mappings of one memfd share pages");
        }
        drop(region);
        // SAFETY: the attached mapping outlives the creator's.
        unsafe { assert_eq!(*attached.as_ptr().add(9_999), 42, "a mapping keeps the memory after the fd is closed") };
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn nothing_in_dev_shm_and_fd_closed_on_drop() {
        let before: Vec<_> = std::fs::read_dir("/dev/shm")
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let region = Region::create("pufferrs-test-count", 1).unwrap();
        assert_eq!(memfds_of_this_process(), 1);
        let after: Vec<_> = std::fs::read_dir("/dev/shm")
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(after.iter().all(|name| before.contains(name)), "memfds never appear in /dev/shm");
        drop(region);
        assert_eq!(memfds_of_this_process(), 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn regions_cannot_be_resized() {
        let region = Region::create("pufferrs-test", 4096).unwrap();
        let fd = region.fd().unwrap();
        assert!(ftruncate(fd.as_fd(), 0).is_err(), "sealed against shrinking");
        assert!(ftruncate(fd.as_fd(), 8192).is_err(), "sealed against growing");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn attach_refuses_an_empty_or_unsealed_file() {
        let fd = memfd_create("pufferrs-test-empty", MemfdFlags::CLOEXEC).unwrap();
        assert!(Region::attach(fd.as_fd()).is_err());
        // A file someone could shrink under the mapping is refused too.
        ftruncate(&fd, 4096).unwrap();
        let err = Region::attach(fd.as_fd()).err().unwrap();
        assert_eq!(err.to_string(), "the file descriptor is not a sealed region");
    }

    #[test]
    fn sections_outside_the_region_are_refused() {
        let region = Region::create("pufferrs-test", 4096).unwrap();
        assert!(region.section(&(0..4096)).is_ok());
        assert!(matches!(region.section(&(4000..4097)), Err(Error::Buffers(_))));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 10..5;
        assert!(region.section(&reversed).is_err());
        assert!(Region::create("pufferrs-test", usize::MAX).is_err());
    }

    #[test]
    fn gather_then_scatter_round_trips() {
        let src: Vec<u8> = (0..40).collect();
        let mut batch = vec![0u8; 16];
        let blocks = [(6, 2), (1, 2)];
        // SAFETY: both vectors are large enough for the blocks, distinct, and
        // owned by this thread.
        unsafe { gather_rows(src.as_ptr(), batch.as_mut_ptr(), 4, &blocks) };
        assert_eq!(batch, [24, 25, 26, 27, 28, 29, 30, 31, 4, 5, 6, 7, 8, 9, 10, 11]);
        let mut back = vec![0u8; 40];
        // SAFETY: as above.
        unsafe { scatter_rows(batch.as_ptr(), back.as_mut_ptr(), 4, &blocks) };
        assert_eq!(&back[24..32], &src[24..32]);
        assert_eq!(&back[4..12], &src[4..12]);
        assert!(back[..4].iter().all(|&b| b == 0));
    }
}
