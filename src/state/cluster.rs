//! The keys of a cluster beside the projects' states: what agents and `up` read and write in
//! a shared store to agree on who builds what. Typed records over a small [`ClusterKv`] trait
//! (leases, watches, revisions), so the logic above it is unit-tested against an in-memory KV.
//!
//! Keys (under `/netcompose/v1/`):
//!
//! - `nodes/<node>`: a [`NodeRecord`], under the node's lease;
//! - `tunnels`: every node's WireGuard tunnel address ([`TunnelAddresses`]), on no lease, so a
//!   node keeps its address across restarts and deaths; written with compare-and-swap;
//! - `projects/<p>/spec`: a [`SpecRecord`], what agents build from;
//! - `projects/<p>/allocations`: as [`KvStore`](super::kv::KvStore) writes it;
//! - `projects/<p>/placement`: a [`Placement`];
//! - `projects/<p>/status/<node>`: a [`StatusRecord`], under the node's lease;
//! - `health/<node>`: a [`HealthRecord`], that node's VXLAN probe of every other node, under
//!   its lease.
//!
//! A node's keys live on its lease, so a dead agent's record and status go in one revision
//! when the lease expires, and nobody needs to clean up after it. No node publishes its
//! replicas' endpoints: every agent derives them from the placement, the allocations and the
//! live nodes' records, so a dead node's endpoints go with its record.

use super::kv::{Op, Unchanged, PROJECTS};
use super::StateError;
use crate::ipam::Allocations;
use crate::kernel::wireguard::{Engine, Key};
use crate::placement::Placement;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc;

/// Everything of netcompose in the store.
pub const ROOT: &str = "/netcompose/v1/";
pub const NODES: &str = "/netcompose/v1/nodes/";
pub const TUNNELS: &str = "/netcompose/v1/tunnels";
pub const HEALTH: &str = "/netcompose/v1/health/";
const SPEC: &str = "spec";
const ALLOCATIONS: &str = "allocations";
const PLACEMENT: &str = "placement";
const STATUS: &str = "status";

/// A host as its agent registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The source address of its VXLAN tunnels.
    pub underlay: IpAddr,
    pub underlay_mtu: u32,
    pub vxlan_port: u16,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's netcompose version.
    pub version: String,
    /// Its end of the WireGuard mesh (None: no WireGuard on that host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardRecord>,
}

/// A node's WireGuard end, as the other nodes' tunnels need it (the private key stays on the
/// host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardRecord {
    pub public_key: Key,
    /// The UDP port it listens on, at its underlay address.
    pub port: u16,
    /// Its tunnel address (from [`TUNNEL_RANGE`](crate::model::cluster::TUNNEL_RANGE)).
    pub address: IpAddr,
    pub engine: Engine,
}

/// Node name → tunnel address, every address given once.
pub type TunnelAddresses = BTreeMap<String, std::net::Ipv4Addr>;
/// What a node's VXLAN probe found on the way to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// A frame padded to the overlay MTU went there and back.
    Ok,
    /// A small frame went there and back, a full-size one did not: an MTU blackhole.
    TooBig,
    /// Not even a small frame came back (the VXLAN port filtered, the host unreachable).
    Unreachable,
}

/// One peer as a node's probe sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProbe {
    pub state: ProbeState,
    /// The round trip of the full-size frame in the round that decided the state (Ok only;
    /// not rewritten while the state holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
}

/// A node's VXLAN probe of the other live nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// The probe frames' payload: the overlay MTU.
    pub mtu: u32,
    /// Peer node → what the probe found.
    pub peers: BTreeMap<String, PeerProbe>,
    /// Why the probe cannot run on this node (its device cannot be made, its VXLAN port is
    /// taken, the kernel lacks VXLAN or packet sockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a node reports for a project: the revision of the inputs it converged to (every key
/// its share depends on was at or before it), the digest of the share it built (rewritten
/// only when that share changes), and what failed (empty: converged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub revision: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub share: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A project as `up` loaded it, in a form every agent loads back with the same loader: the
/// text of every file read (Compose files, `.env`, services' `env_file`s) by its absolute
/// path, and the variables the files interpolate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecRecord {
    pub name: String,
    pub working_dir: PathBuf,
    /// The Compose files, in order (keys of `texts`).
    pub files: Vec<PathBuf>,
    pub texts: BTreeMap<PathBuf, String>,
    /// Only the variables whose names the files mention: the rest of `up`'s environment (its
    /// secrets) stays on its host.
    pub environment: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub scale: Vec<(String, u32)>,
}

/// A value read from the store, with the revision it was last written at and its bytes (to
/// tell whether a rewrite would change anything).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
    pub raw: Vec<u8>,
}

/// One key as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// The lease the key lives on (0: none).
    pub lease: i64,
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// Keys changed, up to this revision.
    Changed { revision: i64 },
    /// The revision watched from was compacted away: list again.
    Compacted,
    /// The watch ended (the store is unreachable for good, or it was cancelled).
    Ended(String),
}

/// What the cluster needs of the KV service beyond [`Kv`](super::kv::Kv).
pub trait ClusterKv: Send + Sync {
    /// Every key under `prefix`, and the revision they were read at.
    fn list(&self, prefix: &str) -> Result<(i64, Vec<Record>), StateError>;
    /// Apply `ops` atomically if every guard holds, every put on `lease` when given: the new
    /// revision, or None if a guard failed.
    fn commit_on(
        &self,
        lease: Option<i64>,
        guards: &[Unchanged],
        ops: &[Op],
    ) -> Result<Option<i64>, StateError>;
    /// A new lease of `ttl` seconds.
    fn grant(&self, ttl: i64) -> Result<i64, StateError>;
    /// Renew `lease`: the seconds it now has, or None when it is gone (expired or revoked).
    fn keep_alive(&self, lease: i64) -> Result<Option<i64>, StateError>;
    /// The seconds `lease` has left, or None when it is gone.
    fn time_to_live(&self, lease: i64) -> Result<Option<i64>, StateError>;
    fn revoke(&self, lease: i64) -> Result<(), StateError>;
    /// Changes under `prefix` from revision `from` on, as they come.
    fn watch(&self, prefix: &str, from: i64) -> Result<mpsc::Receiver<Watched>, StateError>;
}

pub fn node_key(node: &str) -> String {
    format!("{NODES}{node}")
}

pub fn health_key(node: &str) -> String {
    format!("{HEALTH}{node}")
}

pub fn project_prefix(project: &str) -> String {
    format!("{PROJECTS}{project}/")
}

pub fn spec_key(project: &str) -> String {
    format!("{PROJECTS}{project}/{SPEC}")
}

pub fn allocations_key(project: &str) -> String {
    format!("{PROJECTS}{project}/{ALLOCATIONS}")
}

pub fn placement_key(project: &str) -> String {
    format!("{PROJECTS}{project}/{PLACEMENT}")
}

pub fn status_key(project: &str, node: &str) -> String {
    format!("{PROJECTS}{project}/{STATUS}/{node}")
}

/// A live node: its record and its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveNode {
    pub record: Versioned<NodeRecord>,
    pub lease: i64,
}

/// One project's cluster keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectKeys {
    pub spec: Option<Versioned<SpecRecord>>,
    pub allocations: Option<Versioned<Allocations>>,
    pub placement: Option<Versioned<Placement>>,
    /// node → its status.
    pub status: BTreeMap<String, Versioned<StatusRecord>>,
}

/// The cluster as read at one revision.
#[derive(Debug, Default)]
pub struct ClusterSnapshot {
    pub revision: i64,
    pub nodes: BTreeMap<String, LiveNode>,
    pub projects: BTreeMap<String, ProjectKeys>,
    /// node → its VXLAN probe's findings.
    pub health: BTreeMap<String, Versioned<HealthRecord>>,
    /// Keys that did not parse (each names its key).
    pub unreadable: Vec<StateError>,
}

fn parse<T: DeserializeOwned>(
    r: &Record,
    unreadable: &mut Vec<StateError>,
) -> Option<Versioned<T>> {
    match serde_json::from_slice(&r.value) {
        Ok(value) => Some(Versioned {
            value,
            mod_revision: r.mod_revision,
            raw: r.value.clone(),
        }),
        Err(source) => {
            unreadable.push(StateError::Parse {
                path: r.key.clone(),
                source,
            });
            None
        }
    }
}

impl ClusterSnapshot {
    /// Everything under [`ROOT`].
    pub fn read(kv: &dyn ClusterKv) -> Result<ClusterSnapshot, StateError> {
        let (revision, records) = kv.list(ROOT)?;
        Ok(Self::from_records(revision, &records))
    }

    pub fn from_records(revision: i64, records: &[Record]) -> ClusterSnapshot {
        let mut out = ClusterSnapshot {
            revision,
            ..Default::default()
        };
        for r in records {
            if let Some(node) = r.key.strip_prefix(NODES) {
                if let Some(record) = parse(r, &mut out.unreadable) {
                    out.nodes.insert(
                        node.to_string(),
                        LiveNode {
                            record,
                            lease: r.lease,
                        },
                    );
                }
                continue;
            }
            if let Some(node) = r.key.strip_prefix(HEALTH) {
                if let Some(record) = parse(r, &mut out.unreadable) {
                    out.health.insert(node.to_string(), record);
                }
                continue;
            }
            let Some((project, leaf)) = r
                .key
                .strip_prefix(PROJECTS)
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            let keys = || ProjectKeys::default();
            let parts: Vec<&str> = leaf.split('/').collect();
            match parts.as_slice() {
                [SPEC] => {
                    let v = parse(r, &mut out.unreadable);
                    out.projects.entry(project.into()).or_insert_with(keys).spec = v;
                }
                [ALLOCATIONS] => {
                    let v = parse(r, &mut out.unreadable);
                    out.projects
                        .entry(project.into())
                        .or_insert_with(keys)
                        .allocations = v;
                }
                [PLACEMENT] => {
                    let v = parse(r, &mut out.unreadable);
                    out.projects
                        .entry(project.into())
                        .or_insert_with(keys)
                        .placement = v;
                }
                [STATUS, node] => {
                    if let Some(v) = parse(r, &mut out.unreadable) {
                        out.projects
                            .entry(project.into())
                            .or_insert_with(keys)
                            .status
                            .insert(node.to_string(), v);
                    }
                }
                // The store's own keys (desired, lock), and those of other versions (the `ep/` keys
                // earlier agents published).
                _ => {}
            }
        }
        out
    }
}

/// A value as stored: JSON.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(value).map_err(|e| StateError::Write {
        path: key.to_string(),
        source: std::io::Error::other(e),
    })
}

/// A put of `value` at `key` unless `current` already holds exactly it (no revision for
/// nothing).
pub fn put_if_changed<T: Serialize>(
    key: String,
    value: &T,
    current: Option<&[u8]>,
) -> Result<Option<Op>, StateError> {
    let bytes = encode(&key, value)?;
    Ok((current != Some(bytes.as_slice())).then_some(Op::Put { key, value: bytes }))
}

#[cfg(test)]
pub mod memory;
#[cfg(test)]
mod tests;
