//! ADD's two sides on two CPUs. Linux starts a new thread on its parent's CPU and it waits there
//! until the parent sleeps (measured on a 2-core VM: a thread spawned beside 1 ms of work first
//! ran after 0.9 ms, against 0.08 ms when kept off the parent's CPU), so the kernel side and the
//! IPAM side would take turns instead of overlapping. The new thread is allowed every CPU but
//! the spawner's until it runs, and then every CPU again.

use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Run `f` on a new thread kept off the calling thread's CPU until it starts, then allowed every
/// CPU. Best effort: with one allowed CPU, or if the kernel refuses, it is a plain spawn.
///
/// The thread waits until it has been placed: one that had already ended would leave its
/// pthread_t holding thread id 0, which the kernel reads as the caller, so the spawner would
/// move itself off its own CPU for the rest of its run (a short-lived thread spread this way
/// once cost ADD ~0.4 ms).
pub(crate) fn spawn_elsewhere<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let (placed, wait) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = wait.recv();
        anywhere();
        f()
    });
    off_this_cpu(&thread);
    let _ = placed.send(());
    thread
}

/// Keep `thread`, which must still be running, off the calling thread's CPU.
fn off_this_cpu<T>(thread: &JoinHandle<T>) {
    let Some(mut set) = allowed() else { return };
    // SAFETY: sched_getcpu has no preconditions.
    let Ok(me) = usize::try_from(unsafe { libc::sched_getcpu() }) else { return };
    // SAFETY: `set` is an initialised cpu_set_t and `me` is a CPU number the kernel returned.
    unsafe {
        if !libc::CPU_ISSET(me, &set) || libc::CPU_COUNT(&set) < 2 {
            return;
        }
        libc::CPU_CLR(me, &mut set);
        // SAFETY: the handle's thread is not joined yet, so its pthread_t is valid.
        libc::pthread_setaffinity_np(thread.as_pthread_t(), std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Let the calling thread run on every CPU the process may use.
fn anywhere() {
    let Some(set) = allowed() else { return };
    // SAFETY: pid 0 is the calling thread; `set` is initialised.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// The CPUs the process may use (the main thread's set, which ADD never narrows).
fn allowed() -> Option<libc::cpu_set_t> {
    // SAFETY: getpid has no preconditions.
    affinity(unsafe { libc::getpid() })
}

/// The CPUs thread `tid` may run on (0: the calling thread).
fn affinity(tid: libc::pid_t) -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is valid; the kernel fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity_of_calling_thread() -> Vec<usize> {
        let set = affinity(0).expect("sched_getaffinity");
        // SAFETY: `set` is initialised.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
    }

    #[test]
    fn a_spread_thread_ends_up_allowed_every_cpu_again() {
        let everywhere = affinity_of_calling_thread();
        let t = spawn_elsewhere(affinity_of_calling_thread);
        assert_eq!(t.join().unwrap(), everywhere);
    }

    #[test]
    fn a_thread_that_ends_at_once_leaves_the_spawner_where_it_was() {
        // Without the wait for placement this failed in 2 of 3 runs on a 2-core VM.
        let everywhere = affinity_of_calling_thread();
        for _ in 0..3000 {
            spawn_elsewhere(|| ()).join().unwrap();
            assert_eq!(affinity_of_calling_thread(), everywhere, "the spawner was moved off its own CPU");
        }
    }
}
