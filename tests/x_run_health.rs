//! `healthcheck`, `depends_on` conditions and `up --wait` for `x-run` processes (issue 13):
//! probes run inside the replica's namespace, `ps` shows health, a dependent waits for its
//! dependency's condition and is not started when it fails, and `up --wait` succeeds or fails
//! by the processes' health.
//!
//! Builds its own sandbox host; needs root (else it fails, saying so).

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::require_root;
use lab::{text, Lab};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// `ps --json`'s entry for x-run process `name`.
fn process(lab: &Lab, f: &Path, name: &str) -> Value {
    let out = lab.nc(f, &["ps", "--json"]);
    assert!(out.status.success(), "ps: {}", text(&out));
    let ps: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    ps["daemon"]["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no process {name} in {ps:#}"))
}

/// `ps --json`'s health of replica `n` of `service`.
fn replica_health(lab: &Lab, f: &Path, service: &str, n: u32) -> Value {
    let out = lab.nc(f, &["ps", "--json"]);
    let ps: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    ps["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["service"] == service && r["replica"] == n)
        .map(|r| r["health"].clone())
        .unwrap_or_default()
}

fn pgrep(lab: &Lab, pattern: &str) -> String {
    String::from_utf8_lossy(&lab.sh(&["pgrep", "-f", pattern]).stdout)
        .trim()
        .to_string()
}

const HEALTHY: &str = r#"
name: hc-ok
networks:
  front:
    ipam: {config: [{subnet: 10.74.10.0/24}]}
services:
  db:
    networks: {front: {ipv4_address: 10.74.10.5}}
    x-run: [sleep, "1101"]
    healthcheck:
      # Passes only where 10.74.10.5 is a local address: inside db-1's namespace.
      test: ["CMD-SHELL", "ip -4 -o addr show | grep -q ' 10.74.10.5/'"]
      interval: 200ms
      retries: 2
  web:
    networks: [front]
    x-run: [sleep, "1102"]
    depends_on:
      db: {condition: service_healthy}
"#;

#[test]
fn a_passing_healthcheck_lets_up_wait_return_and_the_dependent_start() {
    require_root("a_passing_healthcheck_lets_up_wait_return_and_the_dependent_start");
    let lab = Lab::new("nc-health-ok-");
    let f = lab.file("compose.yaml", HEALTHY);
    lab.nc_ok(&f, &["up", "-d", "--wait", "--wait-timeout", "30"]);
    assert_eq!(replica_health(&lab, &f, "db", 1), "healthy");
    let db = process(&lab, &f, "db-1");
    assert_eq!(db["health"]["status"], "healthy", "{db:#}");
    let web = process(&lab, &f, "web-1");
    assert_eq!(web["state"], "running", "{web:#}");
    assert!(!pgrep(&lab, "^sleep 1102").is_empty());
    // Probes run in db-1's cgroup leaf and are gone once they answer: between two probes the
    // project holds only the daemon and the two sleeps.
    let name = netcompose::project_name::ProjectName::new("hc-ok").unwrap();
    let cgroups = netcompose::daemon::contain::Cgroups::find(&name).unwrap();
    let mut pids = Vec::new();
    assert!(
        common::wait_for(Duration::from_secs(10), || {
            pids = cgroups.project().pids().unwrap();
            pids.len() == 3
        }),
        "probes left behind: {pids:?}"
    );
    let table = lab.nc_ok(&f, &["ps"]);
    assert!(table.contains("up (healthy)"), "{table}");
    let logs = lab.nc_ok(&f, &["logs"]);
    let healthy = logs
        .find("health: healthy")
        .expect("db's health in the log");
    let started = logs
        .find("web-1")
        .and_then(|i| logs[i..].find("started (pid").map(|j| i + j))
        .expect("web-1 started");
    assert!(
        healthy < started,
        "web-1 started before db-1 was healthy:\n{logs}"
    );
    lab.nc_ok(&f, &["down"]);
}

const UNHEALTHY: &str = r#"
name: hc-bad
networks:
  front:
    ipam: {config: [{subnet: 10.74.11.0/24}]}
services:
  db:
    networks: [front]
    x-run: [sleep, "1103"]
    healthcheck: {test: [CMD, "false"], interval: 200ms, retries: 2}
  web:
    networks: [front]
    x-run: [sleep, "1104"]
    depends_on:
      db: {condition: service_healthy}
  hang:
    networks: [front]
    x-run: [sleep, "1107"]
    healthcheck: {test: [CMD, sleep, "1108"], timeout: 300ms, interval: 5s, retries: 1}
"#;

#[test]
fn a_failing_healthcheck_fails_up_wait_and_holds_the_dependent_back() {
    require_root("a_failing_healthcheck_fails_up_wait_and_holds_the_dependent_back");
    let lab = Lab::new("nc-health-bad-");
    let f = lab.file("compose.yaml", UNHEALTHY);
    let out = lab.nc(&f, &["up", "--wait", "--wait-timeout", "30"]);
    assert!(!out.status.success(), "up --wait succeeded: {}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("db-1 is unhealthy") || said.contains("hang-1 is unhealthy"),
        "{said}"
    );
    let web = process(&lab, &f, "web-1");
    assert_eq!(web["state"], "blocked", "{web:#}");
    assert!(
        web["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("db-1 is unhealthy"),
        "{web:#}"
    );
    assert!(pgrep(&lab, "^sleep 1104").is_empty(), "web-1 was started");
    assert_eq!(replica_health(&lab, &f, "db", 1), "unhealthy");
    // A probe that outlives its timeout is killed and counts as a failure.
    assert!(
        common::wait_for(Duration::from_secs(20), || {
            replica_health(&lab, &f, "hang", 1) == "unhealthy"
        }),
        "hang-1 never became unhealthy"
    );
    let hang = process(&lab, &f, "hang-1");
    assert_eq!(hang["health"]["last"], "timed out after 300 ms", "{hang:#}");
    assert!(
        pgrep(&lab, "^sleep 1108").is_empty(),
        "the probe was not killed"
    );
    lab.nc_ok(&f, &["down"]);
}

const SLOW: &str = r#"
name: hc-slow
networks:
  front:
    ipam: {config: [{subnet: 10.74.12.0/24}]}
services:
  db:
    networks: [front]
    x-run: [sleep, "1105"]
    healthcheck: {test: [CMD, "false"], start_period: 1h, start_interval: 200ms}
"#;

#[test]
fn up_wait_times_out_naming_the_replicas_not_ready() {
    require_root("up_wait_times_out_naming_the_replicas_not_ready");
    let lab = Lab::new("nc-health-slow-");
    let f = lab.file("compose.yaml", SLOW);
    let out = lab.nc(&f, &["up", "--wait", "--wait-timeout", "2"]);
    assert!(!out.status.success(), "up --wait succeeded: {}", text(&out));
    assert!(
        text(&out).contains("not ready after 2 s: db-1 is starting"),
        "{}",
        text(&out)
    );
    assert_eq!(replica_health(&lab, &f, "db", 1), "starting");
    lab.nc_ok(&f, &["down"]);
}

const ONE_SHOT: &str = r#"
name: hc-once
networks:
  front:
    ipam: {config: [{subnet: 10.74.13.0/24}]}
services:
  init:
    networks: [front]
    x-run: [sh, -c, "sleep 0.5; exit 0"]
  app:
    networks: [front]
    x-run: [sleep, "1106"]
    depends_on:
      init: {condition: service_completed_successfully}
"#;

#[test]
fn service_completed_successfully_starts_the_dependent_after_a_clean_exit() {
    require_root("service_completed_successfully_starts_the_dependent_after_a_clean_exit");
    let lab = Lab::new("nc-health-once-");
    let f = lab.file("compose.yaml", ONE_SHOT);
    lab.nc_ok(&f, &["up", "--wait", "--wait-timeout", "30"]);
    let init = process(&lab, &f, "init-1");
    assert_eq!(init["state"], "exited", "{init:#}");
    assert_eq!(init["exit_code"], 0, "{init:#}");
    assert_eq!(process(&lab, &f, "app-1")["state"], "running");
    assert!(!pgrep(&lab, "^sleep 1106").is_empty());
    lab.nc_ok(&f, &["down"]);
}

#[test]
fn the_health_example_comes_up_in_order() {
    require_root("the_health_example_comes_up_in_order");
    let lab = Lab::new("nc-health-example-");
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/health/compose.yaml");
    lab.nc_ok(&f, &["up", "-d", "--wait", "--wait-timeout", "60"]);
    assert_eq!(replica_health(&lab, &f, "db", 1), "healthy");
    assert_eq!(process(&lab, &f, "migrate-1")["exit_code"], 0);
    assert_eq!(process(&lab, &f, "app-1")["state"], "running");
    assert!(lab.nc_ok(&f, &["logs"]).contains("migrated"));
    lab.nc_ok(&f, &["down"]);
}
