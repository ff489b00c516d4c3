//! A [`Sample`] in the Prometheus text exposition format (version 0.0.4): one HELP and one
//! TYPE line per metric family, then its samples. Counters end in `_total`, sizes are in
//! bytes, and label values are escaped as the format says (backslash, quote, newline).

use super::Sample;
use std::fmt::Write;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, value: impl Into<f64>) {
        self.samples.push((labels, value.into()));
    }
}

/// The sample as a scrape.
pub fn render(project: &str, sample: &Sample) -> String {
    let link = |name, help| Family::new(name, "counter", help);
    let mut families = [
        link(
            "netcompose_link_receive_bytes_total",
            "Bytes received by a replica on one attachment.",
        ),
        link(
            "netcompose_link_transmit_bytes_total",
            "Bytes sent by a replica on one attachment.",
        ),
        link(
            "netcompose_link_receive_packets_total",
            "Packets received by a replica on one attachment.",
        ),
        link(
            "netcompose_link_transmit_packets_total",
            "Packets sent by a replica on one attachment.",
        ),
        link(
            "netcompose_link_receive_drops_total",
            "Packets dropped on receive by a replica's interface.",
        ),
        link(
            "netcompose_link_transmit_drops_total",
            "Packets dropped on transmit by a replica's interface.",
        ),
        Family::new(
            "netcompose_link_up",
            "gauge",
            "Whether a replica's interface is administratively up (0 during a link drill of a macvlan).",
        ),
    ];
    let mut policy = Family::new(
        "netcompose_policy_dropped_packets_total",
        "counter",
        "Packets dropped by a replica's x-policy denies, per direction.",
    );
    let mut dns = Family::new(
        "netcompose_dns_queries_total",
        "counter",
        "DNS queries the embedded resolver answered itself or forwarded upstream, per replica.",
    );
    let mut vips = Family::new(
        "netcompose_vip_connections",
        "gauge",
        "Connections to a service's VIP tracked per backend, summed over the client replicas.",
    );
    for r in &sample.replicas {
        let who = || {
            vec![
                ("project", project.to_string()),
                ("service", r.service.clone()),
                ("replica", r.replica.to_string()),
            ]
        };
        for l in &r.links {
            let mut labels = who();
            labels.push(("network", l.network.clone()));
            let values = [
                l.rx_bytes,
                l.tx_bytes,
                l.rx_packets,
                l.tx_packets,
                l.rx_dropped,
                l.tx_dropped,
                u64::from(l.up),
            ];
            for (f, v) in families.iter_mut().zip(values) {
                f.push(labels.clone(), v as f64);
            }
        }
        for p in &r.policy {
            let mut labels = who();
            labels.push(("direction", p.direction.clone()));
            policy.push(labels, p.packets as f64);
        }
        for (result, v) in [("answered", r.dns.answered), ("forwarded", r.dns.forwarded)] {
            let mut labels = who();
            labels.push(("result", result.to_string()));
            dns.push(labels, v as f64);
        }
    }
    for v in &sample.vips {
        for b in &v.backends {
            vips.push(
                vec![
                    ("project", project.to_string()),
                    ("service", v.service.clone()),
                    ("network", v.network.clone()),
                    ("vip", v.vip.to_string()),
                    ("backend", b.backend.to_string()),
                ],
                b.connections as f64,
            );
        }
    }
    let mut out = String::new();
    for f in families.iter().chain([&policy, &dns, &vips]) {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value) in &f.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", f.name, labels.join(","));
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
