//! Crash points for the crash-injection tests. `PODNET_CRASH_AT=<point>` makes a debug build
//! kill itself with SIGKILL when it reaches that point, exactly like a `kill -9` from outside:
//! no destructors, no flushing, no error JSON. Release builds compile the points to nothing and
//! ignore the variable.
//!
//! Points: `add-after-reserve`, `add-after-record`, `add-after-veth`, `add-after-address`,
//! `add-after-routes`, `del-after-teardown`, `del-after-release`, and in every store write
//! `store-after-write` (temp file written and fsynced, not renamed), `store-after-rename`
//! (renamed, directory not fsynced), `store-after-link` (a removed file to keep linked under its
//! new name, that directory fsynced, the old name not yet removed) and `store-after-unlink`
//! (removed, directory not fsynced).

/// Die here if the test asked for it (debug builds only).
#[inline(always)]
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("PODNET_CRASH_AT").is_some_and(|v| v == name) {
        // SAFETY: raise has no preconditions; SIGKILL cannot be caught, so it never returns.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
