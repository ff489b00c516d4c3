//! What the resolver did for each replica, counted on the hot path (one relaxed atomic add per
//! query) and read by `netcompose stats`.
//!
//! Every query that gets a reply counts once, in `answered` or in `forwarded`; `failed` is the
//! part of `forwarded` that got no useful answer. Packets that get no reply (responses, runts)
//! are not counted. The counts of a namespace live as long as its sockets: they start again at
//! zero when the namespace is made again, and survive every reload that keeps it.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of one replica namespace.
#[derive(Debug, Default)]
pub struct QueryCounters {
    /// Queries answered by the resolver itself: from the project's records, or with an error
    /// of its own (NXDOMAIN for the project's reverse zones, REFUSED without upstreams,
    /// FORMERR, NOTIMP, BADVERS).
    pub answered: AtomicU64,
    /// Queries for names the project does not know, sent to the replica's upstreams (or that
    /// would have been, had a forwarding slot been free).
    pub forwarded: AtomicU64,
    /// Forwarded queries whose reply was SERVFAIL or REFUSED: from every upstream, or our own
    /// when none answered in time or no forwarding slot was free.
    pub failed: AtomicU64,
}

/// The counters of one replica at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCounts {
    pub answered: u64,
    pub forwarded: u64,
    pub failed: u64,
}

impl QueryCounters {
    pub fn read(&self) -> QueryCounts {
        QueryCounts {
            answered: self.answered.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    pub(super) fn add_answered(&self, n: u64) {
        self.answered.fetch_add(n, Ordering::Relaxed);
    }

    /// One forwarded query, and its reply (`None`: it could not be forwarded at all).
    pub(super) fn add_forwarded(&self, reply: Option<&[u8]>) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        if reply.is_none_or(failed) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A reply that tells the client its query failed: SERVFAIL (2) or REFUSED (5), the codes on
/// which the forwarder asks the next upstream.
fn failed(reply: &[u8]) -> bool {
    reply.len() < 4 || matches!(reply[3] & 0x0f, 2 | 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_is_part_of_forwarded() {
        let c = QueryCounters::default();
        c.add_answered(3);
        let mut ok = vec![0u8; 12];
        ok[3] = 0x83; // NXDOMAIN from upstream: an answer
        c.add_forwarded(Some(&ok));
        let mut servfail = vec![0u8; 12];
        servfail[3] = 0x82;
        c.add_forwarded(Some(&servfail));
        c.add_forwarded(None);
        assert_eq!(
            c.read(),
            QueryCounts {
                answered: 3,
                forwarded: 3,
                failed: 2
            }
        );
    }
}
