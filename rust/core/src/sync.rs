//! How the parent and its workers signal each other through the shared
//! region: atomics, a short spin, a while of yielding the core, then a
//! futex sleep. No pipes, and no syscalls on the step path when the other
//! side answers within the spin.
//!
//! Every worker has a slot with a request counter (parent -> worker). A
//! worker that finishes a request records its status and appends its id to
//! a ring of completions (worker -> parent) in the order they finish, which
//! is what lets `recv` return the first workers that are ready.
//!
//! All of it lives in shared memory that starts zeroed, and zero is a valid
//! state for every word, so neither side initialises anything.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use crate::futex;

/// Spins before the waiter starts yielding. Short: on a machine with fewer
/// cores than processes a spinning waiter takes the core that the process
/// it waits for needs.
const SPINS: u32 = 64;
/// How long a waiter then yields its core (`sched_yield`) before it sleeps
/// on the futex. A yielding waiter hands its core to any process that can
/// run, so it costs the others little, and it sees a reply the moment one
/// comes. A sleeping one lets its core go idle, and waking an idle core
/// takes tens to hundreds of microseconds on a virtual machine: on the
/// 2-core VM of `benches/`, yielding for this long instead of four yields
/// made Multiprocessing's rollouts 1.2-2x faster (CartPole,
/// knights_archers_zombies) and whole training runs about 1.15x. Long
/// enough to cover a light env's step, short against an update.
const YIELD_FOR: Duration = Duration::from_millis(2);

/// A word that one side bumps and the other sleeps on.
#[repr(C)]
pub struct Signal {
    value: AtomicU32,
    /// Processes inside `wait_until`, so that `notify` skips the futex wake
    /// syscall while nobody sleeps.
    waiters: AtomicU32,
}

impl Signal {
    /// Wakes every waiter; call after publishing what they wait for.
    pub fn notify(&self) {
        self.value.fetch_add(1, SeqCst);
        if self.waiters.load(SeqCst) != 0 {
            futex::wake_all(&self.value);
        }
    }

    /// Waits until `ready()` holds or `deadline` passes; returns whether it
    /// holds. `ready` must only turn true after a `notify` of this signal
    /// that follows the writes it reads. Spins, yields the core for up to
    /// `yield_for`, then sleeps on the futex.
    pub fn wait_until(&self, mut ready: impl FnMut() -> bool, deadline: Option<Instant>, yield_for: Duration) -> bool {
        for _ in 0..SPINS {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let stop_yielding = Instant::now() + yield_for;
        let stop_yielding = deadline.map_or(stop_yielding, |deadline| deadline.min(stop_yielding));
        loop {
            if ready() {
                return true;
            }
            if Instant::now() >= stop_yielding {
                break;
            }
            std::thread::yield_now();
        }
        loop {
            let seen = self.value.load(SeqCst);
            self.waiters.fetch_add(1, SeqCst);
            // A notify before the increment above is seen by this check; one
            // after it either wakes the futex or changes `value` first.
            if ready() {
                self.waiters.fetch_sub(1, SeqCst);
                return true;
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        self.waiters.fetch_sub(1, SeqCst);
                        return false;
                    }
                },
            };
            futex::wait(&self.value, seen, timeout);
            self.waiters.fetch_sub(1, SeqCst);
            if ready() {
                return true;
            }
        }
    }
}

/// What the parent asks of a worker; the worker reads it after the request
/// counter moves.
pub mod command {
    pub const STEP: u32 = 1;
    pub const RESET: u32 = 2;
    pub const CLOSE: u32 = 3;
    /// Run a function on the worker's envs (`call_envs`): the function
    /// comes on the worker's pipe, and the rows are left as they are.
    pub const CALL: u32 = 4;
}

/// How a worker finished its request.
pub mod status {
    pub const OK: u32 = 0;
    /// Finished; infos follow on the worker's pipe.
    pub const INFOS: u32 = 1;
    /// Failed; the traceback follows on the worker's pipe.
    pub const ERROR: u32 = 2;
    /// A flag beside OK or INFOS: an episode of one of the worker's envs
    /// ended, so the parent reads the episode statistics.
    pub const ENDED: u32 = 4;
}

/// One worker's words, on a cache line of its own.
#[repr(C, align(64))]
pub struct Slot {
    request: Signal,
    /// The request count the worker has taken.
    taken: AtomicU32,
    command: AtomicU32,
    status: AtomicU32,
}

#[repr(C, align(64))]
struct Header {
    /// Ties a region to the plan that made it, so that a worker handed the
    /// wrong fd fails at attach rather than scribbling.
    magic: AtomicU64,
    fingerprint: AtomicU64,
    /// Completions appended so far; the ring index of the next one.
    tail: AtomicU32,
}

const MAGIC: u64 = u64::from_le_bytes(*b"pfrsbuf1");

/// The synchronisation block at the start of a region: a header, the
/// completion signal, the ring of completed worker ids and the slots.
pub struct Control<'a> {
    header: &'a Header,
    ready: &'a Signal,
    ring: &'a [AtomicU32],
    slots: &'a [Slot],
}

/// Cache-line offsets inside the control block.
fn offsets(num_workers: usize) -> (usize, usize, usize, usize) {
    let header = 0;
    let ready = size_of::<Header>();
    let ring = ready + 64;
    let slots = (ring + 4 * num_workers).next_multiple_of(64);
    (header, ready, ring, slots)
}

impl<'a> Control<'a> {
    /// Bytes of the control block for `num_workers` workers.
    pub fn bytes(num_workers: usize) -> usize {
        let (.., slots) = offsets(num_workers);
        slots + num_workers * size_of::<Slot>()
    }

    /// The control block at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be 64-byte aligned and point to `Control::bytes(num_workers)`
    /// bytes of shared memory that started zeroed, that other processes only
    /// touch through a `Control`, and that outlive `'a`.
    pub unsafe fn from_ptr(ptr: *mut u8, num_workers: usize) -> Control<'a> {
        assert_eq!(ptr as usize % 64, 0, "control block must be cache-line aligned");
        let (header, ready, ring, slots) = offsets(num_workers);
        // SAFETY: the caller vouches for the memory; every type here is made
        // of atomics, valid when zeroed and shared between threads by design.
        unsafe {
            Control {
                header: &*(ptr.add(header) as *const Header),
                ready: &*(ptr.add(ready) as *const Signal),
                ring: std::slice::from_raw_parts(ptr.add(ring) as *const AtomicU32, num_workers),
                slots: std::slice::from_raw_parts(ptr.add(slots) as *const Slot, num_workers),
            }
        }
    }

    pub fn num_workers(&self) -> usize {
        self.slots.len()
    }

    /// Stamps a new region with the fingerprint of the plan that made it.
    pub fn stamp(&self, fingerprint: u64) {
        self.header.fingerprint.store(fingerprint, Relaxed);
        self.header.magic.store(MAGIC, Release);
    }

    /// Whether this region was stamped with `fingerprint`.
    pub fn matches(&self, fingerprint: u64) -> bool {
        self.header.magic.load(Acquire) == MAGIC && self.header.fingerprint.load(Relaxed) == fingerprint
    }

    // ---- parent side ----

    /// Asks `worker` to run `command`. The worker must have completed its
    /// previous request, and that completion must have been taken.
    pub fn request(&self, worker: usize, command: u32) {
        let slot = &self.slots[worker];
        slot.command.store(command, Relaxed);
        slot.request.notify();
    }

    /// Takes completed workers, in the order they completed, into `out`
    /// until it holds `max`, one of them failed, or `deadline` passes.
    /// `head` is the parent's position in the ring; only the parent, one
    /// thread at a time, may take.
    pub fn take_completed(&self, head: &mut u32, max: usize, out: &mut Vec<u32>, deadline: Option<Instant>) {
        let workers = self.ring.len() as u32;
        while out.len() < max {
            let cell = &self.ring[(*head % workers) as usize];
            // The workers are stepping: an answer is due soon.
            if !self.ready.wait_until(|| cell.load(Acquire) != 0, deadline, YIELD_FOR) {
                return;
            }
            let worker = cell.swap(0, Acquire) - 1;
            *head = head.wrapping_add(1);
            out.push(worker);
            if self.status(worker as usize) & status::ERROR != 0 {
                return;
            }
        }
    }

    /// How `worker` finished its last request.
    pub fn status(&self, worker: usize) -> u32 {
        self.slots[worker].status.load(Acquire)
    }

    // ---- worker side ----

    /// Waits for the next request to `worker` and returns its command, or
    /// None when `deadline` passes first. `due`: a request is due soon
    /// (the worker has just answered one, in the middle of a rollout), so
    /// the worker yields its core for a while before it sleeps. A worker
    /// whose last wait timed out (its parent is updating, or idle) sleeps
    /// at once, so that idle workers take no CPU.
    pub fn wait_request(&self, worker: usize, deadline: Option<Instant>, due: bool) -> Option<u32> {
        let slot = &self.slots[worker];
        let taken = slot.taken.load(Relaxed);
        let yield_for = if due { YIELD_FOR } else { Duration::ZERO };
        if !slot.request.wait_until(|| slot.request.value.load(Acquire) != taken, deadline, yield_for) {
            return None;
        }
        slot.taken.store(slot.request.value.load(Acquire), Relaxed);
        Some(slot.command.load(Relaxed))
    }

    /// Reports that `worker` finished its request: after this the parent may
    /// read everything the worker wrote before it.
    pub fn complete(&self, worker: usize, status: u32) {
        self.slots[worker].status.store(status, Release);
        // Each worker has at most one completion not yet taken, so the ring
        // never holds more than `num_workers` entries and a cell is free
        // again (swapped to 0 by the parent) before the tail comes round.
        let position = self.header.tail.fetch_add(1, AcqRel);
        self.ring[(position % self.ring.len() as u32) as usize].store(worker as u32 + 1, Release);
        self.ready.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{Layout, alloc_zeroed, dealloc};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    /// A zeroed, aligned heap block standing in for the shared region.
    struct Block {
        ptr: *mut u8,
        layout: Layout,
        workers: usize,
    }
    // SAFETY: the block is only reached through atomics.
    unsafe impl Send for Block {}
    // SAFETY: as above.
    unsafe impl Sync for Block {}

    impl Block {
        fn new(workers: usize) -> Arc<Block> {
            let layout = Layout::from_size_align(Control::bytes(workers), 64).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc_zeroed(layout) };
            Arc::new(Block { ptr, layout, workers })
        }
        fn control(&self) -> Control<'_> {
            // SAFETY: zeroed, aligned, sized for `workers`, alive as long as self.
            unsafe { Control::from_ptr(self.ptr, self.workers) }
        }
    }
    impl Drop for Block {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.ptr, self.layout) }
        }
    }

    fn soon(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[test]
    fn wait_times_out_without_a_notify() {
        let block = Block::new(1);
        for due in [true, false] {
            let start = Instant::now();
            assert_eq!(block.control().wait_request(0, soon(50), due), None);
            assert!(start.elapsed() >= Duration::from_millis(50));
        }
        let mut out = vec![];
        block.control().take_completed(&mut 0, 1, &mut out, soon(20));
        assert!(out.is_empty());
    }

    #[test]
    fn a_sleeping_waiter_is_woken_across_threads() {
        for due in [true, false] {
            let block = Block::new(1);
            let worker = {
                let block = block.clone();
                thread::spawn(move || block.control().wait_request(0, soon(10_000), due))
            };
            // Long enough for the worker to be in its futex sleep, past its
            // yielding.
            thread::sleep(Duration::from_millis(100));
            let start = Instant::now();
            block.control().request(0, command::RESET);
            assert_eq!(worker.join().unwrap(), Some(command::RESET));
            assert!(start.elapsed() < Duration::from_secs(5), "woken, not timed out");
        }
    }

    #[test]
    fn ping_pong_many_rounds() {
        const WORKERS: usize = 3;
        const ROUNDS: u32 = 2_000;
        let block = Block::new(WORKERS);
        let data = Arc::new((0..WORKERS).map(|_| AtomicU32::new(0)).collect::<Vec<_>>());
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (block, data) = (block.clone(), data.clone());
                thread::spawn(move || {
                    let control = block.control();
                    loop {
                        match control.wait_request(w, soon(10_000), true) {
                            Some(command::STEP) => {
                                data[w].fetch_add(1, Relaxed);
                                control.complete(w, status::OK);
                            }
                            Some(command::CLOSE) => return,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();
        let control = block.control();
        let mut head = 0;
        for round in 1..=ROUNDS {
            for w in 0..WORKERS {
                control.request(w, command::STEP);
            }
            let mut done = vec![];
            control.take_completed(&mut head, WORKERS, &mut done, soon(10_000));
            done.sort();
            assert_eq!(done, [0, 1, 2]);
            // The completion publishes what the worker wrote before it.
            assert!(data.iter().all(|d| d.load(Relaxed) == round));
        }
        for w in 0..WORKERS {
            control.request(w, command::CLOSE);
        }
        handles.into_iter().for_each(|h| h.join().unwrap());
    }

    #[test]
    fn completions_come_in_finishing_order_and_errors_stop_the_take() {
        let block = Block::new(4);
        let control = block.control();
        control.complete(2, status::OK);
        control.complete(0, status::INFOS);
        control.complete(3, status::ERROR);
        control.complete(1, status::OK);
        let (mut head, mut out) = (0, vec![]);
        control.take_completed(&mut head, 4, &mut out, soon(10));
        assert_eq!(out, [2, 0, 3], "stops at the failed worker");
        assert_eq!(control.status(0), status::INFOS);
        control.take_completed(&mut head, 4, &mut out, soon(10));
        assert_eq!(out, [2, 0, 3, 1]);
        // The ring wraps around.
        for w in [3, 1, 0, 2] {
            control.complete(w, status::OK);
        }
        out.clear();
        control.take_completed(&mut head, 4, &mut out, soon(10));
        assert_eq!(out, [3, 1, 0, 2]);
    }

    #[test]
    fn stamps_identify_the_plan() {
        let block = Block::new(1);
        assert!(!block.control().matches(7), "an unstamped region matches nothing");
        block.control().stamp(7);
        assert!(block.control().matches(7));
        assert!(!block.control().matches(8));
    }
}
