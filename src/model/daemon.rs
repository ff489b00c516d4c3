//! What the daemon serves: built by `up` from the checked project and its desired state, written
//! to `/run/netcompose/<project>/daemon.json`, and read by the daemon on start and on reload.
//!
//! The resolver's records are the model's `dns.<network>` zones (so `plan` shows exactly what
//! the resolver will answer); this file adds what the daemon needs on top: which networks each
//! namespace is attached to (in interface order), where each namespace forwards the names the
//! project does not know, the reverse (PTR) map, the `x-run` processes and the published ports
//! relayed on [::1].

use crate::model::endpoints::{replicas, Stack};
use crate::model::relay::relays;
pub use crate::model::relay::{LoopbackRelay, RelayProtocol};
use crate::model::resource::Vip;
use crate::model::{Desired, Spec};
use crate::project_name::ProjectName;
use crate::spec::{Condition, Ids, Project};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// At most this many upstream servers per namespace (as resolv.conf's MAXNS).
pub const MAX_UPSTREAMS: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub project: ProjectName,
    /// Directory of the named network namespaces (`/run/netns`).
    pub netns_dir: PathBuf,
    /// Directory of the per-namespace files laid over /etc (`/etc/netns`).
    pub etc_netns: PathBuf,
    /// Working directory of the `x-run` processes (the project directory).
    pub working_dir: PathBuf,
    pub networks: BTreeMap<String, NetworkView>,
    /// Every namespace the resolver listens in, by name.
    pub namespaces: BTreeMap<String, NamespaceView>,
    pub processes: Vec<Process>,
    /// Published ports the daemon serves on [::1] ([`super::relay`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<LoopbackRelay>,
    /// Every service's VIPs, for the connections per backend that `stats` counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<Vip>,
    /// `x-metrics: {listen}`: where the daemon also serves its metrics over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// The names of one network, as the resolver answers them to replicas attached to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Names under which `<name>.<network>` is also answered: the key and the network's name.
    pub names: Vec<String>,
    pub internal: bool,
    pub subnets: Vec<IpNetwork>,
    /// Lower-case name → addresses on this network.
    pub records: BTreeMap<String, Vec<IpAddr>>,
    /// Names whose answer does not change with scaling (replica names): a longer TTL.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub stable: BTreeSet<String>,
    /// Address → names, for PTR.
    pub reverse: BTreeMap<IpAddr, Vec<String>>,
    /// Names answered only to one service's replicas (`links` aliases): service → lower-case
    /// alias → addresses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, BTreeMap<String, Vec<IpAddr>>>,
}

/// One namespace the resolver serves (a replica with its own stack).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceView {
    pub service: String,
    pub replica: u32,
    /// Attached networks, in interface order: a name found on two networks answers from the
    /// first.
    pub networks: Vec<String>,
    /// Where names outside the project go; empty: nowhere (REFUSED).
    pub upstreams: Vec<Upstream>,
}

/// An upstream DNS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Query it from the daemon's own (host) namespace: the host's loopback resolvers
    /// (127.0.0.53 and the like), which a replica's loopback does not have.
    #[serde(default)]
    pub from_host: bool,
}

/// An `x-run` process of one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// `<service>-<n>`, the prefix of its log lines.
    pub name: String,
    pub service: String,
    pub replica: u32,
    /// The namespace it runs in (None: the host's, for `network_mode: host`).
    pub netns: Option<String>,
    pub argv: Vec<String>,
    pub restart: RestartPolicy,
    /// Its own host name (the service's `hostname`, else the replica's name), which the
    /// replica's /etc/hosts resolves, as a container's does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The service's `user`, resolved; None: the daemon's own (root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Ids>,
    /// The service's `working_dir`; None: the project directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// The service's `environment`, over the daemon's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// `security_opt: [no-new-privileges]`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// The capabilities it keeps (bit n: capability n), from `cap_add`/`cap_drop` over the
    /// full set; None: those of the daemon, untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<u64>,
    /// `init: true`: the command runs under a reaper that forwards signals to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `stop_signal`, a signal number; None: SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<i32>,
    /// `stop_grace_period` in milliseconds; None: the daemon's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ms: Option<u64>,
    /// The service's `healthcheck`; None: the process is ready once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Probe>,
    /// What must hold of other services' processes before this one starts (`depends_on`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Wait>,
}

/// A healthcheck as the daemon runs it (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Run as the process is (same namespaces, user, environment, privileges).
    pub argv: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub start_interval_ms: u64,
    /// Failed probes in a row (after the start period) that make the process unhealthy.
    pub retries: u32,
}

impl From<&crate::spec::Healthcheck> for Probe {
    fn from(h: &crate::spec::Healthcheck) -> Probe {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Probe {
            argv: h.argv.clone(),
            interval_ms: ms(h.interval),
            timeout_ms: ms(h.timeout),
            start_period_ms: ms(h.start_period),
            start_interval_ms: ms(h.start_interval),
            retries: h.retries,
        }
    }
}

/// One `depends_on` entry of a process's service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub service: String,
    pub condition: Condition,
    /// false: when the condition fails, start anyway (and say so).
    pub required: bool,
}

/// Compose's `restart:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    OnFailure {
        /// `on-failure:N`: at most N restarts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
    },
    UnlessStopped,
}

impl RestartPolicy {
    /// `no`, `always`, `on-failure[:N]`, `unless-stopped`; anything else is `no`.
    pub fn parse(s: &str) -> RestartPolicy {
        let s = s.trim();
        match s {
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max: None },
            _ => match s.strip_prefix("on-failure:") {
                Some(n) => RestartPolicy::OnFailure {
                    max: n.trim().parse().ok(),
                },
                None => RestartPolicy::No,
            },
        }
    }

    /// Whether a process that exited with `success` (after `restarts` restarts) runs again.
    pub fn restarts(&self, success: bool, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => !success && max.is_none_or(|m| restarts < m),
        }
    }
}

impl DaemonConfig {
    /// Nothing to serve yet, for `project`.
    pub fn new(project: ProjectName) -> DaemonConfig {
        DaemonConfig {
            project,
            netns_dir: PathBuf::new(),
            etc_netns: PathBuf::new(),
            working_dir: PathBuf::new(),
            networks: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            processes: Vec::new(),
            relays: Vec::new(),
            vips: Vec::new(),
            metrics_listen: None,
        }
    }

    /// Whether there is anything for a daemon to do.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.processes.is_empty() && self.relays.is_empty()
    }
}

/// Where the daemon finds the machine's namespaces and files, and where x-run processes start:
/// facts of the machine, handed in by the caller so that building the configuration stays pure.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub netns_dir: PathBuf,
    pub etc_netns: PathBuf,
    pub working_dir: PathBuf,
}

/// Build the daemon's configuration. `host_nameservers` are the host's upstreams (see
/// [`crate::observe::host::nameservers`]).
pub fn build(
    project: &Project,
    name: &ProjectName,
    desired: &Desired,
    host_nameservers: &[String],
    dirs: Dirs,
) -> DaemonConfig {
    let mut networks: BTreeMap<String, NetworkView> = BTreeMap::new();
    for r in &desired.resources {
        match &r.spec {
            Spec::Dns(z) => {
                let net = networks.entry(z.network.clone()).or_default();
                net.links = z.links.clone();
                for (name, ips) in &z.records {
                    let e = net.records.entry(name.to_ascii_lowercase()).or_default();
                    for ip in ips {
                        if !e.contains(ip) {
                            e.push(*ip);
                        }
                    }
                }
            }
            Spec::Bridge(b) => {
                let net = networks.entry(b.network.clone()).or_default();
                net.internal = b.internal;
                net.subnets = b.subnets.clone();
            }
            Spec::Macvlan(m) => {
                networks.entry(m.network.clone()).or_default().subnets = m.subnets.clone();
            }
            _ => {}
        }
    }
    for (key, net) in &project.networks {
        let view = networks.entry(key.clone()).or_default();
        view.internal |= net.internal;
        view.names = vec![key.to_ascii_lowercase()];
        let full = net.name.value.to_ascii_lowercase();
        if !view.names.contains(&full) {
            view.names.push(full);
        }
    }
    // Reverse map and stable names: replica names from the links, service names from VIPs.
    for r in &desired.resources {
        match &r.spec {
            Spec::Link(l) => {
                let Some(net) = networks.get_mut(&l.network) else {
                    continue;
                };
                net.stable.insert(l.namespace.to_ascii_lowercase());
                for a in &l.addresses {
                    push_unique(
                        net.reverse.entry(a.ip()).or_default(),
                        l.namespace.to_ascii_lowercase(),
                    );
                }
            }
            Spec::Vip(v) => {
                if let Some(net) = networks.get_mut(&v.network) {
                    for a in &v.addresses {
                        push_unique(
                            net.reverse.entry(*a).or_default(),
                            v.service.to_ascii_lowercase(),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    let attached = attachments(desired);
    let host_upstreams = host_upstreams(host_nameservers);
    let mut namespaces = BTreeMap::new();
    let mut processes = Vec::new();
    // On a cluster, a replica of another host has no namespace here: it is not served and
    // its processes run there.
    let here: std::collections::HashSet<&str> = desired
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Namespace(n) => Some(n.name.as_str()),
            _ => None,
        })
        .collect();
    let all = replicas(project);
    let ours: std::collections::HashSet<&str> = all
        .iter()
        .filter(|r| r.stack == Stack::Own)
        .filter_map(|r| r.netns.as_deref())
        .collect();
    for rep in all.iter().cloned() {
        if rep
            .netns
            .as_deref()
            .is_some_and(|ns| ours.contains(ns) && !here.contains(ns))
        {
            continue;
        }
        let svc = &project.services[&rep.service];
        if rep.stack == Stack::Own {
            if let Some(ns) = &rep.netns {
                let nets = attached.get(ns.as_str()).cloned().unwrap_or_default();
                let upstreams = upstreams(svc, &nets, &networks, &host_upstreams);
                namespaces.insert(
                    ns.clone(),
                    NamespaceView {
                        service: rep.service.clone(),
                        replica: rep.index,
                        networks: nets,
                        upstreams,
                    },
                );
            }
        }
        if let Some(run) = svc.run.as_ref().filter(|r| !r.value.is_empty()) {
            processes.push(Process {
                name: format!("{}-{}", rep.service, rep.index),
                service: rep.service.clone(),
                replica: rep.index,
                netns: match &rep.stack {
                    Stack::Host => None,
                    _ => rep.netns.clone(),
                },
                argv: run.value.clone(),
                hostname: match &rep.stack {
                    Stack::Host => None,
                    _ => Some(svc.hostname.as_ref().map_or_else(
                        || crate::model::names::netns_name(&project.name, &rep.service, rep.index),
                        |h| h.value.clone(),
                    )),
                },
                restart: svc
                    .restart
                    .as_ref()
                    .map_or(RestartPolicy::No, |r| RestartPolicy::parse(&r.value)),
                user: svc.exec.ids,
                working_dir: svc
                    .exec
                    .working_dir
                    .as_ref()
                    .map(|w| PathBuf::from(&w.value)),
                // env_file first: `environment` wins, except a bare key left unset.
                environment: svc
                    .exec
                    .env_file_vars
                    .iter()
                    .cloned()
                    .chain(
                        svc.exec
                            .environment
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.clone()?))),
                    )
                    .collect(),
                no_new_privileges: svc.exec.no_new_privileges,
                capabilities: svc.exec.caps.map(|c| c.kept()),
                init: svc.exec.init,
                stop_signal: svc.exec.stop_signal.as_ref().map(|s| s.value),
                stop_grace_period_ms: svc
                    .exec
                    .stop_grace_period
                    .as_ref()
                    .map(|d| u64::try_from(d.value.as_millis()).unwrap_or(u64::MAX)),
                healthcheck: svc.healthcheck.as_ref().map(|h| Probe::from(&h.value)),
                depends_on: svc
                    .depends_on
                    .iter()
                    .filter(|d| {
                        d.service.value != rep.service
                            && project.services.contains_key(&d.service.value)
                    })
                    .map(|d| Wait {
                        service: d.service.value.clone(),
                        condition: d.condition.value,
                        required: d.required,
                    })
                    .collect(),
            });
        }
    }
    DaemonConfig {
        project: name.clone(),
        netns_dir: dirs.netns_dir,
        etc_netns: dirs.etc_netns,
        working_dir: dirs.working_dir,
        networks,
        namespaces,
        processes,
        relays: relays(project, desired),
        vips: desired
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Vip(v) => Some(v.clone()),
                _ => None,
            })
            .collect(),
        metrics_listen: project.metrics.as_ref().map(|m| m.listen.value),
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Each namespace's networks in interface order (eth0, eth1, ...; named interfaces last).
fn attachments(desired: &Desired) -> BTreeMap<&str, Vec<String>> {
    let mut links: BTreeMap<&str, Vec<(u32, &str, &str)>> = BTreeMap::new();
    for r in &desired.resources {
        if let Spec::Link(l) = &r.spec {
            let order = l
                .ifname
                .strip_prefix("eth")
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            links
                .entry(l.namespace.as_str())
                .or_default()
                .push((order, &l.ifname, &l.network));
        }
    }
    links
        .into_iter()
        .map(|(ns, mut v)| {
            v.sort();
            (ns, v.into_iter().map(|(_, _, n)| n.to_string()).collect())
        })
        .collect()
}

fn host_upstreams(host: &[String]) -> Vec<Upstream> {
    host.iter()
        .filter_map(|s| parse_server(s))
        .map(|addr| Upstream {
            addr,
            from_host: addr.ip().is_loopback(),
        })
        .take(MAX_UPSTREAMS)
        .collect()
}

/// `1.2.3.4`, `fd00::1`, `1.2.3.4:5353`, `[fd00::1]:5353`; a zone index (`fe80::1%eth0`) is
/// dropped.
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: IpAddr = s.split('%').next()?.parse().ok()?;
    Some(SocketAddr::new(ip, 53))
}

/// The service's `dns:` servers (addresses, or names of services of the project, resolved as
/// this replica would), else the host's. A replica attached only to internal networks (or to
/// none) forwards nowhere, except to `dns:` servers inside its own networks' subnets.
fn upstreams(
    svc: &crate::spec::Service,
    nets: &[String],
    views: &BTreeMap<String, NetworkView>,
    host: &[Upstream],
) -> Vec<Upstream> {
    let mut out: Vec<Upstream> = Vec::new();
    if svc.dns.is_empty() {
        out.extend_from_slice(host);
    } else {
        for d in &svc.dns {
            if let Some(addr) = parse_server(&d.value) {
                out.push(Upstream {
                    addr,
                    from_host: false,
                });
                continue;
            }
            let name = d.value.to_ascii_lowercase();
            if let Some(ips) = nets
                .iter()
                .filter_map(|n| views.get(n))
                .find_map(|v| v.records.get(&name))
            {
                out.extend(ips.iter().map(|ip| Upstream {
                    addr: SocketAddr::new(*ip, 53),
                    from_host: false,
                }));
            }
        }
    }
    let mut seen = BTreeSet::new();
    out.retain(|u| seen.insert(u.addr));
    let outside = nets
        .iter()
        .any(|n| views.get(n).is_some_and(|v| !v.internal));
    if !outside {
        let subnets: Vec<&IpNetwork> = nets
            .iter()
            .filter_map(|n| views.get(n))
            .flat_map(|v| &v.subnets)
            .collect();
        out.retain(|u| !u.from_host && subnets.iter().any(|s| s.contains(u.addr.ip())));
    }
    out.truncate(MAX_UPSTREAMS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert_eq!(RestartPolicy::parse("no"), RestartPolicy::No);
        assert_eq!(RestartPolicy::parse("always"), RestartPolicy::Always);
        assert_eq!(
            RestartPolicy::parse("on-failure:3"),
            RestartPolicy::OnFailure { max: Some(3) }
        );
        assert_eq!(RestartPolicy::parse("bogus"), RestartPolicy::No);
        let f = RestartPolicy::OnFailure { max: Some(2) };
        assert!(f.restarts(false, 1) && !f.restarts(false, 2) && !f.restarts(true, 0));
        assert!(RestartPolicy::UnlessStopped.restarts(true, 100));
        assert!(!RestartPolicy::No.restarts(false, 0));
    }

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("10.0.0.1"),
            Some("10.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("[fd00::1]:5353"),
            Some("[fd00::1]:5353".parse().unwrap())
        );
        assert_eq!(
            parse_server("fe80::1%eth0"),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(parse_server("resolver"), None);
        let h = host_upstreams(&["127.0.0.53".into(), "10.0.0.1".into()]);
        assert!(h[0].from_host && !h[1].from_host);
    }
}
