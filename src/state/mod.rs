//! What the kernel cannot tell, kept in a [`Store`]: each project's allocations and the
//! resources last applied (why an address was chosen, what a link's peer was), other projects'
//! allocations (for IPAM), and a per-project lock. [`FileStore`] keeps them under
//! /var/lib/netcompose; [`EtcdStore`] in etcd, shared by several hosts, where every write that
//! changes allocations is a compare-and-swap against what the writer read ([`Store::read`]).
//! `url` parses `--store`; `cluster` has the keys a cluster's agents and `up` share beside
//! the states (nodes, spec, allocations, placement, status), with leases and watches.

pub mod cluster;
pub mod etcd;
mod file;
pub mod kv;
pub mod url;

pub use etcd::{EtcdError, EtcdStore};
pub use file::FileStore;
pub use url::StoreUrl;

use crate::ipam::Allocations;
use crate::model::{shared, Resource};
use crate::project_name::ProjectName;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;
use thiserror::Error;

pub const STATE_ROOT: &str = "/var/lib/netcompose";
/// 2: a part that many resources hold alike is written once, then by number ([`encode`]).
/// 3: a replica table's VIPs dropped too ([`crate::model::resource::VIPS_DROPPED_SHARED_FROM`]).
pub const FORMAT_VERSION: u32 = 3;
// What this version writes, it must read as it wrote it.
const _: () = assert!(FORMAT_VERSION >= crate::model::resource::VIPS_DROPPED_SHARED_FROM);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The format the state was read in; always written as [`FORMAT_VERSION`], the only one
    /// this version writes.
    #[serde(serialize_with = "current_format")]
    pub format_version: u32,
    pub project: String,
    pub allocations: Allocations,
    pub resources: Vec<Resource>,
    /// The Compose files the project was last brought up from (`ls` shows them); absent from
    /// states written before it was recorded, and empty after an `up --plan`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Replica counts `up --scale` set for the run that built the project: `ps` and `exec`
    /// show the replicas that exist, not only those the file names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scale: BTreeMap<String, u32>,
}

fn current_format<S: serde::Serializer>(_: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(FORMAT_VERSION)
}

/// `state` as JSON, each part that resources share (the chains and sets of a service's
/// replica tables) spelled out once and then named by its number ([`crate::model::shared`]).
pub fn encode_to(out: impl std::io::Write, state: &State) -> serde_json::Result<()> {
    shared::writing(|| serde_json::to_writer(out, state))
}

/// [`encode_to`], into bytes.
pub fn encode(state: &State) -> serde_json::Result<Vec<u8>> {
    shared::writing(|| serde_json::to_vec(state))
}

/// A state that [`encode_to`] wrote (or an earlier version, which spells out the parts that
/// were not yet shared in its format). A state of a later format is refused: its numbers may
/// name other values in this version's reading.
pub fn decode(json: &[u8]) -> serde_json::Result<State> {
    let format = written_format(json)?;
    if format > FORMAT_VERSION {
        return Err(serde::de::Error::custom(format!(
            "it was written by a newer netcompose (state format {format}; this one reads up to {FORMAT_VERSION})"
        )));
    }
    shared::reading_format(format, || serde_json::from_slice(json))
}

/// The `format_version` of a state: taken from its first bytes, where [`encode_to`] writes it
/// (and every version before), else read from the whole document.
fn written_format(json: &[u8]) -> serde_json::Result<u32> {
    const HEAD: &[u8] = br#"{"format_version":"#;
    if let Some(rest) = json.strip_prefix(HEAD) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(format) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
        {
            return Ok(format);
        }
    }
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        format_version: u32,
    }
    serde_json::from_slice::<Head>(json).map(|h| h.format_version)
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot read state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("state {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("cannot write state {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("another netcompose is working on project `{project}` (lock {path} held)")]
    Locked { project: String, path: String },
    #[error("the state of project `{project}` was written under the lock of `{lock}`")]
    WrongLock { project: String, lock: String },
    /// A compare-and-swap store: someone else changed the project or the allocations since
    /// this writer read them; read again and allocate again.
    #[error("the store changed since project `{project}` was read (another writer allocated)")]
    Conflict { project: String },
    /// A compare-and-swap store: a save under a lock that read nothing has nothing to compare.
    #[error("project `{project}` was saved without being read under its lock first")]
    NotRead { project: String },
    /// Every retry lost the race to another writer.
    #[error("gave up on project `{project}` after {tries} tries: other writers kept allocating at the same time")]
    Contended { project: String, tries: usize },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// Other projects' states, and those that could not be read: their subnets are unknown, so a
/// caller that allocates must not treat them as free.
#[derive(Debug, Default)]
pub struct Others {
    pub states: Vec<State>,
    pub unreadable: Vec<StateError>,
}

/// The locked project's state and every other project's, read together.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub state: Option<State>,
    pub others: Others,
}

/// Proof that a project is locked; the lock is released when this is dropped. Writes take it,
/// so a store can check (or, for a compare-and-swap backend, use the lease it holds) that the
/// writer owns the project.
pub struct Lock {
    project: ProjectName,
    held: Box<dyn Any + Send + Sync>,
}

impl Lock {
    /// For [`Store`] implementations: `held` releases the lock when dropped.
    pub fn new(project: ProjectName, held: Box<dyn Any + Send + Sync>) -> Lock {
        Lock { project, held }
    }

    pub fn project(&self) -> &ProjectName {
        &self.project
    }

    /// What the store keeps while the lock is held (a file lock, a lease).
    pub fn held(&self) -> &(dyn Any + Send + Sync) {
        self.held.as_ref()
    }
}

/// Whether [`Store::lock`] waits for another holder or fails with [`StateError::Locked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    No,
    Yes,
}

/// Where the state lives. Reads need no lock; every write names the lock it is made under.
pub trait Store: Send + Sync {
    /// The project's state, or None when there is none.
    fn load(&self, project: &ProjectName) -> Result<Option<State>, StateError>;
    /// Replace the locked project's state (`state.project` must be the lock's project).
    fn save(&self, lock: &Lock, state: &State) -> Result<(), StateError>;
    /// Forget the locked project (after `down`).
    fn remove(&self, lock: &Lock) -> Result<(), StateError>;
    /// Every other project's state.
    fn others(&self, project: &ProjectName) -> Others;
    /// Every project's state (`ls`).
    fn all(&self) -> Others;
    /// An exclusive lock on a project, held until the returned [`Lock`] is dropped.
    fn lock(&self, project: &ProjectName, wait: Wait) -> Result<Lock, StateError>;
    /// The locked project's state and the others', as allocation needs them. A
    /// compare-and-swap store checks the next [`Store::save`] under `lock` against this read
    /// and fails it with [`StateError::Conflict`] if another writer came in between; the
    /// file store's flock already excludes every other writer of the project.
    fn read(&self, lock: &Lock) -> Result<Snapshot, StateError> {
        Ok(Snapshot {
            state: self.load(lock.project())?,
            others: self.others(lock.project()),
        })
    }
}

/// A borrowed store is a store (the CLI hands out `&'static dyn Store`).
impl<S: Store + ?Sized> Store for &S {
    fn load(&self, project: &ProjectName) -> Result<Option<State>, StateError> {
        (**self).load(project)
    }
    fn save(&self, lock: &Lock, state: &State) -> Result<(), StateError> {
        (**self).save(lock, state)
    }
    fn remove(&self, lock: &Lock) -> Result<(), StateError> {
        (**self).remove(lock)
    }
    fn others(&self, project: &ProjectName) -> Others {
        (**self).others(project)
    }
    fn all(&self) -> Others {
        (**self).all()
    }
    fn lock(&self, project: &ProjectName, wait: Wait) -> Result<Lock, StateError> {
        (**self).lock(project, wait)
    }
    fn read(&self, lock: &Lock) -> Result<Snapshot, StateError> {
        (**self).read(lock)
    }
}

/// How many times an allocating run reads, allocates and saves before it gives up with
/// [`StateError::Contended`].
pub const CAS_TRIES: usize = 5;

/// Run `attempt` (read, allocate, save) again while it fails with a conflict, at most
/// [`CAS_TRIES`] times. `conflict` tells whether an error is [`StateError::Conflict`].
pub fn retry_on_conflict<T, E: From<StateError>>(
    project: &ProjectName,
    conflict: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    for _ in 0..CAS_TRIES {
        match attempt() {
            Err(e) if conflict(&e) => continue,
            other => return other,
        }
    }
    Err(StateError::Contended {
        project: project.to_string(),
        tries: CAS_TRIES,
    }
    .into())
}

fn check_lock(lock: &Lock, state: &State) -> Result<(), StateError> {
    if state.project == lock.project().as_str() {
        return Ok(());
    }
    Err(StateError::WrongLock {
        project: state.project.clone(),
        lock: lock.project().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Spec;

    /// Two replica tables of one service in format 2: the VIPs each drops spelled out and not
    /// numbered, the second table's chains and sets as the numbers of the first's.
    const FORMAT_2: &str = r#"{"format_version":2,"project":"p","allocations":{"networks":{}},"resources":[
        {"address":"service.web[1].firewall","spec":{"kind":"firewall","namespace":"p-web-1",
         "table":"netcompose","vip_refused":["ip db"],"chains":[],"sets":[]}},
        {"address":"service.web[2].firewall","spec":{"kind":"firewall","namespace":"p-web-2",
         "table":"netcompose","vip_refused":["ip db"],"chains":0,"sets":1}}]}"#;

    fn refused(state: &State) -> Vec<Vec<String>> {
        state
            .resources
            .iter()
            .map(|r| match &r.spec {
                Spec::Firewall(f) => f.vip_refused.iter().map(|v| v.service.clone()).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_state_of_format_2_reads_with_its_numbers_naming_what_they_named() {
        let state = decode(FORMAT_2.as_bytes()).unwrap();
        assert_eq!(refused(&state), [["db"], ["db"]]);
        // Written again, it is written in this format (the two lists read are two values, each
        // written whole) and reads back the same.
        let text = String::from_utf8(encode(&state).unwrap()).unwrap();
        assert!(text.starts_with(r#"{"format_version":3,"#), "{text}");
        let again = decode(text.as_bytes()).unwrap();
        assert_eq!(
            (again.format_version, &again.resources),
            (3, &state.resources)
        );
    }

    #[test]
    fn the_format_is_found_wherever_it_is_written() {
        let moved = FORMAT_2.replacen(r#""format_version":2,"#, "", 1).replacen(
            r#""resources":"#,
            r#""format_version": 2, "resources":"#,
            1,
        );
        assert_eq!(written_format(moved.as_bytes()).unwrap(), 2);
        assert_eq!(
            refused(&decode(moved.as_bytes()).unwrap()),
            [["db"], ["db"]]
        );
        assert_eq!(written_format(br#"{"project":"p"}"#).unwrap(), 0);
    }

    #[test]
    fn a_state_of_a_later_format_is_refused() {
        let later = FORMAT_2.replacen(
            r#""format_version":2"#,
            &format!(r#""format_version":{}"#, FORMAT_VERSION + 1),
            1,
        );
        let refused = decode(later.as_bytes()).unwrap_err().to_string();
        assert!(refused.contains("newer netcompose"), "{refused}");
    }
}
