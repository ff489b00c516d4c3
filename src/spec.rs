//! The typed Compose project: every networking key of the Compose specification plus
//! netcompose's extensions, each value with the span it was read from. `load` produces it,
//! `validate` checks it, `model` normalizes it.

pub mod units;

use crate::source::Span;
use indexmap::IndexMap;
use ipnetwork::IpNetwork;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Keyed entries in the order the file wrote them. Hashed with aHash rather than std's
/// SipHash: the model looks services and networks up by key a few times for each endpoint
/// (some 400,000 lookups in a plan of 15,000 replicas), on short keys where SipHash costs
/// several times more.
pub type Keyed<V> = IndexMap<String, V, ahash::RandomState>;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Project {
    pub name: String,
    pub networks: Keyed<Network>,
    pub services: Keyed<Service>,
    /// Services left out because none of their profiles is active, with their profiles.
    pub inactive: BTreeMap<String, Vec<String>>,
    pub checks: Vec<Check>,
    /// `x-metrics`.
    pub metrics: Option<Metrics>,
}

/// `x-metrics: {listen: "127.0.0.1:9911"}`: serve the project's metrics over HTTP there too.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub listen: Spanned<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct Network {
    /// The key under top-level `networks`.
    pub key: Spanned<String>,
    /// `name:` or `<project>_<key>`.
    pub name: Spanned<String>,
    pub driver: Option<Spanned<String>>,
    pub driver_opts: BTreeMap<String, Spanned<String>>,
    pub attachable: bool,
    pub enable_ipv4: Option<bool>,
    pub enable_ipv6: Option<Spanned<bool>>,
    pub external: Option<Span>,
    pub internal: bool,
    pub ipam: Ipam,
    pub labels: BTreeMap<String, String>,
    pub policy: Option<Policy>,
    /// Settings written next to `external: true` (which Compose forbids).
    pub local_settings: Vec<Spanned<String>>,
    /// True for the implicit `default` network no file declares.
    pub implicit: bool,
}

impl Network {
    pub fn driver_name(&self) -> &str {
        self.driver.as_ref().map_or("bridge", |d| d.value.as_str())
    }

    /// False for `enable_ipv4: false`: an IPv6-only network.
    pub fn ipv4_enabled(&self) -> bool {
        self.enable_ipv4 != Some(false)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ipam {
    pub driver: Option<Spanned<String>>,
    pub config: Vec<IpamConfig>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct IpamConfig {
    pub span: Span,
    pub subnet: Option<Spanned<IpNetwork>>,
    pub ip_range: Option<Spanned<IpNetwork>>,
    pub gateway: Option<Spanned<IpAddr>>,
    pub aux_addresses: BTreeMap<String, Spanned<IpAddr>>,
}

#[derive(Debug, Clone, Default)]
pub struct Service {
    pub key: Spanned<String>,
    /// Attached networks by key; empty with no `network_mode` means the `default` network.
    pub networks: Keyed<Attachment>,
    pub networks_span: Option<Span>,
    pub network_mode: Option<Spanned<NetworkMode>>,
    pub dns: Vec<Spanned<String>>,
    pub dns_search: Vec<Spanned<String>>,
    pub dns_opt: Vec<Spanned<String>>,
    pub extra_hosts: Vec<ExtraHost>,
    pub hostname: Option<Spanned<String>>,
    pub domainname: Option<Spanned<String>>,
    pub mac_address: Option<Spanned<String>>,
    pub ports: Vec<Port>,
    pub expose: Vec<Spanned<PortRange>>,
    pub deploy: Deploy,
    pub scale: Option<Spanned<u32>>,
    pub depends_on: Vec<Dependency>,
    pub links: Vec<Link>,
    pub sysctls: BTreeMap<String, Spanned<String>>,
    pub container_name: Option<Spanned<String>>,
    pub restart: Option<Spanned<String>>,
    pub policy: Option<Policy>,
    pub run: Option<Spanned<Vec<String>>>,
    pub exec: Exec,
    /// `healthcheck`, unless absent, disabled or without a test.
    pub healthcheck: Option<Spanned<Healthcheck>>,
    /// `x-qos`: for every attachment that does not have its own.
    pub qos: Option<Qos>,
    /// Not from the file: on a cluster, a global service's replica indexes as placement
    /// numbered them (one per matching node; [`crate::placement::number_global`]). None:
    /// Compose's count, 1 to [`Service::replicas`].
    pub placed: Option<Vec<u32>>,
}

/// One `depends_on` entry (the short list form is `service_started`, required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: Spanned<String>,
    pub condition: Spanned<Condition>,
    /// `required: false`: a missing, inactive or failed dependency is only warned about.
    pub required: bool,
    /// `restart: true`, read and kept: the processes restart only with their own policy.
    pub restart: bool,
}

/// When a dependency lets its dependents start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl Condition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// A service's `healthcheck`, with Compose's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// The probe: `CMD` arguments as they are, `CMD-SHELL` (or a string) as `/bin/sh -c`.
    pub argv: Vec<String>,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub start_period: std::time::Duration,
    pub start_interval: std::time::Duration,
    pub retries: u32,
}

/// What an `x-run` process takes from its service's keys: who it runs as, where, with which
/// environment and privileges.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    /// `user` as written (`name`, `uid`, `uid:gid`, `name:group`).
    pub user: Option<Spanned<String>>,
    /// `user` resolved by the loader against the host's /etc/passwd and /etc/group.
    pub ids: Option<Ids>,
    /// `working_dir`: an absolute path.
    pub working_dir: Option<Spanned<String>>,
    /// `environment` in order; a bare `KEY` is None until the loader takes its value from its
    /// own environment (and stays None when that has no such variable: left unset).
    pub environment: Vec<(String, Option<String>)>,
    /// `security_opt: [no-new-privileges]`.
    pub no_new_privileges: bool,
    /// `cap_add` / `cap_drop` as bit masks of capability numbers; None when neither is given.
    pub caps: Option<CapChanges>,
    /// `env_file`, in order.
    pub env_files: Vec<EnvFile>,
    /// The variables the loader read from `env_file`, in order (a later file's value wins);
    /// `environment` wins over them.
    pub env_file_vars: Vec<(String, String)>,
    /// `init: true`: the process runs under a reaper that forwards signals (see the runner).
    pub init: bool,
    /// `stop_signal` as a signal number.
    pub stop_signal: Option<Spanned<i32>>,
    /// `stop_grace_period`.
    pub stop_grace_period: Option<Spanned<std::time::Duration>>,
}

/// One entry of `env_file`.
#[derive(Debug, Clone)]
pub struct EnvFile {
    /// As written: relative paths are relative to the project directory.
    pub path: Spanned<String>,
    /// `required: false` lets the file be missing.
    pub required: bool,
    /// `format: raw`: every `KEY=VALUE` line taken literally (no quotes, no interpolation).
    pub raw: bool,
}

/// A numeric user and its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Capability names by number (linux/capability.h), without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability this table knows, as a mask.
pub const ALL_CAPS: u64 = (1u64 << CAPABILITIES.len()) - 1;

impl CapChanges {
    /// The capabilities kept: all of them, less `cap_drop`, plus `cap_add`.
    pub fn kept(&self) -> u64 {
        (ALL_CAPS & !self.drop) | self.add
    }
}

/// `cap_drop` then `cap_add`, over the full set a root process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapChanges {
    pub add: u64,
    pub drop: u64,
}

impl Service {
    /// Replica count: deploy.replicas, else scale, else 1 (global mode counts one per host).
    pub fn replicas(&self) -> u32 {
        self.deploy
            .replicas
            .as_ref()
            .or(self.scale.as_ref())
            .map_or(1, |r| r.value)
    }

    /// The indexes of the replicas that run: those placement gave a global service on a
    /// cluster, else 1 to [`Service::replicas`].
    pub fn indexes(&self) -> Vec<u32> {
        match &self.placed {
            Some(placed) => placed.clone(),
            None => (1..=self.replicas()).collect(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub key: Spanned<String>,
    pub aliases: Vec<Spanned<String>>,
    pub ipv4_address: Option<Spanned<IpAddr>>,
    pub ipv6_address: Option<Spanned<IpAddr>>,
    pub link_local_ips: Vec<Spanned<IpAddr>>,
    pub mac_address: Option<Spanned<String>>,
    pub driver_opts: BTreeMap<String, String>,
    pub priority: i64,
    pub gw_priority: i64,
    pub interface_name: Option<Spanned<String>>,
    /// `driver_opts: {com.docker.network.endpoint.ifname: NAME}`, Docker's older way to
    /// name the interface.
    pub endpoint_ifname: Option<Spanned<String>>,
    /// `x-qos` of this attachment: its keys override the service's.
    pub qos: Option<Qos>,
}

/// The driver option with which Docker names an endpoint's interface.
pub const ENDPOINT_IFNAME: &str = "com.docker.network.endpoint.ifname";

impl Attachment {
    /// The `x-qos` of this attachment of `service`: each key of the attachment's, else the
    /// service's.
    pub fn effective_qos(&self, service: &Service) -> Option<Qos> {
        match (&self.qos, &service.qos) {
            (None, None) => None,
            (Some(a), None) => Some(a.clone()),
            (None, Some(s)) => Some(s.clone()),
            (Some(a), Some(s)) => Some(Qos {
                span: a.span,
                egress: a.egress.clone().or_else(|| s.egress.clone()),
                ingress: a.ingress.clone().or_else(|| s.ingress.clone()),
                loss: a.loss.clone().or_else(|| s.loss.clone()),
                delay: a.delay.clone().or_else(|| s.delay.clone()),
                jitter: a.jitter.clone().or_else(|| s.jitter.clone()),
            }),
        }
    }

    /// The interface name asked for: `interface_name`, else the endpoint driver option.
    pub fn ifname(&self) -> Option<&Spanned<String>> {
        self.interface_name
            .as_ref()
            .or(self.endpoint_ifname.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    None,
    Host,
    Bridge,
    /// `service:NAME`: share the first replica's namespace of a service of this project.
    Service(String),
    /// `container:NAME`: a container name (here: a replica name or a service's container_name).
    Container(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    pub host: String,
    pub addr: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.start == self.end {
            s.serialize_u16(self.start)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub span: Span,
    pub target: PortRange,
    /// None: an ephemeral host port, as Docker picks one.
    pub published: Option<PortRange>,
    pub host_ip: Option<IpAddr>,
    pub protocol: Protocol,
    pub mode: String,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Deploy {
    pub replicas: Option<Spanned<u32>>,
    pub mode: Option<Spanned<DeployMode>>,
    pub endpoint_mode: Option<Spanned<EndpointMode>>,
    pub placement: Placement,
}

/// `deploy.mode`: how many replicas a cluster runs. On one host without a store, Compose's
/// count applies whatever the mode (docker compose ignores it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    /// `replicas` of them, spread over the matching nodes.
    #[default]
    Replicated,
    /// One on every matching node.
    Global,
}

/// `deploy.placement`: where a cluster may run a service's replicas (`placement/` decides).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub constraints: Vec<Spanned<Constraint>>,
    /// None or 0: no limit, as in Swarm.
    pub max_replicas_per_node: Option<Spanned<u32>>,
}

/// One placement constraint, `node.labels.zone==eu` (Swarm's grammar: placement::constraint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub field: NodeField,
    pub op: ConstraintOp,
    /// Compared without regard to case, as Swarm does.
    pub value: String,
}

/// What of a node a constraint reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeField {
    Hostname,
    Id,
    /// `node.labels.KEY`: the key is case-sensitive.
    Label(String),
    /// A field Swarm has and netcompose nodes do not (`node.role`, `node.ip`,
    /// `node.platform.os`, `node.platform.arch`, `engine.labels.KEY`), as written. Files made
    /// for Swarm carry them and docker compose ignores them, so they load (with a warning);
    /// no node matches one, as Swarm matches no key it does not know.
    Swarm(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOp {
    Eq,
    Ne,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            NodeField::Hostname => f.write_str("node.hostname")?,
            NodeField::Id => f.write_str("node.id")?,
            NodeField::Label(key) => write!(f, "node.labels.{key}")?,
            NodeField::Swarm(key) => f.write_str(key)?,
        }
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{op}{}", self.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub service: Spanned<String>,
    pub alias: Option<String>,
}

/// `x-policy`: allow and deny lists for each direction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Policy {
    #[serde(skip_serializing_if = "Rules::is_empty")]
    pub ingress: Rules,
    #[serde(skip_serializing_if = "Rules::is_empty")]
    pub egress: Rules,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rules {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Spanned<PolicyEntry>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Spanned<PolicyEntry>>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// One `x-policy` entry: a peer (CIDR or service) with an optional port and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    pub peer: Peer,
    pub port: Option<PortRange>,
    pub protocol: Option<Protocol>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Cidr(IpNetwork),
    Service(String),
}

impl std::fmt::Display for PolicyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.peer {
            Peer::Cidr(c) => write!(f, "{c}")?,
            Peer::Service(s) => write!(f, "{s}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(proto) = self.protocol {
            write!(f, "/{proto}")?;
        }
        Ok(())
    }
}

impl Serialize for PolicyEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One `x-checks` entry: a reachability assertion.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    #[serde(skip)]
    pub span: Span,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub protocol: CheckProtocol,
    /// The address family a service name (or `host`) is probed over; None: IPv4 where the
    /// target has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<CheckFamily>,
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckFamily {
    Ipv4,
    Ipv6,
}

impl CheckFamily {
    pub fn holds(self, ip: &IpAddr) -> bool {
        match self {
            CheckFamily::Ipv4 => ip.is_ipv4(),
            CheckFamily::Ipv6 => ip.is_ipv6(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckProtocol {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Reach,
    Blocked,
}

/// `x-qos`: shaping of each direction and injected faults, on a service (every attachment) or
/// on one attachment. `egress` leaves the replica, `ingress` enters it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qos {
    pub span: Span,
    pub egress: Option<Shape>,
    pub ingress: Option<Shape>,
    /// Percent of the packets leaving the replica that are dropped, 0 to 100.
    pub loss: Option<Spanned<u8>>,
    pub delay: Option<Spanned<std::time::Duration>>,
    pub jitter: Option<Spanned<std::time::Duration>>,
}

/// One direction's shaping: `rate` guaranteed, up to `ceil` when there is room, in bursts of
/// up to `burst` bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub span: Span,
    /// Bits per second.
    pub rate: Spanned<u64>,
    /// Bits per second; None: `rate`.
    pub ceil: Option<Spanned<u64>>,
    /// Bytes; None: what the rate sends in 10 ms, at least 4 full-size packets.
    pub burst: Option<Spanned<u64>>,
}
