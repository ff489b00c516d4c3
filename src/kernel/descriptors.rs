//! This process's descriptor table. A run holds a few descriptors per namespace (its netlink
//! sockets, the namespace's own), and a table that grows while threads share it waits for a
//! grace period of RCU at each doubling (fs/file.c: `expand_fdtable` calls `synchronize_rcu`
//! when the table is shared), several milliseconds each on a 2-CPU VM: an `up` of 200 replicas,
//! which holds several hundred descriptors, doubled it from 64 slots step by step, and a scale
//! that copied 201 sockets for the daemon took 11 ms to. Grown to its size before any thread
//! exists, the table costs no wait.

use nix::fcntl::{fcntl, FcntlArg};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

/// Raise the soft limit of open files to the hard one (a project of thousands of replicas
/// would meet a soft limit of 1024); the soft limit now.
pub fn raise_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            // Best effort: at worst the run meets the old limit, as before.
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// [`raise_limit`], and grow the table to `slots` descriptors (at most the limit) now: call
/// it before the process starts a thread. Best effort: a table that cannot grow now grows
/// later, as it would have.
pub fn reserve(slots: usize) {
    let limit = usize::try_from(raise_limit()).unwrap_or(usize::MAX);
    let Some(last) = slots.min(limit).checked_sub(1) else {
        return;
    };
    let Ok(last) = i32::try_from(last) else {
        return;
    };
    // F_DUPFD takes the lowest free descriptor at or above `last`: the table grows to cover it.
    if let Ok(fd) = fcntl(std::io::stderr().as_fd(), FcntlArg::F_DUPFD_CLOEXEC(last)) {
        // SAFETY: the kernel just made this descriptor for this call; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_table_holds_the_slots_asked_for() {
        reserve(512);
        // The table's size, as the kernel reports it.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let size: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert!(size >= 512, "FDSize {size}");
    }
}
