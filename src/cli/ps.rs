//! `netcompose ps`: the project's replicas with their namespaces, interfaces, addresses, MACs
//! and VIPs: live when run as root, else as the state file records them.

use super::reconcile::{is_root, report, store, Terminal};
use super::Global;
use crate::model::endpoints::{replicas, Stack};
use crate::model::ports::Published;
use crate::model::{Resource, Spec};
use crate::project_name::ProjectName;
use miette::IntoDiagnostic;
use serde::Serialize;
use std::net::IpAddr;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Ps {
    project: String,
    source: &'static str,
    replicas: Vec<ReplicaView>,
    vips: Vec<VipView>,
    /// The project daemon (DNS resolver, x-run processes); live only (as root).
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<super::daemon::DaemonView>,
}

#[derive(Serialize)]
struct ReplicaView {
    service: String,
    replica: u32,
    /// `own`, `host`, or `shared:<namespace>`.
    mode: String,
    namespace: Option<String>,
    running: bool,
    /// The health of its x-run process (`starting`, `healthy`, `unhealthy`), when it has a
    /// healthcheck and runs; live only.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'static str>,
    interfaces: Vec<InterfaceView>,
    /// Published ports as `docker compose ps` prints them: `0.0.0.0:8080->80/tcp, ...`.
    ports: String,
    /// The same, one entry per port (docker compose's `Publishers`).
    publishers: Vec<PublisherView>,
}

#[derive(Serialize)]
struct PublisherView {
    url: String,
    target_port: u16,
    published_port: u16,
    protocol: String,
}

#[derive(Serialize)]
struct InterfaceView {
    name: String,
    network: String,
    addresses: Vec<String>,
    mac: String,
}

#[derive(Serialize)]
struct VipView {
    service: String,
    network: String,
    /// The first of `addresses` (IPv4 on a dual-stack network), as before IPv6 VIPs.
    address: String,
    addresses: Vec<String>,
    backends: Vec<String>,
}

pub fn run(global: &Global, args: &PsArgs) -> miette::Result<ExitCode> {
    if super::reconcile::cluster().is_some() {
        let project = match global.named_project()? {
            Some(p) => p,
            None => ProjectName::new(super::checked(global)?.project.name)?,
        };
        return super::agent::ps(&project, args.json);
    }
    let checked = super::as_built(global)?;
    let project = &checked.project;
    let name = ProjectName::new(project.name.clone())?;
    let live = is_root();
    let resources =
        crate::reconcile::resources(&store(), &name, live, &Terminal::new()).map_err(report)?;
    let source = if live { "live" } else { "state" };
    // An unreadable state was reported by `resources` above; ephemeral ports are then unknown.
    let alloc = crate::reconcile::allocations(&store(), &name).unwrap_or_default();
    let published = crate::model::ports::published(project, &alloc);
    let mut view = view(project, &resources, &published, source);
    view.daemon = is_root().then(|| super::daemon::view(&name));
    if let Some(d) = &view.daemon {
        for r in &mut view.replicas {
            let name = format!("{}-{}", r.service, r.replica);
            r.health = d
                .processes
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.health.as_ref())
                .map(|h| h.status.as_str());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view).into_diagnostic()?);
    } else {
        print!("{}", table(&view));
        if let Some(d) = &view.daemon {
            print!("{}", super::daemon::render(d));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn view(
    project: &crate::spec::Project,
    resources: &[Resource],
    published: &[Published],
    source: &'static str,
) -> Ps {
    let running: Vec<&str> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Namespace(n) => Some(n.name.as_str()),
            _ => None,
        })
        .collect();
    let replicas = replicas(project)
        .into_iter()
        .map(|rep| {
            let interfaces = resources
                .iter()
                .filter_map(|r| match &r.spec {
                    Spec::Link(l) if rep.netns.as_deref() == Some(l.namespace.as_str()) => {
                        Some(InterfaceView {
                            name: l.ifname.clone(),
                            network: l.network.clone(),
                            addresses: l.addresses.iter().map(|a| a.to_string()).collect(),
                            mac: l.mac.clone(),
                        })
                    }
                    _ => None,
                })
                .collect();
            let mode = match &rep.stack {
                Stack::Own => "own".to_string(),
                Stack::Host => "host".to_string(),
                Stack::Shared(ns) => format!("shared:{ns}"),
            };
            let is_running = rep.stack == Stack::Host
                || rep.netns.as_deref().is_some_and(|n| running.contains(&n));
            // Every replica answers on its service's ports: connections are balanced over them.
            let mine: Vec<&Published> = published
                .iter()
                .filter(|p| p.service == rep.service && rep.stack != Stack::Host)
                .collect();
            ReplicaView {
                ports: mine
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                publishers: mine
                    .iter()
                    .map(|p| PublisherView {
                        url: p
                            .host_ip
                            .map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string()),
                        target_port: p.target,
                        published_port: p.host_port,
                        protocol: p.protocol.to_string(),
                    })
                    .collect(),
                service: rep.service,
                replica: rep.index,
                mode,
                namespace: rep.netns,
                running: is_running,
                health: None,
                interfaces,
            }
        })
        .collect();
    let vips = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Vip(v) => Some(VipView {
                service: v.service.clone(),
                network: v.network.clone(),
                address: v
                    .addresses
                    .first()
                    .map(IpAddr::to_string)
                    .unwrap_or_default(),
                addresses: v.addresses.iter().map(IpAddr::to_string).collect(),
                backends: v.backends.iter().map(|b| b.to_string()).collect(),
            }),
            _ => None,
        })
        .collect();
    Ps {
        project: project.name.clone(),
        source,
        replicas,
        vips,
        daemon: None,
    }
}

fn table(ps: &Ps) -> String {
    let mut rows = vec![[
        "SERVICE",
        "#",
        "NAMESPACE",
        "STATE",
        "IFACE",
        "NETWORK",
        "ADDRESSES",
        "MAC",
        "PORTS",
    ]
    .map(String::from)
    .to_vec()];
    for r in &ps.replicas {
        let state = match (r.running, r.health) {
            (true, Some(h)) => format!("up ({h})"),
            (true, None) => "up".into(),
            (false, _) => "down".into(),
        };
        let ns = match r.mode.as_str() {
            "own" => r.namespace.clone().unwrap_or_default(),
            "host" => "(host)".into(),
            other => other.to_string(),
        };
        let first = [r.service.clone(), r.replica.to_string(), ns, state];
        let ports = if r.ports.is_empty() {
            "-".to_string()
        } else {
            r.ports.clone()
        };
        if r.interfaces.is_empty() {
            rows.push(
                first
                    .iter()
                    .cloned()
                    .chain(["-", "-", "-", "-"].map(String::from))
                    .chain([ports.clone()])
                    .collect(),
            );
        }
        for (i, iface) in r.interfaces.iter().enumerate() {
            let lead: Vec<String> = if i == 0 {
                first.to_vec()
            } else {
                vec![String::new(); 4]
            };
            rows.push(
                lead.into_iter()
                    .chain([
                        iface.name.clone(),
                        iface.network.clone(),
                        iface.addresses.join(","),
                        iface.mac.clone(),
                        if i == 0 { ports.clone() } else { String::new() },
                    ])
                    .collect(),
            );
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for v in &ps.vips {
        out.push_str(&format!(
            "VIP {} on {}: {} → {}\n",
            v.service,
            v.network,
            v.addresses.join(", "),
            v.backends.join(", ")
        ));
    }
    if ps.source == "state" {
        out.push_str("(from the state file; run as root for live data)\n");
    }
    out
}
