//! Shared memory for vector envs: one anonymous region per vector env that
//! the parent creates and every worker maps, and the plan of where each
//! rollout array lives in it.
//!
//! The region is a memfd, not a POSIX `shm_open` name: it never appears in
//! `/dev/shm`, so nothing can be left behind there, whatever way the parent
//! ends (close, garbage collection, exception, SIGKILL). The kernel frees
//! the memory when the last process holding its fd or a mapping exits.
//! Workers attach by file descriptor, which `multiprocessing` passes to
//! children started with `fork`, `spawn` and `forkserver` alike.

use std::io;
use std::ops::{Mul, Range};
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

#[cfg(target_os = "linux")]
use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
#[cfg(target_os = "linux")]
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create};

/// Sections start on cache lines so that no two processes write one line.
pub const SECTION_ALIGN: usize = 64;
/// Observations start on a page so that they can be page-locked for CUDA.
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

/// The shape of a vector env's buffers: what `Sections` is computed from.
/// Built only by `Plan::new`, which owns every rule about these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub num_envs: usize,
    pub num_workers: usize,
    pub obs_row_bytes: usize,
    pub action_row_bytes: usize,
    /// Envs in the batch that `recv` returns.
    pub batch_envs: usize,
    /// Whether batches are gathered from several workers into a gather
    /// area (asynchronous batches of worker processes).
    pub gathers: bool,
}

impl Plan {
    /// The checked plan of a vector env of `num_envs` envs and batches of
    /// `batch_envs` (default: all of them).
    ///
    /// With `num_workers`, the envs run in that many worker processes, each
    /// owning a block of consecutive envs, and a batch is any set of whole
    /// blocks. Without, they run in the caller's process one batch at a
    /// time: each batch is its own block, so nothing is ever gathered.
    pub fn new(
        num_envs: usize,
        num_workers: Option<usize>,
        obs_row_bytes: usize,
        action_row_bytes: usize,
        batch_envs: Option<usize>,
    ) -> Result<Plan> {
        let refuse = |reason: String| Err(Error::Buffers(reason));
        if num_envs == 0 {
            return refuse("num_envs must be positive, got 0".into());
        }
        let batch_envs = batch_envs.unwrap_or(num_envs);
        if batch_envs == 0 || batch_envs > num_envs {
            return refuse(format!("batch_size ({batch_envs}) must be between 1 and num_envs ({num_envs})"));
        }
        let (num_workers, gathers) = match num_workers {
            None if num_envs % batch_envs != 0 => {
                return refuse(format!(
                    "batch_size ({batch_envs}) must divide num_envs ({num_envs}) when the envs run in this process"
                ));
            }
            None => (num_envs / batch_envs, false),
            Some(workers) if workers == 0 || num_envs % workers != 0 => {
                return refuse(format!("num_workers ({workers}) must be a positive divisor of num_envs ({num_envs})"));
            }
            Some(workers) if batch_envs % (num_envs / workers) != 0 => {
                let per = num_envs / workers;
                return refuse(format!("batch_size ({batch_envs}) must be a multiple of the envs per worker ({per})"));
            }
            Some(workers) => (workers, batch_envs < num_envs),
        };
        // Worker indices travel as u32, and the completion ring needs a bit.
        if num_workers > u32::MAX as usize / 2 {
            return refuse(format!("too many workers ({num_workers})"));
        }
        Ok(Plan { num_envs, num_workers, obs_row_bytes, action_row_bytes, batch_envs, gathers })
    }

    pub fn envs_per_worker(&self) -> usize {
        self.num_envs / self.num_workers
    }
}

/// Byte ranges of every array in the region, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    pub control: Range<usize>,
    pub observations: Range<usize>,
    pub actions: Range<usize>,
    pub rewards: Range<usize>,
    pub terminals: Range<usize>,
    pub truncations: Range<usize>,
    pub masks: Range<usize>,
    pub episode_returns: Range<usize>,
    pub episode_lengths: Range<usize>,
    pub batch_observations: Range<usize>,
    pub batch_actions: Range<usize>,
    pub batch_rewards: Range<usize>,
    pub batch_terminals: Range<usize>,
    pub batch_truncations: Range<usize>,
    pub batch_masks: Range<usize>,
    /// Per env, the last observation of its episode that ended most
    /// recently, written before the reset that replaces it in `observations`.
    pub final_observations: Range<usize>,
    pub len: usize,
}

/// A byte count that remembers overflow: None once any product or sum
/// that made it overflowed.
#[derive(Clone, Copy)]
struct Bytes(Option<usize>);

impl From<usize> for Bytes {
    fn from(n: usize) -> Bytes {
        Bytes(Some(n))
    }
}

impl Mul<usize> for Bytes {
    type Output = Bytes;
    fn mul(self, rhs: usize) -> Bytes {
        Bytes(self.0.and_then(|n| n.checked_mul(rhs)))
    }
}

impl Sections {
    /// `control_bytes` is the size of the synchronisation block (see
    /// `sync::Control::bytes`). Refuses plans whose region would not fit
    /// in memory (more than `isize::MAX` bytes), so that no size wraps.
    pub fn new(plan: &Plan, control_bytes: usize) -> Result<Sections> {
        let mut end = Some(0usize);
        let mut next = |bytes: Bytes, align: usize| {
            let start = end.and_then(|end| end.checked_next_multiple_of(align));
            end = start.zip(bytes.0).and_then(|(start, bytes)| start.checked_add(bytes));
            // A placeholder once anything overflowed: the result is refused below.
            start.unwrap_or(0)..end.unwrap_or(0)
        };
        let (e, b) = (Bytes::from(plan.num_envs), Bytes::from(if plan.gathers { plan.batch_envs } else { 0 }));
        let sections = Sections {
            control: next(control_bytes.into(), SECTION_ALIGN),
            observations: next(e * plan.obs_row_bytes, PAGE),
            actions: next(e * plan.action_row_bytes, SECTION_ALIGN),
            rewards: next(e * 4, SECTION_ALIGN),
            terminals: next(e, SECTION_ALIGN),
            truncations: next(e, SECTION_ALIGN),
            masks: next(e, SECTION_ALIGN),
            episode_returns: next(e * 8, SECTION_ALIGN),
            episode_lengths: next(e * 8, SECTION_ALIGN),
            batch_observations: next(b * plan.obs_row_bytes, PAGE),
            batch_actions: next(b * plan.action_row_bytes, SECTION_ALIGN),
            batch_rewards: next(b * 4, SECTION_ALIGN),
            batch_terminals: next(b, SECTION_ALIGN),
            batch_truncations: next(b, SECTION_ALIGN),
            batch_masks: next(b, SECTION_ALIGN),
            final_observations: next(e * plan.obs_row_bytes, SECTION_ALIGN),
            len: 0,
        };
        match end.filter(|&len| len <= isize::MAX as usize) {
            Some(len) => Ok(Sections { len, ..sections }),
            None => Err(Error::Buffers(format!(
                "buffers for {} envs with rows of {} observation bytes and {} action bytes do not fit in memory",
                plan.num_envs, plan.obs_row_bytes, plan.action_row_bytes
            ))),
        }
    }
}

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
    fn plans_too_large_for_memory_are_refused_not_wrapped() {
        let plan = Plan::new(2, Some(2), 4_611_686_018_426_339_328, 1_537_228_672_810_181_973, Some(1)).unwrap();
        let err = Sections::new(&plan, 200).unwrap_err();
        assert!(err.to_string().ends_with("do not fit in memory"), "{err}");
        let plan = Plan::new(4, Some(2), 1 << 62, 8, None).unwrap();
        assert!(Sections::new(&plan, 200).is_err());
        let plan = Plan::new(1, None, isize::MAX as usize - 4096, 0, None).unwrap();
        assert!(Sections::new(&plan, 200).is_err(), "past isize::MAX once aligned and summed");
    }

    proptest::proptest! {
        /// Any sizes: either a refusal, or sections that hold exactly their
        /// arrays, in order, inside `len`.
        #[test]
        fn sections_never_wrap(
            workers in 1usize..5,
            per_worker in 1usize..5,
            batch_workers in 1usize..5,
            obs_shift in 0u32..64,
            obs_low in 0usize..1000,
            action_shift in 0u32..64,
            envs_shift in 0u32..40,
        ) {
            let num_envs = (workers * per_worker) << envs_shift;
            let batch = (batch_workers.min(workers) * per_worker) << envs_shift;
            let obs = (1usize << obs_shift).wrapping_add(obs_low);
            let action = (1usize << action_shift) - 1;
            let plan = Plan::new(num_envs, Some(workers), obs, action, Some(batch)).unwrap();
            let Ok(s) = Sections::new(&plan, 256) else { return Ok(()) };
            let b = if plan.gathers { batch } else { 0 };
            proptest::prop_assert_eq!(s.observations.len(), num_envs * obs);
            proptest::prop_assert_eq!(s.actions.len(), num_envs * action);
            proptest::prop_assert_eq!(s.batch_observations.len(), b * obs);
            let all = [&s.control, &s.observations, &s.actions, &s.rewards, &s.episode_lengths, &s.batch_masks, &s.final_observations];
            for pair in all.windows(2) {
                proptest::prop_assert!(pair[0].end <= pair[1].start);
            }
            proptest::prop_assert!(s.final_observations.end == s.len && s.len <= isize::MAX as usize);
        }
    }

    #[test]
    fn sections_are_aligned_and_disjoint() {
        let plan = Plan::new(6, Some(3), 12_504, 24, Some(4)).unwrap();
        let s = Sections::new(&plan, 200).unwrap();
        let all = [
            &s.control,
            &s.observations,
            &s.actions,
            &s.rewards,
            &s.terminals,
            &s.truncations,
            &s.masks,
            &s.episode_returns,
            &s.episode_lengths,
            &s.batch_observations,
            &s.batch_actions,
            &s.batch_rewards,
            &s.batch_terminals,
            &s.batch_truncations,
            &s.batch_masks,
            &s.final_observations,
        ];
        for pair in all.windows(2) {
            assert!(pair[0].end <= pair[1].start);
        }
        assert!(all.iter().all(|r| r.start % SECTION_ALIGN == 0));
        assert_eq!(s.observations.start % PAGE, 0);
        assert_eq!(s.observations.len(), 6 * 12_504);
        assert_eq!(s.batch_observations.len(), 4 * 12_504);
        assert_eq!(s.final_observations.len(), 6 * 12_504);
        assert_eq!(s.len, s.final_observations.end);

        let whole = Plan::new(6, Some(3), 12_504, 24, None).unwrap();
        assert!(Sections::new(&whole, 200).unwrap().batch_observations.is_empty());
        let in_process = Plan::new(6, None, 12_504, 24, Some(2)).unwrap();
        assert_eq!((in_process.num_workers, in_process.gathers), (3, false));
        assert!(Sections::new(&in_process, 200).unwrap().batch_observations.is_empty());
    }

    #[test]
    fn invalid_plans_are_refused() {
        let refusal = |num_envs, workers, batch| match Plan::new(num_envs, workers, 4, 8, batch) {
            Err(Error::Buffers(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(Plan::new(8, Some(4), 4, 8, Some(4)).is_ok());
        assert_eq!(refusal(8, Some(3), Some(4)), "num_workers (3) must be a positive divisor of num_envs (8)");
        assert_eq!(refusal(8, Some(0), None), "num_workers (0) must be a positive divisor of num_envs (8)");
        assert_eq!(refusal(8, Some(4), Some(3)), "batch_size (3) must be a multiple of the envs per worker (2)");
        assert_eq!(refusal(8, Some(4), Some(10)), "batch_size (10) must be between 1 and num_envs (8)");
        assert_eq!(
            refusal(8, None, Some(3)),
            "batch_size (3) must divide num_envs (8) when the envs run in this process"
        );
        assert_eq!(refusal(0, Some(1), None), "num_envs must be positive, got 0");
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
