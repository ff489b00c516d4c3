//! Published ports: each `ports:` entry with a host port becomes a publication per address
//! family (both without a host address, as Docker publishes on 0.0.0.0 and ::; else the host
//! address's), balanced over the service's replicas of that family, reached through the first
//! non-internal bridge network of the service (in interface order).

use super::endpoints::{Endpoint, EndpointIndex};
use super::resource::{Bridge, Publish};
use crate::spec::{NetworkMode, Project};

pub fn publications(project: &Project, index: &EndpointIndex, bridges: &[&Bridge]) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut keys: Vec<&String> = project.services.keys().collect();
    keys.sort();
    for key in keys {
        let svc = &project.services[key];
        if matches!(
            svc.network_mode.as_ref().map(|m| &m.value),
            Some(NetworkMode::Host)
        ) {
            continue;
        }
        // Interface order: eth0 first.
        let mut mine: Vec<&Endpoint> = index.replica(key, 1).to_vec();
        mine.sort_by_key(|e| e.ifname.clone());
        let Some(bridge) = mine.iter().find_map(|e| {
            bridges
                .iter()
                .find(|b| b.network == e.network && !b.internal)
        }) else {
            continue;
        };
        for p in &svc.ports {
            let Some(published) = p.published else {
                continue;
            };
            // Without a host address Docker publishes on both families (0.0.0.0 and ::);
            // with one, on its family only.
            let families = match p.host_ip {
                Some(ip) => vec![ip.is_ipv6()],
                None => vec![false, true],
            };
            for v6 in families {
                let backends = index
                    .service(key)
                    .iter()
                    .filter(|e| e.network == bridge.network)
                    .flat_map(|e| e.ips())
                    .filter(|ip| ip.is_ipv6() == v6)
                    .collect::<Vec<_>>();
                if backends.is_empty() {
                    continue;
                }
                out.push(Publish {
                    service: key.clone(),
                    protocol: p.protocol,
                    host_ip: p.host_ip,
                    published,
                    target: p.target,
                    backends,
                    bridge: bridge.name.clone(),
                });
            }
        }
    }
    out
}
