//! Diffing two sets of resources by address.

use super::{Action, Attributes, Change};
use crate::model::{Resource, ResourceId, Spec};
use std::collections::{HashMap, HashSet};

/// Changes that turn `before` into `after`, sorted by address.
pub fn diff(before: &[Resource], after: &[Resource]) -> Vec<Change> {
    let old: HashMap<&ResourceId, &Resource> = before.iter().map(|r| (&r.address, r)).collect();
    let mut changes = Vec::new();
    for new in after {
        match old.get(&new.address) {
            None => changes.push(change(
                new,
                vec![Action::Create],
                None,
                Some(&new.spec),
                None,
            )),
            Some(prev) if prev.spec == new.spec => {}
            Some(prev) => changes.push(compare(prev, new)),
        }
    }
    let current: HashSet<&ResourceId> = after.iter().map(|r| &r.address).collect();
    for prev in before.iter().filter(|r| !current.contains(&r.address)) {
        changes.push(change(
            prev,
            vec![Action::Delete],
            Some(&prev.spec),
            None,
            None,
        ));
    }
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    changes
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

    fn link(ifname: &str, bridge: &str) -> Resource {
        Resource {
            address: ResourceId::Link(ReplicaId::new("web", 1), "front".into()),
            spec: Spec::Link(Link {
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
            }),
            depends_on: vec![],
        }
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
