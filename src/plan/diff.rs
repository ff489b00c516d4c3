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
    let (old, new) = (by_address(before), by_address(after));
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => o.address.cmp(&n.address),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) | (None, None) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let prev = old[i];
                changes.push(change(
                    prev,
                    vec![Action::Delete],
                    Some(&prev.spec),
                    None,
                    None,
                ));
                i += 1;
            }
            Ordering::Greater => {
                let next = new[j];
                changes.push(change(
                    next,
                    vec![Action::Create],
                    None,
                    Some(&next.spec),
                    None,
                ));
                j += 1;
            }
            Ordering::Equal => {
                while old.get(i + 1).is_some_and(|o| o.address == old[i].address) {
                    i += 1;
                }
                let prev = old[i];
                while let Some(next) = new.get(j).filter(|n| n.address == prev.address) {
                    if prev.spec != next.spec {
                        changes.push(compare(prev, next));
                    }
                    j += 1;
                }
                i += 1;
            }
        }
    }
    changes
}

/// `resources` in address order (stable), sorted only if they are not already.
fn by_address(resources: &[Resource]) -> Vec<&Resource> {
    let mut sorted: Vec<&Resource> = resources.iter().collect();
    if !sorted.is_sorted_by(|a, b| a.address <= b.address) {
        sorted.sort_by(|a, b| a.address.cmp(&b.address));
    }
    sorted
}

fn compare(prev: &Resource, new: &Resource) -> Change {
    let Some(forcing) = prev.spec.replacement_fields(&new.spec) else {
        let reason = format!(
            "kind changed from {} to {}",
            prev.spec.kind(),
            new.spec.kind()
        );
        return change(
            new,
            vec![Action::Delete, Action::Create],
            Some(&prev.spec),
            Some(&new.spec),
            Some(reason),
        );
    };
    if forcing.is_empty() {
        change(
            new,
            vec![Action::Update],
            Some(&prev.spec),
            Some(&new.spec),
            None,
        )
    } else {
        let names: Vec<String> = forcing.iter().map(ToString::to_string).collect();
        let reason = format!("{} changed (cannot change in place)", names.join(", "));
        change(
            new,
            vec![Action::Delete, Action::Create],
            Some(&prev.spec),
            Some(&new.spec),
            Some(reason),
        )
    }
}

fn change(
    r: &Resource,
    actions: Vec<Action>,
    before: Option<&Spec>,
    after: Option<&Spec>,
    reason: Option<String>,
) -> Change {
    let value = |s: Option<&Spec>| s.map(|s| Attributes::Spec(Box::new(s.clone())));
    Change {
        address: r.address.clone(),
        kind: r.spec.kind().into(),
        actions,
        before: value(before),
        after: value(after),
        reason,
    }
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
