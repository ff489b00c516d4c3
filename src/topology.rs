//! `netcompose graph`: the project's topology (networks with their subnets, services with their
//! replicas and VIPs, attachments with addresses, published ports) as Mermaid or Graphviz dot;
//! for a project that is up, also what runs: its state and its x-run processes (with their
//! health where the daemon reports one), handed in as [`Running`] because this module reads
//! nothing of the machine.

use crate::model::{Desired, Spec};
use crate::spec::{NetworkMode, Project};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// What is up of the project, as the caller found it (the live machine as root, else the state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    /// How the caller knows (`live`, `state file`), shown in the picture's title.
    pub source: String,
    pub processes: Vec<Process>,
}

/// One x-run process of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub service: String,
    /// `running`, `exited`, ... as the daemon reports it.
    pub state: String,
    /// The healthcheck's verdict, for a service that has one.
    pub health: Option<String>,
}

struct Topology {
    /// The picture's title.
    title: String,
    networks: Vec<(String, String)>,
    services: Vec<(String, String)>,
    /// (service, network, label)
    attachments: Vec<(String, String, String)>,
    /// (service, target service, label) for shared namespaces and host mode
    shares: Vec<(String, String, String)>,
    /// (service, label)
    ports: Vec<(String, String)>,
}

fn id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{clean}")
}

fn collect(project: &Project, desired: &Desired, running: Option<&Running>) -> Topology {
    let mut networks = Vec::new();
    let mut vips: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut addrs: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for r in &desired.resources {
        match &r.spec {
            Spec::Bridge(b) => networks.push((
                b.network.clone(),
                format!("{} (bridge {})\\n{}", b.network, b.name, join(&b.subnets)),
            )),
            Spec::Macvlan(m) => networks.push((
                m.network.clone(),
                format!(
                    "{} (macvlan on {})\\n{}",
                    m.network,
                    m.parent,
                    join(&m.subnets)
                ),
            )),
            Spec::External(e) => networks.push((
                e.network.clone(),
                format!("{} (external {})", e.network, e.name),
            )),
            Spec::Vip(v) => vips
                .entry(v.service.as_str())
                .or_default()
                .extend(v.addresses.iter().map(IpAddr::to_string)),
            Spec::Link(l) => {
                let svc = r.address.replica().map_or("", |rep| rep.service.as_str());
                let a = addrs.entry((svc, l.network.as_str())).or_default();
                a.extend(l.addresses.iter().map(|x| x.ip().to_string()));
            }
            _ => {}
        }
    }
    let mut services = Vec::new();
    let mut shares = Vec::new();
    let mut ports = Vec::new();
    let mut attachments = Vec::new();
    let mut keys: Vec<&String> = project.services.keys().collect();
    keys.sort();
    for key in keys {
        let svc = &project.services[key];
        let mut label = format!("{key} ×{}", svc.replicas());
        if let Some(v) = vips.get(key.as_str()) {
            label.push_str(&format!("\\nVIP {}", v.join(", ")));
        }
        match svc.network_mode.as_ref().map(|m| &m.value) {
            Some(NetworkMode::Host) => label.push_str("\\nhost network"),
            Some(NetworkMode::None) => label.push_str("\\nno network"),
            Some(NetworkMode::Service(t)) => {
                shares.push((key.clone(), t.clone(), "shares namespace".to_string()))
            }
            Some(NetworkMode::Container(t)) => {
                shares.push((key.clone(), t.clone(), "shares namespace".to_string()))
            }
            _ => {}
        }
        if let Some(line) = running.and_then(|r| processes(r, key)) {
            label.push_str(&format!("\\n{line}"));
        }
        services.push((key.clone(), label));
        for net in svc.networks.keys() {
            let a = addrs
                .get(&(key.as_str(), net.as_str()))
                .map(|v| v.join(" "))
                .unwrap_or_default();
            attachments.push((key.clone(), net.clone(), a));
        }
        for p in &svc.ports {
            let host = p.host_ip.map(|i| format!("{i}:")).unwrap_or_default();
            let published = p
                .published
                .map_or_else(|| "*".to_string(), |r| r.to_string());
            ports.push((
                key.clone(),
                format!("{host}{published}→{}/{}", p.target, p.protocol),
            ));
        }
    }
    networks.sort();
    let title = match running {
        Some(r) => format!("{} (up, {})", project.name, r.source),
        None => format!("{} (planned, not up)", project.name),
    };
    Topology {
        title,
        networks,
        services,
        attachments,
        shares,
        ports,
    }
}

/// `x-run: 2 running (healthy), 1 exited`: a service's processes counted by state and health.
fn processes(running: &Running, service: &str) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in running.processes.iter().filter(|p| p.service == service) {
        let what = match &p.health {
            Some(h) => format!("{} ({h})", p.state),
            None => p.state.clone(),
        };
        *counts.entry(what).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    (!parts.is_empty()).then(|| format!("x-run: {}", parts.join(", ")))
}

fn join(v: &[ipnetwork::IpNetwork]) -> String {
    v.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The topology of `desired`, with what runs when the project is up.
pub fn render(
    project: &Project,
    desired: &Desired,
    running: Option<&Running>,
    format: GraphFormat,
) -> String {
    let t = collect(project, desired, running);
    match format {
        GraphFormat::Mermaid => mermaid(&t),
        GraphFormat::Dot => dot(&t),
    }
}

fn mermaid(t: &Topology) -> String {
    let mut out = format!("---\ntitle: {}\n---\nflowchart LR\n", t.title);
    let br = |s: &str| s.replace("\\n", "<br/>");
    for (n, label) in &t.networks {
        let _ = writeln!(out, "  {}{{{{\"{}\"}}}}", id("net", n), br(label));
    }
    for (s, label) in &t.services {
        let _ = writeln!(out, "  {}[\"{}\"]", id("svc", s), br(label));
    }
    if !t.ports.is_empty() {
        out.push_str("  host((host))\n");
    }
    for (s, n, label) in &t.attachments {
        let _ = writeln!(
            out,
            "  {} ---|\"{}\"| {}",
            id("svc", s),
            label,
            id("net", n)
        );
    }
    for (s, target, label) in &t.shares {
        let _ = writeln!(
            out,
            "  {} -.->|{}| {}",
            id("svc", s),
            label,
            id("svc", target)
        );
    }
    for (s, label) in &t.ports {
        let _ = writeln!(out, "  host -->|\"{label}\"| {}", id("svc", s));
    }
    out
}

fn dot(t: &Topology) -> String {
    let mut out = format!(
        "graph netcompose {{\n  label=\"{}\";\n  labelloc=t;\n  fontname=\"sans-serif\";\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\"];\n",
        t.title
    );
    for (n, label) in &t.networks {
        let _ = writeln!(
            out,
            "  {} [shape=hexagon, label=\"{}\"];",
            id("net", n),
            label
        );
    }
    for (s, label) in &t.services {
        let _ = writeln!(out, "  {} [shape=box, label=\"{}\"];", id("svc", s), label);
    }
    if !t.ports.is_empty() {
        out.push_str("  host [shape=circle];\n");
    }
    for (s, n, label) in &t.attachments {
        let _ = writeln!(
            out,
            "  {} -- {} [label=\"{}\"];",
            id("svc", s),
            id("net", n),
            label
        );
    }
    for (s, target, label) in &t.shares {
        let _ = writeln!(
            out,
            "  {} -- {} [style=dashed, label=\"{}\"];",
            id("svc", s),
            id("svc", target),
            label
        );
    }
    for (s, label) in &t.ports {
        let _ = writeln!(out, "  host -- {} [label=\"{}\"];", id("svc", s), label);
    }
    out.push_str("}\n");
    out
}
