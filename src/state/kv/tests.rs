//! The store's compare-and-swap logic against an in-memory KV with etcd's semantics: a
//! revision per commit, a key's mod revision, guards that fail the whole transaction.

use super::*;
use crate::ipam::NetworkAllocation;
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Another writer, run inside a commit before its guards are checked.
type Sneak = Box<dyn FnMut(&mut Memory) + Send>;

#[derive(Default)]
struct Memory {
    revision: i64,
    keys: BTreeMap<String, (Vec<u8>, i64)>,
    held: HashSet<String>,
    /// Run before every commit: another writer sneaking in.
    before_commit: Option<Sneak>,
}

#[derive(Clone, Default)]
struct FakeKv(Arc<Mutex<Memory>>);

impl Memory {
    fn apply(&mut self, ops: &[Op]) -> i64 {
        self.revision += 1;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    self.keys
                        .insert(key.clone(), (value.clone(), self.revision));
                }
                Op::Delete { key } => {
                    self.keys.remove(key);
                }
            }
        }
        self.revision
    }
}

struct Release(FakeKv, String);

impl Drop for Release {
    fn drop(&mut self) {
        self.0 .0.lock().unwrap().held.remove(&self.1);
    }
}

impl Kv for FakeKv {
    fn range(&self, prefix: &str) -> Result<(i64, Vec<Entry>), StateError> {
        let m = self.0.lock().unwrap();
        let entries = m
            .keys
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| Entry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        Ok((m.revision, entries))
    }

    fn commit(&self, guards: &[Unchanged], ops: &[Op]) -> Result<Option<i64>, StateError> {
        let mut m = self.0.lock().unwrap();
        if let Some(mut sneak) = m.before_commit.take() {
            sneak(&mut m);
            m.before_commit = Some(sneak);
        }
        let holds = guards
            .iter()
            .all(|g| m.keys.get(&g.key).map_or(0, |(_, rev)| *rev) <= g.since);
        Ok(holds.then(|| m.apply(ops)))
    }

    fn hold(&self, key: &str) -> Result<Result<Box<dyn Any + Send>, String>, StateError> {
        let mut m = self.0.lock().unwrap();
        if !m.held.insert(key.to_string()) {
            return Ok(Err("another test writer".into()));
        }
        Ok(Ok(Box::new(Release(self.clone(), key.to_string()))))
    }
}

fn name(n: &str) -> ProjectName {
    ProjectName::new(n).unwrap()
}

/// What `up` allocates, reduced to one network: the subnet it has, else the lowest /24 of
/// 10.0.0.0/16 that no other project holds.
fn pick(snapshot: &Snapshot) -> IpNetwork {
    let taken: Vec<IpNetwork> = snapshot
        .others
        .states
        .iter()
        .flat_map(|s| s.allocations.networks.values())
        .flat_map(|n| n.subnets.iter().copied())
        .collect();
    let mine = snapshot
        .state
        .as_ref()
        .and_then(|s| s.allocations.networks.get("n"))
        .and_then(|n| n.subnets.first().copied());
    mine.unwrap_or_else(|| {
        (0..=255u8)
            .map(|i| format!("10.0.{i}.0/24").parse().unwrap())
            .find(|s| !taken.contains(s))
            .unwrap()
    })
}

fn save_subnet(store: &KvStore<FakeKv>, lock: &Lock, subnet: IpNetwork) -> Result<(), StateError> {
    let mut state = State {
        format_version: crate::state::FORMAT_VERSION,
        project: lock.project().to_string(),
        ..Default::default()
    };
    state.allocations.networks.insert(
        "n".into(),
        NetworkAllocation {
            subnets: vec![subnet],
            ..Default::default()
        },
    );
    store.save(lock, &state)
}

/// Read, allocate, save: one attempt of an `up`.
fn allocate_and_save(store: &KvStore<FakeKv>, lock: &Lock) -> Result<IpNetwork, StateError> {
    let subnet = pick(&store.read(lock)?);
    save_subnet(store, lock, subnet)?;
    Ok(subnet)
}

fn conflict(e: &StateError) -> bool {
    matches!(e, StateError::Conflict { .. })
}

#[test]
fn a_save_needs_a_read_under_its_lock() {
    let store = KvStore::new(FakeKv::default());
    let lock = store.lock(&name("a"), Wait::No).unwrap();
    let state = State {
        project: "a".into(),
        ..Default::default()
    };
    assert!(matches!(
        store.save(&lock, &state),
        Err(StateError::NotRead { .. })
    ));
}

#[test]
fn the_second_of_two_writers_from_one_snapshot_conflicts_then_allocates_again() {
    let kv = FakeKv::default();
    let (one, two) = (KvStore::new(kv.clone()), KvStore::new(kv.clone()));
    let (la, lb) = (
        one.lock(&name("a"), Wait::No).unwrap(),
        two.lock(&name("b"), Wait::No).unwrap(),
    );
    // Both read before either writes: both pick 10.0.0.0/24.
    let (a, b) = (pick(&one.read(&la).unwrap()), pick(&two.read(&lb).unwrap()));
    assert_eq!(a, b);
    save_subnet(&one, &la, a).unwrap();
    let stale = save_subnet(&two, &lb, b).unwrap_err();
    assert!(conflict(&stale), "a stale allocation committed: {stale}");
    let b = crate::state::retry_on_conflict(&name("b"), conflict, || allocate_and_save(&two, &lb))
        .unwrap();
    assert_ne!(a, b, "two projects were given one subnet");
    let all = one.all();
    assert_eq!(all.states.len(), 2);
}

#[test]
fn concurrent_writers_on_threads_never_share_a_subnet() {
    let kv = FakeKv::default();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let store = KvStore::new(kv.clone());
            std::thread::spawn(move || {
                let lock = store.lock(&name(&format!("p{i}")), Wait::No).unwrap();
                crate::state::retry_on_conflict(&lock.project().clone(), conflict, || {
                    allocate_and_save(&store, &lock)
                })
            })
        })
        .collect();
    let mut got = HashSet::new();
    for t in threads {
        // Six writers racing may exhaust the tries of one; none may share a subnet.
        if let Ok(subnet) = t.join().unwrap() {
            assert!(got.insert(subnet), "{subnet} handed out twice");
        }
    }
    assert!(!got.is_empty());
}

#[test]
fn a_save_that_keeps_the_allocations_ignores_other_projects() {
    let kv = FakeKv::default();
    let (one, two) = (KvStore::new(kv.clone()), KvStore::new(kv.clone()));
    let la = one.lock(&name("a"), Wait::No).unwrap();
    allocate_and_save(&one, &la).unwrap();
    // The end of a's `up` (same allocations) after b allocated in between.
    let lb = two.lock(&name("b"), Wait::No).unwrap();
    allocate_and_save(&two, &lb).unwrap();
    let state = one.load(&name("a")).unwrap().unwrap();
    one.save(&la, &state).unwrap();
}

#[test]
fn a_writer_that_always_loses_gives_up_with_a_typed_error() {
    let kv = FakeKv::default();
    kv.0.lock().unwrap().before_commit = Some(Box::new(|m: &mut Memory| {
        m.apply(&[Op::Put {
            key: EPOCH.into(),
            value: b"someone".to_vec(),
        }]);
    }));
    let store = KvStore::new(kv);
    let lock = store.lock(&name("a"), Wait::No).unwrap();
    let err =
        crate::state::retry_on_conflict(&name("a"), conflict, || allocate_and_save(&store, &lock))
            .unwrap_err();
    assert!(
        matches!(err, StateError::Contended { tries, .. } if tries == crate::state::CAS_TRIES),
        "{err}"
    );
}

#[test]
fn the_lock_excludes_a_second_holder_until_dropped() {
    let store = KvStore::new(FakeKv::default());
    let first = store.lock(&name("a"), Wait::No).unwrap();
    assert!(matches!(
        store.lock(&name("a"), Wait::No),
        Err(StateError::Locked { .. })
    ));
    store.lock(&name("b"), Wait::No).unwrap();
    drop(first);
    store.lock(&name("a"), Wait::No).unwrap();
}

#[test]
fn remove_forgets_the_project_and_others_lists_the_rest() {
    let kv = FakeKv::default();
    let store = KvStore::new(kv.clone());
    let la = store.lock(&name("a"), Wait::No).unwrap();
    let lb = store.lock(&name("b"), Wait::No).unwrap();
    allocate_and_save(&store, &la).unwrap();
    allocate_and_save(&store, &lb).unwrap();
    assert_eq!(store.others(&name("a")).states.len(), 1);
    assert_eq!(
        store
            .load(&name("a"))
            .unwrap()
            .unwrap()
            .allocations
            .networks["n"]
            .subnets,
        vec!["10.0.0.0/24".parse::<IpNetwork>().unwrap()]
    );
    store.remove(&la).unwrap();
    assert_eq!(store.load(&name("a")).unwrap(), None);
    drop(la);
    let left: Vec<String> = kv.0.lock().unwrap().keys.keys().cloned().collect();
    assert!(
        left.iter().all(|k| !k.starts_with(&project_key("a", ""))),
        "{left:?}"
    );
}

#[test]
fn an_unreadable_other_project_is_reported_not_fatal() {
    let kv = FakeKv::default();
    kv.0.lock().unwrap().apply(&[Op::Put {
        key: project_key("broken", DESIRED),
        value: b"{ not json".to_vec(),
    }]);
    let store = KvStore::new(kv);
    let lock = store.lock(&name("a"), Wait::No).unwrap();
    let snapshot = store.read(&lock).unwrap();
    assert!(matches!(
        snapshot.others.unreadable.as_slice(),
        [StateError::Parse { .. }]
    ));
}

fn subnet_state(project: &str, subnet: IpNetwork) -> State {
    let mut state = State {
        format_version: crate::state::FORMAT_VERSION,
        project: project.to_string(),
        ..Default::default()
    };
    state.allocations.networks.insert(
        "n".into(),
        NetworkAllocation {
            subnets: vec![subnet],
            ..Default::default()
        },
    );
    state
}

#[test]
fn unlocked_writers_of_one_project_from_one_snapshot_commit_once_in_one_revision() {
    let kv = FakeKv::default();
    let (one, two) = (KvStore::new(kv.clone()), KvStore::new(kv.clone()));
    let extra = |v: &str| Op::Put {
        key: "/netcompose/v1/projects/a/spec".into(),
        value: v.as_bytes().to_vec(),
    };
    let (snap_a, seen_a) = one.read_unlocked(&name("a")).unwrap();
    let (snap_b, seen_b) = two.read_unlocked(&name("a")).unwrap();
    let (a, b) = (pick(&snap_a), pick(&snap_b));
    let before = seen_a.revision();
    let (written, _) = one
        .save_seen(&seen_a, &subnet_state("a", a), Vec::new(), vec![extra("1")])
        .unwrap();
    assert_eq!(written, before + 1, "a save took more than one revision");
    let guard = Unchanged {
        key: "/netcompose/v1/projects/a/spec".into(),
        since: seen_b.revision(),
    };
    let stale = two
        .save_seen(
            &seen_b,
            &subnet_state("a", b),
            vec![guard],
            vec![extra("2")],
        )
        .unwrap_err();
    assert!(conflict(&stale), "a stale save committed: {stale}");
    assert!(
        kv.0.lock().unwrap().held.is_empty(),
        "an unlocked save took the lock"
    );
    let (_, again) = two.read_unlocked(&name("a")).unwrap();
    assert_eq!(again.revision(), written);
}

#[test]
fn unlocked_writers_of_two_projects_never_share_a_subnet() {
    let kv = FakeKv::default();
    let (one, two) = (KvStore::new(kv.clone()), KvStore::new(kv.clone()));
    let (snap_a, seen_a) = one.read_unlocked(&name("a")).unwrap();
    let (snap_b, seen_b) = two.read_unlocked(&name("b")).unwrap();
    let (a, b) = (pick(&snap_a), pick(&snap_b));
    assert_eq!(a, b);
    one.save_seen(&seen_a, &subnet_state("a", a), Vec::new(), Vec::new())
        .unwrap();
    let stale = two
        .save_seen(&seen_b, &subnet_state("b", b), Vec::new(), Vec::new())
        .unwrap_err();
    assert!(conflict(&stale), "a stale allocation committed: {stale}");
    let b = crate::state::retry_on_conflict(&name("b"), conflict, || {
        let (snap, seen) = two.read_unlocked(&name("b"))?;
        let subnet = pick(&snap);
        two.save_seen(&seen, &subnet_state("b", subnet), Vec::new(), Vec::new())?;
        Ok(subnet)
    })
    .unwrap();
    assert_ne!(a, b, "two projects were given one subnet");
}
