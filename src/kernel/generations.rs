//! Ruleset generations: a table is read again only when its namespace's ruleset changed.
//!
//! The kernel counts the transactions committed in each namespace (NFT_MSG_GETGEN), whoever
//! commits them. After a read (stable: the generation was the same before and after it) or a
//! write of ours (the only commit between the generation read before it and the one after),
//! the namespace's cookie, that generation and a digest of the table then are recorded here,
//! and kept between runs in a file. A later read that finds the same cookie and generation
//! knows the table is unchanged: when its digest is the one the caller expects, the read says
//! so without a dump (one request instead of some 25). Any change by
//! anyone (a rule added by hand, a set element removed) moves the generation on, and the table
//! is read in full; a namespace deleted and made again has another cookie.
//!
//! An update (chains and elements changed in place) leaves a known table only if the table it
//! changed was known: its namespace's generation, confirmed by this run's read, must be the one
//! just before the update's own commit.

use super::nftables::read::{generation_on, read_table_on};
use super::nftables::wire::next_generation;
use super::nftables::{Element, LiveTable, Table};
use super::{Ctx, KernelError};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;

/// A table as seen at one generation of its namespace's ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    cookie: u64,
    generation: u32,
    digest: Digest,
}

/// A table's chains (names, rule tags in order) and its named sets (names, elements) as two
/// sums of one hash per chain and per set, so that neither the order of chains nor that of a
/// set's elements counts (the kernel lists chains in the order they were made, a hash set's
/// elements in an order of its own), and so that a caller adds up parts it worked out once
/// (the VIP part shared by many replica tables) and an update that changes a few sets swaps
/// just their hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    chains: u64,
    sets: u64,
}

/// The digests' hasher: fixed seeds, since digests are kept between runs (a binary that hashes
/// otherwise, after an upgrade, only reads each table once in full); aHash rather than std's
/// SipHash, which took 1.5% of a scale's instructions hashing the sets' elements one by one
/// (callgrind, the project of bench/lb.sh).
static DIGESTS: ahash::RandomState = ahash::RandomState::with_seeds(
    0x6e63_6469_6765_7374,
    0x7461_626c_6573_0001,
    0x7365_7473_0000_0002,
    0x6368_6169_6e73_0003,
);

fn hash_of(value: impl Hash) -> u64 {
    DIGESTS.hash_one(value)
}

/// One set: its name and its elements in any order.
fn set_hash(name: &str, elements: &[Element]) -> u64 {
    let sum = elements
        .iter()
        .fold(0u64, |acc, e| acc.wrapping_add(hash_of(e)));
    hash_of((name, elements.len(), sum))
}

impl Digest {
    /// Add a chain: its name and its rule tags in order.
    pub fn add_chain<'a>(&mut self, name: &str, tags: impl Iterator<Item = &'a str>) {
        let mut h = DIGESTS.build_hasher();
        name.hash(&mut h);
        for tag in tags {
            tag.hash(&mut h);
        }
        self.chains = self.chains.wrapping_add(h.finish());
    }

    /// Add a named set or map with its elements.
    pub fn add_set(&mut self, name: &str, elements: &[Element]) {
        self.sets = self.sets.wrapping_add(set_hash(name, elements));
    }

    /// Both digests' chains and sets together (of two disjoint parts of a table).
    pub fn plus(self, other: Digest) -> Digest {
        Digest {
            chains: self.chains.wrapping_add(other.chains),
            sets: self.sets.wrapping_add(other.sets),
        }
    }

    pub fn of_live(t: &LiveTable) -> Digest {
        let mut d = Digest::default();
        for (name, tags) in &t.chains {
            d.add_chain(name, tags.iter().map(String::as_str));
        }
        for (name, elements) in &t.sets {
            d.add_set(name, elements);
        }
        d
    }

    pub fn of_table(t: &Table) -> Digest {
        let mut d = Digest::default();
        for c in &t.chains {
            d.add_chain(&c.name, c.rules.iter().map(|r| r.tag.as_str()));
        }
        for s in &t.sets {
            d.add_set(&s.name, &s.elements);
        }
        d
    }
}

/// What a read of a table found.
#[derive(Debug, Clone, PartialEq)]
pub enum TableRead {
    /// No such table.
    Missing,
    /// The table is the one the caller expected (by its [`Digest`]), known without a dump.
    Unchanged,
    /// The table as a full read found it.
    Live(LiveTable),
}

/// What is known of the tables of a run's namespaces (by name; "" is the host's).
#[derive(Debug, Default)]
pub struct Generations {
    /// From the file: what earlier runs saw or left.
    earlier: HashMap<String, Seen>,
    /// Seen or left by this run.
    now: HashMap<String, Seen>,
}

fn key(ns: Option<&str>) -> String {
    ns.unwrap_or_default().to_string()
}

impl Generations {
    /// The generations a run saved in `path`; none when it is missing or unreadable (every
    /// table is then read in full, which is always right).
    pub fn load(path: &Path) -> Generations {
        let earlier = std::fs::read_to_string(path)
            .map(|text| text.lines().filter_map(parse_line).collect())
            .unwrap_or_default();
        Generations {
            earlier,
            now: HashMap::new(),
        }
    }

    /// Save what this run saw or left, in place of the file's contents (a temporary file
    /// renamed over it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::new();
        for (ns, s) in &self.now {
            text.push_str(&format!(
                "{ns}\t{}\t{}\t{:016x}\t{:016x}\n",
                s.cookie, s.generation, s.digest.chains, s.digest.sets
            ));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    fn seen(&self, ns: &str) -> Option<Seen> {
        self.now.get(ns).or_else(|| self.earlier.get(ns)).copied()
    }
}

fn parse_line(line: &str) -> Option<(String, Seen)> {
    let mut f = line.split('\t');
    let ns = f.next()?.to_string();
    let cookie = f.next()?.parse().ok()?;
    let generation = f.next()?.parse().ok()?;
    let chains = u64::from_str_radix(f.next()?, 16).ok()?;
    let sets = u64::from_str_radix(f.next()?, 16).ok()?;
    Some((
        ns,
        Seen {
            cookie,
            generation,
            digest: Digest { chains, sets },
        },
    ))
}

fn lock(g: &Mutex<Generations>) -> std::sync::MutexGuard<'_, Generations> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// Table `table` through `fd` (a socket in namespace `ns`, whose cookie is `cookie`):
/// [`TableRead::Unchanged`] when the namespace's ruleset has not changed since a read or
/// write left a table of digest `expected`, else what a full read finds.
pub fn read(
    gens: &Mutex<Generations>,
    (fd, cookie): (&OwnedFd, u64),
    ns: Option<&str>,
    table: &str,
    expected: Digest,
) -> Result<TableRead, KernelError> {
    let ctx = Ctx::new("list table", table, ns);
    let generation = generation_on(&ctx, fd)?;
    let at = |digest| Seen {
        cookie,
        generation,
        digest,
    };
    if known(gens, ns, cookie, generation, expected) {
        return Ok(TableRead::Unchanged);
    }
    let live = read_table_on(fd, ns, table)?;
    let stable = generation_on(&ctx, fd)? == generation;
    let k = key(ns);
    let mut g = lock(gens);
    match &live {
        Some(t) if stable => g.now.insert(k, at(Digest::of_live(t))),
        _ => g.now.remove(&k),
    };
    Ok(live.map_or(TableRead::Missing, TableRead::Live))
}

/// Whether namespace `ns`, found at `cookie` and `generation` (by this run, just now),
/// holds exactly `expected`: a read or write recorded that generation with that table. When
/// it does, that is recorded for the next run, as a read would.
pub fn known(
    gens: &Mutex<Generations>,
    ns: Option<&str>,
    cookie: u64,
    generation: u32,
    expected: Digest,
) -> bool {
    let k = key(ns);
    let at = Seen {
        cookie,
        generation,
        digest: expected,
    };
    let mut g = lock(gens);
    if g.seen(&k) != Some(at) {
        return false;
    }
    g.now.insert(k, at);
    true
}

/// How a write changes the table: what it holds afterwards, given what it held before.
#[derive(Debug, Clone, Copy)]
pub enum Write {
    /// The whole table, whatever it held: one of this digest.
    Replace(Digest),
    /// Some chains and sets changed in place ([`Change::of`]).
    Update(Change),
}

/// What an update from `old` to `new` does to a table's digest, worked out once for every
/// table it goes to: the chains are left alone when both lists are empty (else they become
/// `new`'s), and so are the sets that neither names (sets only in `old` are deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    chains: Option<u64>,
    removed: u64,
    added: u64,
}

impl Change {
    pub fn of(old: &Table, new: &Table) -> Change {
        let sum = |t: &Table| {
            t.sets.iter().fold(0u64, |acc, s| {
                acc.wrapping_add(set_hash(&s.name, &s.elements))
            })
        };
        Change {
            chains: (!(old.chains.is_empty() && new.chains.is_empty()))
                .then(|| Digest::of_table(new).chains),
            removed: sum(old),
            added: sum(new),
        }
    }

    /// The digest of a table of digest `known` after the update.
    fn applied_to(self, known: Digest) -> Digest {
        Digest {
            chains: self.chains.unwrap_or(known.chains),
            sets: known
                .sets
                .wrapping_sub(self.removed)
                .wrapping_add(self.added),
        }
    }
}

/// Run `commit` (one transaction on `fd`, in namespace `ns` of cookie `cookie`, which gives
/// the generation of its transaction when it is known) and record what the table holds after
/// it, when that is certain: a replacement made the table whole at its own generation; an
/// update changed a known table, and no other commit came between the generation it was read
/// at and its own.
///
/// `commit` is given that generation for an update of a known table, to send the update
/// checked against it ([`wire::commit_at`](super::nftables::wire::commit_at)). Such an update
/// moves the generation on: it is sent only for a table that differs from what it should hold,
/// and holds exactly the differences from the table read at that generation.
pub fn write(
    gens: &Mutex<Generations>,
    (fd, cookie): (&OwnedFd, u64),
    ns: Option<&str>,
    table: &str,
    how: Write,
    commit: impl FnOnce(Option<u32>) -> Result<Option<u32>, KernelError>,
) -> Result<(), KernelError> {
    let ctx = Ctx::new("load rules", table, ns);
    let k = key(ns);
    let known = lock(gens)
        .now
        .get(&k)
        .filter(|s| s.cookie == cookie)
        .map(|s| (s.generation, s.digest));
    let outcome = commit(match how {
        Write::Update(_) => known.map(|(generation, _)| generation),
        Write::Replace(_) => None,
    });
    let after = match &outcome {
        Ok(Some(generation)) => After::Announced(*generation),
        // A kernel that did not announce it: the generation now, which is this commit's only
        // if nobody else committed since (an update checks that; a replacement cannot).
        Ok(None) => generation_on(&ctx, fd).map_or(After::Unknown, After::Read),
        Err(_) => After::Unknown,
    };
    let digest = match (after, how) {
        (After::Announced(_), Write::Replace(digest)) => Some(digest),
        (After::Read(_) | After::Unknown, Write::Replace(_)) => None,
        // The update assumed the table this run read, at the generation it read it at.
        (After::Announced(g) | After::Read(g), Write::Update(change)) => known
            .filter(|(before, _)| g == next_generation(*before))
            .map(|(_, d)| change.applied_to(d)),
        (After::Unknown, Write::Update(_)) => None,
    };
    let mut g = lock(gens);
    match (after, digest) {
        (After::Announced(generation) | After::Read(generation), Some(digest)) => {
            g.now.insert(
                k,
                Seen {
                    cookie,
                    generation,
                    digest,
                },
            );
        }
        (After::Unknown, _) | (_, None) => {
            g.now.remove(&k);
        }
    }
    outcome.map(drop)
}

/// The generation of a namespace's ruleset after a commit of ours.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Announced by the kernel for this very commit, or known from a commit checked against
    /// the generation before it.
    Announced(u32),
    /// Read after it: this commit's, or a later one's.
    Read(u32),
    /// The commit failed, or the generation could not be read.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::super::nftables::{KeyType, SetSpec};
    use super::*;

    fn element(b: u8) -> Element {
        Element {
            key: vec![10, 0, 0, b],
            last: None,
            data: None,
        }
    }

    #[test]
    fn a_digest_ignores_the_order_of_chains_and_of_elements_but_not_of_rules() {
        let t = |chains: Vec<(&str, Vec<&str>)>, elements: Vec<u8>| LiveTable {
            chains: chains
                .into_iter()
                .map(|(n, tags)| (n.to_string(), tags.into_iter().map(String::from).collect()))
                .collect(),
            sets: vec![("s".into(), elements.into_iter().map(element).collect())],
        };
        let a = Digest::of_live(&t(vec![("a", vec!["1", "2"]), ("b", vec![])], vec![1, 2]));
        let b = Digest::of_live(&t(vec![("b", vec![]), ("a", vec!["1", "2"])], vec![2, 1]));
        assert_eq!(a, b);
        let c = Digest::of_live(&t(vec![("a", vec!["2", "1"]), ("b", vec![])], vec![1, 2]));
        assert_ne!(a.chains, c.chains);
        let d = Digest::of_live(&t(vec![("a", vec!["1", "2"]), ("b", vec![])], vec![1]));
        assert_eq!(a.chains, d.chains);
        assert_ne!(a.sets, d.sets);
    }

    fn set(name: &str, elements: &[u8]) -> SetSpec {
        SetSpec {
            name: name.into(),
            key: KeyType::Ipv4Addr,
            data: None,
            interval: false,
            elements: elements.iter().copied().map(element).collect(),
        }
    }

    #[test]
    fn an_update_of_some_sets_gives_the_digest_of_the_whole_new_table() {
        let table = |sets: Vec<SetSpec>| Table {
            chains: vec![],
            sets,
        };
        let before = table(vec![set("a", &[1, 2]), set("b", &[3]), set("c", &[4])]);
        let after = table(vec![set("a", &[1, 2]), set("b", &[3, 5]), set("d", &[6])]);
        // The update names the changed set, the dropped one and the new one only.
        let old = table(vec![set("b", &[3]), set("c", &[4])]);
        let new = table(vec![set("b", &[3, 5]), set("d", &[6])]);
        let d = Change::of(&old, &new).applied_to(Digest::of_table(&before));
        assert_eq!(d, Digest::of_table(&after));
        let parts =
            Digest::of_table(&table(vec![set("a", &[1, 2])])).plus(Digest::of_table(&table(vec![
                set("b", &[3, 5]),
                set("d", &[6]),
            ])));
        assert_eq!(parts, d);
    }

    #[test]
    fn a_saved_record_is_loaded_back_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gens");
        let mut g = Generations::default();
        let seen = Seen {
            cookie: 7,
            generation: 3,
            digest: Digest { chains: 1, sets: 2 },
        };
        g.now.insert("p-web-1".into(), seen);
        g.save(&path).unwrap();
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap() + "garbage line\n",
        )
        .unwrap();
        let back = Generations::load(&path);
        assert_eq!(back.seen("p-web-1"), Some(seen));
        assert_eq!(back.earlier.len(), 1);
        assert!(Generations::load(&dir.path().join("none"))
            .earlier
            .is_empty());
    }
}
