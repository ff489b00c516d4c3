//! cgroup v2: find the unified hierarchy, make and remove cgroups, move a process into one, and
//! kill everything inside one. A cgroup holds every descendant of the processes put in it (a
//! fork cannot leave it), so killing a cgroup until it is empty is the kernel's guarantee that
//! nothing it ran survives, whatever the processes did with their sessions or parents.
//!
//! Mechanism only: which cgroups exist and what goes where is the caller's business.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted in this mount namespace.
    #[error(
        "no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo); \
         mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NotMounted,
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A cgroup name must be a single plain path component.
    #[error("{name:?} cannot name a cgroup")]
    BadName { name: String },
    /// Processes survived SIGKILL for the whole wait (stuck in uninterruptible sleep).
    #[error("{path} still holds processes {pids:?} after {} ms of SIGKILL", waited.as_millis())]
    StillPopulated {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

impl CgroupError {
    /// The cgroup (or file of it) does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            CgroupError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            CgroupError::NotMounted
            | CgroupError::BadName { .. }
            | CgroupError::StillPopulated { .. } => false,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The mount point of the first cgroup2 file system in a `/proc/self/mountinfo` text.
pub fn cgroup2_mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // `id parent maj:min root mount-point options [optional...] - fstype source super`
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "cgroup2" {
            return None;
        }
        before.split(' ').nth(4).map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 hierarchy of this mount namespace (on hybrid systems it sits beside the v1
/// controllers, e.g. at /sys/fs/cgroup/unified; elsewhere it is /sys/fs/cgroup itself).
pub fn hierarchy() -> Result<Cgroup, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    cgroup2_mount_point(&text)
        .map(|path| Cgroup { path })
        .ok_or(CgroupError::NotMounted)
}

/// One cgroup directory (it may not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// A cgroup at `path` (for callers that already know a cgroup2 path).
    pub fn at(path: PathBuf) -> Cgroup {
        Cgroup { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The child cgroup `name` (one plain component: no `/`, `.` or `..`).
    pub fn child(&self, name: &str) -> Result<Cgroup, CgroupError> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(Cgroup {
                path: self.path.join(name),
            }),
            _ => Err(CgroupError::BadName { name: name.into() }),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Make the cgroup and its missing parents; an existing one is fine.
    pub fn create(&self) -> Result<(), CgroupError> {
        fs::create_dir_all(&self.path).map_err(io_err("create cgroup", &self.path))
    }

    /// `cgroup.procs` opened for writing, for a child to write `0` into between fork and exec
    /// ([`enter`]), so that it runs its first instruction of the new program inside.
    pub fn procs_for_child(&self) -> Result<OwnedFd, CgroupError> {
        let path = self.path.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(io_err("open", &path))
    }

    /// Move the calling process (all its threads) into this cgroup.
    pub fn join(&self) -> Result<(), CgroupError> {
        let path = self.path.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"0"))
            .map_err(io_err("join", &path))
    }

    /// Whether a live process is in this cgroup or below (`populated` of `cgroup.events`). A
    /// cgroup that does not exist holds nothing.
    pub fn populated(&self) -> Result<bool, CgroupError> {
        let path = self.path.join("cgroup.events");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().any(|l| l.trim() == "populated 1")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// The pids in this cgroup and every cgroup below it.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        for cg in self.tree()? {
            let path = cg.join("cgroup.procs");
            match fs::read_to_string(&path) {
                Ok(text) => out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Ok(out)
    }

    /// This cgroup and its descendants, children after parents; empty when it does not exist.
    fn tree(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let mut out = Vec::new();
        let mut todo = vec![self.path.clone()];
        while let Some(dir) = todo.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("list", &dir))?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(entry.path());
                }
            }
            out.push(dir);
        }
        Ok(out)
    }

    /// SIGKILL every process in this cgroup and below, at once: `cgroup.kill` (kernel 5.14),
    /// else a SIGKILL to each pid listed (a process forking meanwhile is caught by the next
    /// round of [`Cgroup::kill_all`]). A cgroup that does not exist holds nothing to kill.
    pub fn kill(&self) -> Result<(), CgroupError> {
        if !self.exists() {
            return Ok(());
        }
        let path = self.path.join("cgroup.kill");
        match OpenOptions::new().write(true).open(&path) {
            Ok(mut f) => return f.write_all(b"1").map_err(io_err("write", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("open", &path)(e)),
        }
        for pid in self.pids()? {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(io_err("kill", &self.path)(e.into())),
            }
        }
        Ok(())
    }

    /// [`Cgroup::kill`] until nothing lives in this cgroup or below, for at most `wait`.
    pub fn kill_all(&self, wait: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let mut round = 0u32;
        loop {
            if round % 20 == 0 {
                self.kill()?;
            }
            if !self.populated()? {
                return Ok(());
            }
            if start.elapsed() > wait {
                return Err(CgroupError::StillPopulated {
                    path: self.path.clone(),
                    pids: self.pids().unwrap_or_default(),
                    waited: start.elapsed(),
                });
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait until nothing lives in this cgroup or below, for at most `wait`; whether it is empty.
    pub fn wait_empty(&self, wait: Duration) -> Result<bool, CgroupError> {
        let start = Instant::now();
        while self.populated()? {
            if start.elapsed() > wait {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(true)
    }

    /// Remove this cgroup and every cgroup below it (they must hold no process). One that does
    /// not exist is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.tree()?.iter().rev() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove cgroup", dir)(e)),
            }
        }
        Ok(())
    }
}

/// Write `0` to an open `cgroup.procs` ([`Cgroup::procs_for_child`]): the calling process moves
/// into that cgroup. A single write(2), so it may run between fork and exec.
pub fn enter(procs: &OwnedFd) -> io::Result<()> {
    nix::unistd::write(procs.as_fd(), b"0")
        .map(|_| ())
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_cgroup2_mount_wherever_it_is() {
        assert_eq!(
            cgroup2_mount_point(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_point(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = r"29 23 0:26 / /mnt/my\040cgroups rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount_point(spaced),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(
            cgroup2_mount_point(&HYBRID.replace("cgroup2", "cgroup")),
            None
        );
    }

    #[test]
    fn child_names_are_single_components() {
        let root = Cgroup::at(PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            root.child("web-1.3").unwrap().path(),
            Path::new("/sys/fs/cgroup/web-1.3")
        );
        for bad in ["", ".", "..", "a/b", "/abs"] {
            assert!(
                matches!(root.child(bad), Err(CgroupError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_missing_cgroup_is_empty_and_removable() {
        let cg = Cgroup::at(PathBuf::from("/nonexistent/netcompose-test"));
        assert!(!cg.populated().unwrap());
        assert!(cg.pids().unwrap().is_empty());
        cg.kill().unwrap();
        cg.remove().unwrap();
    }
}
