//! An in-memory KV with etcd's semantics for unit tests: a revision per commit, a key's mod
//! revision, guards that fail the whole transaction, leases that take their keys with them
//! when they expire (the test says when), and watches.

use super::{ClusterKv, Record, Watched};
use crate::state::kv::{Entry, Kv, KvStore, Op, Unchanged};
use crate::state::StateError;
use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::sync::{mpsc, Arc, Mutex};

#[derive(Default)]
struct Memory {
    revision: i64,
    /// key → (value, mod revision, lease).
    keys: BTreeMap<String, (Vec<u8>, i64, i64)>,
    leases: BTreeMap<i64, i64>,
    next_lease: i64,
    held: HashSet<String>,
    watchers: Vec<(String, mpsc::Sender<Watched>)>,
    /// Puts that land just before the next guarded commit.
    cut_in: Vec<(String, Vec<u8>)>,
}

/// The KV, shared by clones (one per "host").
#[derive(Clone, Default)]
pub struct MemoryKv(Arc<Mutex<Memory>>);

impl Memory {
    fn changed(&mut self, keys: &[String]) {
        self.revision += 1;
        let revision = self.revision;
        self.watchers.retain(|(prefix, tx)| {
            !keys.iter().any(|k| k.starts_with(prefix.as_str()))
                || tx.send(Watched::Changed { revision }).is_ok()
        });
    }
}

impl MemoryKv {
    /// A store on this KV (the projects' states, locks).
    pub fn store(&self) -> KvStore<MemoryKv> {
        KvStore::new(self.clone())
    }

    /// The lease expires now: its keys go in one revision.
    pub fn expire(&self, lease: i64) {
        let mut m = self.0.lock().unwrap();
        m.leases.remove(&lease);
        let gone: Vec<String> = m
            .keys
            .iter()
            .filter(|(_, (_, _, l))| *l == lease)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            m.keys.remove(k);
        }
        if !gone.is_empty() {
            m.changed(&gone);
        }
    }

    /// Put `key` just before the next guarded commit (in a revision of its own), as another
    /// writer's put lands between that commit's read and its write: a lost race, on cue.
    pub fn cut_in(&self, key: &str, value: &[u8]) {
        let mut m = self.0.lock().unwrap();
        m.cut_in.push((key.to_string(), value.to_vec()));
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.0.lock().unwrap().revision
    }

    /// Every key and its value, as text.
    pub fn dump(&self) -> BTreeMap<String, String> {
        let m = self.0.lock().unwrap();
        m.keys
            .iter()
            .map(|(k, (v, _, _))| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }
}

impl ClusterKv for MemoryKv {
    fn list(&self, prefix: &str) -> Result<(i64, Vec<Record>), StateError> {
        let m = self.0.lock().unwrap();
        let records = m
            .keys
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, rev, lease))| Record {
                key: k.clone(),
                value: v.clone(),
                mod_revision: *rev,
                lease: *lease,
            })
            .collect();
        Ok((m.revision, records))
    }

    fn commit_on(
        &self,
        lease: Option<i64>,
        guards: &[Unchanged],
        ops: &[Op],
    ) -> Result<Option<i64>, StateError> {
        let mut m = self.0.lock().unwrap();
        if !guards.is_empty() && !m.cut_in.is_empty() {
            let puts = std::mem::take(&mut m.cut_in);
            let revision = m.revision + 1;
            for (key, value) in &puts {
                m.keys.insert(key.clone(), (value.clone(), revision, 0));
            }
            let keys: Vec<String> = puts.into_iter().map(|(k, _)| k).collect();
            m.changed(&keys);
        }
        let holds = guards
            .iter()
            .all(|g| m.keys.get(&g.key).map_or(0, |(_, rev, _)| *rev) <= g.since);
        if !holds {
            return Ok(None);
        }
        if lease.is_some_and(|l| !m.leases.contains_key(&l)) {
            return Err(StateError::Etcd(crate::state::EtcdError::Stopped));
        }
        let revision = m.revision + 1;
        let mut touched = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    m.keys
                        .insert(key.clone(), (value.clone(), revision, lease.unwrap_or(0)));
                    touched.push(key.clone());
                }
                Op::Delete { key } => {
                    if m.keys.remove(key).is_some() {
                        touched.push(key.clone());
                    }
                }
            }
        }
        m.changed(&touched);
        Ok(Some(m.revision))
    }

    fn grant(&self, ttl: i64) -> Result<i64, StateError> {
        let mut m = self.0.lock().unwrap();
        m.next_lease += 1;
        let id = m.next_lease;
        m.leases.insert(id, ttl);
        Ok(id)
    }

    fn keep_alive(&self, lease: i64) -> Result<Option<i64>, StateError> {
        Ok(self.0.lock().unwrap().leases.get(&lease).copied())
    }

    fn time_to_live(&self, lease: i64) -> Result<Option<i64>, StateError> {
        self.keep_alive(lease)
    }

    fn revoke(&self, lease: i64) -> Result<(), StateError> {
        self.expire(lease);
        Ok(())
    }

    fn watch(&self, prefix: &str, _from: i64) -> Result<mpsc::Receiver<Watched>, StateError> {
        let (tx, rx) = mpsc::channel();
        self.0
            .lock()
            .unwrap()
            .watchers
            .push((prefix.to_string(), tx));
        Ok(rx)
    }
}

struct Release(MemoryKv, String);

impl Drop for Release {
    fn drop(&mut self) {
        self.0 .0.lock().unwrap().held.remove(&self.1);
    }
}

impl Kv for MemoryKv {
    fn range(&self, prefix: &str) -> Result<(i64, Vec<Entry>), StateError> {
        let (revision, records) = self.list(prefix)?;
        let entries = records
            .into_iter()
            .map(|r| Entry {
                key: r.key,
                value: r.value,
            })
            .collect();
        Ok((revision, entries))
    }

    fn commit(&self, guards: &[Unchanged], ops: &[Op]) -> Result<Option<i64>, StateError> {
        self.commit_on(None, guards, ops)
    }

    fn hold(&self, key: &str) -> Result<Result<Box<dyn Any + Send>, String>, StateError> {
        let mut m = self.0.lock().unwrap();
        if !m.held.insert(key.to_string()) {
            return Ok(Err("another test writer".into()));
        }
        Ok(Ok(Box::new(Release(self.clone(), key.to_string()))))
    }
}
