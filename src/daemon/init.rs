//! `init: true` for an `x-run` process: a minimal init in the manner of tini, between the
//! daemon and the command.
//!
//! In a container, `init` makes a small init PID 1 of the container's PID namespace, so that
//! orphans are reaped and signals reach the command. `x-run` processes share the host's PID
//! namespace (see contain.rs for why), so there is no PID 1 to be: instead the child the daemon
//! forks becomes a *child subreaper* (PR_SET_CHILD_SUBREAPER), which is what a PID 1 is to
//! orphans: every process the command leaves behind is reparented to it, not to the host's
//! init, and is reaped by it. It forks the command into a process group of its own, forwards
//! every signal it gets to that group (so `stop_signal` from the daemon reaches the command
//! and what it started, once), and ends as the command ends: with its exit status, or killed by
//! the same signal, so the daemon reports the command's own end.
//!
//! It runs between fork and exec of the daemon's child (there is nothing to exec for it), so
//! it makes system calls only: no allocation, no lock.

use std::io;

/// Signals that report a fault of the process itself: left to their default action, never
/// forwarded (as tini does).
const SYNCHRONOUS: &[libc::c_int] = &[
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
];

/// The init's process name (its `comm`, at most 15 bytes).
const INIT_NAME: &std::ffi::CStr = c"netcompose-init";

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Make the calling (forked, single-threaded) child the init of the command: returns in the
/// command's process, which then goes on to exec; the init itself never returns.
pub fn become_init() -> io::Result<()> {
    // SAFETY: prctl, sigprocmask, fork, setpgid, getpid, getppid and sigwaitinfo are system
    // calls on stack values and a static name; nothing here allocates or takes a lock.
    unsafe {
        // Its command line is still the daemon's (it never execs): `ps` and `top` tell it by
        // this name.
        libc::prctl(
            libc::PR_SET_NAME,
            INIT_NAME.as_ptr() as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        check(libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ))?;
        let mut forwarded: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut forwarded);
        for sig in SYNCHRONOUS {
            libc::sigdelset(&mut forwarded, *sig);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        check(libc::pthread_sigmask(
            libc::SIG_SETMASK,
            &forwarded,
            &mut old,
        ))?;
        let init = libc::getpid();
        let child = check(libc::fork())?;
        if child == 0 {
            check(libc::setpgid(0, 0))?;
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ))?;
            // The init may have died before the death signal was armed.
            if libc::getppid() != init {
                libc::_exit(1);
            }
            check(libc::pthread_sigmask(
                libc::SIG_SETMASK,
                &old,
                std::ptr::null_mut(),
            ))?;
            return Ok(());
        }
        close_inherited();
        supervise(child, &forwarded)
    }
}

/// Close every descriptor but stdin, stdout and stderr. The daemon's spawn learns that the
/// exec succeeded when the last copy of its close-on-exec pipe closes, and the init never
/// execs: it must not hold one.
unsafe fn close_inherited() {
    // SAFETY: close_range and close on integers.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == 0 {
            return;
        }
        for fd in 3..65_536 {
            libc::close(fd);
        }
    }
}

/// Reap whatever ends, forward the rest; end as `child` ends.
unsafe fn supervise(child: libc::pid_t, forwarded: &libc::sigset_t) -> ! {
    // SAFETY: system calls on stack values only.
    unsafe {
        loop {
            let sig = libc::sigwaitinfo(forwarded, std::ptr::null_mut());
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(-child, sig);
                continue;
            }
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid != child {
                    continue;
                }
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                if libc::WIFSIGNALED(status) {
                    die_by(libc::WTERMSIG(status));
                }
            }
        }
    }
}

/// End killed by `sig`, as the command was (without a core dump of the init's own).
unsafe fn die_by(sig: libc::c_int) -> ! {
    // SAFETY: system calls on stack values only.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig)
    }
}
