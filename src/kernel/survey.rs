//! Many namespaces read in one go, for `observe`: a few threads take the namespaces in turn,
//! enter each (`setns`), dump its links (and, for a full read, its addresses and routes) on one
//! blocking rtnetlink socket, one dump after the other, and open its nfnetlink socket for the
//! table read that follows. Opening an asynchronous connection per namespace (a thread made to
//! enter it, a connection task, a channel hop per reply) cost more than the dumps themselves
//! on a project of hundreds of replicas.
//!
//! The threads are this module's own and end with the survey, so the namespace each was left
//! in holds nothing alive after it.

use super::netlink::{BlockingNetlink, Link, Route};
use super::netns::NetnsDir;
use super::{nftables, Ctx, KernelError};
use ipnetwork::IpNetwork;
use nix::sched::{setns, CloneFlags};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What a namespace holds, as one survey read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    pub links: Vec<Link>,
    /// Every address as (ifindex, address/prefix); empty unless the read was full.
    pub addresses: Vec<(u32, IpNetwork)>,
    /// Unicast routes of the main table; empty unless the read was full.
    pub routes: Vec<Route>,
}

/// One namespace surveyed: what it holds and (for a full read) an nfnetlink socket opened
/// inside it; None for a pin file with nothing mounted on it (a run killed half-way), which is
/// no namespace.
pub type Surveyed = Option<(Survey, Option<OwnedFd>)>;

/// At most this many threads survey at once: the work is the kernel's (dumps, socket
/// creation), so a few per CPU keep it busy.
const MAX_THREADS: usize = 8;

/// Survey each namespace of `names` in `dir`; `full` reads addresses and routes besides the
/// links. The answers come in the order of `names`.
pub fn survey(dir: &NetnsDir, names: &[String], full: bool) -> Vec<Result<Surveyed, KernelError>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(MAX_THREADS)
        .min(names.len());
    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<Option<Result<Surveyed, KernelError>>>> =
        Mutex::new((0..names.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let answer = one(dir, name, full);
                answers.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(answer);
            });
        }
    });
    let ctx = |name: &str| Ctx::new("survey netns", name, None);
    answers
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(names)
        .map(|(a, name)| a.unwrap_or_else(|| Err(ctx(name).protocol("not surveyed"))))
        .collect()
}

/// One namespace, on the calling thread (which this moves into it: a survey thread).
fn one(dir: &NetnsDir, name: &str, full: bool) -> Result<Surveyed, KernelError> {
    let fd = match dir.open(Some(name)) {
        Ok(fd) => fd,
        Err(_) if !dir.exists(name) => return Ok(None),
        Err(e) => return Err(e),
    };
    setns(&fd, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Ctx::new("enter netns", name, None).errno(e))?;
    let mut nl = BlockingNetlink::open_current(Some(name))?;
    let mut found = Survey {
        links: nl.links()?,
        ..Survey::default()
    };
    if !full {
        return Ok(Some((found, None)));
    }
    found.addresses = nl.addresses()?;
    found.routes = nl.routes()?;
    let nft = nftables::wire::open(&Ctx::new(
        "open netlink socket",
        "NETLINK_NETFILTER",
        Some(name),
    ))?;
    Ok(Some((found, Some(nft))))
}
