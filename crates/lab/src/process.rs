//! Processes a lab or test starts: entered into a namespace between fork and exec, and killed by
//! their own PID (never by name) when dropped.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
pub use std::process::{Child, Command, Stdio};

/// Make `cmd`'s child enter the network namespace `fd` before it execs (the fd must stay open
/// until the child is spawned).
pub fn enter_netns_on_exec(cmd: &mut Command, fd: RawFd) {
    // SAFETY: setns is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A command whose child enters the network namespace `fd` before it execs: the one place the
/// lab starts programs (etcd, CNI plugins, podnetd), never through a shell.
pub fn command_in(fd: RawFd, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    enter_netns_on_exec(&mut cmd, fd);
    cmd
}

/// Make `cmd`'s child enter the mount namespace `fd` too (tests give a node's state dir a
/// filesystem of its own).
pub fn enter_mount_ns_on_exec(cmd: &mut Command, fd: RawFd) {
    // SAFETY: setns is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNS) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A program to start, as [`command_in`] makes it.
pub type Program = Command;

/// Have `cmd`'s child killed if this process dies first (a helper must never outlive its owner).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Start `cmd`'s child in a process group of its own, so that it outlives this process and a
/// Ctrl-C at the terminal that started it (a lab's podnetd and etcd; `lab down` stops them).
pub fn detach(cmd: &mut Command) {
    cmd.process_group(0);
}

/// A child process killed (by its PID) when this drops, also when a test fails.
pub struct Process(pub Child);

impl Process {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
    /// SIGKILL and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    /// SIGTERM, then wait for it to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        // SAFETY: kill on our own child's PID, which is not reaped yet.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        self.0.wait()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
