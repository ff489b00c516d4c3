//! The agent's decisions from a snapshot: placement again only when the live nodes call for
//! it, the view of this host, the endpoints it publishes, what counts as an input.

use super::*;
use crate::ipam::NetworkAllocation;
use crate::spec::DeployMode;
use crate::state::cluster::{LiveNode, SpecRecord, Versioned};

fn versioned<T: serde::Serialize>(value: T, rev: i64) -> Versioned<T> {
    Versioned {
        raw: serde_json::to_vec(&value).unwrap(),
        value,
        mod_revision: rev,
    }
}

fn snapshot(nodes: &[(&str, u32)]) -> ClusterSnapshot {
    let mut s = ClusterSnapshot {
        revision: 10,
        ..Default::default()
    };
    for (i, (name, mtu)) in nodes.iter().enumerate() {
        let record = NodeRecord {
            underlay: format!("10.0.0.{}", i + 1).parse().unwrap(),
            underlay_mtu: *mtu,
            vxlan_port: 4789,
            labels: Default::default(),
            version: "0".into(),
            wireguard: None,
        };
        s.nodes.insert(
            name.to_string(),
            LiveNode {
                record: versioned(record, 1),
                lease: i as i64 + 1,
            },
        );
    }
    s
}

fn demand(replicas: u32) -> Vec<Demand> {
    vec![Demand {
        service: "web".into(),
        mode: DeployMode::Replicated,
        replicas,
        constraints: vec![],
        max_per_node: None,
        joins: None,
    }]
}

fn keys_with(assignment: &[(u32, &str)]) -> ProjectKeys {
    let placement = Placement {
        assignment: assignment
            .iter()
            .map(|(i, n)| (ReplicaKey::new("web", *i), n.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut net = NetworkAllocation::default();
    for (i, _) in assignment {
        let owner = format!("web[{i}]");
        net.addresses.insert(
            owner.clone(),
            vec![format!("10.9.0.{}", i + 1).parse().unwrap()],
        );
        net.macs.insert(owner, format!("02:00:00:00:00:{i:02x}"));
    }
    let mut allocations = Allocations::default();
    allocations.networks.insert("ov".into(), net);
    ProjectKeys {
        placement: Some(versioned(placement, 5)),
        allocations: Some(versioned(allocations, 5)),
        ..Default::default()
    }
}

#[test]
fn a_placement_that_still_holds_is_kept_and_a_dead_nodes_replicas_move() {
    let s = snapshot(&[("a", 1500), ("b", 1500)]);
    let keys = keys_with(&[(1, "a"), (2, "b")]);
    assert_eq!(replace(&s, &keys, &demand(2)), None);
    let s = snapshot(&[("a", 1500)]);
    let new = replace(&s, &keys, &demand(2)).unwrap();
    assert_eq!(new.assignment[&ReplicaKey::new("web", 2)], "a");
    assert_eq!(new.moved[&ReplicaKey::new("web", 2)].from, "b");
}

#[test]
fn the_view_has_local_replicas_live_remote_endpoints_and_the_smallest_mtu() {
    let s = snapshot(&[("a", 1500), ("b", 9000), ("c", 1400)]);
    let mut keys = keys_with(&[(1, "a"), (2, "b")]);
    let b = share_of(&s, &keys, "b");
    keys.endpoints
        .insert(("ov".into(), "b".into()), versioned(b["ov"].clone(), 7));
    keys.endpoints
        .insert(("ov".into(), "gone".into()), versioned(b["ov"].clone(), 7));
    let me = &s.nodes["a"].record.value;
    let v = view(&s, &keys, "a", me, None);
    assert_eq!(v.local, [("web".to_string(), 1)].into());
    assert_eq!(v.remote, b["ov"], "only live nodes' endpoints");
    assert_eq!(v.underlay_mtu, 1400);
    assert_eq!(v.underlay, Some(me.underlay));
}

fn share_of(
    s: &ClusterSnapshot,
    keys: &ProjectKeys,
    node: &str,
) -> BTreeMap<String, Vec<RemoteEndpoint>> {
    let v = view(s, keys, node, &s.nodes[node].record.value, None);
    published(&v, &["ov".to_string()].into(), &Default::default())
}

#[test]
fn on_an_encrypted_network_the_vtep_is_the_tunnel_address_and_no_tunnel_publishes_nothing() {
    let s = snapshot(&[("a", 1500), ("b", 1500)]);
    let keys = keys_with(&[(1, "a"), (2, "b")]);
    let tunnel = crate::model::cluster::TunnelEnd {
        device: "ncwg0".into(),
        address: "10.232.0.2".parse().unwrap(),
    };
    let ov: BTreeSet<String> = ["ov".to_string()].into();
    let record = &s.nodes["b"].record.value;
    let v = view(&s, &keys, "b", record, Some(&tunnel));
    assert_eq!(v.tunnel.as_ref(), Some(&tunnel));
    let eps = &published(&v, &ov, &ov)["ov"];
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].vtep, tunnel.address);
    let plain = &published(&v, &ov, &Default::default())["ov"];
    assert_eq!(plain[0].vtep, record.underlay);
    let v = view(&s, &keys, "b", record, None);
    assert!(published(&v, &ov, &ov)["ov"].is_empty());
}

#[test]
fn a_node_publishes_its_own_replicas_with_mac_address_and_its_vtep() {
    let s = snapshot(&[("a", 1500), ("b", 1500)]);
    let keys = keys_with(&[(1, "a"), (2, "b"), (3, "b")]);
    let b = share_of(&s, &keys, "b");
    let eps = &b["ov"];
    assert_eq!(eps.len(), 2);
    for ep in eps {
        assert_eq!(ep.node, "b");
        assert_eq!(ep.vtep, s.nodes["b"].record.value.underlay);
        assert_eq!(ep.network, "ov");
        assert!(ep.ipv4.is_some() && ep.ipv6.is_none());
        assert_eq!(ep.mac, format!("02:00:00:00:00:{:02x}", ep.index));
    }
    let none = share_of(&snapshot(&[("c", 1500)]), &keys, "c");
    assert_eq!(none["ov"], Vec::new(), "a network without local endpoints");
}

#[test]
fn outputs_are_not_inputs() {
    let s = snapshot(&[("a", 1500), ("b", 1500)]);
    let keys = keys_with(&[(1, "a"), (2, "b")]);
    let before = fingerprint(&s, &keys, "a");
    let mut own = keys.clone();
    own.status
        .insert("a".into(), versioned(Default::default(), 11));
    own.endpoints
        .insert(("ov".into(), "a".into()), versioned(vec![], 11));
    own.status
        .insert("b".into(), versioned(Default::default(), 12));
    assert_eq!(fingerprint(&s, &own, "a"), before);
    let mut other = keys.clone();
    other
        .endpoints
        .insert(("ov".into(), "b".into()), versioned(vec![], 12));
    assert_ne!(fingerprint(&s, &other, "a"), before);
    let mut rewritten = keys.clone();
    if let Some(a) = rewritten.allocations.as_mut() {
        a.mod_revision = 20;
    }
    assert_ne!(
        fingerprint(&s, &rewritten, "a"),
        before,
        "every up rewrites the allocations and waits for a report"
    );
}

#[test]
fn a_scale_changes_the_share_of_the_host_it_adds_to_only() {
    let spec = |scale: Vec<(String, u32)>, text: &str| SpecRecord {
        name: "pl".into(),
        texts: [("/p/compose.yaml".into(), text.to_string())].into(),
        scale,
        ..Default::default()
    };
    let mut before = keys_with(&[(1, "a"), (2, "b")]);
    before.spec = Some(versioned(spec(vec![("web".into(), 2)], "services: {}"), 5));
    let mut after = keys_with(&[(1, "a"), (2, "b"), (3, "b")]);
    after.spec = Some(versioned(spec(vec![("web".into(), 3)], "services: {}"), 9));
    assert_eq!(share_digest(&before, "a"), share_digest(&after, "a"));
    assert_ne!(share_digest(&before, "b"), share_digest(&after, "b"));
    let mut outputs = after.clone();
    outputs
        .status
        .insert("a".into(), versioned(Default::default(), 11));
    outputs
        .endpoints
        .insert(("ov".into(), "b".into()), versioned(vec![], 12));
    assert_eq!(share_digest(&outputs, "a"), share_digest(&after, "a"));
    let mut edited = after.clone();
    edited.spec = Some(versioned(
        spec(vec![("web".into(), 3)], "services: {x: {}}"),
        13,
    ));
    assert_ne!(
        share_digest(&edited, "a"),
        share_digest(&after, "a"),
        "an edited file is every host's change"
    );
}
