//! `netcompose nodes --json`: the cluster's live nodes as one JSON document for scripts and
//! monitoring, its shape stable (`format_version` changes when a field changes meaning or
//! goes; new fields may appear):
//!
//! ```json
//! {"format_version": 1,
//!  "nodes": [{"name": "n0", "labels": {"zone": "a"}, "lease_ttl_seconds": 4,
//!             "underlay": {"address": "10.0.0.1", "vxlan_port": 4789, "mtu": 1500},
//!             "version": "0.1.0",
//!             "wireguard": {"engine": "userspace", "port": 51820, "address": "10.232.0.1",
//!                           "public_key": "..."},
//!             "converged": {"demo": 42}, "failing": [], "healthy": true,
//!             "probe": {"mtu": 1450, "peers": {"n1": {"state": "ok", "rtt_us": 310}}}}],
//!  "matrix": {"n0": {"n1": "ok"}, "n1": {"n0": "pending"}}}
//! ```
//!
//! `lease_ttl_seconds` is null when the lease just expired, `wireguard` when the host has no
//! engine, `probe` before the node's first probe report (`probe.error`: why its probe cannot
//! run). `matrix` is every ordered pair of nodes: `ok`, `too_big`, `unreachable`, or
//! `pending` while the first rounds run. `healthy` is what the table's HEALTH column says
//! `ok` for: no failing project, no probe error, no peer other than `ok` or `pending`.

use crate::reconcile::agent::NodeInfo;
use crate::state::cluster::{HealthRecord, ProbeState, WireguardRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The document's version.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    format_version: u32,
    nodes: Vec<Node<'a>>,
    matrix: BTreeMap<&'a str, BTreeMap<&'a str, &'static str>>,
}

#[derive(Serialize)]
struct Node<'a> {
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    lease_ttl_seconds: Option<i64>,
    underlay: Underlay,
    version: &'a str,
    wireguard: Option<&'a WireguardRecord>,
    converged: &'a BTreeMap<String, i64>,
    failing: &'a [String],
    healthy: bool,
    probe: Option<&'a HealthRecord>,
}

#[derive(Serialize)]
struct Underlay {
    address: IpAddr,
    vxlan_port: u16,
    mtu: u32,
}

/// Whether `n` is healthy, as the table's HEALTH column says `ok`.
pub fn healthy(n: &NodeInfo) -> bool {
    let probe_ok = n.health.as_ref().is_none_or(|h| {
        h.error.is_none()
            && h.peers.values().all(|p| match p.state {
                ProbeState::Ok => true,
                ProbeState::TooBig | ProbeState::Unreachable => false,
            })
    });
    n.failing.is_empty() && probe_ok
}

fn cell(state: Option<ProbeState>) -> &'static str {
    match state {
        Some(ProbeState::Ok) => "ok",
        Some(ProbeState::TooBig) => "too_big",
        Some(ProbeState::Unreachable) => "unreachable",
        None => "pending",
    }
}

/// The document for `nodes`, pretty-printed.
pub fn render(nodes: &[NodeInfo]) -> Result<String, serde_json::Error> {
    let matrix = nodes
        .iter()
        .map(|from| {
            let row = nodes
                .iter()
                .filter(|to| to.name != from.name)
                .map(|to| {
                    let state = from
                        .health
                        .as_ref()
                        .and_then(|h| h.peers.get(&to.name))
                        .map(|p| p.state);
                    (to.name.as_str(), cell(state))
                })
                .collect();
            (from.name.as_str(), row)
        })
        .collect();
    let doc = Document {
        format_version: FORMAT_VERSION,
        nodes: nodes
            .iter()
            .map(|n| Node {
                name: &n.name,
                labels: &n.record.labels,
                lease_ttl_seconds: n.ttl,
                underlay: Underlay {
                    address: n.record.underlay,
                    vxlan_port: n.record.vxlan_port,
                    mtu: n.record.underlay_mtu,
                },
                version: &n.record.version,
                wireguard: n.record.wireguard.as_ref(),
                converged: &n.converged,
                failing: &n.failing,
                healthy: healthy(n),
                probe: n.health.as_ref(),
            })
            .collect(),
        matrix,
    };
    serde_json::to_string_pretty(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::cluster::{NodeRecord, PeerProbe};

    fn info(name: &str, last: u8, peers: &[(&str, ProbeState)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            record: NodeRecord {
                underlay: [10, 0, 0, last].into(),
                underlay_mtu: 1500,
                vxlan_port: 4789,
                labels: [("zone".to_string(), "a".to_string())].into(),
                version: "0.1.0".into(),
                wireguard: None,
            },
            ttl: Some(4),
            failing: Vec::new(),
            converged: [("demo".to_string(), 42)].into(),
            health: Some(HealthRecord {
                mtu: 1450,
                peers: peers
                    .iter()
                    .map(|(p, state)| {
                        let probe = PeerProbe {
                            state: *state,
                            rtt_us: Some(310),
                        };
                        (p.to_string(), probe)
                    })
                    .collect(),
                error: None,
            }),
        }
    }

    #[test]
    fn the_document_parses_with_every_field_of_its_shape() {
        let mut n1 = info("n1", 2, &[("n0", ProbeState::TooBig)]);
        n1.ttl = None;
        n1.failing = vec!["other".into()];
        let mut n2 = info("n2", 3, &[]);
        n2.health = None;
        let nodes = [info("n0", 1, &[("n1", ProbeState::Ok)]), n1, n2];
        let doc: serde_json::Value = serde_json::from_str(&render(&nodes).unwrap()).unwrap();
        assert_eq!(doc["format_version"], 1);
        let n0 = &doc["nodes"][0];
        assert_eq!(n0["name"], "n0");
        assert_eq!(n0["labels"]["zone"], "a");
        assert_eq!(n0["lease_ttl_seconds"], 4);
        assert_eq!(n0["underlay"]["address"], "10.0.0.1");
        assert_eq!(n0["underlay"]["vxlan_port"], 4789);
        assert_eq!(n0["underlay"]["mtu"], 1500);
        assert_eq!(n0["wireguard"], serde_json::Value::Null);
        assert_eq!(n0["converged"]["demo"], 42);
        assert_eq!(n0["healthy"], true);
        assert_eq!(n0["probe"]["peers"]["n1"]["state"], "ok");
        assert_eq!(n0["probe"]["peers"]["n1"]["rtt_us"], 310);
        let n1 = &doc["nodes"][1];
        assert_eq!(n1["lease_ttl_seconds"], serde_json::Value::Null);
        assert_eq!(n1["failing"][0], "other");
        assert_eq!(n1["healthy"], false);
        assert_eq!(doc["nodes"][2]["probe"], serde_json::Value::Null);
        assert_eq!(doc["matrix"]["n0"]["n1"], "ok");
        assert_eq!(doc["matrix"]["n0"]["n2"], "pending");
        assert_eq!(doc["matrix"]["n1"]["n0"], "too_big");
        assert_eq!(doc["matrix"]["n2"]["n1"], "pending");
        assert!(doc["matrix"]["n0"].get("n0").is_none());
    }
}
