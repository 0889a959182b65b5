//! ADD's two sides on two CPUs. Linux starts a new thread on its parent's CPU and it waits there
//! until the parent sleeps (measured on a 2-core VM: a thread spawned beside 1 ms of work first
//! ran after 0.9 ms, against 0.08 ms when kept off the parent's CPU), so the kernel side and the
//! IPAM side would take turns instead of overlapping. The new thread is allowed every CPU but
//! the spawner's until it runs, and then every CPU again. (Likewise the thread that makes the
//! address file ahead: on the spawner's CPU it waited 0.004 to 0.09 ms longer, at p50.)

use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;

/// Keep `thread` off the calling thread's CPU until it calls [`anywhere`] (the kernel side does
/// as it starts; the short-lived thread making the address file ahead never needs to). Best
/// effort: with one allowed CPU, or if the kernel refuses, nothing changes.
pub(crate) fn off_this_cpu<T>(thread: &JoinHandle<T>) {
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
pub(crate) fn anywhere() {
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
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = wait.recv();
            let kept_off = affinity_of_calling_thread();
            anywhere();
            (kept_off, affinity_of_calling_thread())
        });
        off_this_cpu(&t);
        go.send(()).unwrap();
        let (kept_off, after) = t.join().unwrap();
        assert_eq!(after, everywhere);
        if everywhere.len() > 1 {
            assert_eq!(kept_off.len(), everywhere.len() - 1, "one CPU (the spawner's) left out");
        }
    }
}
