//! Table writes encoded once per distinct write. The replicas of one service get the same
//! table (same name, chains and sets), and a scale changes the same map the same way in every
//! table that can reach the service; the batch that writes either names neither its namespace
//! nor its socket ([`wire::Finished`]), so the bytes and the digest (or change of digest) are
//! worked out once and sent to each namespace. perf record (dwarf, three 200-replica `up`s
//! with VIPs and policies) put 8.3 ms of each one's CPU in encoding, copying and digesting the
//! replica tables, 2.5 ms once they were encoded once per distinct table (the lookups'
//! comparisons included).

use super::generations::{Change, Digest, Write};
use super::nftables::{table, wire, Table};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A whole table's write, ready to send: the batch, and the digest of the table it leaves.
#[derive(Debug)]
pub struct Replacement {
    pub batch: wire::Finished,
    pub digest: Digest,
}

/// An update's write, ready to send: the batch, and what it does to the table's digest.
#[derive(Debug)]
pub struct Update {
    pub batch: wire::Finished,
    pub change: Change,
}

/// A write ready to send to any namespace: its batch, and what it does to the table's digest.
pub trait EncodedWrite: Send + Sync + 'static {
    fn batch(&self) -> &wire::Finished;
    fn how(&self) -> Write;
}

impl EncodedWrite for Replacement {
    fn batch(&self) -> &wire::Finished {
        &self.batch
    }
    fn how(&self) -> Write {
        Write::Replace(self.digest)
    }
}

impl EncodedWrite for Update {
    fn batch(&self) -> &wire::Finished {
        &self.batch
    }
    fn how(&self) -> Write {
        Write::Update(self.change)
    }
}

/// How many distinct writes of each kind are kept: the replica tables of a large project's
/// services, and few enough that a long-lived process (the agent) holds little and looks
/// through them fast.
const KEPT: usize = 64;

/// The last [`KEPT`] distinct writes of each kind, with their encoding.
#[derive(Debug, Default)]
pub struct Encoded {
    replacements: Recent<(String, Arc<Table>), Replacement>,
    updates: Recent<(String, Table, Table), Update>,
}

impl Encoded {
    /// The write of `contents` as table `name`: a table equal to one written before reuses
    /// its encoding (compared whole: equal tables only, whatever the cost of comparing). The
    /// very table written before is found by its address first: the replicas of a service
    /// hand over one compiled table, and comparing it whole with each of the other services'
    /// tables kept (alike but for a few set elements deep inside) cost more than compiling it.
    pub fn replacement(
        &self,
        name: &str,
        contents: &Arc<Table>,
    ) -> Result<Arc<Replacement>, table::BuildError> {
        let kept = self
            .replacements
            .find(|(n, t)| Arc::ptr_eq(t, contents) && n == name)
            .or_else(|| self.replacements.find(|(n, t)| n == name && t == contents));
        if let Some(r) = kept {
            return Ok(r);
        }
        // Encoded outside the lock: two threads that miss the same table both encode it,
        // which is harmless, rather than one waiting for the other's encoding.
        let r = Replacement {
            batch: table::replace(name, &contents.chains, &contents.sets)?.finish(),
            digest: Digest::of_table(contents),
        };
        Ok(self
            .replacements
            .keep((name.to_string(), contents.clone()), r))
    }

    /// The update of table `name` from `old` to `new` (see [`table::update`]), likewise.
    pub fn update(
        &self,
        name: &str,
        old: &Table,
        new: &Table,
    ) -> Result<Arc<Update>, table::BuildError> {
        if let Some(u) = self
            .updates
            .find(|(n, o, w)| n == name && o == old && w == new)
        {
            return Ok(u);
        }
        let u = Update {
            batch: table::update(name, (&old.chains, &old.sets), (&new.chains, &new.sets))?
                .finish(),
            change: Change::of(old, new),
        };
        Ok(self
            .updates
            .keep((name.to_string(), old.clone(), new.clone()), u))
    }
}

/// The last [`KEPT`] values made, each with what it was made from.
#[derive(Debug)]
struct Recent<K, V> {
    kept: Mutex<VecDeque<(K, Arc<V>)>>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            kept: Mutex::default(),
        }
    }
}

impl<K, V> Recent<K, V> {
    fn find(&self, is: impl Fn(&K) -> bool) -> Option<Arc<V>> {
        self.lock()
            .iter()
            .find(|(k, _)| is(k))
            .map(|(_, v)| v.clone())
    }

    /// Keep `value`, made from `key`, in place of the oldest if there are [`KEPT`] already.
    fn keep(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut kept = self.lock();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((key, value.clone()));
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(K, Arc<V>)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nftables::{Chain, KeyType, SetSpec};

    fn table(elements: &[u8]) -> Table {
        Table {
            chains: vec![Chain {
                name: "c".into(),
                base: None,
                rules: Vec::new(),
            }],
            sets: vec![SetSpec {
                name: "s".into(),
                key: KeyType::Ipv4Addr,
                data: None,
                interval: false,
                elements: elements
                    .iter()
                    .map(|b| crate::kernel::nftables::Element {
                        key: vec![10, 0, 0, *b],
                        last: None,
                        data: None,
                    })
                    .collect(),
            }],
        }
    }

    fn whole(elements: &[u8]) -> Arc<Table> {
        Arc::new(table(elements))
    }

    #[test]
    fn an_equal_table_reuses_the_encoding_and_any_difference_does_not() {
        let e = Encoded::default();
        let a = e.replacement("t", &whole(&[1, 2])).unwrap();
        assert!(Arc::ptr_eq(
            &a,
            &e.replacement("t", &whole(&[1, 2])).unwrap()
        ));
        let other = e.replacement("t", &whole(&[1, 3])).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_ne!(a.digest, other.digest);
        assert!(!Arc::ptr_eq(
            &a,
            &e.replacement("u", &whole(&[1, 2])).unwrap()
        ));
    }

    #[test]
    fn the_same_table_under_another_name_is_another_write() {
        let e = Encoded::default();
        let same = whole(&[1, 2]);
        let t = e.replacement("t", &same).unwrap();
        assert!(Arc::ptr_eq(&t, &e.replacement("t", &same).unwrap()));
        let u = e.replacement("u", &same).unwrap();
        assert!(!Arc::ptr_eq(&t, &u));
        assert!(Arc::ptr_eq(&u, &e.replacement("u", &same).unwrap()));
    }

    #[test]
    fn an_equal_update_reuses_the_encoding_and_any_difference_does_not() {
        let e = Encoded::default();
        let (one, two, three) = (table(&[1]), table(&[1, 2]), table(&[1, 3]));
        let a = e.update("t", &one, &two).unwrap();
        assert!(Arc::ptr_eq(&a, &e.update("t", &one, &two).unwrap()));
        for other in [
            e.update("t", &one, &three).unwrap(),
            e.update("t", &three, &two).unwrap(),
            e.update("u", &one, &two).unwrap(),
        ] {
            assert!(!Arc::ptr_eq(&a, &other));
        }
        assert_eq!(a.change, Change::of(&one, &two));
    }

    #[test]
    fn the_oldest_write_goes_once_enough_others_came_after_it() {
        let e = Encoded::default();
        let first = e.replacement("t0", &whole(&[1])).unwrap();
        for i in 1..KEPT {
            e.replacement(&format!("t{i}"), &whole(&[1])).unwrap();
        }
        assert!(Arc::ptr_eq(
            &first,
            &e.replacement("t0", &whole(&[1])).unwrap()
        ));
        e.replacement("one more", &whole(&[1])).unwrap();
        assert!(!Arc::ptr_eq(
            &first,
            &e.replacement("t0", &whole(&[1])).unwrap()
        ));
    }
}
