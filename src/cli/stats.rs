//! `netcompose stats [SERVICE...] [--json] [--watch]`: the project's live numbers, taken by
//! its daemon (see `daemon::stats`): per replica and attachment the bytes, packets and drops
//! with their rates, per VIP the connections of each backend, per replica the packets its
//! policies dropped and the DNS queries answered and forwarded.
//!
//! Rates come from two samples `--interval` apart (as `docker stats`, the one-shot form waits
//! one interval; `--interval 0` prints the counters alone, at once). `--watch` redraws the
//! table in place on a terminal, as `docker stats` does; piped, it prints each sample after
//! the last (with `--json`, one JSON document per line).

use super::Global;
use crate::daemon::stats::{rate, LinkCounters, Sample};
use crate::daemon::{self, Request};
use crate::project_name::ProjectName;
use miette::IntoDiagnostic;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo netcompose stats\n  sudo netcompose stats web --json\n  sudo netcompose stats --watch --interval 2"
)]
pub struct StatsArgs {
    /// Only these services.
    pub services: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep sampling; on a terminal, redraw in place.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between the two samples that rates come from (0: counters only, at once).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

pub fn run(global: &Global, args: &StatsArgs) -> miette::Result<ExitCode> {
    if !args.interval.is_finite() || args.interval < 0.0 {
        return Err(miette::miette!(
            help = "a number of seconds, such as 1 or 0.5",
            "--interval must be 0 or more"
        ));
    }
    let name = super::procs::project(global, &args.services, "stats")?;
    let every = Duration::from_secs_f64(args.interval);
    let mut before = if args.interval > 0.0 {
        let first = sample(&name, &args.services)?;
        std::thread::sleep(every);
        Some(first)
    } else {
        None
    };
    let redraw = args.watch && std::io::stdout().is_terminal() && super::progress::wanted(true);
    loop {
        let now = sample(&name, &args.services)?;
        let text = if args.json {
            let mut t = serde_json::to_string(&to_json(before.as_ref(), &now)).into_diagnostic()?;
            t.push('\n');
            t
        } else {
            table(before.as_ref(), &now)
        };
        let mut out = std::io::stdout().lock();
        if redraw {
            // Home and clear, then the table: the terminal shows only the latest sample.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        drop(out);
        if !args.watch {
            for e in &now.errors {
                eprintln!("warning: {e}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(every.max(Duration::from_millis(100)));
        before = Some(now);
    }
}

/// A sample of the services named (all when none is).
fn sample(name: &ProjectName, services: &[String]) -> miette::Result<Sample> {
    let reply =
        daemon::request(name, &Request::Stats, Duration::from_secs(30)).into_diagnostic()?;
    let Some(mut s) = reply.stats else {
        return Err(miette::miette!(
            help = "run `netcompose up` again to start a daemon of this version",
            "the daemon of project {name} does not serve stats"
        ));
    };
    if !services.is_empty() {
        s.replicas.retain(|r| services.contains(&r.service));
        s.vips.retain(|v| services.contains(&v.service));
    }
    Ok(s)
}

/// Milliseconds between the samples, and the earlier reading of a link (same replica, same
/// network).
fn earlier<'a>(
    before: Option<&'a Sample>,
    now: &Sample,
    service: &str,
    replica: u32,
    network: &str,
) -> Option<(u64, &'a LinkCounters)> {
    let b = before?;
    let link = b
        .replicas
        .iter()
        .find(|r| r.service == service && r.replica == replica)?
        .links
        .iter()
        .find(|l| l.network == network)?;
    Some((now.taken_ms.saturating_sub(b.taken_ms), link))
}

/// The sample with each link's rates (null without an earlier sample).
fn to_json(before: Option<&Sample>, now: &Sample) -> Value {
    let mut v = serde_json::to_value(now).unwrap_or(Value::Null);
    if let Some(reps) = v.get_mut("replicas").and_then(Value::as_array_mut) {
        for (rv, r) in reps.iter_mut().zip(&now.replicas) {
            let Some(links) = rv.get_mut("links").and_then(Value::as_array_mut) else {
                continue;
            };
            for (lv, l) in links.iter_mut().zip(&r.links) {
                let e = earlier(before, now, &r.service, r.replica, &l.network);
                let per_sec =
                    |f: fn(&LinkCounters) -> u64| e.and_then(|(ms, b)| rate(f(b), f(l), ms));
                lv["rx_bytes_per_sec"] = json!(per_sec(|l| l.rx_bytes));
                lv["tx_bytes_per_sec"] = json!(per_sec(|l| l.tx_bytes));
                lv["rx_packets_per_sec"] = json!(per_sec(|l| l.rx_packets));
                lv["tx_packets_per_sec"] = json!(per_sec(|l| l.tx_packets));
            }
        }
    }
    if let Some(b) = before {
        v["interval_ms"] = json!(now.taken_ms.saturating_sub(b.taken_ms));
    }
    v
}

/// The three tables: links, replicas, VIPs.
fn table(before: Option<&Sample>, now: &Sample) -> String {
    let mut links = vec![[
        "REPLICA", "NETWORK", "IFACE", "STATE", "RX", "TX", "RX/s", "TX/s", "RX PKTS", "TX PKTS",
        "DROPS",
    ]
    .map(String::from)
    .to_vec()];
    let mut replicas = vec![["REPLICA", "DNS ANSWERED", "DNS FORWARDED", "POLICY DROPS"]
        .map(String::from)
        .to_vec()];
    for r in &now.replicas {
        let who = format!("{}-{}", r.service, r.replica);
        for l in &r.links {
            let e = earlier(before, now, &r.service, r.replica, &l.network);
            let per_sec = |f: fn(&LinkCounters) -> u64| {
                e.and_then(|(ms, b)| rate(f(b), f(l), ms))
                    .map_or("-".to_string(), |r| format!("{}/s", bytes(r as u64)))
            };
            links.push(vec![
                who.clone(),
                l.network.clone(),
                l.ifname.clone(),
                if l.up { "up" } else { "down" }.to_string(),
                bytes(l.rx_bytes),
                bytes(l.tx_bytes),
                per_sec(|l| l.rx_bytes),
                per_sec(|l| l.tx_bytes),
                l.rx_packets.to_string(),
                l.tx_packets.to_string(),
                (l.rx_dropped + l.tx_dropped).to_string(),
            ]);
        }
        let drops: Vec<String> = r
            .policy
            .iter()
            .map(|p| format!("{} {}", p.direction, p.packets))
            .collect();
        replicas.push(vec![
            who,
            r.dns.answered.to_string(),
            r.dns.forwarded.to_string(),
            if drops.is_empty() {
                "-".to_string()
            } else {
                drops.join(", ")
            },
        ]);
    }
    let mut out = columns(&links);
    out.push('\n');
    out.push_str(&columns(&replicas));
    if !now.vips.is_empty() {
        let mut vips = vec![["SERVICE", "NETWORK", "VIP", "BACKEND", "CONNECTIONS"]
            .map(String::from)
            .to_vec()];
        for v in &now.vips {
            for b in &v.backends {
                vips.push(vec![
                    v.service.clone(),
                    v.network.clone(),
                    v.vip.to_string(),
                    b.backend.to_string(),
                    b.connections.to_string(),
                ]);
            }
        }
        out.push('\n');
        out.push_str(&columns(&vips));
    }
    out
}

/// Rows padded into columns.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as `docker stats` shows them (powers of 1000).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::stats::{DnsCounts, ReplicaStats};

    fn sample(at: u64, rx: u64) -> Sample {
        Sample {
            taken_ms: at,
            replicas: vec![ReplicaStats {
                service: "web".into(),
                replica: 1,
                namespace: "demo-web-1".into(),
                links: vec![LinkCounters {
                    network: "front".into(),
                    ifname: "eth0".into(),
                    up: true,
                    rx_bytes: rx,
                    ..LinkCounters::default()
                }],
                policy: vec![],
                dns: DnsCounts::default(),
            }],
            vips: vec![],
            errors: vec![],
        }
    }

    #[test]
    fn rates_come_from_the_earlier_sample() {
        let v = to_json(Some(&sample(1000, 500)), &sample(3000, 4500));
        assert_eq!(v["interval_ms"], 2000);
        assert_eq!(v["replicas"][0]["links"][0]["rx_bytes_per_sec"], 2000.0);
        let v = to_json(None, &sample(3000, 4500));
        assert_eq!(
            v["replicas"][0]["links"][0]["rx_bytes_per_sec"],
            Value::Null
        );
        let t = table(Some(&sample(1000, 500)), &sample(3000, 4500));
        assert!(
            t.contains("web-1     front     eth0    up      4.500kB"),
            "{t}"
        );
        assert!(t.contains("2.000kB/s"), "{t}");
    }

    #[test]
    fn bytes_read_as_docker_shows_them() {
        assert_eq!(bytes(999), "999B");
        assert_eq!(bytes(1_500_000), "1.500MB");
    }
}
