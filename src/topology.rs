//! `netcompose graph`: the project's topology (networks with their subnets, services with their
//! replicas and VIPs, attachments with addresses, published ports) as Mermaid or Graphviz dot.

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

struct Topology {
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

fn collect(project: &Project, desired: &Desired) -> Topology {
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
    Topology {
        networks,
        services,
        attachments,
        shares,
        ports,
    }
}

fn join(v: &[ipnetwork::IpNetwork]) -> String {
    v.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render(project: &Project, desired: &Desired, format: GraphFormat) -> String {
    let t = collect(project, desired);
    match format {
        GraphFormat::Mermaid => mermaid(&t),
        GraphFormat::Dot => dot(&t),
    }
}

fn mermaid(t: &Topology) -> String {
    let mut out = String::from("flowchart LR\n");
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
    let mut out =
        String::from("graph netcompose {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
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
