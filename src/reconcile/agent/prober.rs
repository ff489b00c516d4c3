//! The agent's VXLAN probe, on a thread of its own: every round it reads the live nodes,
//! keeps this host's probe device and its FDB (one static entry per other node) as they
//! call for, sends each peer a small and a full-size frame, and answers the peers' frames
//! in between; then it writes what it found under the node's lease, only when that changed
//! (`probe::worth_writing`), so a steady cluster sees no write from it. The device goes
//! when the agent stops.

use super::probe::{self, Kind, Round, Tracker, PROBE_DEVICE, PROBE_VNI, SMALL};
use super::{AgentConfig, AgentLog};
use crate::kernel::l2echo::{self, FrameSocket, ProbeVxlan, ETHERTYPE};
use crate::kernel::netlink::Netlink;
use crate::kernel::KernelError;
use crate::state::cluster::{encode, health_key, ClusterKv, ClusterSnapshot, HealthRecord, NODES};
use crate::state::kv::Op;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// How often every peer is probed; a frame not back by the next round is lost.
const ROUND: Duration = Duration::from_secs(1);
/// How long one wait for frames lasts (so that a stop is seen soon).
const TICK: Duration = Duration::from_millis(100);

/// Run the probe until `stop` is set.
pub(super) fn run(
    kv: &dyn ClusterKv,
    cfg: &AgentConfig,
    lease: &AtomicI64,
    stop: &AtomicBool,
    log: &dyn AgentLog,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return log.info(&format!("probe: no runtime: {e}")),
    };
    let nl = match Netlink::open(None, rt.handle()) {
        Ok(nl) => nl,
        Err(e) => return log.info(&format!("probe: {e}")),
    };
    let mut p = Prober {
        kv,
        cfg,
        log,
        rt: &rt,
        nl: &nl,
        mac: probe::mac_of(cfg.record.underlay),
        device: None,
        socket: None,
        fdb: BTreeMap::new(),
        trackers: BTreeMap::new(),
        round: BTreeMap::new(),
        sent: BTreeMap::new(),
        seq: 0,
        published: None,
        mtu: 0,
        complained: None,
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            next = Instant::now() + ROUND;
            let lease = lease.load(Ordering::SeqCst);
            if let Err(e) = p.round(lease) {
                p.complain(&e);
                p.failed(&e, lease);
            }
        }
        p.listen(TICK.min(next.saturating_duration_since(Instant::now())));
    }
    p.remove();
}

struct Prober<'a> {
    kv: &'a dyn ClusterKv,
    cfg: &'a AgentConfig,
    log: &'a dyn AgentLog,
    rt: &'a tokio::runtime::Runtime,
    nl: &'a Netlink,
    mac: [u8; 6],
    /// The device as created, and its ifindex.
    device: Option<(u32, ProbeVxlan)>,
    socket: Option<FrameSocket>,
    /// MAC → VTEP, as programmed.
    fdb: BTreeMap<[u8; 6], IpAddr>,
    trackers: BTreeMap<String, Tracker>,
    /// This round's findings per peer.
    round: BTreeMap<String, Round>,
    /// seq → (peer, full-size, when sent).
    sent: BTreeMap<u32, (String, bool, Instant)>,
    seq: u32,
    /// What the store holds of this node's health, on which lease.
    published: Option<(i64, HealthRecord)>,
    mtu: u32,
    /// The last error logged (the same one is not logged every round).
    complained: Option<String>,
}

/// Why a round could not run.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("probe: {0}")]
    Kernel(#[from] KernelError),
    #[error("probe: {0}")]
    Store(#[from] crate::state::StateError),
}

impl Prober<'_> {
    fn complain(&mut self, e: &ProbeError) {
        let text = e.to_string();
        if self.complained.as_ref() != Some(&text) {
            self.log.info(&text);
            self.complained = Some(text);
        }
    }

    /// Close the last round (write what changed), then set up and send the next one.
    fn round(&mut self, lease: i64) -> Result<(), ProbeError> {
        let (_, records) = self.kv.list(NODES)?;
        let nodes = ClusterSnapshot::from_records(0, &records).nodes;
        let peers: BTreeMap<String, IpAddr> = nodes
            .iter()
            .filter(|(name, _)| **name != self.cfg.node)
            .map(|(name, n)| (name.clone(), n.record.value.underlay))
            .collect();
        self.close(&peers, lease)?;
        self.mtu = probe::overlay_mtu(
            self.cfg.record.underlay,
            nodes
                .values()
                .map(|n| n.record.value.underlay_mtu)
                .chain([self.cfg.record.underlay_mtu]),
        );
        let index = self.device()?;
        self.program(index, &peers)?;
        if self.socket.is_none() {
            self.socket = Some(FrameSocket::open(index, PROBE_DEVICE)?);
        }
        self.sent.clear();
        self.round = peers
            .keys()
            .map(|p| (p.clone(), Round::default()))
            .collect();
        for (name, underlay) in &peers {
            let dst = probe::mac_of(*underlay);
            for full in [false, true] {
                self.seq = self.seq.wrapping_add(1);
                let size = if full { self.mtu as usize } else { SMALL };
                let frame = probe::encode(dst, self.mac, Kind::Request, self.seq, size, ETHERTYPE);
                match self.send(&frame) {
                    Ok(()) => {
                        self.sent
                            .insert(self.seq, (name.clone(), full, Instant::now()));
                    }
                    Err(e) if full && e.errno() == Some(libc::EMSGSIZE) => {
                        if let Some(r) = self.round.get_mut(name) {
                            r.refused = true;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.complained = None;
        Ok(())
    }

    /// Say in the store why the probe cannot run here (a kernel's refusal; the store's own
    /// errors cannot be written there), once per distinct reason.
    fn failed(&mut self, e: &ProbeError, lease: i64) {
        let ProbeError::Kernel(k) = e else {
            return;
        };
        let record = HealthRecord {
            mtu: self.mtu,
            peers: BTreeMap::new(),
            error: Some(k.to_string()),
        };
        if self
            .published
            .as_ref()
            .is_some_and(|(on, old)| *on == lease && !probe::worth_writing(Some(old), &record))
        {
            return;
        }
        let key = health_key(&self.cfg.node);
        let written = encode(&key, &record).and_then(|value| {
            self.kv
                .commit_on(Some(lease), &[], &[Op::Put { key, value }])
        });
        match written {
            Ok(_) => {
                self.trackers.clear();
                self.published = Some((lease, record));
            }
            Err(e) => self.complain(&ProbeError::Store(e)),
        }
    }

    fn send(&self, frame: &[u8]) -> Result<(), KernelError> {
        match &self.socket {
            Some(s) => s.send(frame),
            None => Ok(()),
        }
    }

    /// The findings of the round that ends, written if they changed what the store holds.
    fn close(&mut self, peers: &BTreeMap<String, IpAddr>, lease: i64) -> Result<(), ProbeError> {
        self.trackers.retain(|name, _| peers.contains_key(name));
        let mut record = HealthRecord {
            mtu: self.mtu,
            peers: BTreeMap::new(),
            error: None,
        };
        for (name, round) in std::mem::take(&mut self.round) {
            if !peers.contains_key(&name) {
                continue;
            }
            // A peer not decided yet keeps what the store says of it (an agent restarted on
            // its lease rewrites nothing while its first rounds run).
            let seen = self
                .trackers
                .entry(name.clone())
                .or_default()
                .observe(round)
                .or_else(|| self.published.as_ref()?.1.peers.get(&name).copied());
            if let Some(seen) = seen {
                record.peers.insert(name, seen);
            }
        }
        let key = health_key(&self.cfg.node);
        if self.published.is_none() {
            // A restarted agent on the same lease: the store may hold this very record.
            let (_, held) = self.kv.list(&key)?;
            let current = ClusterSnapshot::from_records(0, &held)
                .health
                .remove(&self.cfg.node);
            if let Some(c) = current.filter(|_| held.iter().all(|r| r.lease == lease)) {
                self.published = Some((lease, c.value));
            }
        }
        let stale = match &self.published {
            Some((on, old)) => *on != lease || probe::worth_writing(Some(old), &record),
            None => true,
        };
        if stale && !record.peers.is_empty() {
            let value = encode(&key, &record)?;
            self.kv
                .commit_on(Some(lease), &[], &[Op::Put { key, value }])?;
            self.published = Some((lease, record));
        }
        Ok(())
    }

    /// The probe device as this round wants it (created, or created again when it differs);
    /// its ifindex.
    fn device(&mut self) -> Result<u32, KernelError> {
        let want = ProbeVxlan {
            name: PROBE_DEVICE.to_string(),
            vni: PROBE_VNI,
            port: self.cfg.record.vxlan_port,
            local: self.cfg.record.underlay,
            mtu: self.mtu,
            mac: self.mac,
        };
        if let Some((index, have)) = &self.device {
            if *have == want {
                return Ok(*index);
            }
            let resized = ProbeVxlan {
                mtu: want.mtu,
                ..have.clone()
            };
            if resized == want {
                let index = *index;
                self.rt.block_on(self.nl.set_mtu(index, want.mtu))?;
                self.device = Some((index, want));
                return Ok(index);
            }
        }
        // Whatever holds the name (a device of an earlier run, one that differs) goes first.
        if let Some(old) = self.rt.block_on(self.nl.link_by_name(PROBE_DEVICE))? {
            self.rt.block_on(self.nl.delete_link(old.index))?;
        }
        self.socket = None;
        self.fdb.clear();
        let index = self
            .rt
            .block_on(l2echo::create_probe_vxlan(self.nl, &want))?;
        self.log.info(&format!(
            "probe device {PROBE_DEVICE}: VNI {PROBE_VNI}, port {}, MTU {}",
            want.port, want.mtu
        ));
        self.device = Some((index, want));
        Ok(index)
    }

    /// One static FDB entry per peer (replaced, never added exclusively), none for a node
    /// that is gone.
    fn program(&mut self, index: u32, peers: &BTreeMap<String, IpAddr>) -> Result<(), KernelError> {
        let want: BTreeMap<[u8; 6], IpAddr> =
            peers.values().map(|ip| (probe::mac_of(*ip), *ip)).collect();
        if want == self.fdb {
            return Ok(());
        }
        for (mac, dst) in &self.fdb {
            if want.get(mac) != Some(dst) {
                self.rt
                    .block_on(self.nl.delete_fdb(index, *mac, Some(*dst)))
                    .or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })?;
            }
        }
        for (mac, dst) in &want {
            self.rt.block_on(self.nl.add_fdb(index, *mac, *dst))?;
        }
        self.fdb = want;
        Ok(())
    }

    /// Answer requests and take in replies for up to `wait`.
    fn listen(&mut self, wait: Duration) {
        let Some(socket) = &self.socket else {
            std::thread::sleep(wait);
            return;
        };
        let until = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let n = match socket.recv(&mut buf, left) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    let e = ProbeError::from(e);
                    self.complain(&e);
                    std::thread::sleep(left);
                    return;
                }
            };
            let Some(frame) = probe::decode(&buf[..n]) else {
                continue;
            };
            if frame.dst != self.mac {
                continue;
            }
            match frame.kind {
                Kind::Request => {
                    let reply = probe::encode(
                        frame.src,
                        self.mac,
                        Kind::Reply,
                        frame.seq,
                        frame.payload,
                        ETHERTYPE,
                    );
                    // A reply that cannot go is a lost frame for the peer's probe.
                    let _ = socket.send(&reply);
                }
                Kind::Reply => {
                    let Some((peer, full, at)) = self.sent.remove(&frame.seq) else {
                        continue;
                    };
                    if let Some(r) = self.round.get_mut(&peer) {
                        match full {
                            true => r.full = Some(at.elapsed()),
                            false => r.small = Some(at.elapsed()),
                        }
                    }
                }
            }
            if Instant::now() >= until {
                return;
            }
        }
    }

    /// The device goes with the agent (its keys go with the lease).
    fn remove(&mut self) {
        self.socket = None;
        if let Some((index, _)) = self.device.take() {
            if let Err(e) = self.rt.block_on(self.nl.delete_link(index)) {
                self.log
                    .info(&format!("probe: cannot remove {PROBE_DEVICE}: {e}"));
            }
        }
    }
}
