//! The project daemon against the real kernel (issue 5): `up` starts it and hands it changes
//! without a restart and without losing a query; `down` stops it and its processes; a daemon
//! killed with SIGKILL is restarted by the next `up`; `x-run` processes run in their replica's
//! namespace, log with a prefix, restart as `restart:` says, restart when their command
//! changes, and are gone after `down`.
//!
//! Every test builds its own sandbox host; needs root (else it fails, saying so).

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::{require_root, wait_for};
use lab::{text, Lab};
use std::io::Read;
use std::time::Duration;

fn scale_yaml(n: u32) -> String {
    format!(
        r#"
name: ds
networks:
  front:
    ipam: {{config: [{{subnet: 10.73.1.0/24}}]}}
services:
  web:
    deploy: {{replicas: {n}}}
    networks: [front]
  client:
    networks: [front]
"#
    )
}

#[test]
fn scaling_changes_tasks_without_a_restart_or_a_lost_query() {
    require_root("scaling_changes_tasks_without_a_restart_or_a_lost_query");
    let lab = Lab::new("nc-dscale-");
    let f = lab.file("compose.yaml", &scale_yaml(2));
    lab.nc_ok(&f, &["up"]);
    let pid = lab.daemon_pid("ds").expect("a daemon pid");
    assert_eq!(lab.addrs("ds-client-1", "tasks.web").len(), 2);

    // A query loop runs in the client while the service scales 2 → 4 → 1.
    let script = lab.file("query_loop.py", include_str!("dns/query_loop.py"));
    let stop = lab.dir.path().join("stop");
    let mut looper = lab
        .sb
        .command(
            "ip",
            &[
                "netns",
                "exec",
                "ds-client-1",
                "python3",
                script.to_str().unwrap(),
                "tasks.web",
                stop.to_str().unwrap(),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the query loop");
    std::thread::sleep(Duration::from_millis(1000));
    for n in [4, 1] {
        std::fs::write(&f, scale_yaml(n)).unwrap();
        let out = lab.nc_ok(&f, &["up"]);
        assert!(out.contains("Daemon: updated"), "{out}");
        assert_eq!(lab.addrs("ds-client-1", "tasks.web").len(), n as usize);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::fs::write(&stop, "").unwrap();
    let mut summary = String::new();
    looper
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut summary)
        .unwrap();
    let _ = looper.wait();
    let s: serde_json::Value = serde_json::from_str(summary.trim()).expect(&summary);
    eprintln!("query loop: {s}");
    assert_eq!(s["lost"], 0, "queries lost while scaling: {s}");
    assert!(s["sent"].as_u64().unwrap() > 100, "{s}");
    for n in ["1", "2", "4"] {
        assert!(
            s["sizes"][n].as_u64().unwrap_or(0) > 0,
            "never saw {n} replicas: {s}"
        );
    }
    assert_eq!(lab.daemon_pid("ds"), Some(pid), "the daemon was restarted");
    assert!(lab.alive(pid));
    // The removed replicas' names are gone, the new ones resolve.
    assert!(lab.addrs("ds-client-1", "ds-web-3").is_empty());
    assert_eq!(lab.addrs("ds-client-1", "ds-web-1").len(), 1);
    lab.nc_ok(&f, &["down"]);
    assert!(!lab.alive(pid), "down left the daemon running");
}

const RUN: &str = r#"
name: dr
networks:
  front:
    ipam: {config: [{subnet: 10.74.1.0/24}]}
services:
  echo:
    deploy: {replicas: 2}
    networks: [front]
    x-run: "echo hello from $(hostname -I) in $(cat /etc/resolv.conf | head -1); exec sleep 600"
  flaky:
    networks: [front]
    restart: on-failure:2
    x-run: [sh, -c, "echo try; exit 3"]
  once:
    networks: [front]
    restart: "no"
    x-run: [sh, -c, "echo once; exit 1"]
  forever:
    networks: [front]
    restart: always
    x-run: [sh, -c, "echo round; exit 0"]
"#;

/// `netcompose logs` output.
fn logs(lab: &Lab, f: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&lab.nc(f, &all).stdout).into_owned()
}

/// Pids of processes in the sandbox whose command line contains `needle`.
fn pids_of(lab: &Lab, needle: &str) -> Vec<u32> {
    let out = lab.sh(&["pgrep", "-f", needle]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|pid| lab.alive(*pid))
        .collect()
}

#[test]
fn x_run_processes_run_log_restart_and_stop() {
    require_root("x_run_processes_run_log_restart_and_stop");
    let lab = Lab::new("nc-drun-");
    let f = lab.file("compose.yaml", RUN);
    lab.nc_ok(&f, &["up"]);

    // Each replica runs once, in its own namespace, with its resolv.conf.
    assert!(
        wait_for(Duration::from_secs(10), || logs(&lab, &f, &["echo"])
            .matches("hello from")
            .count()
            == 2),
        "{}",
        logs(&lab, &f, &[])
    );
    let echo = logs(&lab, &f, &["echo"]);
    for line in echo.lines().filter(|l| l.contains("hello from")) {
        assert!(
            line.starts_with("echo-1 | ") || line.starts_with("echo-2 | "),
            "{line}"
        );
        assert!(line.contains("10.74.1."), "not in its namespace: {line}");
        assert!(
            line.contains("nameserver 127.0.0.11"),
            "not with its /etc/netns files: {line}"
        );
    }
    assert!(!echo.contains("flaky"), "the service filter: {echo}");
    // on-failure:2 → three runs; no → one; always → keeps going.
    assert!(
        wait_for(Duration::from_secs(10), || logs(&lab, &f, &["flaky"])
            .matches("| try")
            .count()
            == 3),
        "{}",
        logs(&lab, &f, &["flaky"])
    );
    assert!(wait_for(Duration::from_secs(10), || logs(
        &lab,
        &f,
        &["forever"]
    )
    .matches("| round")
    .count()
        >= 4));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(logs(&lab, &f, &["flaky"]).matches("| try").count(), 3);
    assert_eq!(logs(&lab, &f, &["once"]).matches("| once").count(), 1);
    assert!(logs(&lab, &f, &["once"]).contains("exited with status 1"));

    // ps shows them.
    let ps: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &lab.nc(&f, &["ps", "--json"]).stdout,
    ))
    .unwrap();
    let procs = ps["daemon"]["processes"]
        .as_array()
        .expect("processes in ps --json")
        .clone();
    let state = |n: &str| {
        procs
            .iter()
            .find(|p| p["name"] == n)
            .map(|p| p["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(state("echo-1"), "running", "{ps}");
    assert_eq!(state("flaky-1"), "exited", "{ps}");
    let echo_pids = pids_of(&lab, "^sleep 600");
    assert_eq!(echo_pids.len(), 2, "{echo_pids:?}");

    // `logs -f` follows.
    let mut follow = lab
        .sb
        .command(
            env!("CARGO_BIN_EXE_netcompose"),
            &["-f", f.to_str().unwrap(), "logs", "--follow", "forever"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = follow.kill();
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    let _ = follow.wait();
    assert!(followed.contains("forever-1 | round"), "{followed}");

    // A changed command restarts that service's processes only.
    let daemon = lab.daemon_pid("dr").unwrap();
    std::fs::write(&f, RUN.replace("exec sleep 600", "exec sleep 601")).unwrap();
    let out = lab.nc_ok(&f, &["up"]);
    assert!(
        out.contains("No changes.") && out.contains("Daemon: updated"),
        "{out}"
    );
    assert!(wait_for(Duration::from_secs(10), || pids_of(
        &lab,
        "^sleep 601"
    )
    .len()
        == 2));
    assert!(
        pids_of(&lab, "^sleep 600").is_empty(),
        "the old processes are gone"
    );
    assert_eq!(lab.daemon_pid("dr"), Some(daemon));
    assert!(logs(&lab, &f, &["echo"]).contains("restarting: its command changed"));

    // down: every process is gone, so is the daemon.
    let out = lab.nc_ok(&f, &["down"]);
    assert!(out.contains("Daemon: stopped"), "{out}");
    assert!(pids_of(&lab, "^sleep 601").is_empty());
    assert!(!lab.alive(daemon));
    assert!(lab.nc(&f, &["logs"]).status.success());
}

#[test]
fn a_killed_daemon_is_restarted_by_the_next_up() {
    require_root("a_killed_daemon_is_restarted_by_the_next_up");
    let lab = Lab::new("nc-dkill-");
    let f = lab.file(
        "compose.yaml",
        // A command of its own: pgrep sees the other tests' processes too.
        &RUN.replace("name: dr", "name: dk")
            .replace("10.74.1.0", "10.75.1.0")
            .replace("exec sleep 600", "exec sleep 602"),
    );
    lab.nc_ok(&f, &["up"]);
    let pid = lab.daemon_pid("dk").unwrap();
    assert!(wait_for(Duration::from_secs(10), || pids_of(
        &lab,
        "^sleep 602"
    )
    .len()
        == 2));
    assert_eq!(lab.addrs("dk-echo-1", "echo").len(), 1);

    lab.sh_ok(&["kill", "-9", &pid.to_string()]);
    assert!(wait_for(Duration::from_secs(5), || !lab.alive(pid)));
    // Its processes die with it (PR_SET_PDEATHSIG), and the resolver is gone.
    assert!(
        wait_for(Duration::from_secs(5), || pids_of(&lab, "^sleep 602")
            .is_empty()),
        "x-run processes outlived their daemon"
    );
    assert_eq!(lab.dig("dk-echo-1", "echo", &[]).status, "");
    let ps: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &lab.nc(&f, &["ps", "--json"]).stdout,
    ))
    .unwrap();
    assert_eq!(ps["daemon"]["state"], "stopped", "{ps}");

    let out = lab.nc_ok(&f, &["up"]);
    assert!(out.contains("Daemon: restarted"), "{out}");
    let new = lab.daemon_pid("dk").unwrap();
    assert_ne!(new, pid);
    assert_eq!(lab.addrs("dk-echo-1", "echo").len(), 1);
    assert!(wait_for(Duration::from_secs(10), || pids_of(
        &lab,
        "^sleep 602"
    )
    .len()
        == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pids_of(&lab, "^sleep 602").len(), 2, "started twice");
    let out = text(&lab.nc(&f, &["down"]));
    assert!(out.contains("Daemon: stopped"), "{out}");
    assert!(pids_of(&lab, "^sleep 602").is_empty());
}

/// A replica scaled away: its process says, when its stop signal comes, which addresses it
/// still has.
fn stop_yaml(n: u32) -> String {
    format!(
        r#"
name: dq
networks:
  front:
    ipam: {{config: [{{subnet: 10.76.1.0/24}}]}}
services:
  w:
    deploy: {{replicas: {n}}}
    networks: [front]
    x-run: [sh, -c, "trap 'echo term: $(ip -4 -o addr show scope global); exit 0' TERM; echo ready; sleep 603 & wait"]
"#
    )
}

/// As Compose stops a container before it takes its network away, `up` has the daemon stop a
/// scaled-away replica's process (and close its sockets there) before the namespace is
/// deleted: the process still has its address when the signal comes, and the namespace is
/// freed at once (not kept alive by the daemon until the apply gives up waiting for it).
#[test]
fn a_replica_scaled_away_stops_with_its_network_still_up() {
    require_root("a_replica_scaled_away_stops_with_its_network_still_up");
    let lab = Lab::new("nc-dstop-");
    let f = lab.file("compose.yaml", &stop_yaml(2));
    lab.nc_ok(&f, &["up"]);
    assert!(
        wait_for(Duration::from_secs(10), || logs(&lab, &f, &["w"])
            .matches("| ready")
            .count()
            == 2),
        "{}",
        logs(&lab, &f, &[])
    );
    std::fs::write(&f, stop_yaml(1)).unwrap();
    lab.nc_ok(&f, &["up"]);
    assert!(
        wait_for(Duration::from_secs(10), || logs(&lab, &f, &["w"])
            .contains("w-2 | term:")),
        "{}",
        logs(&lab, &f, &[])
    );
    let term = logs(&lab, &f, &["w"]);
    let line = term.lines().find(|l| l.contains("w-2 | term:")).unwrap();
    assert!(
        line.contains("inet 10.76.1."),
        "stopped without its network: {line}"
    );
    assert!(
        !term.contains("w-1 | term:"),
        "the kept replica stopped: {term}"
    );
    lab.nc_ok(&f, &["down"]);
    assert!(pids_of(&lab, "^sleep 603").is_empty());
}
