//! Sleeping on a word of shared memory until another process changes it.
//!
//! On Linux this is the futex syscall. Elsewhere a vector env's region is
//! private to one process (see `local_region`), and no portable call sleeps
//! on a word across processes, so a waiter naps and looks again: a wake-up
//! comes at most `NAP` late there, and `wake_all` has nothing to do.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Wakes every process sleeping on `word`.
#[cfg(target_os = "linux")]
pub fn wake_all(word: &AtomicU32) {
    use rustix::thread::futex;
    // Non-private futex: the waiters are other processes.
    let _ = futex::wake(word, futex::Flags::empty(), u32::MAX);
}

/// Sleeps while `word` holds `expected`, for at most `timeout`. It may
/// return early (a wake, a signal, a changed word): callers look again.
#[cfg(target_os = "linux")]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    let timeout = timeout
        .map(|d| futex::Timespec { tv_sec: d.as_secs().min(i64::MAX as u64) as i64, tv_nsec: d.subsec_nanos() as _ });
    // EAGAIN (the word moved on), EINTR and ETIMEDOUT all mean: look again.
    let _ = futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref());
}

/// How long a waiter sleeps between looks where there is no futex.
#[cfg(not(target_os = "linux"))]
const NAP: Duration = Duration::from_millis(1);

#[cfg(not(target_os = "linux"))]
pub fn wake_all(_word: &AtomicU32) {}

#[cfg(not(target_os = "linux"))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    if word.load(std::sync::atomic::Ordering::SeqCst) == expected {
        std::thread::sleep(timeout.map_or(NAP, |t| t.min(NAP)));
    }
}
