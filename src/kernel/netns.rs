//! Named network namespaces, compatible with iproute2 (`ip netns exec NAME ...` works).
//!
//! A named namespace is a file `<dir>/<name>` on which the namespace's nsfs inode is
//! bind-mounted; the bind mount keeps the namespace alive with no process inside. The sequence
//! follows iproute2's `netns_add` (ip/ipnetns.c):
//!
//! 1. `mkdir <dir>` (0755);
//! 2. make `<dir>` a shared mount point: `mount("", dir, MS_SHARED|MS_REC)`, and if that fails with
//!    EINVAL because it is not a mount point yet, bind-mount it onto itself (`MS_BIND|MS_REC`) and
//!    retry — so that unmounting a namespace file in one mount namespace unmounts it in every
//!    peer, and the namespace is freed promptly;
//! 3. create the empty file `<dir>/<name>` (`O_CREAT|O_EXCL`);
//! 4. on a dedicated thread: `unshare(CLONE_NEWNET)`, then bind-mount
//!    `/proc/thread-self/ns/net` onto the file. iproute2 forks nothing either; it unshares the
//!    whole (single-threaded) process and restores afterwards. We are multi-threaded, so a
//!    throw-away thread does the unshare and dies.
//!
//! Deleting is `umount2(MNT_DETACH)` then `unlink`, tolerating "already gone".
//!
//! [`NetnsDir`] carries the directory (default `/run/netns`) so that tests can keep their
//! namespaces elsewhere; the free functions use the default directory.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{fstatfs, statfs, NSFS_MAGIC};

use super::{Ctx, KernelError};

/// The directory iproute2 uses for named network namespaces.
pub const DEFAULT_DIR: &str = "/run/netns";

/// Where iproute2's `ip netns exec` finds a namespace's own files (hosts, resolv.conf).
pub const ETC_NETNS: &str = "/etc/netns";

/// The current thread's network namespace, as seen through procfs.
pub const THREAD_SELF_NET: &str = "/proc/thread-self/ns/net";

/// A directory of named network namespaces (`/run/netns` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsDir {
    root: PathBuf,
}

impl Default for NetnsDir {
    fn default() -> Self {
        NetnsDir::system()
    }
}

impl NetnsDir {
    /// `/run/netns`, the directory `ip netns` uses.
    pub fn system() -> Self {
        NetnsDir {
            root: PathBuf::from(DEFAULT_DIR),
        }
    }

    /// Any other directory (tests). It is created on first use.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NetnsDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pin file of namespace `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Create a named network namespace. Fails with an `Exists` error if a live namespace of
    /// that name is already there; a stale pin file (a plain file left by a crash, with nothing
    /// mounted on it) is replaced.
    pub fn create(&self, name: &str) -> Result<(), KernelError> {
        self.create_then(name, || ())
    }

    /// The empty pin file a new namespace is mounted on. A live namespace of that name is an
    /// `Exists` error; a stale pin file (nothing mounted on it) is replaced.
    fn fresh_pin(&self, ctx: &Ctx, name: &str) -> Result<PathBuf, KernelError> {
        check_name(ctx, name)?;
        self.prepare_dir(ctx)?;
        let path = self.path(name);
        match statfs(&path) {
            Ok(st) if st.filesystem_type() == NSFS_MAGIC => return Err(ctx.errno(Errno::EEXIST)),
            Ok(_) => fs::remove_file(&path).map_err(|e| ctx.os(e))?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(ctx.errno(e)),
        }
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|e| ctx.os(e))?;
        Ok(path)
    }

    /// Create a named namespace whose name appears only once `init` has run inside it: `init`
    /// runs on the thread that unshared the new namespace, *before* it is bind-mounted under
    /// its name. A caller that marks the namespace in `init` (an ifalias on lo) thus never
    /// leaves a named but unmarked namespace behind, even if it is killed half-way: a crash
    /// before the mount leaves at most a stale pin file, which the next create replaces. If
    /// `init` fails, nothing is mounted and the pin file is removed.
    pub fn create_init<R, F>(&self, name: &str, init: F) -> Result<R, KernelError>
    where
        R: Send,
        F: FnOnce() -> Result<R, KernelError> + Send,
    {
        let ctx = Ctx::new("create netns", name, None);
        let path = self.fresh_pin(&ctx, name)?;
        let outcome = std::thread::scope(|s| {
            s.spawn(|| -> Result<R, KernelError> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ctx.errno(e))?;
                let r = init()?;
                mount(
                    Some(THREAD_SELF_NET),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ctx.errno(e))?;
                Ok(r)
            })
            .join()
        });
        let error = match outcome {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
            Err(_) => ctx.protocol("the namespace thread panicked"),
        };
        let _ = fs::remove_file(&path);
        Err(error)
    }

    /// [`NetnsDir::create`], then run `f` inside the new namespace on the very thread that
    /// created it, which saves a thread when the next step needs to be inside anyway (e.g.
    /// opening a netlink socket there with `Netlink::open_current`). `f` runs only if the
    /// namespace was created and pinned; a panic in `f` is propagated (the namespace stays).
    pub fn create_then<R, F>(&self, name: &str, f: F) -> Result<R, KernelError>
    where
        R: Send,
        F: FnOnce() -> R + Send,
    {
        let ctx = Ctx::new("create netns", name, None);
        let path = self.fresh_pin(&ctx, name)?;

        let outcome = std::thread::scope(|s| {
            s.spawn(|| -> Result<R, Errno> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                mount(
                    Some(THREAD_SELF_NET),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(f())
            })
            .join()
        });
        let error = match outcome {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => ctx.errno(e),
            Err(panic) if self.exists(name) => std::panic::resume_unwind(panic),
            Err(_) => ctx.protocol("the namespace thread panicked"),
        };
        let _ = fs::remove_file(&path);
        Err(error)
    }

    /// Whether `name` is a live named namespace (a pin file with an nsfs inode mounted on it).
    pub fn exists(&self, name: &str) -> bool {
        if check_name(&Ctx::new("", name, None), name).is_err() {
            return false;
        }
        matches!(statfs(&self.path(name)), Ok(st) if st.filesystem_type() == NSFS_MAGIC)
    }

    /// The names of the entries of the directory, sorted (empty if it does not exist).
    pub fn list(&self) -> Result<Vec<String>, KernelError> {
        let ctx = Ctx::new("list netns in", self.root.display(), None);
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ctx.os(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ctx.os(e))?;
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Delete a named namespace: detach the bind mount, then remove the pin file. Returns
    /// `false` if there was nothing to delete. The namespace itself is freed by the kernel once
    /// no process, socket or open file refers to it any more.
    pub fn delete(&self, name: &str) -> Result<bool, KernelError> {
        let ctx = Ctx::new("delete netns", name, None);
        check_name(&ctx, name)?;
        let path = self.path(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (stale file); ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(ctx.errno(e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ctx.os(e)),
        }
    }

    /// Open a namespace file: `Some(name)` for a named namespace, `None` for the calling
    /// thread's current network namespace. The descriptor is what `IFLA_NET_NS_FD` and
    /// `setns` take.
    pub fn open(&self, name: Option<&str>) -> Result<OwnedFd, KernelError> {
        let Some(name) = name else {
            let ctx = Ctx::new("open netns", "(current)", None);
            return open_ro(Path::new(THREAD_SELF_NET)).map_err(|e| ctx.os(e));
        };
        let ctx = Ctx::new("open netns", name, None);
        check_name(&ctx, name)?;
        let fd = open_ro(&self.path(name)).map_err(|e| ctx.os(e))?;
        match fstatfs(&fd) {
            Ok(st) if st.filesystem_type() == NSFS_MAGIC => Ok(fd),
            Ok(_) => Err(ctx.os(io::Error::new(
                io::ErrorKind::NotFound,
                "stale pin file: no network namespace is mounted on it",
            ))),
            Err(e) => Err(ctx.errno(e)),
        }
    }

    /// Run `f` inside namespace `name` (`None`: the calling thread's namespace, run directly).
    /// For a named namespace, `f` runs on a fresh thread that `setns`'ed into it; the caller's
    /// thread is never moved. A panic in `f` is propagated.
    pub fn run_in<R, F>(&self, name: Option<&str>, f: F) -> Result<R, KernelError>
    where
        R: Send,
        F: FnOnce() -> R + Send,
    {
        match name {
            None => Ok(f()),
            Some(name) => {
                let fd = self.open(Some(name))?;
                run_in_fd(fd.as_fd(), f).map_err(|e| Ctx::new("enter netns", name, None).errno(e))
            }
        }
    }

    /// Create the directory and make it a shared mount point, as iproute2 does.
    fn prepare_dir(&self, ctx: &Ctx) -> Result<(), KernelError> {
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.root)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ctx.os(e)),
        }
        let mut made_mount = false;
        loop {
            match mount(
                Some(""),
                &self.root,
                Some("none"),
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            ) {
                Ok(()) => return Ok(()),
                Err(Errno::EINVAL) if !made_mount => {
                    // Not a mount point yet: upgrade the directory to one.
                    mount(
                        Some(&self.root),
                        &self.root,
                        Some("none"),
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(|e| Ctx::new("bind-mount", self.root.display(), None).errno(e))?;
                    made_mount = true;
                }
                Err(e) => return Err(Ctx::new("make shared", self.root.display(), None).errno(e)),
            }
        }
    }
}

/// Run `f` on a fresh thread that entered the network namespace `ns` (an nsfs descriptor).
pub fn run_in_fd<R, F>(ns: BorrowedFd<'_>, f: F) -> Result<R, Errno>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    let outcome = std::thread::scope(|s| {
        s.spawn(move || -> Result<R, Errno> {
            setns(ns, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })
        .join()
    });
    match outcome {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The inode number of a namespace descriptor: two descriptors refer to the same namespace
/// exactly when their inodes (and devices) are equal.
pub fn namespace_id(fd: BorrowedFd<'_>) -> Result<u64, KernelError> {
    nix::sys::stat::fstat(fd)
        .map(|st| st.st_ino)
        .map_err(|e| Ctx::new("stat netns", format!("fd {}", fd.as_raw_fd()), None).errno(e))
}

/// Which namespace a descriptor or a pin refers to: its nsfs inode (device and number). Two
/// refer to the same namespace exactly when their identities are equal, as long as that
/// namespace lives: the kernel gives a freed namespace's number to a later one, so whoever
/// keeps an identity to compare with keeps the namespace alive (a descriptor, a socket in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsIdentity {
    dev: u64,
    ino: u64,
}

impl NsIdentity {
    /// The identity of the namespace `fd` refers to.
    pub fn of(fd: BorrowedFd<'_>) -> Result<NsIdentity, Errno> {
        nix::sys::stat::fstat(fd).map(|st| NsIdentity::from_stat(&st))
    }

    /// The namespace's inode number (its nsfs inode).
    pub fn ino(&self) -> u64 {
        self.ino
    }

    fn from_stat(st: &nix::sys::stat::FileStat) -> NsIdentity {
        NsIdentity {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

impl NetnsDir {
    /// The identity of what is pinned as `name` now (a stale pin file's is no namespace's);
    /// None when there is no such pin.
    pub fn pinned(&self, name: &str) -> Option<NsIdentity> {
        let st = nix::sys::stat::stat(&self.path(name)).ok()?;
        Some(NsIdentity::from_stat(&st))
    }

    /// [`NetnsDir::pinned`] of each of `names`, in their order, each looked up in the
    /// directory opened once: the daemon asks for all its namespaces at every reload, and the
    /// walk of the whole path for each took it 0.8 ms of 200.
    pub fn pinned_each<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Option<NsIdentity>> {
        let flags = nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(&self.root, flags, nix::sys::stat::Mode::empty());
        names
            .into_iter()
            .map(|name| {
                // As `exists`: a name that could leave the directory (`..`, `a/b`) pins nothing.
                if check_name(&Ctx::new("", name, None), name).is_err() {
                    return None;
                }
                let st = match &dir {
                    Ok(dir) => nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::empty()),
                    Err(_) => nix::sys::stat::stat(&self.path(name)),
                };
                st.ok().map(|st| NsIdentity::from_stat(&st))
            })
            .collect()
    }
}

fn open_ro(path: &Path) -> io::Result<OwnedFd> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
}

fn check_name(ctx: &Ctx, name: &str) -> Result<(), KernelError> {
    let bytes = OsStr::new(name).as_bytes();
    if name.is_empty() || name == "." || name == ".." {
        return Err(ctx.invalid("invalid namespace name"));
    }
    if bytes.len() > 255 {
        return Err(ctx.invalid("namespace name longer than 255 bytes"));
    }
    if bytes.iter().any(|b| *b == b'/' || *b == 0) {
        return Err(ctx.invalid("namespace name contains '/' or NUL"));
    }
    Ok(())
}

/// [`NetnsDir::create`] in `/run/netns`.
pub fn create(name: &str) -> Result<(), KernelError> {
    NetnsDir::system().create(name)
}

/// [`NetnsDir::create_then`] in `/run/netns`.
pub fn create_then<R, F>(name: &str, f: F) -> Result<R, KernelError>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    NetnsDir::system().create_then(name, f)
}

/// [`NetnsDir::exists`] in `/run/netns`.
pub fn exists(name: &str) -> bool {
    NetnsDir::system().exists(name)
}

/// [`NetnsDir::list`] of `/run/netns`.
pub fn list() -> Result<Vec<String>, KernelError> {
    NetnsDir::system().list()
}

/// [`NetnsDir::delete`] in `/run/netns`.
pub fn delete(name: &str) -> Result<bool, KernelError> {
    NetnsDir::system().delete(name)
}

/// [`NetnsDir::open`] in `/run/netns` (`None`: the calling thread's namespace).
pub fn open(name: Option<&str>) -> Result<OwnedFd, KernelError> {
    NetnsDir::system().open(name)
}

/// [`NetnsDir::run_in`] in `/run/netns` (`None`: run directly).
pub fn run_in<R, F>(name: Option<&str>, f: F) -> Result<R, KernelError>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    NetnsDir::system().run_in(name, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let ctx = Ctx::new("create netns", "x", None);
        assert!(check_name(&ctx, "demo-web-1").is_ok());
        assert!(check_name(&ctx, "").is_err());
        assert!(check_name(&ctx, "..").is_err());
        assert!(check_name(&ctx, "a/b").is_err());
        assert!(!NetnsDir::new("/nonexistent-netcompose").exists("x"));
        assert!(NetnsDir::new("/nonexistent-netcompose")
            .list()
            .unwrap()
            .is_empty());
    }

    /// The pins looked up in the opened directory are what one lookup of each finds (plain
    /// files here: nothing is mounted on them, but what the lookup reads is the same).
    #[test]
    fn pinned_each_finds_what_pinned_finds() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::write(tmp.path().join(name), "").unwrap();
        }
        let dir = NetnsDir::new(tmp.path());
        let each = dir.pinned_each(["a", "missing", "b", "../a"]);
        assert_eq!(each, [dir.pinned("a"), None, dir.pinned("b"), None]);
        assert!(each[0].is_some() && each[0] != each[2]);
        let gone = NetnsDir::new(tmp.path().join("gone"));
        assert_eq!(gone.pinned_each(["a"]), [None]);
    }
}
