//! `netcompose port SERVICE PRIVATE_PORT[/PROTO]`: the host address a service's port is
//! published on, as `docker compose port` prints it. Replicas share their service's published
//! ports (connections are balanced over them), so every `--index` has the same answer.

use super::reconcile::{is_root, report, store};
use super::Global;
use crate::model::ports::Published;
use crate::spec::Protocol;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  netcompose port web 80\n  netcompose port dns 53/udp\n  curl http://$(netcompose port web 80)/"
)]
pub struct PortArgs {
    /// The service.
    pub service: String,
    /// The port inside the replicas, optionally with its protocol: 80, 53/udp.
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    pub private_port: String,
    /// Which replica (from 1).
    #[arg(long, default_value_t = 1)]
    pub index: u32,
}

pub fn run(global: &Global, args: &PortArgs) -> miette::Result<ExitCode> {
    let (port, protocol) = parse_private(&args.private_port)?;
    let checked = super::as_built(global)?;
    let project = &checked.project;
    let svc = super::service(project, &args.service)?;
    if args.index == 0 || args.index > svc.replicas() {
        return Err(miette::miette!(
            "service `{}` has no replica {}",
            args.service,
            args.index
        ));
    }
    let name = crate::project_name::ProjectName::new(project.name.clone())?;
    // As root the state says whether the project is up, as Compose's `port` needs a running
    // container; without it (not root) explicit ports are still known, ephemeral ones not.
    let alloc = if is_root() {
        crate::reconcile::recorded_allocations(&store(), &name)
            .map_err(report)?
            .ok_or_else(|| {
                miette::miette!(
                    help = "bring it up first: `netcompose up`",
                    "project `{name}` is not up: service `{}` publishes nothing on this machine",
                    args.service
                )
            })?
    } else {
        crate::reconcile::allocations(&store(), &name).unwrap_or_else(|e| {
            eprintln!("warning: {e}");
            Default::default()
        })
    };
    let all = crate::model::ports::published(project, &alloc);
    match published(&all, &args.service, port, protocol) {
        Some(addr) => {
            println!("{addr}");
            Ok(ExitCode::SUCCESS)
        }
        None if svc
            .ports
            .iter()
            .any(|p| p.published.is_none() && p.protocol == protocol && p.target.start <= port && port <= p.target.end) =>
        {
            Err(miette::miette!(
                help = "its host port is picked by `up` and recorded in the state (root only): run `netcompose up`, as root",
                "port {port}/{protocol} of service `{}` has no host port yet",
                args.service
            ))
        }
        None => Err(miette::miette!(
            help = "publish it under the service's `ports:` (HOST:CONTAINER, or CONTAINER for an ephemeral host port)",
            "port {port}/{protocol} of service `{}` is not published",
            args.service
        )),
    }
}

/// `80` or `80/udp`.
fn parse_private(text: &str) -> miette::Result<(u16, Protocol)> {
    let (port, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => {
            return Err(miette::miette!(
                "unknown protocol `{other}` in `{text}`: tcp, udp or sctp"
            ))
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| miette::miette!("`{text}` is not a port (1-65535, then /tcp or /udp)"))?;
    Ok((port, protocol))
}

/// The host address of the first publication of `port`, as Docker prints it (`0.0.0.0:8080`
/// when no host IP is given, `[::1]:8080` for IPv6).
fn published(
    all: &[Published],
    service: &str,
    port: u16,
    protocol: Protocol,
) -> Option<SocketAddr> {
    all.iter()
        .find(|p| p.service == service && p.target == port && p.protocol == protocol)
        .map(|p| {
            let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            SocketAddr::new(ip, p.host_port)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Port, PortRange};

    fn entry(published: Option<(u16, u16)>, target: (u16, u16), ip: Option<&str>) -> Port {
        Port {
            span: Default::default(),
            target: PortRange {
                start: target.0,
                end: target.1,
            },
            published: published.map(|(start, end)| PortRange { start, end }),
            host_ip: ip.map(|i| i.parse().unwrap()),
            protocol: Protocol::Tcp,
            mode: "ingress".into(),
            name: None,
            app_protocol: None,
        }
    }

    #[test]
    fn private_ports() {
        assert_eq!(parse_private("80").unwrap(), (80, Protocol::Tcp));
        assert_eq!(parse_private("53/udp").unwrap(), (53, Protocol::Udp));
        for bad in ["0", "http", "80/icmp", "70000", "", "/tcp"] {
            assert!(parse_private(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_host_address_as_docker_prints_it() {
        let ports = vec![
            entry(None, (9000, 9000), None),
            entry(Some((8080, 8080)), (80, 80), None),
            entry(Some((9443, 9444)), (443, 444), Some("127.0.0.1")),
            entry(Some((8053, 8053)), (53, 53), Some("::1")),
            entry(None, (7000, 7001), None),
        ];
        let mut project = crate::spec::Project::default();
        project.services.insert(
            "web".into(),
            crate::spec::Service {
                ports,
                ..Default::default()
            },
        );
        let mut alloc = crate::ipam::Allocations::default();
        alloc.ports.insert("web/7000/tcp".into(), 32768);
        let all = crate::model::ports::published(&project, &alloc);
        let show = |port, proto| published(&all, "web", port, proto).map(|a| a.to_string());
        assert_eq!(show(80, Protocol::Tcp).as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(show(444, Protocol::Tcp).as_deref(), Some("127.0.0.1:9444"));
        assert_eq!(show(53, Protocol::Tcp).as_deref(), Some("[::1]:8053"));
        assert_eq!(show(7000, Protocol::Tcp).as_deref(), Some("0.0.0.0:32768"));
        assert_eq!(show(7001, Protocol::Tcp), None, "not allocated yet");
        assert_eq!(show(80, Protocol::Udp), None, "published for tcp only");
        assert_eq!(show(81, Protocol::Tcp), None);
        assert_eq!(
            all.iter().map(|p| p.to_string()).collect::<Vec<_>>()[..3],
            [
                "0.0.0.0:8080->80/tcp",
                "127.0.0.1:9443->443/tcp",
                "127.0.0.1:9444->444/tcp"
            ]
        );
    }
}
