//! Live numbers of a project, as `netcompose stats` shows them and the metrics serve them:
//! per replica and attachment the link counters, per VIP the connections each backend holds,
//! per replica the packets its policies dropped and the DNS queries the resolver answered and
//! forwarded.
//!
//! The daemon takes every sample ([`collect`]): it already holds a handle on each replica's
//! namespace and the resolver's counters, and it keeps one netlink socket of each kind per
//! namespace across samples, so a sample of a thousand replicas costs two netlink dumps and a
//! count of tracked connections per namespace (conntrack is followed by its events) and no
//! thread or process. The figures are plain data ([`Sample`]); turning
//! kernel answers into them ([`replica_sample`], [`vip_connections`]) is pure and tested here.

mod collect;
pub mod prometheus;

pub use collect::{Collector, Inputs};

use crate::kernel::ctnl::Tracked;
use crate::kernel::nftables::RuleCounter;
use crate::kernel::LinkStats;
use crate::model::names::parse_mark;
use crate::model::resource::{ResourceId, Vip};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Every figure of the project at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was taken, in milliseconds since the epoch: rates come from two samples.
    pub taken_ms: u64,
    pub replicas: Vec<ReplicaStats>,
    pub vips: Vec<VipStats>,
    /// Namespaces that could not be read, and why; the rest of the sample stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// One replica's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStats {
    pub service: String,
    pub replica: u32,
    pub namespace: String,
    /// Its attachments, in interface order.
    pub links: Vec<LinkCounters>,
    /// Packets and bytes its policy denies dropped, per direction (`ingress`, `egress`).
    pub policy: Vec<PolicyDrops>,
    pub dns: DnsCounts,
}

/// One attachment's counters, seen from inside the replica (`rx`: what reached it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    pub network: String,
    pub ifname: String,
    /// Administratively up.
    pub up: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDrops {
    pub direction: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCounts {
    pub answered: u64,
    pub forwarded: u64,
}

/// One VIP address of a service on a network, with the connections tracked to each backend
/// (summed over every client namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStats {
    pub service: String,
    pub network: String,
    pub vip: IpAddr,
    pub backends: Vec<BackendConnections>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendConnections {
    pub backend: IpAddr,
    pub connections: u64,
}

/// A replica's figures from what its namespace's kernel said: the links that carry a link mark
/// of `project` (their network is in the mark), the counters of its table's rules summed per
/// chain (only policy denies count), and its resolver counters.
pub fn replica_sample(
    project: &str,
    (service, replica, namespace): (&str, u32, &str),
    links: &[LinkStats],
    counters: &[RuleCounter],
    dns: DnsCounts,
) -> ReplicaStats {
    let mut attached: Vec<LinkCounters> = links
        .iter()
        .filter_map(|l| {
            let (p, address) = parse_mark(l.alias.as_deref()?)?;
            let ResourceId::Link(_, network) = address else {
                return None;
            };
            (p == project).then(|| LinkCounters {
                network,
                ifname: l.name.clone(),
                up: l.up,
                rx_bytes: l.rx_bytes,
                tx_bytes: l.tx_bytes,
                rx_packets: l.rx_packets,
                tx_packets: l.tx_packets,
                rx_dropped: l.rx_dropped,
                tx_dropped: l.tx_dropped,
            })
        })
        .collect();
    attached.sort_by(|a, b| interface_order(&a.ifname, &b.ifname));
    let mut policy: BTreeMap<&str, PolicyDrops> = BTreeMap::new();
    for c in counters {
        let p = policy
            .entry(c.chain.as_str())
            .or_insert_with(|| PolicyDrops {
                direction: c.chain.clone(),
                ..PolicyDrops::default()
            });
        p.packets += c.packets;
        p.bytes += c.bytes;
    }
    ReplicaStats {
        service: service.to_string(),
        replica,
        namespace: namespace.to_string(),
        links: attached,
        policy: policy.into_values().collect(),
        dns,
    }
}

/// `eth2` before `eth10`.
fn interface_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, n) = s.split_at(s.len() - digits);
        (name.to_string(), n.parse::<u64>().unwrap_or(0))
    };
    split(a).cmp(&split(b))
}

/// The connections of each VIP address per backend, from the connections tracked in every
/// client namespace: an entry whose original destination is the VIP was DNATed to the
/// backend that sends its replies. Every backend is listed, with 0 when it has none.
pub fn vip_connections<'a>(
    vips: &[Vip],
    tracked: impl IntoIterator<Item = &'a Tracked>,
) -> Vec<VipStats> {
    let mut out: Vec<VipStats> = Vec::new();
    let mut index: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for v in vips {
        for (vip, backends) in v.families() {
            index.insert(vip, out.len());
            out.push(VipStats {
                service: v.service.clone(),
                network: v.network.clone(),
                vip,
                backends: backends
                    .into_iter()
                    .map(|backend| BackendConnections {
                        backend,
                        connections: 0,
                    })
                    .collect(),
            });
        }
    }
    for t in tracked {
        let Some(&i) = index.get(&t.orig_dst) else {
            continue;
        };
        let backends = &mut out[i].backends;
        match backends.iter_mut().find(|b| b.backend == t.reply_src) {
            Some(b) => b.connections += 1,
            // A backend that left the set keeps its established connections.
            None => backends.push(BackendConnections {
                backend: t.reply_src,
                connections: 1,
            }),
        }
    }
    out
}

/// Bytes per second between two readings `ms` milliseconds apart; None without a span (one
/// sample) or when the counter went back (the link was made again).
pub fn rate(before: u64, after: u64, ms: u64) -> Option<f64> {
    (ms > 0 && after >= before).then(|| (after - before) as f64 * 1000.0 / ms as f64)
}

#[cfg(test)]
mod tests;
