//! How `up` learns at once that the daemon it started is ready: a pipe whose write end the
//! daemon inherits (its number in [`READY_FD_ENV`]) and writes one byte to once its control
//! socket listens and its pid file is written, as s6's notification-fd or systemd's
//! `READY=1` do. `up` had looked for the pid file every 20 ms, 10 ms lost on average after
//! each start. The pid file and a `Status` request still decide; the pipe only says when to
//! look. Its end closed without a byte (the daemon died) wakes `up` too.

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The environment variable that names the daemon's end of the pipe.
pub const READY_FD_ENV: &str = "NETCOMPOSE_DAEMON_READY_FD";

/// The starting side: the read end, and the write end until the child has it.
pub struct Waiter {
    read: OwnedFd,
    write: Option<OwnedFd>,
    /// The daemon's end is closed (after its byte, or because it exited): nothing more to
    /// wait for on the pipe.
    closed: bool,
}

impl Waiter {
    /// A new pipe, both ends close-on-exec (the child clears it on its end alone).
    pub fn new() -> std::io::Result<Waiter> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok(Waiter {
            read,
            write: Some(write),
            closed: false,
        })
    }

    /// The descriptor the child is to keep (see `contain::pass_to_child`).
    pub fn child_end(&self) -> Option<RawFd> {
        self.write.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The child has its copy: the parent's goes, so that the child's exit closes the pipe.
    pub fn spawned(&mut self) {
        self.write = None;
    }

    /// Wait at most `max` for a word from the daemon (its byte, or its end closed). Once the
    /// pipe is closed, there is nothing to wait for: it sleeps `max`.
    pub fn wait(&mut self, max: Duration) {
        if self.closed {
            std::thread::sleep(max);
            return;
        }
        let millis = u16::try_from(max.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => {
                let mut byte = [0u8; 1];
                // A byte: ready, look now (the next wait sees the end closed). Nothing or an
                // error: the end is closed.
                if !matches!(nix::unistd::read(&self.read, &mut byte), Ok(1)) {
                    self.closed = true;
                }
            }
            Err(_) => self.closed = true,
        }
    }
}

/// The daemon's side: the write end it inherited, if it was started by `up`.
pub struct Notifier(File);

impl Notifier {
    /// The end named by [`READY_FD_ENV`], if it is a pipe; the variable is removed and the
    /// descriptor made close-on-exec, so that no `x-run` process inherits either.
    pub fn inherit() -> Option<Notifier> {
        let named = std::env::var(READY_FD_ENV).ok();
        std::env::remove_var(READY_FD_ENV);
        let fd: RawFd = named?.parse().ok()?;
        // SAFETY: only borrowed for the fstat; an invalid number makes fstat fail with EBADF.
        let stat = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(fd) }).ok()?;
        if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFIFO {
            return None;
        }
        // SAFETY: the descriptor is open (fstat succeeded), is a pipe, and was inherited for
        // this purpose only: nothing else in this process owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        fcntl(file.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
        Some(Notifier(file))
    }

    /// Say the daemon is ready, and close the pipe.
    pub fn ready(mut self) {
        // Nobody listening (the `up` that started it is gone) is no error of the daemon's.
        let _ = self.0.write_all(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_end_is_inherited_and_its_byte_then_its_close_reach_the_waiter() {
        let mut w = Waiter::new().unwrap();
        let fd = w.child_end().unwrap();
        // What the child finds after `pass_to_child` and exec: the descriptor, named.
        let child = nix::unistd::dup(w.write.as_ref().unwrap().as_fd()).unwrap();
        w.spawned();
        assert!(w.child_end().is_none());
        std::env::set_var(READY_FD_ENV, child.as_raw_fd().to_string());
        let notifier = Notifier::inherit().expect("a pipe named by the variable");
        std::mem::forget(child); // the notifier owns it now
        assert!(std::env::var_os(READY_FD_ENV).is_none(), "not passed on");
        let flags = fcntl(notifier.0.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        assert_ne!(notifier.0.as_raw_fd(), fd, "a copy of the parent's end");

        w.wait(Duration::from_millis(1));
        assert!(!w.closed, "nothing said yet");
        notifier.ready();
        w.wait(Duration::from_secs(60));
        assert!(!w.closed, "the byte read");
        w.wait(Duration::from_secs(60));
        assert!(w.closed, "then the end is seen closed");

        // Only a pipe is taken (one test: the variable is the process's).
        let file = tempfile::tempfile().unwrap();
        std::env::set_var(READY_FD_ENV, file.as_raw_fd().to_string());
        assert!(Notifier::inherit().is_none());
        std::env::set_var(READY_FD_ENV, "not a number");
        assert!(Notifier::inherit().is_none());
        assert!(Notifier::inherit().is_none(), "and no variable");
    }
}
