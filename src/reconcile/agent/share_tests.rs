//! The agent's decisions from a snapshot: placement again only when the live nodes call for
//! it, the view of this host with the endpoints it derives of the others, what counts as an
//! input.

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

fn ov() -> Overlays {
    Overlays {
        all: ["ov".to_string()].into(),
        encrypted: Default::default(),
    }
}

#[test]
fn the_view_has_local_replicas_the_live_nodes_endpoints_and_the_smallest_mtu() {
    let s = snapshot(&[("a", 1500), ("b", 9000), ("c", 1400)]);
    let keys = keys_with(&[(1, "a"), (2, "b"), (3, "gone")]);
    let b = share_of(&s, &keys, "b");
    let me = &s.nodes["a"].record.value;
    let v = view(&s, &keys, "a", me, None, &ov());
    assert_eq!(v.local, [("web".to_string(), 1)].into());
    assert_eq!(
        v.remote, b["ov"],
        "only live nodes' replicas, none of its own"
    );
    assert_eq!(v.remote[0].vtep, s.nodes["b"].record.value.underlay);
    assert_eq!(v.underlay_mtu, 1400);
    assert_eq!(v.underlay, Some(me.underlay));
}

fn share_of(
    s: &ClusterSnapshot,
    keys: &ProjectKeys,
    node: &str,
) -> BTreeMap<String, Vec<RemoteEndpoint>> {
    let v = view(s, keys, node, &s.nodes[node].record.value, None, &ov());
    published(&v, &ov().all, &ov().encrypted)
}

#[test]
fn on_an_encrypted_network_the_vtep_is_the_tunnel_address_and_no_tunnel_publishes_nothing() {
    let s = snapshot(&[("a", 1500), ("b", 1500)]);
    let keys = keys_with(&[(1, "a"), (2, "b")]);
    let tunnel = crate::model::cluster::TunnelEnd {
        device: "ncwg0".into(),
        address: "10.232.0.2".parse().unwrap(),
    };
    let nets: BTreeSet<String> = ["ov".to_string()].into();
    let record = &s.nodes["b"].record.value;
    let v = view(&s, &keys, "b", record, Some(&tunnel), &ov());
    assert_eq!(v.tunnel.as_ref(), Some(&tunnel));
    let eps = &published(&v, &nets, &nets)["ov"];
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].vtep, tunnel.address);
    let plain = &published(&v, &nets, &Default::default())["ov"];
    assert_eq!(plain[0].vtep, record.underlay);
    let v = view(&s, &keys, "b", record, None, &ov());
    assert!(published(&v, &nets, &nets)["ov"].is_empty());
}

#[test]
fn another_node_is_reached_at_its_tunnel_address_on_an_encrypted_network_or_not_at_all() {
    let mut s = snapshot(&[("a", 1500), ("b", 1500), ("c", 1500)]);
    let key = |pair: u8| crate::kernel::wireguard::Key([pair; 32]);
    if let Some(b) = s.nodes.get_mut("b") {
        b.record.value.wireguard = Some(crate::state::cluster::WireguardRecord {
            public_key: key(1),
            port: 51820,
            address: "10.232.0.2".parse().unwrap(),
            engine: crate::kernel::wireguard::Engine::Kernel,
        });
    }
    let keys = keys_with(&[(1, "a"), (2, "b"), (3, "c")]);
    let encrypted = Overlays {
        encrypted: ov().all,
        ..ov()
    };
    let me = &s.nodes["a"].record.value;
    let v = view(&s, &keys, "a", me, None, &encrypted);
    let vteps: Vec<(u32, std::net::IpAddr)> = v.remote.iter().map(|e| (e.index, e.vtep)).collect();
    assert_eq!(
        vteps,
        vec![(2, "10.232.0.2".parse().unwrap())],
        "c has no tunnel: its replica is not on the network"
    );
    let v = view(&s, &keys, "a", me, None, &ov());
    assert_eq!(v.remote.len(), 2, "both on a plain overlay");
}

#[test]
fn a_nodes_endpoints_are_its_replicas_with_mac_address_and_vtep() {
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
    let before = fingerprint(&s, &keys);
    let mut own = keys.clone();
    own.status
        .insert("a".into(), versioned(Default::default(), 11));
    own.status
        .insert("b".into(), versioned(Default::default(), 12));
    assert_eq!(fingerprint(&s, &own), before);
    let mut moved = snapshot(&[("a", 1500), ("b", 1500)]);
    if let Some(b) = moved.nodes.get_mut("b") {
        b.record = versioned(
            NodeRecord {
                underlay: "10.0.0.9".parse().unwrap(),
                ..b.record.value.clone()
            },
            12,
        );
    }
    assert_ne!(
        fingerprint(&moved, &keys),
        before,
        "another node's record: where its endpoints are"
    );
    let mut rewritten = keys.clone();
    if let Some(a) = rewritten.allocations.as_mut() {
        a.mod_revision = 20;
    }
    assert_ne!(
        fingerprint(&s, &rewritten),
        before,
        "every up rewrites the allocations"
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

#[test]
fn a_new_view_of_the_same_files_is_applied_to_the_record() {
    let s = snapshot(&[("a", 1500), ("b", 1500)]);
    let spec = |text: &str, scale: u32| SpecRecord {
        name: "pl".into(),
        texts: [("/p/compose.yaml".into(), text.to_string())].into(),
        scale: vec![("web".into(), scale)],
        ..Default::default()
    };
    let mut keys = keys_with(&[(1, "a"), (2, "b")]);
    keys.spec = Some(versioned(spec("services: {}", 2), 5));
    let me = &s.nodes["a"].record.value;
    let before = view(&s, &keys, "a", me, None, &ov());
    let built = files(&keys).unwrap();
    // One more replica on b, then one more on a: `up --scale` changes no file.
    let mut on_b = keys_with(&[(1, "a"), (2, "b"), (3, "b")]);
    on_b.spec = Some(versioned(spec("services: {}", 3), 9));
    let mut on_a = keys_with(&[(1, "a"), (2, "b"), (3, "b"), (4, "a")]);
    on_a.spec = Some(versioned(spec("services: {}", 4), 11));
    let last = Some((&built, &before));
    for keys in [&on_b, &on_a] {
        let now = view(&s, keys, "a", me, None, &ov());
        let same = files(keys).unwrap();
        assert_eq!(observation(last, &same, &now), Observation::Recorded);
    }
    assert_eq!(
        observation(last, &built, &before),
        Observation::Full,
        "an up that asks nothing new: checked in full"
    );
    let edited = SpecRecord {
        texts: [("/p/compose.yaml".into(), "services: {x: {}}".to_string())].into(),
        ..built.clone()
    };
    let now = view(&s, &on_b, "a", me, None, &ov());
    assert_eq!(observation(last, &edited, &now), Observation::Full);
    assert_eq!(observation(None, &built, &now), Observation::Full);
}
