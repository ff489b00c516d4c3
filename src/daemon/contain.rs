//! What keeps a project's processes contained: the daemon's lock (at most one daemon per
//! project), and the cgroups that hold the daemon and every `x-run` process, so that stopping
//! a project ends every process it started, whatever happened to the daemon before.
//!
//! Cgroups, under the cgroup v2 hierarchy found in /proc/self/mountinfo:
//!
//! | cgroup                                  | holds                                         |
//! |-----------------------------------------|-----------------------------------------------|
//! | `netcompose/<project>/daemon`           | the daemon (it joins before it forks anything) |
//! | `netcompose/<project>/x-run/<name>.<k>` | the k-th start of process `<name>`, all it forks |
//!
//! Processes live in leaves only (cgroup v2's no-internal-process rule, should controllers
//! ever be enabled). A leaf per start, never reused, lets the daemon kill and remove the
//! leftovers of one run while the next run of the same process is already going.
//!
//! The lock is an exclusive flock on `/run/netcompose/<project>/daemon.lock`. `up` takes it
//! before it starts a daemon and hands its open file to the child, which keeps it for life
//! (the kernel drops it when the daemon dies, however it dies). So a daemon is alive exactly
//! when the lock is held, and `up` never starts a second one next to a running or orphaned one.
//!
//! Without a cgroup v2 hierarchy the fallback is the daemon's session: the daemon calls setsid
//! and its `x-run` children only setpgid, so every process it forks stays in a session whose
//! id is the daemon's pid, and that session can be killed even after the daemon died. A PID
//! namespace would make the kernel kill everything with the daemon, but it would also make the
//! daemon init (reaping every orphan) and give its processes pids that differ from those `ps`
//! and the pid file show; the session needs nothing beyond plain Linux. Its limit: a process
//! that calls setsid itself leaves it.

use super::{run_dir, DaemonError};
use crate::kernel::cgroup::{self, Cgroup, CgroupError};
use crate::project_name::ProjectName;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable through which `up` tells the daemon which descriptor is its lock.
pub const LOCK_FD_ENV: &str = "NETCOMPOSE_DAEMON_LOCK_FD";
/// How long stopping waits for killed processes to be gone (only a process stuck in the kernel
/// takes more than a few milliseconds).
pub const KILL_WAIT: Duration = Duration::from_secs(10);

pub fn lock_path(project: &ProjectName) -> PathBuf {
    run_dir(project).join("daemon.lock")
}

/// The project's daemon lock, held. Dropping it closes the file without an explicit unlock:
/// the lock belongs to the open file, which the daemon may share (see [`pass_to_child`]).
pub struct DaemonLock {
    held: File,
}

/// flock(LOCK_EX | LOCK_NB): `Ok(false)` when someone else holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own; it touches no memory.
    let res =
        unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
    match nix::errno::Errno::result(res) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl DaemonLock {
    /// Take the lock if no daemon holds it (`None`: one does). The run directory must exist.
    pub fn try_acquire(project: &ProjectName) -> Result<Option<DaemonLock>, DaemonError> {
        let path = lock_path(project);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(super::io_err(&path))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(super::io_err(&path))?;
        match try_lock(&file).map_err(super::io_err(&path))? {
            true => Ok(Some(DaemonLock { held: file })),
            false => Ok(None),
        }
    }

    /// For the daemon: the lock `up` handed over (named by [`LOCK_FD_ENV`]), else the lock
    /// taken afresh (a daemon started by hand). `None`: another daemon holds it.
    pub fn inherit_or_acquire(project: &ProjectName) -> Result<Option<DaemonLock>, DaemonError> {
        let path = lock_path(project);
        let inherited = std::env::var(LOCK_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok());
        std::env::remove_var(LOCK_FD_ENV);
        let Some(fd) = inherited.filter(|fd| is_the_file(*fd, &path)) else {
            return DaemonLock::try_acquire(project);
        };
        // SAFETY: the descriptor is open (fstat succeeded), refers to the lock file, and
        // nothing else in this process owns it: it was inherited for this purpose.
        let file = unsafe { File::from_raw_fd(fd) };
        // The x-run children must not inherit it, or an orphan would keep the lock.
        nix::fcntl::fcntl(
            file.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| super::io_err(&path)(e.into()))?;
        match try_lock(&file).map_err(super::io_err(&path))? {
            true => Ok(Some(DaemonLock { held: file })),
            false => Ok(None),
        }
    }

    /// The descriptor to hand to the daemon (see [`pass_to_child`]).
    pub fn raw_fd(&self) -> RawFd {
        self.held.as_raw_fd()
    }
}

/// Whether descriptor `fd` is open on the file at `path`.
fn is_the_file(fd: RawFd, path: &Path) -> bool {
    let Ok(want) = std::fs::metadata(path) else {
        return false;
    };
    // SAFETY: only borrowed for the fstat; an invalid number makes fstat fail with EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_dev == want.dev() && st.st_ino == want.ino())
}

/// Between fork and exec: let a descriptor meant for the daemon (its lock, its end of the
/// readiness pipe) survive exec (a single fcntl).
pub fn pass_to_child(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: the descriptor stays open in the parent until the child has exec'd.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map(|_| ())
    .map_err(Into::into)
}

/// The project's cgroups.
#[derive(Debug, Clone)]
pub struct Cgroups {
    project: Cgroup,
}

impl Cgroups {
    /// The project's cgroups in this machine's cgroup v2 hierarchy (not created yet).
    pub fn find(project: &ProjectName) -> Result<Cgroups, CgroupError> {
        let project = cgroup::hierarchy()?.child("netcompose")?.child(project)?;
        Ok(Cgroups { project })
    }

    /// `netcompose/<project>`: everything of the project.
    pub fn project(&self) -> &Cgroup {
        &self.project
    }

    /// The daemon's leaf.
    pub fn daemon(&self) -> Result<Cgroup, CgroupError> {
        self.project.child("daemon")
    }

    /// The parent of the x-run leaves.
    pub fn x_run(&self) -> Result<Cgroup, CgroupError> {
        self.project.child("x-run")
    }

    /// Kill every process of the project, wait until none is left, remove the cgroups.
    pub fn kill_and_remove(&self) -> Result<(), CgroupError> {
        self.project.kill_all(KILL_WAIT)?;
        self.project.remove()
    }
}

/// Kill every process of `project` and return once none is left: through its cgroups, or
/// (without cgroup v2) through the session of the daemon whose pid the pid file held.
pub fn kill_project(project: &ProjectName, last_daemon: Option<u32>) -> Result<(), DaemonError> {
    let failed = |source| DaemonError::Processes {
        project: project.to_string(),
        source,
    };
    match (Cgroups::find(project), last_daemon) {
        (Ok(cg), _) => cg.kill_and_remove().map_err(failed),
        (Err(CgroupError::NotMounted), Some(sid)) => {
            kill_session(project, sid, KILL_WAIT).map_err(failed)
        }
        (Err(CgroupError::NotMounted), None) => Ok(()),
        (Err(e), _) => Err(failed(e)),
    }
}

/// SIGKILL every process of session `sid` until none is left. The session is the daemon's only
/// if its leader is gone (or a zombie) or is that daemon: a live process with that pid that is
/// something else means our session ended and the number was given to someone else's.
fn kill_session(project: &ProjectName, sid: u32, wait: Duration) -> Result<(), CgroupError> {
    let leader = std::fs::read_to_string(format!("/proc/{sid}/stat")).ok();
    let leader_lives = leader
        .as_deref()
        .and_then(|stat| stat.rsplit_once(')'))
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    if leader_lives && !super::is_our_daemon(sid, project) {
        return Ok(());
    }
    let start = Instant::now();
    loop {
        let members = session_members(sid);
        if members.is_empty() {
            return Ok(());
        }
        if start.elapsed() > wait {
            return Err(CgroupError::StillPopulated {
                path: PathBuf::from(format!("session {sid}")),
                pids: members,
                waited: start.elapsed(),
            });
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Live (not zombie) processes whose session is `sid`.
fn session_members(sid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command's closing parenthesis: state ppid pgrp session ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(3) == Some(&sid.to_string().as_str())
        })
        .collect()
}
