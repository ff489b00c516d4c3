//! A [`Store`] on a key-value service with revisions and compare-and-swap (etcd): the key
//! layout, the guarded writes and the lock, over a small [`Kv`] trait so that the logic is
//! unit-tested against an in-memory KV with etcd's compare semantics.
//!
//! Keys (under `/netcompose/v1/`, leaving `nodes/` and the agents' keys beside `projects/`):
//!
//! - `projects/<p>/desired`: the state without its allocations (resources, files, scale);
//! - `projects/<p>/allocations`: addresses, MACs, VNIs, subnets and host ports;
//! - `projects/<p>/lock`: the project's lock, on a lease of its holder;
//! - `alloc-epoch`: rewritten by every save that changes allocations.
//!
//! Why a save is safe: [`Store::read`] reads every project at one revision R. A save writes
//! `desired` and `allocations` in one transaction, guarded by "neither key changed after R",
//! and, when the allocations differ from those read, by "`alloc-epoch` did not change after
//! R" while rewriting it. Two writers that allocated from the same snapshot cannot both
//! commit: the second finds the epoch moved and gets [`StateError::Conflict`], reads again
//! (seeing the first one's subnets, MACs and VNIs) and allocates again. A save that keeps
//! the allocations (the end of an `up`) does not touch the epoch, so it never conflicts with
//! other projects. The lock is not what makes allocation safe (a paused holder's lease can
//! lapse; other projects never take it): it keeps two runs of one project from changing the
//! kernel at once, as the file store's flock does. A cluster `up` changes no kernel: it
//! reads without the lock and saves by compare-and-swap alone ([`KvStore::read_unlocked`],
//! [`KvStore::save_seen`]), one revision per run.

use super::{check_lock, Lock, Others, Snapshot, State, StateError, Store, Wait};
use crate::ipam::Allocations;
use crate::project_name::ProjectName;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

pub(super) const PROJECTS: &str = "/netcompose/v1/projects/";
const EPOCH: &str = "/netcompose/v1/alloc-epoch";
const DESIRED: &str = "desired";
const ALLOCATIONS: &str = "allocations";
const LOCK: &str = "lock";
/// How often a waiting locker tries again.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// One key as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
}

/// A condition of a transaction: `key` was not modified after revision `since` (an absent
/// key passes).
#[derive(Debug, Clone, PartialEq)]
pub struct Unchanged {
    pub key: String,
    pub since: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// What the store needs of the KV service.
pub trait Kv: Send + Sync {
    /// Every key under `prefix`, and the revision they were read at.
    fn range(&self, prefix: &str) -> Result<(i64, Vec<Entry>), StateError>;
    /// Apply `ops` atomically if every guard holds: the new revision, or None if one fails.
    fn commit(&self, guards: &[Unchanged], ops: &[Op]) -> Result<Option<i64>, StateError>;
    /// Create `key` for as long as the returned value lives (a lease kept alive), or the
    /// current holder's description when it exists.
    fn hold(&self, key: &str) -> Result<Result<Box<dyn Any + Send>, String>, StateError>;
}

/// A project's state in a [`Kv`].
pub struct KvStore<K> {
    kv: K,
}

/// What a lock of this store holds: the KV's hold on the lock key, and what the last read
/// under the lock saw (the revision a save is compared with).
struct Held {
    /// Only dropped; in a mutex so that a lock can be shared with a thread that saves.
    _hold: Mutex<Box<dyn Any + Send>>,
    seen: Mutex<Option<Seen>>,
}

/// What a read of the projects saw: the revision a save is compared with, and the
/// project's allocations then (None: it had no state).
#[derive(Debug, Clone)]
pub struct Seen {
    revision: i64,
    allocations: Option<Allocations>,
}

impl Seen {
    /// The revision the projects were read at.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

fn project_key(project: &str, leaf: &str) -> String {
    format!("{PROJECTS}{project}/{leaf}")
}

impl<K: Kv> KvStore<K> {
    pub(super) fn new(kv: K) -> KvStore<K> {
        KvStore { kv }
    }

    /// The KV the store is kept in (a cluster's agents use its other keys).
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The keys of `project`'s state, those [`Store::remove`] deletes: for a caller that
    /// deletes them in a guarded transaction of its own (a cluster's `down`).
    pub fn state_keys(project: &ProjectName) -> [String; 2] {
        [DESIRED, ALLOCATIONS].map(|leaf| project_key(project.as_str(), leaf))
    }

    /// [`Store::save`], with `extra` in the same transaction: the revision it committed at.
    pub fn save_with(&self, lock: &Lock, state: &State, extra: Vec<Op>) -> Result<i64, StateError> {
        check_lock(lock, state)?;
        let held = self.held(lock)?;
        let mut seen = held.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = seen.clone() else {
            return Err(StateError::NotRead {
                project: state.project.clone(),
            });
        };
        let (revision, now) = self.save_seen(&last, state, Vec::new(), extra)?;
        *seen = Some(now);
        Ok(revision)
    }

    /// Every project as [`Store::read`] reads them, without the lock: for a writer whose only
    /// guard is the compare-and-swap of [`KvStore::save_seen`] (a cluster `up`, which changes
    /// no kernel and so needs no lock against another run of the project).
    pub fn read_unlocked(&self, project: &ProjectName) -> Result<(Snapshot, Seen), StateError> {
        let (revision, entries) = self.kv.range(PROJECTS)?;
        let (mut states, unreadable) = Self::states(entries);
        let state = states.remove(project.as_str());
        // The project's own state unreadable stops the run; another project's is reported.
        let own = project_key(project.as_str(), "");
        let (mine, unreadable): (Vec<_>, Vec<_>) = unreadable
            .into_iter()
            .partition(|e| matches!(e, StateError::Parse { path, .. } if path.starts_with(&own)));
        if let Some(e) = mine.into_iter().next() {
            return Err(e);
        }
        let seen = Seen {
            revision,
            allocations: state.as_ref().map(|s| s.allocations.clone()),
        };
        let snapshot = Snapshot {
            state,
            others: Others {
                states: states.into_values().collect(),
                unreadable,
            },
        };
        Ok((snapshot, seen))
    }

    /// Write `state` as read in `last`: `desired` and `allocations` (and the epoch when the
    /// allocations changed) guarded as the module says, with `extra` ops under `guards` of the
    /// caller's in the same transaction. The revision it committed at and what it now holds,
    /// or [`StateError::Conflict`] when any guard failed.
    pub fn save_seen(
        &self,
        last: &Seen,
        state: &State,
        mut guards: Vec<Unchanged>,
        extra: Vec<Op>,
    ) -> Result<(i64, Seen), StateError> {
        let project = state.project.as_str();
        let (desired_key, alloc_key) = (
            project_key(project, DESIRED),
            project_key(project, ALLOCATIONS),
        );
        let or_write_error = |v: serde_json::Result<Vec<u8>>, key: &str| {
            v.map_err(|e| StateError::Write {
                path: key.to_string(),
                source: std::io::Error::other(e),
            })
        };
        let desired = State {
            allocations: Allocations::default(),
            ..state.clone()
        };
        guards.extend([
            Unchanged {
                key: desired_key.clone(),
                since: last.revision,
            },
            Unchanged {
                key: alloc_key.clone(),
                since: last.revision,
            },
        ]);
        let mut ops = vec![
            Op::Put {
                value: or_write_error(super::encode(&desired), &desired_key)?,
                key: desired_key,
            },
            Op::Put {
                value: or_write_error(serde_json::to_vec(&state.allocations), &alloc_key)?,
                key: alloc_key,
            },
        ];
        ops.extend(extra);
        if last.allocations.as_ref() != Some(&state.allocations) {
            guards.push(Unchanged {
                key: EPOCH.into(),
                since: last.revision,
            });
            ops.push(Op::Put {
                key: EPOCH.into(),
                value: project.as_bytes().to_vec(),
            });
        }
        match self.kv.commit(&guards, &ops)? {
            Some(revision) => Ok((
                revision,
                Seen {
                    revision,
                    allocations: Some(state.allocations.clone()),
                },
            )),
            None => Err(StateError::Conflict {
                project: project.to_string(),
            }),
        }
    }

    /// Every project's state found in `entries`, by name; unreadable ones as errors.
    fn states(entries: Vec<Entry>) -> (BTreeMap<String, State>, Vec<StateError>) {
        let mut desired = BTreeMap::new();
        let mut allocations = BTreeMap::new();
        let mut errors = Vec::new();
        for e in entries {
            let Some(rest) = e.key.strip_prefix(PROJECTS) else {
                continue;
            };
            let Some((project, leaf)) = rest.split_once('/') else {
                continue;
            };
            let parsed = match leaf {
                DESIRED => {
                    super::decode(&e.value).map(|s| drop(desired.insert(project.to_string(), s)))
                }
                ALLOCATIONS => serde_json::from_slice::<Allocations>(&e.value)
                    .map(|a| drop(allocations.insert(project.to_string(), a))),
                // The lock and keys of later versions hold no state.
                _ => Ok(()),
            };
            if let Err(source) = parsed {
                errors.push(StateError::Parse {
                    path: e.key.clone(),
                    source,
                });
            }
        }
        for (project, state) in desired.iter_mut() {
            state.allocations = allocations.remove(project).unwrap_or_default();
        }
        (desired, errors)
    }

    fn held<'l>(&self, lock: &'l Lock) -> Result<&'l Held, StateError> {
        lock.held()
            .downcast_ref::<Held>()
            .ok_or_else(|| StateError::WrongLock {
                project: lock.project().to_string(),
                lock: "another store".into(),
            })
    }
}

impl<K: Kv> Store for KvStore<K> {
    fn save(&self, lock: &Lock, state: &State) -> Result<(), StateError> {
        self.save_with(lock, state, Vec::new()).map(drop)
    }

    fn load(&self, project: &ProjectName) -> Result<Option<State>, StateError> {
        let (_, entries) = self.kv.range(&project_key(project.as_str(), ""))?;
        let (mut states, mut errors) = Self::states(entries);
        if let Some(e) = errors.pop() {
            return Err(e);
        }
        Ok(states.remove(project.as_str()))
    }

    fn remove(&self, lock: &Lock) -> Result<(), StateError> {
        let project = lock.project().as_str();
        let ops = [DESIRED, ALLOCATIONS].map(|leaf| Op::Delete {
            key: project_key(project, leaf),
        });
        // Freed allocations need no epoch: a writer that read them as taken only avoided them.
        self.kv.commit(&[], &ops)?;
        Ok(())
    }

    fn others(&self, project: &ProjectName) -> Others {
        let mut all = self.all();
        all.states.retain(|s| s.project != project.as_str());
        all
    }

    fn all(&self) -> Others {
        match self.kv.range(PROJECTS) {
            Ok((_, entries)) => {
                let (states, unreadable) = Self::states(entries);
                Others {
                    states: states.into_values().collect(),
                    unreadable,
                }
            }
            Err(e) => Others {
                states: Vec::new(),
                unreadable: vec![e],
            },
        }
    }

    fn lock(&self, project: &ProjectName, wait: Wait) -> Result<Lock, StateError> {
        let key = project_key(project.as_str(), LOCK);
        loop {
            match self.kv.hold(&key)? {
                Ok(hold) => {
                    let held = Held {
                        _hold: Mutex::new(hold),
                        seen: Mutex::new(None),
                    };
                    return Ok(Lock::new(project.clone(), Box::new(held)));
                }
                Err(holder) => match wait {
                    Wait::No => {
                        return Err(StateError::Locked {
                            project: project.to_string(),
                            path: format!("{key}, by {holder}"),
                        })
                    }
                    Wait::Yes => std::thread::sleep(LOCK_POLL),
                },
            }
        }
    }

    fn read(&self, lock: &Lock) -> Result<Snapshot, StateError> {
        let held = self.held(lock)?;
        let (snapshot, seen) = self.read_unlocked(lock.project())?;
        *held.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests;
