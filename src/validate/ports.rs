//! Published ports: one host address, port and protocol belongs to one publication; a service
//! reachable only on internal networks publishes nothing (a warning, as Docker is silent).

use crate::diag::{same_file, ConfigError, Diagnostics};
use crate::model::ports::internal_only;
use crate::spec::{Port, Project};

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    let mut seen: Vec<&Port> = Vec::new();
    for svc in project.services.values() {
        for port in &svc.ports {
            if let Some(first) = seen.iter().find(|p| clash(p, port)) {
                diags.push(ConfigError::PortConflict {
                    port: format!(
                        "{}/{}",
                        port.published.map(|p| p.to_string()).unwrap_or_default(),
                        port.protocol
                    ),
                    at: port.span,
                    first_at: same_file(port.span, first.span),
                });
            }
            seen.push(port);
        }
        // Docker publishes nothing for such a container and says nothing; a warning keeps
        // files such as Docker's own fixtures loading while telling the user why no port opens.
        if internal_only(project, svc) && !svc.ports.is_empty() {
            diags.warn(format!(
                "service `{}` publishes ports but is attached only to internal networks: nothing is published (as Docker does)",
                svc.key.value
            ));
        }
    }
}

/// Two publications collide when protocol, host address (or a wildcard) and port ranges meet.
fn clash(a: &Port, b: &Port) -> bool {
    let (Some(pa), Some(pb)) = (a.published, b.published) else {
        return false;
    };
    let ip_meets = match (a.host_ip, b.host_ip) {
        (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        (Some(x), None) | (None, Some(x)) => x.is_ipv4() || x.is_unspecified(),
        (None, None) => true,
    };
    a.protocol == b.protocol && ip_meets && pa.start <= pb.end && pb.start <= pa.end
}

/// Published host ports that a socket of the host already holds (a plan-time check: it reads
/// the machine, so the CLI calls it with what it found).
pub fn in_use(project: &Project, listening: &[crate::model::Listening], diags: &mut Diagnostics) {
    for svc in project
        .services
        .values()
        .filter(|s| !internal_only(project, s))
    {
        for port in &svc.ports {
            let Some(range) = port.published else {
                continue;
            };
            let taken = listening.iter().find(|l| {
                let ip_meets = match port.host_ip {
                    Some(ip) if !ip.is_unspecified() => l.addr == ip || l.addr.is_unspecified(),
                    _ => true,
                };
                l.protocol == port.protocol
                    && ip_meets
                    && range.start <= l.port
                    && l.port <= range.end
            });
            if let Some(l) = taken {
                diags.push(ConfigError::Invalid {
                    message: format!(
                        "host port {}/{} is already in use on this machine ({}:{})",
                        l.port, l.protocol, l.addr, l.port
                    ),
                    hint: "a process of the host holds it; pick another published port".into(),
                    at: port.span,
                });
            }
        }
    }
}
