//! Many namespaces read in one go, for `observe`: a few threads take the namespaces in turn,
//! enter each (`setns`), dump its links (and, for a full read, its addresses and routes) on one
//! blocking rtnetlink socket, one dump after the other, read its files (/etc/netns/<ns>) and
//! open its nfnetlink socket for the table read that follows. Opening an asynchronous connection per namespace (a thread made to
//! enter it, a connection task, a channel hop per reply) cost more than the dumps themselves
//! on a project of hundreds of replicas.
//!
//! The threads are this module's own and end with the survey, so the namespace each was left
//! in holds nothing alive after it.
//!
//! A run may take some surveys from a process that keeps them between runs instead
//! ([`SurveySource`]: the project daemon, which follows each namespace's changes); it then
//! surveys only the namespaces that process does not follow.

use super::netlink::{BlockingNetlink, Link, Route};
use super::netns::NetnsDir;
use super::{nftables, Ctx, KernelError};
use ipnetwork::IpNetwork;
use nix::sched::{setns, CloneFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What a namespace holds, as one survey read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Survey {
    pub links: Vec<Link>,
    /// Every address as (ifindex, address/prefix); empty unless the read was full.
    pub addresses: Vec<(u32, IpNetwork)>,
    /// Unicast routes of the main table; empty unless the read was full.
    pub routes: Vec<Route>,
    /// The files of the namespace's directory in /etc/netns (name, text), in name order;
    /// empty unless the read was full. Read here, on the thread that already works on the
    /// namespace: a trip to the blocking pool per file cost more than the read.
    pub files: Vec<(String, String)>,
}

/// One namespace surveyed: what it holds and (for a full read) an nfnetlink socket opened
/// inside it; None for a pin file with nothing mounted on it (a run killed half-way), which is
/// no namespace.
pub type Surveyed = Option<(Survey, Option<Nft>)>;

/// A namespace's nfnetlink socket, with its ruleset's generation as the survey read it (None
/// when the kernel would not tell): the table read that follows compares it with the one
/// recorded (see [`super::generations::known`]) instead of asking the kernel again.
pub struct Nft {
    pub socket: OwnedFd,
    /// The namespace's cookie and ruleset generation.
    pub generation: Option<(u64, u32)>,
}

/// A full survey kept by a process that follows the namespace's changes, with the namespace's
/// cookie and ruleset generation as they are now (None when the kernel would not tell).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    pub survey: Survey,
    pub generation: Option<(u64, u32)>,
}

/// Where a run takes the full surveys of namespaces that another process keeps up to date.
pub trait SurveySource: Send + Sync {
    /// Ask for the surveys kept of `names`: the request leaves now, and the keeper works on it
    /// while the caller goes on; calling the [`Answer`] reads what it answered.
    fn ask(&self, names: &[String]) -> Answer;
}

/// What a [`SurveySource`] answered, read when called (it waits for the answer): the surveys
/// kept of the names asked for, in their order, each with an nfnetlink socket of the
/// namespace when the keeper lends one; None for a namespace not followed (or none at all
/// when the keeper does not answer), which the run then surveys itself. Dropped uncalled, it
/// leaves the answer unread.
pub type Answer = Box<dyn FnOnce() -> Vec<Option<(Kept, Option<OwnedFd>)>> + Send>;

/// At most this many threads survey at once: the work is the kernel's (dumps, socket
/// creation), so a few per CPU keep it busy.
const MAX_THREADS: usize = 8;

/// Survey each namespace of `names` in `dir`; `full` reads addresses, routes and the files
/// in `etc`/<name> besides the links. The answers come in the order of `names`.
pub fn survey(
    dir: &NetnsDir,
    etc: &Path,
    names: &[String],
    full: bool,
) -> Vec<Result<Surveyed, KernelError>> {
    survey_after(dir, etc, names, full, |_, _| Ok(()))
        .into_iter()
        .map(|a| a.map(|found| found.map(|((), survey, nft)| (survey, nft))))
        .collect()
}

/// [`survey`], with `first` called inside each namespace (with the namespace's file) before
/// it is read: the daemon subscribes to a namespace's changes there, so that nothing that
/// changes after the read is missed, without a thread made per namespace for it.
#[allow(clippy::type_complexity)]
pub fn survey_after<T: Send>(
    dir: &NetnsDir,
    etc: &Path,
    names: &[String],
    full: bool,
    first: impl Fn(&str, &OwnedFd) -> Result<T, KernelError> + Sync,
) -> Vec<Result<Option<(T, Survey, Option<Nft>)>, KernelError>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(MAX_THREADS)
        .min(names.len());
    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<Option<Result<Option<(T, Survey, Option<Nft>)>, KernelError>>>> =
        Mutex::new((0..names.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let answer = one(dir, etc, name, full, &first);
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
fn one<T>(
    dir: &NetnsDir,
    etc: &Path,
    name: &str,
    full: bool,
    first: &impl Fn(&str, &OwnedFd) -> Result<T, KernelError>,
) -> Result<Option<(T, Survey, Option<Nft>)>, KernelError> {
    let fd = match dir.open(Some(name)) {
        Ok(fd) => fd,
        Err(_) if !dir.exists(name) => return Ok(None),
        Err(e) => return Err(e),
    };
    setns(&fd, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Ctx::new("enter netns", name, None).errno(e))?;
    let before = first(name, &fd)?;
    let mut nl = BlockingNetlink::open_current(Some(name))?;
    let mut found = Survey {
        links: nl.links()?,
        ..Survey::default()
    };
    if !full {
        return Ok(Some((before, found, None)));
    }
    found.addresses = nl.addresses()?;
    found.routes = nl.routes()?;
    found.files = files(&etc.join(name))?;
    let ctx = Ctx::new("open netlink socket", "NETLINK_NETFILTER", Some(name));
    let socket = nftables::wire::open(&ctx)?;
    // A kernel that cannot tell (no SO_NETNS_COOKIE before 5.14) leaves the table read to
    // ask, and fail, as it would without a survey.
    let generation = nftables::wire::netns_cookie(&ctx, &socket)
        .and_then(|cookie| Ok((cookie, nftables::read::generation_on(&ctx, &socket)?)))
        .ok();
    Ok(Some((before, found, Some(Nft { socket, generation }))))
}

/// Every regular file of `dir` with its text, in name order; none when there is no `dir`.
fn files(dir: &Path) -> Result<Vec<(String, String)>, KernelError> {
    let ctx = || Ctx::new("read", dir.display(), None);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ctx().os(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ctx().os(e))?;
        if !entry.file_type().map_err(|e| ctx().os(e))?.is_file() {
            continue;
        }
        match std::fs::read_to_string(entry.path()) {
            Ok(text) => out.push((entry.file_name().to_string_lossy().into_owned(), text)),
            // Removed between the listing and the read: not there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx().os(e)),
        }
    }
    out.sort();
    Ok(out)
}
