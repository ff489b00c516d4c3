//! Whole-table writes encoded once per distinct table. The replicas of one service get the
//! same table (same name, chains and sets), and the batch that writes it names neither its
//! namespace nor its socket ([`wire::Finished`]), so an `up` of 200 replicas of 20 services
//! encodes 20 batches and works out 20 digests, not 200 of each. perf record (dwarf, three
//! such `up`s) put 8.3 ms of each one's CPU in encoding, copying and digesting the replica
//! tables, 2.5 ms with this (the lookups' comparisons included), on cores that the tables'
//! commits and the namespaces' making keep busy.

use super::generations::Digest;
use super::nftables::{table, wire, Table};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A table's write, ready to send: the batch, and the digest of the table it leaves.
#[derive(Debug)]
pub struct Replacement {
    pub batch: wire::Finished,
    pub digest: Digest,
}

/// How many distinct tables are kept: the replica tables of a large project's services, and
/// few enough that a long-lived process (the agent) holds little and looks through them fast.
const KEPT: usize = 64;

/// The last [`KEPT`] distinct tables written, with their encoding.
#[derive(Debug, Default)]
pub struct Replacements {
    recent: Mutex<VecDeque<(String, Table, Arc<Replacement>)>>,
}

impl Replacements {
    /// The write of `contents` as table `name`: a table equal to one written before reuses
    /// its encoding (compared whole: equal tables only, whatever the cost of comparing).
    pub fn of(&self, name: &str, contents: &Table) -> Result<Arc<Replacement>, table::BuildError> {
        let found = self
            .lock()
            .iter()
            .find(|(n, t, _)| n == name && t == contents)
            .map(|(_, _, r)| r.clone());
        if let Some(r) = found {
            return Ok(r);
        }
        // Encoded outside the lock: two threads that miss the same table both encode it,
        // which is harmless, rather than one waiting for the other's encoding.
        let r = Arc::new(Replacement {
            batch: table::replace(name, &contents.chains, &contents.sets)?.finish(),
            digest: Digest::of_table(contents),
        });
        let mut recent = self.lock();
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back((name.to_string(), contents.clone(), r.clone()));
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Table, Arc<Replacement>)>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn an_equal_table_reuses_the_encoding_and_any_difference_does_not() {
        let r = Replacements::default();
        let a = r.of("t", &table(&[1, 2])).unwrap();
        assert!(Arc::ptr_eq(&a, &r.of("t", &table(&[1, 2])).unwrap()));
        let other = r.of("t", &table(&[1, 3])).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_ne!(a.digest, other.digest);
        assert!(!Arc::ptr_eq(&a, &r.of("u", &table(&[1, 2])).unwrap()));
    }

    #[test]
    fn the_oldest_table_goes_once_enough_others_came_after_it() {
        let r = Replacements::default();
        let first = r.of("t0", &table(&[1])).unwrap();
        for i in 1..KEPT {
            r.of(&format!("t{i}"), &table(&[1])).unwrap();
        }
        assert!(Arc::ptr_eq(&first, &r.of("t0", &table(&[1])).unwrap()));
        r.of("one more", &table(&[1])).unwrap();
        assert!(!Arc::ptr_eq(&first, &r.of("t0", &table(&[1])).unwrap()));
    }
}
