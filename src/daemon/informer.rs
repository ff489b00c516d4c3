//! The daemon's survey cache (an informer, as Kubernetes calls a list-watch cache): for each
//! namespace the daemon serves, the last full survey, kept true by the namespace's change
//! notifications ([`crate::kernel::watch`]), so that an `up` of a big project takes its
//! surveys from here instead of reading every namespace again.
//!
//! Before it answers, the informer drains every notification queued (a finished run's changes
//! are all queued by then: see `kernel::watch`). A namespace whose links, addresses, routes or
//! files were notified, whose notifications were dropped, or whose pin no longer names the
//! namespace followed, is surveyed again (or, for the pin, answered as not followed). The
//! ruleset generation is asked for at each drain (`kernel::watch` says why nf_tables itself is
//! not subscribed to): a run that only wrote tables leaves the surveys as they were.
//!
//! It also keeps the nfnetlink socket each survey opened in its namespace, and lends a copy
//! to the `up` that asks (over the control socket: `daemon::lending`), which writes tables
//! with it.
//!
//! One field may lag: a link's carrier (`lower_up`) is notified by the kernel's linkwatch
//! work, up to a second after it changed, while a dump reads it at once. No decision of a run
//! reads it; everything a run compares (names, marks, MTUs, masters, addresses, routes,
//! files, generations) is notified before the change is acknowledged.

use crate::kernel::netns::NetnsDir;
use crate::kernel::nftables::wire;
use crate::kernel::survey::{self, Kept, Nft, Survey};
use crate::kernel::watch::{FilesSeen, FilesWatch, NsWatch, Seen};
use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The largest notification datagram (the kernel's own cap on netlink messages is 32 KiB).
const RECV_LEN: usize = 64 * 1024;

pub struct Informer {
    dir: NetnsDir,
    etc: PathBuf,
    /// None when /etc/netns could not be watched: files cannot be followed, so nothing is
    /// kept and every run surveys for itself.
    files: Option<FilesWatch>,
    /// The namespaces to follow: those the daemon serves.
    wanted: BTreeSet<String>,
    followed: HashMap<String, Followed>,
    buf: Vec<u8>,
    /// How many namespace surveys the informer has read, for tests and logs.
    reads: usize,
}

struct Followed {
    watch: NsWatch,
    /// None until surveyed, and again once something it holds changed.
    kept: Option<Kept>,
    /// The nfnetlink socket the last survey opened in the namespace, lent to the run that
    /// writes its table next ([`Informer::lend`]); the daemon itself never uses it.
    writer: Option<OwnedFd>,
}

impl Informer {
    pub fn new(dir: NetnsDir, etc: PathBuf) -> Informer {
        let files = FilesWatch::new(&etc).ok();
        Informer {
            dir,
            etc,
            files,
            wanted: BTreeSet::new(),
            followed: HashMap::new(),
            buf: vec![0; RECV_LEN],
            reads: 0,
        }
    }

    /// Follow `wanted` from now on: stop following the others at once (their sockets hold
    /// their namespaces alive, and `up` is about to delete them); the new ones are followed
    /// by [`Informer::catch_up`] or by the first request for them.
    pub fn want(&mut self, wanted: BTreeSet<String>) {
        let gone: Vec<String> = self
            .followed
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.followed.remove(&name);
            if let Some(files) = &mut self.files {
                files.forget(&name);
            }
        }
        self.wanted = wanted;
    }

    /// Follow every wanted namespace not followed yet, then survey whatever is not kept, so
    /// that the next run finds it ready.
    pub fn catch_up(&mut self) {
        let all: Vec<String> = self.wanted.iter().cloned().collect();
        self.surveys(&all);
    }

    /// Subscribe to the changes of those of `names` that are wanted and not followed yet,
    /// and survey them.
    fn follow_new(&mut self, names: &[String]) {
        let Some(files) = &mut self.files else {
            return;
        };
        let mut new: Vec<String> = names
            .iter()
            .filter(|n| self.wanted.contains(*n) && !self.followed.contains_key(*n))
            .cloned()
            .collect();
        if new.is_empty() {
            return;
        }
        // Half of the descriptors left stay the resolver's, which needs them more: beyond
        // that, namespaces are surveyed by each run.
        new.truncate(spare_descriptors() / 2 / DESCRIPTORS_PER_NAMESPACE);
        // Subscribed first (the files here, the kernel's notifications on the survey's thread
        // in the namespace), read after: a change in between is then seen twice, not missed.
        // A namespace that cannot be followed is surveyed by each run.
        for name in &new {
            files.follow(name);
        }
        let found = survey::survey_after(&self.dir, &self.etc, &new, true, NsWatch::open_here);
        self.reads += new.len();
        for (name, answer) in new.into_iter().zip(found) {
            match answer {
                Ok(Some((watch, survey, nft))) => {
                    let (kept, writer) = keep(survey, nft);
                    let kept = Some(kept);
                    self.followed.insert(
                        name,
                        Followed {
                            watch,
                            kept,
                            writer,
                        },
                    );
                }
                Ok(None) | Err(_) => files.forget(&name),
            }
        }
    }

    /// How many namespace surveys it has read so far.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// The kept survey of each of `names`, in order (None for one not followed); those
    /// wanted and not followed yet are followed first.
    pub fn surveys(&mut self, names: &[String]) -> Vec<Option<Kept>> {
        self.follow_new(names);
        let Some(files) = &mut self.files else {
            return vec![None; names.len()];
        };
        match files.drain() {
            Ok(FilesSeen::Some(changed)) => {
                for name in changed {
                    if let Some(f) = self.followed.get_mut(&name) {
                        f.kept = None;
                    }
                }
            }
            Ok(FilesSeen::All) | Err(_) => {
                for f in self.followed.values_mut() {
                    f.kept = None;
                }
            }
        }
        let mut stale = Vec::new();
        for name in names {
            let Some(f) = self.followed.get_mut(name) else {
                continue;
            };
            if !f.watch.pinned_as(&self.dir, name) {
                stale.push(name.clone());
                continue;
            }
            f.kept = match f.watch.drain(&mut self.buf) {
                Ok(seen) => after(f.kept.take(), seen, f.watch.cookie()),
                Err(_) => None,
            };
        }
        // A pin that names another namespace (or none): that one is not followed.
        for name in &stale {
            self.followed.remove(name);
            files.forget(name);
        }
        let dirty: Vec<String> = names
            .iter()
            .filter(|n| self.followed.get(*n).is_some_and(|f| f.kept.is_none()))
            .cloned()
            .collect();
        // A directory made since the namespace was followed is watched from now on.
        for name in &dirty {
            files.follow(name);
        }
        let found = survey::survey(&self.dir, &self.etc, &dirty, true);
        self.reads += dirty.len();
        for (name, answer) in dirty.iter().zip(found) {
            if let (Some(f), Ok(Some((survey, nft)))) = (self.followed.get_mut(name), answer) {
                let (kept, writer) = keep(survey, nft);
                f.kept = Some(kept);
                f.writer = writer;
            }
        }
        names
            .iter()
            .map(|n| self.followed.get(n).and_then(|f| f.kept.clone()))
            .collect()
    }

    /// A copy of the nfnetlink socket of each of `names` whose survey is kept, for the run
    /// that asked for the surveys (None where there is none): the run writes tables with it
    /// instead of entering the namespace to open one. Whatever a run killed mid-transaction
    /// left unread on it is thrown away first.
    pub fn lend(&self, names: &[String]) -> Vec<Option<OwnedFd>> {
        names
            .iter()
            .map(|n| {
                let f = self.followed.get(n).filter(|f| f.kept.is_some())?;
                let writer = f.writer.as_ref()?;
                wire::discard_pending(writer).ok()?;
                writer.try_clone().ok()
            })
            .collect()
    }
}

/// What is kept of a survey, and the nfnetlink socket it opened.
fn keep(survey: Survey, nft: Option<Nft>) -> (Kept, Option<OwnedFd>) {
    let (generation, writer) = match nft {
        Some(n) => (n.generation, Some(n.socket)),
        None => (None, None),
    };
    (Kept { survey, generation }, writer)
}

/// The sockets a followed namespace costs ([`NsWatch`], and the socket lent).
const DESCRIPTORS_PER_NAMESPACE: usize = 3;

/// How many more descriptors this process may open, at least: its soft limit less the slots
/// of its descriptor table (`FDSize` in /proc/self/status, never fewer than those open).
/// Counting the entries of /proc/self/fd instead made the kernel build a dentry for each of
/// the daemon's thousands of sockets, some 5 ms a run.
fn spare_descriptors() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let slots = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| fd_slots(&s))
        .unwrap_or(u64::MAX);
    usize::try_from(limit.saturating_sub(slots)).unwrap_or(usize::MAX)
}

/// `FDSize` of a /proc/<pid>/status text.
fn fd_slots(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
}

/// What is kept of a namespace after a drain that `seen` it: nothing once its links,
/// addresses or routes changed or notifications were lost; else the same survey, at the
/// generation the drain read (a table written changes nothing a survey reads but that).
fn after(kept: Option<Kept>, seen: Seen, cookie: Option<u64>) -> Option<Kept> {
    if seen.links || seen.lost {
        return None;
    }
    let mut kept = kept?;
    if let Some(generation) = seen.generation {
        kept.generation = cookie.map(|c| (c, generation));
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::survey::Survey;

    fn kept(generation: Option<(u64, u32)>) -> Option<Kept> {
        Some(Kept {
            survey: Survey::default(),
            generation,
        })
    }

    #[test]
    fn descriptor_slots_come_from_the_status_text() {
        let status = "Name:\tnetcompose\nFDSize:\t2048\nGroups:\t\n";
        assert_eq!(fd_slots(status), Some(2048));
        assert_eq!(fd_slots("Name:\tx\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let slots = fd_slots(&own).unwrap();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        assert!(slots >= open - 1, "{slots} slots, {open} open");
    }

    #[test]
    fn nothing_seen_keeps_the_survey_as_it_was() {
        let seen = Seen::default();
        assert_eq!(after(kept(Some((7, 3))), seen, Some(7)), kept(Some((7, 3))));
        assert_eq!(after(None, seen, Some(7)), None);
    }

    #[test]
    fn a_transaction_moves_the_generation_on() {
        let seen = Seen {
            generation: Some(9),
            ..Seen::default()
        };
        assert_eq!(after(kept(Some((7, 3))), seen, Some(7)), kept(Some((7, 9))));
        // A survey that could not read the generation now knows it from the drain.
        assert_eq!(after(kept(None), seen, Some(7)), kept(Some((7, 9))));
        // Without a cookie a generation cannot be told apart from another namespace's.
        assert_eq!(after(kept(None), seen, None), kept(None));
    }

    #[test]
    fn a_link_change_or_a_lost_notification_drops_the_survey() {
        for seen in [
            Seen {
                links: true,
                ..Seen::default()
            },
            Seen {
                lost: true,
                generation: Some(4),
                ..Seen::default()
            },
        ] {
            assert_eq!(after(kept(Some((7, 3))), seen, Some(7)), None);
        }
    }
}
