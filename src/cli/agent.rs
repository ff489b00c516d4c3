//! `netcompose agent`: one host's agent of a cluster, on an etcd store, until SIGINT or
//! SIGTERM; and `netcompose nodes`, the cluster's live nodes. The agent logs to stderr.

use super::reconcile::{cluster, require_root};
use crate::reconcile::agent::{self, AgentConfig, AgentLog};
use crate::reconcile::{Applied, DaemonEvent, Events};
use crate::state::cluster::{NodeRecord, ProbeState};
use crate::state::FileStore;
use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The VXLAN port every node advertises (IANA's).
const VXLAN_PORT: u16 = 4789;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Anyone who can write the project's keys in the store can make every agent run x-run commands as root: use etcds:// with a client certificate, or say --insecure-store.\n\nExamples:\n  sudo netcompose --store etcds://10.0.0.1:2379?ca=ca.pem&cert=h1.pem&key=h1-key.pem agent --node h1 --label zone=a\n  sudo netcompose --store etcd://10.0.0.1:2379 agent --node h1 --underlay 10.0.0.1 --insecure-store"
)]
pub struct AgentArgs {
    /// This host's node name (constraints read it as node.hostname).
    #[arg(long)]
    pub node: String,
    /// The address other hosts reach this one at (VXLAN's source); default: the address
    /// this host reaches the store from.
    #[arg(long)]
    pub underlay: Option<IpAddr>,
    /// A node label, KEY=VALUE (repeatable; constraints read node.labels.KEY).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// The node's lease: its keys (its record, statuses, probe findings) go this long after the
    /// agent dies, and with its record every other host drops its endpoints.
    #[arg(long, default_value = "5s", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Accept a store reached without TLS.
    #[arg(long)]
    pub insecure_store: bool,
}

fn parse_ttl(v: &str) -> Result<u64, String> {
    let n = v.strip_suffix('s').unwrap_or(v);
    match n.parse::<u64>() {
        Ok(s) if s >= 2 => Ok(s),
        Ok(_) => Err("etcd grants at least 2 s".into()),
        Err(_) => Err("a number of seconds, e.g. 5s".into()),
    }
}

struct Stderr(String);

impl AgentLog for Stderr {
    fn info(&self, line: &str) {
        eprintln!("agent {}: {line}", self.0);
    }
}

impl Events for Stderr {
    fn warning(&self, message: &str) {
        self.info(&format!("warning: {message}"));
    }
    fn waiting_for_lock(&self, project: &crate::project_name::ProjectName) {
        self.info(&format!("waiting for the lock of project {project}"));
    }
    fn drift(&self, change: &crate::plan::Change) {
        self.info(&format!("drift: {}", change.address));
    }
    fn applying(&self, s: &crate::plan::Summary) {
        self.info(&format!(
            "applying: {} to add, {} to change, {} to destroy",
            s.add, s.change, s.destroy
        ));
    }
    fn progress(&self, _symbol: &str, _address: &str, _took: Duration) {}
    fn applied(&self, applied: &Applied) {
        match applied {
            Applied::NoChanges => {}
            Applied::Up(o) => self.info(&format!(
                "applied in {} ms: {} created, {} changed, {} destroyed",
                o.elapsed.as_millis(),
                o.created,
                o.updated,
                o.deleted
            )),
            Applied::Down { project, outcome } => self.info(&format!(
                "removed {project}: {} objects destroyed",
                outcome.deleted
            )),
        }
    }
    fn daemon(&self, event: &DaemonEvent) {
        if let DaemonEvent::Serving { errors, .. } = event {
            for e in errors {
                self.info(&format!("warning: daemon: {e}"));
            }
        }
    }
}

/// The cluster's store, or a report saying a cluster command needs one.
fn etcd(command: &str) -> miette::Result<&'static (crate::state::EtcdStore, bool)> {
    cluster().ok_or_else(|| {
        miette::miette!(
            help = "name the cluster's store: --store etcd://HOST:2379 (or NETCOMPOSE_STORE)",
            "`netcompose {command}` needs an etcd store"
        )
    })
}

pub fn run(args: &AgentArgs) -> miette::Result<ExitCode> {
    require_root("agent")?;
    let (store, tls) = etcd("agent")?;
    if !tls && !args.insecure_store {
        return Err(miette::miette!(
            help = "use etcds:// with a client certificate, or say --insecure-store if the store's network is trusted",
            "refusing a plain-text store: anyone who can write the project's keys can make every agent run x-run commands as root"
        ));
    }
    crate::project_name::ProjectName::new(args.node.clone()).map_err(|_| {
        miette::miette!(
            help = "lowercase letters, digits, `_` and `-`, starting with a letter or digit",
            "`{}` is not a node name",
            args.node
        )
    })?;
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').ok_or_else(|| {
            miette::miette!(help = "write it as KEY=VALUE", "invalid --label `{l}`")
        })?;
        labels.insert(k.to_string(), v.to_string());
    }
    let underlay = match args.underlay {
        Some(ip) => ip,
        None => source_towards(store).ok_or_else(|| {
            miette::miette!(
                help = "give it with --underlay IP",
                "cannot tell which address this host reaches the store from"
            )
        })?,
    };
    let underlay_mtu = mtu_of(underlay).ok_or_else(|| {
        miette::miette!(
            help = "--underlay must be an address of one of this host's interfaces",
            "no interface of this host has the address {underlay}"
        )
    })?;
    let cfg = AgentConfig {
        node: args.node.clone(),
        record: NodeRecord {
            underlay,
            underlay_mtu,
            vxlan_port: VXLAN_PORT,
            labels,
            version: env!("CARGO_PKG_VERSION").to_string(),
            wireguard: None,
        },
        ttl: args.ttl as i64,
        dir: std::path::Path::new(crate::daemon::RUN_ROOT)
            .join("_agent")
            .join(&args.node),
    };
    let stop = Arc::new(AtomicBool::new(false));
    install_stop(&stop)?;
    let log = Stderr(args.node.clone());
    log.info(&format!(
        "node {} on {underlay} (MTU {underlay_mtu}), lease TTL {} s",
        args.node, args.ttl
    ));
    agent::run(
        store.kv(),
        &FileStore::system(),
        &cfg,
        wireguard(),
        &log,
        &log,
        &stop,
    )
    .map_err(|e| miette::miette!("{e}"))?;
    log.info("stopped");
    Ok(ExitCode::SUCCESS)
}

/// This host's WireGuard device for encrypted overlays (the engine detected in the host
/// namespace, where the agent runs), or what the host lacks.
fn wireguard() -> Result<Box<dyn crate::kernel::wireguard::Tunnel>, String> {
    use crate::kernel::wireguard::{detect, open};
    detect().and_then(open).map_err(|e| e.to_string())
}

/// SIGINT and SIGTERM set `stop` (the agent ends its pass and leaves its lease to expire, so
/// that a restart within the TTL changes nothing).
fn install_stop(stop: &Arc<AtomicBool>) -> miette::Result<()> {
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = STOP.set(stop.clone());
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(s) = STOP.get() {
            s.store(true, Ordering::SeqCst);
        }
    }
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_signal),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(sig, &action) }
            .map_err(|e| miette::miette!("cannot handle {sig}: {e}"))?;
    }
    Ok(())
}

/// The source address this host uses towards the store's first member (no packet is sent).
fn source_towards(store: &crate::state::EtcdStore) -> Option<IpAddr> {
    let first = store.endpoints().first()?.clone();
    let target = first
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_socket_addrs()
        .ok()?
        .next()?;
    let bind = match target {
        std::net::SocketAddr::V4(_) => "0.0.0.0:0",
        std::net::SocketAddr::V6(_) => "[::]:0",
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The MTU of the interface that has `addr`.
fn mtu_of(addr: IpAddr) -> Option<u32> {
    let name = nix::ifaddrs::getifaddrs()
        .ok()?
        .find(|i| {
            i.address.as_ref().is_some_and(|a| {
                let ip = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                    (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                    (None, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                    (None, None) => None,
                };
                ip == Some(addr)
            })
        })?
        .interface_name;
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `req`, which we own.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SIOCGIFMTU,
            &mut req,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).ok()
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  netcompose --store etcd://10.0.0.1:2379 nodes\n  netcompose --store etcd://10.0.0.1:2379 nodes --json | jq '.matrix'"
)]
pub struct NodesArgs {
    /// Print one JSON document (nodes, labels, lease, underlay, WireGuard, converged
    /// revisions, health, the VXLAN probe matrix).
    #[arg(long)]
    pub json: bool,
}

/// `netcompose nodes`: name, underlay, MTU, labels, lease time left, WireGuard engine, health.
pub fn nodes(args: &NodesArgs) -> miette::Result<ExitCode> {
    let (store, _) = etcd("nodes")?;
    let nodes = agent::node_list(store.kv()).map_err(|e| miette::miette!("{e}"))?;
    if args.json {
        let doc = super::nodes_json::render(&nodes).map_err(|e| miette::miette!("{e}"))?;
        println!("{doc}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<20} {:>5}  {:<24} {:>6}  {:<9}  HEALTH",
        "NODE", "UNDERLAY", "MTU", "LABELS", "LEASE", "WIREGUARD"
    );
    for n in &nodes {
        let labels: Vec<String> = n
            .record
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let health = health_of(n);
        let engine = n
            .record
            .wireguard
            .as_ref()
            .map_or("none".to_string(), |w| w.engine.to_string());
        println!(
            "{:<16} {:<20} {:>5}  {:<24} {:>6}  {engine:<9}  {health}",
            n.name,
            format!("{}:{}", n.record.underlay, n.record.vxlan_port),
            n.record.underlay_mtu,
            if labels.is_empty() {
                "-".to_string()
            } else {
                labels.join(",")
            },
            n.ttl.map_or("expired".to_string(), |t| format!("{t}s")),
        );
    }
    if nodes.is_empty() {
        eprintln!("No live node: start `netcompose agent --node NAME` on each host.");
    } else if nodes.len() > 1 {
        print!("{}", probe_matrix(&nodes));
    }
    Ok(ExitCode::SUCCESS)
}

/// A node's health: the projects it fails on and the peers its VXLAN probe cannot reach at
/// full size.
fn health_of(n: &agent::NodeInfo) -> String {
    let mut problems = Vec::new();
    if !n.failing.is_empty() {
        problems.push(format!("failing: {}", n.failing.join(", ")));
    }
    if let Some(e) = n.health.as_ref().and_then(|h| h.error.as_ref()) {
        problems.push(format!("probe: {e}"));
    }
    for (peer, p) in n.health.iter().flat_map(|h| &h.peers) {
        match p.state {
            ProbeState::Ok => {}
            ProbeState::TooBig => problems.push(format!("too big to {peer}")),
            ProbeState::Unreachable => problems.push(format!("unreachable to {peer}")),
        }
    }
    match problems.is_empty() {
        true => "ok".to_string(),
        false => problems.join("; "),
    }
}

/// Each node's VXLAN probe of each other node, from row to column: `ok` with the round trip
/// of a frame padded to the overlay MTU, `too big` (only small frames pass), `unreachable`,
/// or `...` while the first rounds run.
fn probe_matrix(nodes: &[agent::NodeInfo]) -> String {
    use std::fmt::Write;
    let width = nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(0)
        .max(11)
        + 2;
    let mtu = nodes
        .iter()
        .filter_map(|n| n.health.as_ref())
        .map(|h| h.mtu)
        .max();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nVXLAN PROBE (from row to column, {}-byte frames, outer DF):",
        mtu.map_or("overlay MTU".to_string(), |m| m.to_string())
    );
    let header: String = nodes
        .iter()
        .map(|n| format!("{:<width$}", n.name))
        .collect();
    let _ = writeln!(out, "{:<width$}{}", "", header.trim_end());
    for from in nodes {
        let mut row = format!("{:<width$}", from.name);
        for to in nodes {
            let cell = match from.health.as_ref().and_then(|h| h.peers.get(&to.name)) {
                _ if from.name == to.name => "-".to_string(),
                None => "...".to_string(),
                Some(p) => match (p.state, p.rtt_us) {
                    (ProbeState::Ok, Some(us)) => format!("ok {:.1}ms", us as f64 / 1000.0),
                    (ProbeState::Ok, None) => "ok".to_string(),
                    (ProbeState::TooBig, _) => "too big".to_string(),
                    (ProbeState::Unreachable, _) => "unreachable".to_string(),
                },
            };
            let _ = write!(row, "{cell:<width$}");
        }
        let _ = writeln!(out, "{}", row.trim_end());
    }
    out
}

/// `ps` with an etcd store: each replica's node, what is pending, each node's converged
/// revision (what each host built is `ps` on that host with its file store).
pub fn ps(project: &crate::project_name::ProjectName, json: bool) -> miette::Result<ExitCode> {
    let (store, _) = etcd("ps")?;
    let status = agent::cluster_status(store.kv(), project).map_err(|e| miette::miette!("{e}"))?;
    if json {
        let view = serde_json::json!({
            "project": project.as_str(),
            "replicas": status.assignment.iter().map(|(k, n)| serde_json::json!({
                "service": k.service, "replica": k.index, "node": n,
            })).collect::<Vec<_>>(),
            "pending": status.pending.iter().map(|(k, why)| serde_json::json!({
                "service": k.service, "replica": k.index, "reason": why,
            })).collect::<Vec<_>>(),
            "nodes": status.nodes.iter().map(|(n, (s, live))| serde_json::json!({
                "node": n, "live": live,
                "revision": s.as_ref().map(|s| s.revision),
                "errors": s.as_ref().map(|s| s.errors.clone()).unwrap_or_default(),
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} NODE", "REPLICA");
    for (k, n) in &status.assignment {
        println!("{:<24} {n}", k.to_string());
    }
    for (k, why) in &status.pending {
        println!("{:<24} pending: {why}", k.to_string());
    }
    println!();
    println!("{:<16} {:>9}  STATUS", "NODE", "REVISION");
    for (n, (s, live)) in &status.nodes {
        let what = match (s, live) {
            (_, false) => "lease gone".to_string(),
            (None, true) => "no report".to_string(),
            (Some(s), true) if s.errors.is_empty() => "converged".to_string(),
            (Some(s), true) => format!("failed: {}", s.errors.join("; ")),
        };
        let rev = s
            .as_ref()
            .map_or("-".to_string(), |s| s.revision.to_string());
        println!("{n:<16} {rev:>9}  {what}");
    }
    Ok(ExitCode::SUCCESS)
}
