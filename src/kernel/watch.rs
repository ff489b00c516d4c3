//! Change notifications of namespaces, for a process that keeps what it once read of them (the
//! project daemon's survey cache, `crate::daemon::informer`): per namespace an rtnetlink socket
//! subscribed to link, address and route changes and an nfnetlink socket that asks for the
//! ruleset's generation at each drain; and one inotify instance over the namespaces' files in
//! /etc/netns.
//!
//! The kernel queues a notification on every subscribed socket while it makes the change,
//! before it acknowledges the change to its writer (`rtnl_notify` broadcasts synchronously),
//! and inotify queues its event inside the writing syscall. Once a writer has its answers, a
//! drain sees what it did: a cache drained before it answers is as fresh as a read of the
//! kernel.
//!
//! nf_tables is not subscribed to: a listener on `NFNLGRP_NFTABLES` makes every commit in the
//! namespace build and broadcast a notification for each object it touched (each set element
//! of a scale, in every table that can reach the service), paid by the writer inside its
//! commit and again by the drain that reads them; all the cache needs is the generation,
//! which one `NFT_MSG_GETGEN` per drain tells
//! ([nf_tables_setelem_notify](https://elixir.bootlin.com/linux/v6.12/C/ident/nf_tables_setelem_notify)
//! builds nothing when no one listens).

use super::netns::{NetnsDir, NsIdentity};
use super::nftables::{read, wire};
use super::{Ctx, KernelError};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// rtnetlink groups as `bind`'s bit mask (linux/rtnetlink.h): links, IPv4 and IPv6 addresses
/// and routes, which is what a survey reads.
const RTNL_GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;
/// Room for a burst of notifications between two drains (capped by `net.core.rmem_max`);
/// beyond it the kernel drops them and says so (ENOBUFS), which makes the namespace read again.
const RCVBUF: usize = 1 << 20;

/// What one drain of a namespace's sockets found since the drain before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// A link, address or route was notified.
    pub links: bool,
    /// The ruleset generation now (None when the kernel would not tell).
    pub generation: Option<u32>,
    /// The kernel dropped notifications (ENOBUFS): anything may have changed.
    pub lost: bool,
}

/// The sockets of one namespace. They hold the namespace alive: a watch is dropped
/// before its namespace is deleted.
pub struct NsWatch {
    rtnl: OwnedFd,
    /// Not subscribed: asked for the generation (see the module's notes).
    nft: OwnedFd,
    /// The namespace's identity: this watch's sockets hold the namespace alive, so a pin
    /// that shows it is this namespace.
    identity: NsIdentity,
    cookie: Option<u64>,
    label: String,
}

impl NsWatch {
    /// Subscribe to namespace `name`'s link, address and route changes and open the socket
    /// that asks its generation, on a thread that is in it (`ns` is its file; a survey's
    /// thread: see [`super::survey::survey_after`]).
    pub fn open_here(name: &str, ns: &OwnedFd) -> Result<NsWatch, KernelError> {
        let identity =
            NsIdentity::of(ns.as_fd()).map_err(|e| Ctx::new("stat netns", name, None).errno(e))?;
        let rtnl = subscribe(name, SockProtocol::NetlinkRoute, RTNL_GROUPS)?;
        let nft = wire::open(&Ctx::new("open", "NETLINK_NETFILTER", Some(name)))?;
        let cookie = wire::netns_cookie(&Ctx::new("netns cookie", name, None), &nft).ok();
        Ok(NsWatch {
            rtnl,
            nft,
            identity,
            cookie,
            label: name.to_string(),
        })
    }

    /// The namespace's cookie (None before Linux 5.14).
    pub fn cookie(&self) -> Option<u64> {
        self.cookie
    }

    /// Whether pin `name` of `dir` still names this watch's namespace (not another one made
    /// under the same name, nor nothing).
    pub fn pinned_as(&self, dir: &NetnsDir, name: &str) -> bool {
        dir.pinned(name) == Some(self.identity)
    }

    /// Read every notification queued since the last drain, without blocking, and the
    /// ruleset's generation.
    pub fn drain(&self, buf: &mut [u8]) -> Result<Seen, KernelError> {
        let mut seen = Seen::default();
        drain(&self.label, &self.rtnl, buf, &mut seen)?;
        let ctx = Ctx::new("read generation", "NETLINK_NETFILTER", Some(&self.label));
        match read::generation_on(&ctx, &self.nft) {
            Ok(generation) => seen.generation = Some(generation),
            // Not told: whatever the cache holds may be stale.
            Err(_) => seen.lost = true,
        }
        Ok(seen)
    }
}

/// A netlink socket of the calling thread's namespace, subscribed to `groups`, non-blocking.
fn subscribe(label: &str, proto: SockProtocol, groups: u32) -> Result<OwnedFd, KernelError> {
    let ctx = Ctx::new("subscribe", format!("{proto:?}"), Some(label));
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        proto,
    )
    .map_err(|e| ctx.errno(e))?;
    setsockopt(&fd, sockopt::RcvBuf, &RCVBUF).map_err(|e| ctx.errno(e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(|e| ctx.errno(e))?;
    Ok(fd)
}

/// Read `fd` until it has nothing queued: any datagram is a change of links, addresses or
/// routes.
fn drain(label: &str, fd: &OwnedFd, buf: &mut [u8], seen: &mut Seen) -> Result<(), KernelError> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok(()),
            Ok(_) => seen.links = true,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::ENOBUFS) => seen.lost = true,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Ctx::new("read notifications", "netlink", Some(label)).errno(e)),
        }
    }
}

/// What an inotify drain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesSeen {
    /// These namespaces' directories changed (a file written, renamed, removed; the directory
    /// made or removed).
    Some(HashSet<String>),
    /// Events were dropped (queue overflow): any directory may have changed.
    All,
}

/// One inotify instance over `<etc>` (a namespace's directory made or removed) and each
/// followed namespace's directory in it (a file written, renamed into place, removed).
pub struct FilesWatch {
    fd: Inotify,
    etc: PathBuf,
    root: WatchDescriptor,
    dirs: HashMap<WatchDescriptor, String>,
}

impl FilesWatch {
    /// Watch `etc` (/etc/netns), which must exist.
    pub fn new(etc: &Path) -> Result<FilesWatch, KernelError> {
        let ctx = Ctx::new("watch", etc.display(), None);
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| ctx.errno(e))?;
        let root = fd
            .add_watch(etc, names_changed())
            .map_err(|e| ctx.errno(e))?;
        Ok(FilesWatch {
            fd,
            etc: etc.to_path_buf(),
            root,
            dirs: HashMap::new(),
        })
    }

    /// Watch namespace `name`'s directory, if it exists (until it does, the watch on `etc`
    /// reports its making). Watching again is harmless: inotify gives the same descriptor.
    pub fn follow(&mut self, name: &str) {
        if let Ok(wd) = self.fd.add_watch(&self.etc.join(name), files_changed()) {
            self.dirs.insert(wd, name.to_string());
        }
    }

    /// Stop watching namespace `name`'s directory.
    pub fn forget(&mut self, name: &str) {
        let wds: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            self.dirs.remove(&wd);
            let _ = self.fd.rm_watch(wd);
        }
    }

    /// Every event queued since the last drain, without blocking.
    pub fn drain(&mut self) -> Result<FilesSeen, KernelError> {
        let mut names = HashSet::new();
        loop {
            let events = match self.fd.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return Ok(FilesSeen::Some(names)),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Ctx::new("read inotify events", self.etc.display(), None).errno(e))
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    return Ok(FilesSeen::All);
                }
                if ev.wd == self.root {
                    if let Some(name) = ev.name.and_then(|n| n.into_string().ok()) {
                        names.insert(name);
                    }
                } else if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory went (or was forgotten): watched again once it is back.
                    if let Some(name) = self.dirs.remove(&ev.wd) {
                        names.insert(name);
                    }
                } else if let Some(name) = self.dirs.get(&ev.wd) {
                    names.insert(name.clone());
                }
            }
        }
    }
}

/// Events on /etc/netns itself: a namespace's directory made, removed or renamed.
fn names_changed() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
}

/// Events in a namespace's directory: anything that changes what a survey reads there.
fn files_changed() -> AddWatchFlags {
    names_changed()
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}
