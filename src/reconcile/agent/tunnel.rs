//! This host's end of the WireGuard mesh that encrypted overlays run over: its key pair (the
//! private key in a root-only file beside the lease file, made at first start and reused
//! after), its tunnel address, and ONE tunnel device whose peers are the other live nodes
//! that have a key.
//!
//! The device exists whenever the agent has an engine, not only while some project has an
//! encrypted network: the peers are then in place before the first encrypted `up` (which
//! waits only for the overlay, not for handshakes to be configured), and a node's record
//! does not change when projects come and go. It costs one idle device per host.
//!
//! Tunnel addresses are allocated, not derived: a hash of the node name into a /16 collides
//! (two of 50 nodes share one with a chance of about 2 %), and a collision would send one
//! node's traffic to another. Each node takes the lowest free address of
//! [`TUNNEL_RANGE`] once, in one map in the store written with compare-and-swap (two nodes
//! starting at once cannot take one address), on no lease, so an address is sticky per node
//! name across restarts and deaths.

use super::{write_private, AgentLog};
use crate::kernel::wireguard::{Key, KeyPair, Peer, Tunnel, TunnelSpec};
use crate::model::cluster::{TunnelEnd, TUNNEL_RANGE};
use crate::model::overlay::tunnel_mtu;
use crate::state::cluster::{
    encode, ClusterKv, ClusterSnapshot, TunnelAddresses, WireguardRecord, TUNNELS,
};
use crate::state::kv::{Op, Unchanged};
use crate::state::StateError;
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The tunnel device in the host namespace.
pub const DEVICE: &str = "ncwg0";
/// WireGuard's usual port, on every address of the host.
pub const PORT: u16 = 51820;
/// Compare-and-swap rounds before an allocation gives up (each lost round means another node
/// took an address in between).
const ROUNDS: usize = 16;

pub fn key_file(dir: &Path) -> PathBuf {
    dir.join("wireguard.key")
}

/// The key pair kept in `dir`, or a new one written there (0600) when the file is missing or
/// does not hold a key.
pub fn load_keys(dir: &Path, log: &dyn AgentLog) -> Result<KeyPair, StateError> {
    let path = key_file(dir);
    let stored = std::fs::read_to_string(&path);
    let why = match stored.as_deref().map(str::parse::<Key>) {
        Ok(Ok(private)) => return Ok(KeyPair::from_private(private.0)),
        Ok(Err(bad)) => format!("{} holds no key ({bad})", path.display()),
        Err(e) => format!("no key at {} ({e})", path.display()),
    };
    let pair = KeyPair::generate();
    write_private(&path, pair.private.to_base64().as_bytes()).map_err(|source| {
        StateError::Write {
            path: path.display().to_string(),
            source,
        }
    })?;
    log.info(&format!("{why}: made a new WireGuard key pair"));
    Ok(pair)
}

/// The lowest address of the range that no node holds (not the network's or the broadcast
/// address).
pub fn free_address(taken: &TunnelAddresses) -> Option<Ipv4Addr> {
    let used: std::collections::BTreeSet<Ipv4Addr> = taken.values().copied().collect();
    let first = u32::from(TUNNEL_RANGE.network()) + 1;
    let last = u32::from(TUNNEL_RANGE.broadcast());
    (first..last)
        .map(Ipv4Addr::from)
        .find(|a| !used.contains(a))
}

/// This node's tunnel address: the one it was given before, else the lowest free one, taken
/// with compare-and-swap.
pub fn tunnel_address(kv: &dyn ClusterKv, node: &str) -> Result<Ipv4Addr, StateError> {
    for _ in 0..ROUNDS {
        let (revision, records) = kv.list(TUNNELS)?;
        let mut taken: TunnelAddresses = match records.iter().find(|r| r.key == TUNNELS) {
            Some(r) => serde_json::from_slice(&r.value).map_err(|source| StateError::Parse {
                path: TUNNELS.to_string(),
                source,
            })?,
            None => TunnelAddresses::new(),
        };
        if let Some(address) = taken.get(node) {
            return Ok(*address);
        }
        let address = free_address(&taken).ok_or_else(|| StateError::Write {
            path: TUNNELS.to_string(),
            source: std::io::Error::other(format!("every address of {TUNNEL_RANGE} is taken")),
        })?;
        taken.insert(node.to_string(), address);
        let guard = Unchanged {
            key: TUNNELS.to_string(),
            since: revision,
        };
        let put = Op::Put {
            key: TUNNELS.to_string(),
            value: encode(TUNNELS, &taken)?,
        };
        if kv.commit_on(None, &[guard], &[put])?.is_some() {
            return Ok(address);
        }
    }
    Err(StateError::Write {
        path: TUNNELS.to_string(),
        source: std::io::Error::other(format!(
            "lost {ROUNDS} rounds of compare-and-swap to other nodes"
        )),
    })
}

/// What this host's device should be: one peer per other live node that has a key (at its
/// underlay address and port, allowed its tunnel address only), and an MTU that fits the
/// smallest underlay of the cluster.
pub fn spec(
    snapshot: &ClusterSnapshot,
    me: &str,
    keys: &KeyPair,
    mine: &WireguardRecord,
    underlay_mtu: u32,
) -> TunnelSpec {
    let mut peers: Vec<Peer> = snapshot
        .nodes
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .filter_map(|(_, n)| {
            let wg = n.record.value.wireguard.as_ref()?;
            Some(Peer {
                public_key: wg.public_key.clone(),
                endpoint: SocketAddr::new(n.record.value.underlay, wg.port),
                allowed_ips: vec![IpNetwork::from(wg.address)],
            })
        })
        .collect();
    peers.sort();
    let smallest = snapshot
        .nodes
        .values()
        .map(|n| n.record.value.underlay_mtu)
        .chain([underlay_mtu])
        .min()
        .unwrap_or(underlay_mtu);
    TunnelSpec {
        name: DEVICE.to_string(),
        private_key: keys.private.clone(),
        listen_port: mine.port,
        address: range_address(mine.address),
        mtu: tunnel_mtu(smallest),
        peers,
    }
}

/// The host's address with the range's prefix, so the kernel routes every node's tunnel
/// address to the device.
fn range_address(address: IpAddr) -> IpNetwork {
    IpNetwork::new(address, TUNNEL_RANGE.prefix()).unwrap_or(IpNetwork::from(address))
}

/// This host's device and what was last applied to it.
pub struct Mesh {
    tunnel: Box<dyn Tunnel>,
    keys: KeyPair,
    record: WireguardRecord,
    applied: Option<TunnelSpec>,
}

impl Mesh {
    /// The key pair from `dir` and the node's tunnel address from the store.
    pub fn start(
        kv: &dyn ClusterKv,
        node: &str,
        dir: &Path,
        tunnel: Box<dyn Tunnel>,
        log: &dyn AgentLog,
    ) -> Result<Mesh, StateError> {
        let keys = load_keys(dir, log)?;
        let address = IpAddr::V4(tunnel_address(kv, node)?);
        log.info(&format!(
            "WireGuard ({} engine): tunnel {DEVICE} at {address}, port {PORT}",
            tunnel.engine()
        ));
        Ok(Mesh {
            record: WireguardRecord {
                public_key: keys.public.clone(),
                port: PORT,
                address,
                engine: tunnel.engine(),
            },
            keys,
            tunnel,
            applied: None,
        })
    }

    /// What the node's record says about its end.
    pub fn record(&self) -> WireguardRecord {
        self.record.clone()
    }

    /// What the model needs: the device and this host's tunnel address.
    pub fn end(&self) -> TunnelEnd {
        TunnelEnd {
            device: DEVICE.to_string(),
            address: self.record.address,
        }
    }

    /// Make the device match the live nodes of `snapshot`; nothing when it already does. A
    /// node that came back with a new key changes its peer here, without restarting anyone.
    /// False when the device refused (the caller tries again).
    pub fn converge(
        &mut self,
        snapshot: &ClusterSnapshot,
        me: &str,
        underlay_mtu: u32,
        log: &dyn AgentLog,
    ) -> bool {
        let want = spec(snapshot, me, &self.keys, &self.record, underlay_mtu);
        if self.applied.as_ref() == Some(&want) {
            return true;
        }
        match self.tunnel.apply(&want) {
            Ok(()) => {
                log.info(&format!(
                    "tunnel {DEVICE}: {} peer{}, MTU {}",
                    want.peers.len(),
                    if want.peers.len() == 1 { "" } else { "s" },
                    want.mtu
                ));
                self.applied = Some(want);
                true
            }
            Err(e) => {
                log.info(&format!("tunnel {DEVICE}: {e}"));
                self.applied = None;
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "tunnel_tests.rs"]
mod tests;
