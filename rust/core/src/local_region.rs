//! The region of a vector env on platforms without memfd (macOS, Windows):
//! anonymous memory that only this process maps. It has the same layout and
//! the same views as the shared region, so the vector env that runs its envs
//! in the caller's process (Serial) works unchanged; worker processes cannot
//! attach to it, which is why the multiprocessing backend is Linux-only.
//!
//! Compiled on every platform, Linux included, so that its tests run where
//! the project's tests run.

use std::io;
use std::ops::Range;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::Result;
use crate::shm::{region_len, section_of};

/// Zero-filled anonymous memory, private to this process.
pub struct LocalRegion {
    map: MmapRaw,
}

impl LocalRegion {
    /// A new zero-filled region of `len` bytes (rounded up to a page).
    /// `name` is the memfd's name on Linux; an anonymous mapping has none.
    pub fn create(_name: &str, len: usize) -> io::Result<LocalRegion> {
        let len = region_len(len)?;
        Ok(LocalRegion { map: MmapRaw::from(MmapOptions::new().len(len).map_anon()?) })
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

    /// Pointer to `range` of the region, checked to lie inside it.
    pub fn section(&self, range: &Range<usize>) -> Result<*mut u8> {
        section_of(self.as_ptr(), self.len(), range)
    }
}

// SAFETY: the region is plain memory that this value owns; every access to
// it goes through raw pointers or atomics, with the synchronisation of `sync`.
unsafe impl Sync for LocalRegion {}
// SAFETY: as above; the mapping is not tied to the thread that made it.
unsafe impl Send for LocalRegion {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::PAGE;

    #[test]
    fn zeroed_page_aligned_and_writable() {
        let region = LocalRegion::create("unused", 10_000).unwrap();
        assert_eq!(region.len(), 12_288);
        assert_eq!(region.as_ptr() as usize % PAGE, 0);
        let tail = region.section(&(9_000..10_000)).unwrap();
        // SAFETY: the section lies inside the mapping, which this thread alone uses.
        unsafe {
            assert!(std::slice::from_raw_parts(region.as_ptr(), region.len()).iter().all(|&b| b == 0));
            *tail.add(999) = 42;
            assert_eq!(*region.as_ptr().add(9_999), 42);
        }
    }

    #[test]
    fn sections_outside_are_refused() {
        assert!(LocalRegion::create("unused", 1).unwrap().section(&(0..PAGE + 1)).is_err());
    }
}
