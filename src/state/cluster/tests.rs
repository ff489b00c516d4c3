//! The cluster's keys read back as typed records, and the in-memory KV's leases.

use super::memory::MemoryKv;
use super::*;
use crate::state::kv::Op;

fn record(underlay: &str) -> NodeRecord {
    NodeRecord {
        underlay: underlay.parse().unwrap(),
        underlay_mtu: 1500,
        vxlan_port: 4789,
        labels: [("zone".to_string(), "a".to_string())].into(),
        version: "0".into(),
        wireguard: None,
    }
}

fn put<T: Serialize>(key: String, value: &T) -> Op {
    Op::Put {
        value: encode(&key, value).unwrap(),
        key,
    }
}

#[test]
fn a_snapshot_reads_every_kind_of_key_and_names_the_bad_ones() {
    let kv = MemoryKv::default();
    let lease = kv.grant(5).unwrap();
    kv.commit_on(
        Some(lease),
        &[],
        &[put(node_key("h1"), &record("10.0.0.1"))],
    )
    .unwrap();
    kv.commit_on(
        None,
        &[],
        &[
            put(spec_key("p"), &SpecRecord::default()),
            put(placement_key("p"), &Placement::default()),
            put(allocations_key("p"), &Allocations::default()),
            // An endpoint key as earlier agents published it: ignored.
            Op::Put {
                key: format!("{PROJECTS}p/ep/ov/h1"),
                value: b"[]".to_vec(),
            },
            put(status_key("p", "h1"), &StatusRecord::default()),
            Op::Put {
                key: format!("{PROJECTS}p/desired"),
                value: b"{}".to_vec(),
            },
            Op::Put {
                key: status_key("q", "h1"),
                value: b"not json".to_vec(),
            },
        ],
    )
    .unwrap();
    let s = ClusterSnapshot::read(&kv).unwrap();
    assert_eq!(s.revision, 2);
    assert_eq!(s.nodes["h1"].lease, lease);
    assert_eq!(s.nodes["h1"].record.value, record("10.0.0.1"));
    let p = &s.projects["p"];
    assert!(p.spec.is_some() && p.placement.is_some() && p.allocations.is_some());
    assert_eq!(p.status["h1"].mod_revision, 2);
    assert!(
        matches!(s.unreadable.as_slice(), [StateError::Parse { path, .. }] if path == &status_key("q", "h1")),
        "{:?}",
        s.unreadable
    );
}

#[test]
fn an_unchanged_value_is_not_written_again() {
    let value = StatusRecord {
        revision: 3,
        ..Default::default()
    };
    let bytes = encode("k", &value).unwrap();
    assert!(put_if_changed("k".into(), &value, Some(&bytes))
        .unwrap()
        .is_none());
    assert!(put_if_changed("k".into(), &value, None).unwrap().is_some());
}

#[test]
fn an_expired_lease_takes_its_keys_in_one_revision() {
    let kv = MemoryKv::default();
    let lease = kv.grant(5).unwrap();
    kv.commit_on(
        Some(lease),
        &[],
        &[
            put(node_key("h1"), &record("10.0.0.1")),
            put(status_key("p", "h1"), &StatusRecord::default()),
        ],
    )
    .unwrap();
    kv.commit_on(None, &[], &[put(spec_key("p"), &SpecRecord::default())])
        .unwrap();
    let before = kv.revision();
    kv.expire(lease);
    assert_eq!(kv.revision(), before + 1);
    let s = ClusterSnapshot::read(&kv).unwrap();
    assert!(s.nodes.is_empty());
    assert!(s.projects["p"].status.is_empty());
    assert!(s.projects["p"].spec.is_some());
    assert_eq!(kv.keep_alive(lease).unwrap(), None);
}

#[test]
fn a_watch_reports_changes_under_its_prefix_only() {
    let kv = MemoryKv::default();
    let rx = kv.watch(NODES, 1).unwrap();
    kv.commit_on(None, &[], &[put(spec_key("p"), &SpecRecord::default())])
        .unwrap();
    kv.commit_on(None, &[], &[put(node_key("h"), &record("10.0.0.9"))])
        .unwrap();
    assert_eq!(rx.try_recv().unwrap(), Watched::Changed { revision: 2 });
    assert!(rx.try_recv().is_err());
}
