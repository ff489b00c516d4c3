//! Replicas changed alike, shown once. Scaling a service changes every replica table whose
//! policy names it the same way, so a hundred identical blocks would bury the few that differ.
//! Changes of one service whose text is the same but for the replica number become one block
//! whose address lists the replicas (`service.web[1-3,7].firewall`).

use crate::plan::{Action, Change};
use std::collections::HashMap;
use std::fmt;

/// A block to print: the first change of its group (for the symbol, kind and reason), the
/// address or addresses it stands for, and its attributes.
pub(super) struct Shown<'c> {
    pub change: &'c Change,
    pub label: String,
    pub body: String,
}

/// The blocks in the order of the changes, each group where its first member was.
#[cfg(test)]
pub(super) fn group<'c>(
    changes: &[&'c Change],
    body: impl Fn(&Change) -> String,
) -> Vec<Shown<'c>> {
    let mut shown = Vec::new();
    each_group(changes, body, |s| shown.push(s));
    shown
}

/// [`group`], each block handed to `emit` as soon as no later change can join it. Changes come
/// sorted by address, so the resources of one service's replicas are contiguous (every address
/// between two that start with `service.web[` starts with it too): the groups are complete
/// when the next change is not of the same service's replicas, and only that service's
/// bodies are held at once.
pub(super) fn each_group<'c>(
    changes: &[&'c Change],
    body: impl Fn(&Change) -> String,
    mut emit: impl FnMut(Shown<'c>),
) {
    struct Group<'c> {
        change: &'c Change,
        body: String,
        /// (what follows the replica's index, the indexes) of a replica's resource.
        replicas: Option<(Tail<'c>, Vec<u32>)>,
    }
    let mut groups: Vec<Group<'c>> = Vec::new();
    // The service whose replicas' groups are open.
    let mut open: Option<&'c str> = None;
    // aHash, of the bodies and of the keys: the texts are the plan's own, and a big project's
    // hundred thousand bodies were hashed with SipHash.
    let hasher = ahash::RandomState::new();
    // By what they must share: the groups whose bodies may match, each compared against the
    // group's own copy rather than kept a second time as a key.
    let mut by_key: HashMap<Key<'c>, Vec<usize>, _> = HashMap::with_hasher(hasher.clone());
    let mut flush = |groups: &mut Vec<Group<'c>>, by_key: &mut HashMap<_, _, _>| {
        by_key.clear();
        for g in groups.drain(..) {
            let label = match &g.replicas {
                Some((rest, indexes)) if indexes.len() > 1 => {
                    let service = g.change.address.replica().map_or("", |r| &r.service);
                    format!("service.{service}[{}]{rest}", ranges(indexes))
                }
                Some(_) | None => g.change.address.to_string(),
            };
            emit(Shown {
                change: g.change,
                label,
                body: g.body,
            });
        }
    };
    for &c in changes {
        let service = c.address.replica().map(|r| r.service.as_str());
        if service.is_none() || service != open {
            flush(&mut groups, &mut by_key);
            open = service;
        }
        let body = body(c);
        let Some((rest, index)) = replica_parts(c) else {
            groups.push(Group {
                change: c,
                body,
                replicas: None,
            });
            continue;
        };
        let key = Key {
            rest,
            actions: &c.actions,
            kind: &c.kind,
            reason: c.reason.as_deref(),
            body: hasher.hash_one(&body),
        };
        let candidates = by_key.entry(key).or_default();
        match candidates.iter().copied().find(|&i| groups[i].body == body) {
            Some(i) => {
                if let Some((_, indexes)) = &mut groups[i].replicas {
                    indexes.push(index);
                }
            }
            None => {
                candidates.push(groups.len());
                groups.push(Group {
                    change: c,
                    body,
                    replicas: Some((rest, vec![index])),
                });
            }
        }
    }
    flush(&mut groups, &mut by_key);
}

/// `changes` cut into pieces of about `size` changes, each cut where [`each_group`] closes
/// every group (before a change that is not of the replicas of the service before it), so that
/// the pieces shown one by one show what the whole would.
pub(super) fn pieces<'a, 'c>(changes: &'a [&'c Change], size: usize) -> Vec<&'a [&'c Change]> {
    fn service(c: &Change) -> Option<&str> {
        c.address.replica().map(|r| r.service.as_str())
    }
    let mut pieces = Vec::new();
    let mut rest = changes;
    while rest.len() > size {
        let cut = (size..rest.len()).find(|&i| {
            let here = service(rest[i]);
            here.is_none() || here != service(rest[i - 1])
        });
        let Some(cut) = cut else { break };
        let (piece, after) = rest.split_at(cut);
        pieces.push(piece);
        rest = after;
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// What two changes of one service's replicas must share to be one block: the address after
/// the replica's index, the header's symbol (from the actions), kind and reason, and the body
/// (its hash; the bodies themselves are compared when the keys are equal).
#[derive(PartialEq, Eq, Hash)]
struct Key<'c> {
    rest: Tail<'c>,
    actions: &'c [Action],
    kind: &'c str,
    reason: Option<&'c str>,
    body: u64,
}

/// What a replica's resource's address holds after `[N]` (`.link.front`), in two pieces, as
/// written one after the other: two tails are the same text exactly when their pieces are the
/// same (each first piece starts differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Tail<'c>(&'c str, &'c str);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

/// A replica's resource as (the address after `[N]`, N): what its printed address holds after
/// `service.<service>[<N>]`.
fn replica_parts(c: &Change) -> Option<(Tail<'_>, u32)> {
    let (replica, [after, last]) = c.address.replica_tail()?;
    // The id's tail starts with the `]` that closes `[N]`.
    let after = after.strip_prefix(']').unwrap_or(after);
    Some((Tail(after, last), replica.index))
}

/// `1-3,7`: the indexes in order, runs as ranges.
fn ranges(indexes: &[u32]) -> String {
    let mut sorted = indexes.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for i in sorted {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            Some(_) | None => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaId, ResourceId};
    use crate::plan::Action;
    use serde_json::json;

    fn firewall(index: u32, digest: &str) -> Change {
        Change {
            address: ResourceId::ReplicaFirewall(ReplicaId {
                service: "web".into(),
                index,
            }),
            kind: "firewall".into(),
            actions: vec![Action::Update],
            before: Some(json!({"vip_digest": "a"}).into()),
            after: Some(json!({"vip_digest": digest}).into()),
            reason: None,
        }
    }

    #[test]
    fn replicas_changed_alike_are_one_block() {
        let changes = [
            firewall(1, "b"),
            firewall(2, "b"),
            firewall(3, "c"),
            firewall(4, "b"),
            firewall(7, "b"),
        ];
        let refs: Vec<&Change> = changes.iter().collect();
        let shown = group(&refs, |c| c.sides().1["vip_digest"].to_string());
        let labels: Vec<(&str, &str)> = shown
            .iter()
            .map(|s| (s.label.as_str(), s.body.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("service.web[1-2,4,7].firewall", "\"b\""),
                ("service.web[3].firewall", "\"c\"")
            ]
        );
    }

    #[test]
    fn pieces_show_what_the_whole_shows() {
        let firewall_of = |service: &str, index, digest: &str| Change {
            address: ResourceId::ReplicaFirewall(ReplicaId::new(service, index)),
            ..firewall(index, digest)
        };
        let changes = [
            firewall_of("a", 1, "b"),
            firewall_of("a", 2, "b"),
            firewall_of("a", 3, "c"),
            firewall_of("b", 1, "b"),
            Change {
                address: ResourceId::network("n"),
                ..firewall(1, "b")
            },
            firewall_of("c", 1, "b"),
            firewall_of("c", 2, "b"),
        ];
        let refs: Vec<&Change> = changes.iter().collect();
        let body = |c: &Change| c.sides().1["vip_digest"].to_string();
        let labels = |shown: Vec<Shown>| -> Vec<(String, String)> {
            shown.into_iter().map(|s| (s.label, s.body)).collect()
        };
        let whole = labels(group(&refs, body));
        for size in 1..=refs.len() {
            let pieces = pieces(&refs, size);
            assert_eq!(pieces.concat(), refs, "{size}");
            let shown: Vec<(String, String)> =
                pieces.iter().flat_map(|p| labels(group(p, body))).collect();
            assert_eq!(shown, whole, "{size}");
        }
        assert_eq!(pieces(&refs, 1).len(), 4);
    }

    #[test]
    fn ranges_of_indexes() {
        assert_eq!(ranges(&[3, 1, 2, 9, 5, 6]), "1-3,5-6,9");
        assert_eq!(ranges(&[4]), "4");
    }
}
