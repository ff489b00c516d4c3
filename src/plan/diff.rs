//! Diffing two sets of resources by address.

use super::{Action, Attributes, Change};
use crate::model::{Resource, Spec};
use std::cmp::Ordering;

/// Changes that turn `before` into `after`, sorted by address.
///
/// Both sides are walked together in address order (a desired state and a saved plan already
/// are in it, so usually nothing is sorted), which needs neither a hash of every address nor a
/// sort of the changes. Where one address is on a side several times, each resource of `after`
/// is compared with the last one of `before`.
pub fn diff(before: &[Resource], after: &[Resource]) -> Vec<Change> {
    let (mut changes, takes) = walk(before, after, Sides::Copied);
    for (at, j) in takes {
        changes[at].after = Some(spec(after[j].spec.clone()));
    }
    changes
}

/// [`diff`], each change holding the spec of `after` that it creates or updates to instead of
/// a copy of it: a plan only shown has no use for its desired resources once diffed, and a
/// copy of every created spec of a big project is tens of megabytes.
pub fn diff_taking(before: &[Resource], after: Vec<Resource>) -> Vec<Change> {
    let (mut changes, mut takes) = walk(before, &after, Sides::Copied);
    // Each resource of `after` is taken by one change at most.
    takes.sort_unstable_by_key(|&(_, j)| j);
    let mut takes = takes.into_iter().peekable();
    for (j, r) in after.into_iter().enumerate() {
        if let Some((at, _)) = takes.next_if(|&(_, k)| k == j) {
            changes[at].after = Some(spec(r.spec));
        }
    }
    changes
}

/// [`diff`] as a run that applies the changes needs it: each change's address, kind, actions
/// and reason, without the specs on either side, which only a shown plan reads. A scale of 200
/// replicas updates 203 resources, most of them replica tables: copying both sides of each cost
/// `up` some 400 copies of a table, and `down` a copy of every resource it deletes.
pub fn diff_to_apply(before: &[Resource], after: &[Resource]) -> Vec<Change> {
    walk(before, after, Sides::Left).0
}

/// Whether the changes carry copies of the specs on their two sides.
#[derive(Debug, Clone, Copy)]
enum Sides {
    Copied,
    Left,
}

/// The changes, each without its `after` side, and where that side comes from: (index of the
/// change, index in `after`). With [`Sides::Left`], without its `before` side either.
fn walk(
    before: &[Resource],
    after: &[Resource],
    sides: Sides,
) -> (Vec<Change>, Vec<(usize, usize)>) {
    let (old, new) = (by_address(before), by_address(after));
    // Room made at once for as many changes as `after` has resources more than `before`
    // (from scratch, each of a big project's hundred thousand is created): growing to that
    // many copies the changes again at each doubling.
    let created = after.len().saturating_sub(before.len());
    let mut changes = Vec::with_capacity(created);
    let mut takes = Vec::with_capacity(created);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(&o), Some(&n)) => before[o].address.cmp(&after[n].address),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) | (None, None) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let prev = &before[old[i]];
                changes.push(change(
                    prev,
                    vec![Action::Delete],
                    Some(&prev.spec),
                    None,
                    sides,
                ));
                i += 1;
            }
            Ordering::Greater => {
                takes.push((changes.len(), new[j]));
                changes.push(change(
                    &after[new[j]],
                    vec![Action::Create],
                    None,
                    None,
                    sides,
                ));
                j += 1;
            }
            Ordering::Equal => {
                while old
                    .get(i + 1)
                    .is_some_and(|&o| before[o].address == before[old[i]].address)
                {
                    i += 1;
                }
                let prev = &before[old[i]];
                while let Some(&k) = new.get(j).filter(|&&k| after[k].address == prev.address) {
                    if prev.spec != after[k].spec {
                        takes.push((changes.len(), k));
                        changes.push(compare(prev, &after[k], sides));
                    }
                    j += 1;
                }
                i += 1;
            }
        }
    }
    (changes, takes)
}

/// The indexes of `resources` in address order (stable), sorted only if they are not already.
fn by_address(resources: &[Resource]) -> Vec<usize> {
    let mut sorted: Vec<usize> = (0..resources.len()).collect();
    if !resources.is_sorted_by(|a, b| a.address <= b.address) {
        sorted.sort_by(|&a, &b| resources[a].address.cmp(&resources[b].address));
    }
    sorted
}

fn compare(prev: &Resource, new: &Resource, sides: Sides) -> Change {
    let before = Some(&prev.spec);
    let Some(forcing) = prev.spec.replacement_fields(&new.spec) else {
        let reason = format!(
            "kind changed from {} to {}",
            prev.spec.kind(),
            new.spec.kind()
        );
        return change(
            new,
            vec![Action::Delete, Action::Create],
            before,
            Some(reason),
            sides,
        );
    };
    if forcing.is_empty() {
        change(new, vec![Action::Update], before, None, sides)
    } else {
        let names: Vec<String> = forcing.iter().map(ToString::to_string).collect();
        let reason = format!("{} changed (cannot change in place)", names.join(", "));
        change(
            new,
            vec![Action::Delete, Action::Create],
            before,
            Some(reason),
            sides,
        )
    }
}

/// A change of `r` without its `after` side, which [`diff`] and [`diff_taking`] fill in.
fn change(
    r: &Resource,
    actions: Vec<Action>,
    before: Option<&Spec>,
    reason: Option<String>,
    sides: Sides,
) -> Change {
    Change {
        address: r.address.clone(),
        kind: r.spec.kind().into(),
        actions,
        before: match sides {
            Sides::Copied => before.map(|s| spec(s.clone())),
            Sides::Left => None,
        },
        after: None,
        reason,
    }
}

fn spec(s: Spec) -> Attributes {
    Attributes::Spec(Box::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resource::{Link, LinkType, ReplicaId};
    use crate::model::ResourceId;

    fn link(ifname: &str, bridge: &str) -> Resource {
        Resource {
            address: ResourceId::Link(ReplicaId::new("web", 1), "front".into()),
            spec: Spec::Link(Box::new(Link {
                link_type: LinkType::Veth,
                network: "front".into(),
                namespace: "p-web-1".into(),
                ifname: ifname.into(),
                host_ifname: Some("nc0".into()),
                bridge: Some(bridge.into()),
                parent: None,
                mode: None,
                mac: "02:00:00:00:00:01".into(),
                addresses: vec![],
                mtu: 1500,
                qos: None,
                down: false,
            })),
            depends_on: vec![],
        }
    }

    fn at(network: &str, mtu: u32) -> Resource {
        let mut r = link("eth0", "br0");
        r.address = ResourceId::network(network);
        if let Spec::Link(l) = &mut r.spec {
            l.mtu = mtu;
        }
        r
    }

    /// Sides in any order give the changes in address order: deletes, creates and updates
    /// interleaved as their addresses fall, unchanged resources left out.
    #[test]
    fn walks_both_sides_in_address_order_whatever_order_they_come_in() {
        let before = [at("d", 1), at("b", 1), at("a", 1), at("c", 1)];
        let after = [at("e", 1), at("c", 2), at("a", 1), at("b0", 1)];
        let changes: Vec<(String, Vec<Action>)> = diff(&before, &after)
            .into_iter()
            .map(|c| (c.address.to_string(), c.actions))
            .collect();
        let expected = [
            ("network.b", vec![Action::Delete]),
            ("network.b0", vec![Action::Create]),
            ("network.c", vec![Action::Update]),
            ("network.d", vec![Action::Delete]),
            ("network.e", vec![Action::Create]),
        ];
        let expected: Vec<(String, Vec<Action>)> = expected
            .into_iter()
            .map(|(a, actions)| (a.to_string(), actions))
            .collect();
        assert_eq!(changes, expected);
        assert_eq!(diff(&after, &after), []);
    }

    /// An address twice in `before`: the last one is what `after` is compared with, and neither
    /// is deleted.
    #[test]
    fn compares_with_the_last_of_an_address_given_twice() {
        let before = [at("a", 1), at("a", 2)];
        assert_eq!(diff(&before, &[at("a", 2)]), []);
        let [c] = &diff(&before, &[at("a", 1)])[..] else {
            panic!("one change expected");
        };
        assert_eq!(c.actions, [Action::Update]);
    }

    /// Taking the specs of `after` gives the changes that copying them does.
    #[test]
    fn taking_the_desired_specs_gives_the_same_changes() {
        let before = [at("d", 1), at("b", 1), at("a", 1), at("c", 1)];
        let after = [at("e", 1), at("c", 2), at("a", 1), at("b0", 1), at("c", 3)];
        assert_eq!(diff_taking(&before, after.to_vec()), diff(&before, &after));
        assert_eq!(diff_taking(&[], after.to_vec()), diff(&[], &after));
    }

    /// The changes to apply are the changes, without their sides.
    #[test]
    fn the_changes_to_apply_are_the_changes_without_their_sides() {
        let before = [at("d", 1), at("b", 1), at("a", 1), at("c", 1)];
        let mut moved = link("eth1", "br1");
        moved.address = ResourceId::network("a");
        let after = [at("e", 1), at("c", 2), moved, at("b0", 1)];
        let bare: Vec<Change> = diff(&before, &after)
            .into_iter()
            .map(|c| Change {
                before: None,
                after: None,
                ..c
            })
            .collect();
        assert!(bare.iter().any(Change::is_replace));
        assert_eq!(diff_to_apply(&before, &after), bare);
    }

    #[test]
    fn names_the_fields_that_force_a_replacement_in_order() {
        let old = link("eth0", "br0");
        let mut moved = link("eth1", "br1");
        let [c] = &diff(std::slice::from_ref(&old), std::slice::from_ref(&moved))[..] else {
            panic!("one change expected");
        };
        assert_eq!(c.actions, [Action::Delete, Action::Create]);
        assert_eq!(
            c.reason.as_deref(),
            Some("ifname, bridge changed (cannot change in place)")
        );
        if let Spec::Link(l) = &mut moved.spec {
            l.ifname = "eth0".into();
            l.bridge = Some("br0".into());
            l.mtu = 9000;
        }
        let [c] = &diff(&[old], &[moved])[..] else {
            panic!("one change expected");
        };
        assert_eq!(c.actions, [Action::Update]);
        assert_eq!(c.reason, None);
    }
}
