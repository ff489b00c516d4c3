//! `x-qos` with real packets (issue 12): an attachment shaped to 10 mbit measures within 15 %
//! of it in each direction (iperf3 between two replicas) and an unshaped one does not; `loss:
//! 20%` drops 10–30 % of 1,000 pings; a qdisc deleted by hand with `tc` is drift that `plan`
//! shows and `up` repairs. Each test has its own sandbox, which takes everything with it when
//! the test ends or panics.

mod common;

use common::project::Project;
use common::sandbox::{require_root, Sandbox};
use std::time::{Duration, Instant};

const SHAPED: &str = "
services:
  server:
    networks: [lab]
  shaped:
    networks:
      lab:
        x-qos:
          egress: {rate: 10mbit}
          ingress: {rate: 10mbit}
  free:
    networks: [lab]
networks:
  lab: {}
";

const LIMIT: f64 = 10_000_000.0;

/// A process killed and reaped when the test ends, even by a panic.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start iperf3's server in a replica; it serves one test after another.
fn iperf_server(p: &Project, service: &str) -> Running {
    let ns = p.ns(service, 1);
    Running(p.sb.spawn(&["ip", "netns", "exec", &ns, "iperf3", "-s", "-p", "5201"]))
}

/// Bits per second that arrived in a 3-second iperf3 run from `from` to `server`
/// (`reverse`: the server sends).
fn iperf(p: &Project, from: &str, server: &str, reverse: bool) -> f64 {
    let ns = p.ns(from, 1);
    let mut args = vec![
        "ip", "netns", "exec", &ns, "iperf3", "-c", server, "-p", "5201", "-t", "3", "-J",
    ];
    if reverse {
        args.push("-R");
    }
    // The server may still be starting: retry while it refuses.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = p.sb.run(&args);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps;
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 from {from} to {server} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn within(measured: f64, what: &str) {
    eprintln!("{what}: {:.2} Mbit/s", measured / 1e6);
    let ratio = measured / LIMIT;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{what}: {:.2} Mbit/s is not within 15 % of 10 Mbit/s",
        measured / 1e6
    );
}

#[test]
fn a_shaped_link_carries_its_rate_each_way_and_an_unshaped_one_more() {
    require_root("a_shaped_link_carries_its_rate_each_way_and_an_unshaped_one_more");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "qosrate", SHAPED);
    p.up();
    let server = p.addr("server", 1, "lab");
    let _iperf = iperf_server(&p, "server");
    within(
        iperf(&p, "shaped", &server, false),
        "egress (shaped → server)",
    );
    within(
        iperf(&p, "shaped", &server, true),
        "ingress (server → shaped)",
    );
    let free = iperf(&p, "free", &server, false);
    eprintln!("unshaped (free → server): {:.2} Mbit/s", free / 1e6);
    assert!(
        free > 5.0 * LIMIT,
        "the unshaped link carried only {:.2} Mbit/s",
        free / 1e6
    );
}

#[test]
fn loss_drops_about_its_share_of_pings() {
    require_root("loss_drops_about_its_share_of_pings");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "qosloss",
        "
services:
  target:
    networks: [lab]
  lossy:
    networks: [lab]
    x-qos: {loss: 20%}
networks:
  lab: {}
",
    );
    p.up();
    let target = p.addr("target", 1, "lab");
    let ns = p.ns("lossy", 1);
    let out = sb.run(&[
        "ip", "netns", "exec", &ns, "ping", "-q", "-n", "-c", "1000", "-i", "0.002", "-W", "1",
        &target,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lost: f64 = text
        .split(',')
        .find(|part| part.contains("packet loss"))
        .and_then(|part| part.trim().split('%').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loss figure in ping's output:\n{text}"));
    assert!(
        (10.0..=30.0).contains(&lost),
        "{lost}% of the pings were lost:\n{text}"
    );
}

#[test]
fn a_qdisc_deleted_by_hand_is_drift_and_up_repairs_it() {
    require_root("a_qdisc_deleted_by_hand_is_drift_and_up_repairs_it");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "qosdrift", SHAPED);
    p.up();
    let ns = p.ns("shaped", 1);
    let show = || {
        let out = sb.run(&[
            "ip", "netns", "exec", &ns, "tc", "qdisc", "show", "dev", "eth0",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(show().contains("qdisc htb 1: root"), "{}", show());
    assert_eq!(
        p.nc(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );

    sb.run_ok(&[
        "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
    ]);
    assert!(!show().contains("htb"), "{}", show());
    let plan = p.nc(&["plan", "--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(text.contains("service.shaped[1].link.lab"), "{text}");

    p.up();
    assert!(show().contains("qdisc htb 1: root"), "{}", show());
    assert_eq!(
        p.nc(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
    p.nc_ok(&["down"]);
}
