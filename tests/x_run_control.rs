//! Process control of `x-run` (issue 13): `env_file`, `stop_signal`, `stop_grace_period` and
//! `init` as the kernel shows them (/proc, files a trap writes), and `top`, `stop`, `start`,
//! `restart` through the binary: stop leaves the network and keeps the process stopped (its
//! restart policy and a reload of the daemon do not bring it back), start and restart run a
//! new process.
//!
//! Every test builds its own sandbox host (torn down on drop, even on panic); needs root.

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::{require_root, wait_for};
use lab::Lab;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The x-run processes as `ps --json` shows them: (name, state, pid).
fn procs(lab: &Lab, f: &Path) -> Vec<(String, String, Option<i64>)> {
    let ps: serde_json::Value = serde_json::from_str(&lab.nc_ok(f, &["ps", "--json"])).unwrap();
    ps["daemon"]["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["state"].as_str().unwrap_or_default().to_string(),
                p["pid"].as_i64(),
            )
        })
        .collect()
}

/// The pid of `name` once it runs.
fn running_pid(lab: &Lab, f: &Path, name: &str) -> i64 {
    let mut pid = None;
    let ok = wait_for(WAIT, || {
        pid = procs(lab, f)
            .into_iter()
            .find(|(n, s, _)| n == name && s == "running")
            .and_then(|(_, _, p)| p);
        pid.is_some()
    });
    assert!(ok, "{name} never ran: {:?}", procs(lab, f));
    pid.unwrap_or_default()
}

fn state(lab: &Lab, f: &Path, name: &str) -> String {
    procs(lab, f)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, s, _)| s)
        .unwrap_or_default()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn status_field(pid: i64, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| Some(l.strip_prefix(key)?.strip_prefix(':')?.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn env_file_stop_signal_and_grace_period() {
    require_root("env_file_stop_signal_and_grace_period");
    let lab = Lab::new("nc-xctl-");
    let dir = lab.dir.path().display().to_string();
    std::fs::create_dir(lab.dir.path().join("env")).unwrap();
    lab.file(
        "env/base.env",
        "A=from-base\nB=from-base\nC=\"${HOME_DIR}/x\"\n",
    );
    lab.file(".env", "HOME_DIR=/srv\n");
    lab.file("over.env", "A=from-over\n");
    let f = lab.file(
        "compose.yaml",
        &format!(
            r#"
name: xctl
networks:
  front:
    ipam: {{config: [{{subnet: 10.74.21.0/24}}]}}
services:
  envd:
    networks: [front]
    env_file: [env/base.env, over.env, {{path: missing.env, required: false}}]
    environment: {{B: from-environment}}
    x-run: [sleep, "1021"]
  trap:
    networks: [front]
    stop_signal: SIGUSR1
    x-run: [sh, -c, 'trap "echo usr1 > {dir}/got-usr1; exit 0" USR1; while :; do sleep 0.1; done']
  stubborn:
    networks: [front]
    stop_grace_period: 1s
    x-run: [sh, -c, 'trap "" TERM; while :; do sleep 0.1; done']
"#
        ),
    );
    lab.nc_ok(&f, &["up", "-d"]);

    let envd = running_pid(&lab, &f, "envd-1");
    let environ = std::fs::read(format!("/proc/{envd}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for want in ["A=from-over", "B=from-environment", "C=/srv/x"] {
        assert!(vars.iter().any(|v| v == want), "{want} not in {vars:?}");
    }
    // An env file that changed restarts the process with its new values at the next `up`.
    lab.file("over.env", "A=changed\n");
    lab.nc_ok(&f, &["up", "-d"]);
    let mut environ = String::new();
    assert!(
        wait_for(WAIT, || {
            let pid = running_pid(&lab, &f, "envd-1");
            environ = String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default(),
            )
            .into_owned();
            pid != envd && environ.split('\0').any(|v| v == "A=changed")
        }),
        "{environ:?}"
    );

    // stop_signal reaches the process: its trap writes the file and it exits.
    running_pid(&lab, &f, "trap-1");
    lab.nc_ok(&f, &["stop", "trap"]);
    let got = std::fs::read_to_string(lab.dir.path().join("got-usr1")).unwrap_or_default();
    assert_eq!(got.trim(), "usr1");
    assert_eq!(state(&lab, &f, "trap-1"), "stopped");

    // A process that ignores its stop signal is killed once its grace period is over: `stop`
    // returns when it is gone.
    let stubborn = running_pid(&lab, &f, "stubborn-1");
    lab.nc_ok(&f, &["stop", "stubborn"]);
    assert!(
        !alive(stubborn),
        "the stubborn process survived its grace period"
    );
    assert_eq!(state(&lab, &f, "stubborn-1"), "stopped");
    assert_eq!(state(&lab, &f, "envd-1"), "running");
    lab.nc_ok(&f, &["down"]);
}

#[test]
fn init_reaps_orphans_and_forwards_signals() {
    require_root("init_reaps_orphans_and_forwards_signals");
    let lab = Lab::new("nc-xinit-");
    let dir = lab.dir.path().display().to_string();
    // The inner shell is orphaned as soon as its subshell exits: the init adopts it.
    let f = lab.file(
        "compose.yaml",
        &format!(
            r#"
name: xinit
networks:
  front:
    ipam: {{config: [{{subnet: 10.74.22.0/24}}]}}
services:
  app:
    networks: [front]
    init: true
    x-run: [sh, -c, '(sh -c "echo \$$\$$ > {dir}/orphan; while [ ! -e {dir}/go ]; do sleep 0.05; done" &); exec sleep 1022']
"#
        ),
    );
    lab.nc_ok(&f, &["up", "-d"]);
    let init = running_pid(&lab, &f, "app-1");
    let orphan_file = lab.dir.path().join("orphan");
    let mut orphan = 0i64;
    assert!(
        wait_for(WAIT, || {
            orphan = std::fs::read_to_string(&orphan_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            orphan > 0 && status_field(orphan, "PPid") == init.to_string()
        }),
        "the orphan {orphan} was not adopted by the init {init} (its parent: {})",
        status_field(orphan, "PPid")
    );
    // The command is the init's child, in a process group of its own.
    let sleep = lab.sh_ok(&["pgrep", "-f", "^sleep 1022"]);
    let sleep: i64 = sleep.trim().parse().unwrap();
    assert_eq!(status_field(sleep, "PPid"), init.to_string());
    std::fs::write(lab.dir.path().join("go"), "").unwrap();
    assert!(
        wait_for(WAIT, || !Path::new(&format!("/proc/{orphan}")).exists()),
        "the orphan was not reaped: {}",
        status_field(orphan, "State")
    );

    // The stop signal goes through the init to the command, and both end.
    lab.nc_ok(&f, &["stop"]);
    assert!(!alive(sleep) && !alive(init));
    assert_eq!(state(&lab, &f, "app-1"), "stopped");
    let log = lab.nc_ok(&f, &["logs"]);
    assert!(log.contains("killed by SIGTERM"), "{log}");
    lab.nc_ok(&f, &["down"]);
}

#[test]
fn top_stop_start_restart() {
    require_root("top_stop_start_restart");
    let lab = Lab::new("nc-xtop-");
    let f = lab.file(
        "compose.yaml",
        r#"
name: xtop
networks:
  front:
    ipam: {config: [{subnet: 10.74.23.0/24}]}
services:
  web:
    networks: [front]
    restart: always
    x-run: [sleep, "1023"]
  db:
    networks: [front]
    x-run: [sleep, "1024"]
"#,
    );
    lab.nc_ok(&f, &["up", "-d"]);
    let first = running_pid(&lab, &f, "web-1");

    // top: the pid, its user and command.
    let top: serde_json::Value =
        serde_json::from_str(&lab.nc_ok(&f, &["top", "web", "--json"])).unwrap();
    assert_eq!(top.as_array().unwrap().len(), 1, "{top}");
    assert_eq!(top[0]["name"], "web-1");
    let listed = &top[0]["processes"];
    assert_eq!(listed[0]["pid"].as_i64(), Some(first), "{top}");
    assert_eq!(listed[0]["cmd"], "sleep 1023");
    assert_eq!(listed[0]["user"], "root");
    let text = lab.nc_ok(&f, &["top"]);
    assert!(text.contains("web-1\nUID"), "{text}");
    assert!(
        text.contains(&first.to_string()) && text.contains("sleep 1024"),
        "{text}"
    );

    // --dry-run says what it would do and does nothing.
    let dry = lab.nc_ok(&f, &["--dry-run", "stop", "web"]);
    assert!(dry.contains("web-1: would stop (running)"), "{dry}");
    assert_eq!(running_pid(&lab, &f, "web-1"), first);

    // stop: the process goes, the namespace and its link stay.
    lab.nc_ok(&f, &["stop", "web"]);
    assert!(!alive(first));
    assert_eq!(state(&lab, &f, "web-1"), "stopped");
    assert_eq!(state(&lab, &f, "db-1"), "running");
    let netns = lab.sh_ok(&["ip", "netns", "list"]);
    assert!(netns.contains("xtop-web-1"), "{netns}");
    lab.sh_ok(&["ip", "-n", "xtop-web-1", "link", "show", "eth0"]);

    // Neither `restart: always` nor a reload of the daemon brings it back.
    let daemon = lab.daemon_pid("xtop").expect("the daemon's pid");
    lab.sh_ok(&["kill", "-HUP", &daemon.to_string()]);
    assert!(wait_for(WAIT, || {
        lab.sh_ok(&["cat", "/run/netcompose/xtop/daemon.log"])
            .contains("generation 2")
    }));
    assert_eq!(state(&lab, &f, "web-1"), "stopped");
    assert!(lab.sh(&["pgrep", "-f", "^sleep 1023"]).stdout.is_empty());

    // start brings it back with a new pid; restart changes the pid again.
    lab.nc_ok(&f, &["start", "web"]);
    let second = running_pid(&lab, &f, "web-1");
    assert_ne!(second, first);
    lab.nc_ok(&f, &["restart", "web"]);
    let third = running_pid(&lab, &f, "web-1");
    assert_ne!(third, second);
    assert!(!alive(second));

    // stop with no service stops all; `up` starts them again.
    lab.nc_ok(&f, &["stop"]);
    assert_eq!(state(&lab, &f, "web-1"), "stopped");
    assert_eq!(state(&lab, &f, "db-1"), "stopped");
    lab.nc_ok(&f, &["up", "-d"]);
    running_pid(&lab, &f, "web-1");
    running_pid(&lab, &f, "db-1");

    // An unknown service is refused, naming the closest one.
    let out = lab.nc(&f, &["stop", "wbe"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(lab::text(&out).contains("web"), "{}", lab::text(&out));
    lab.nc_ok(&f, &["down"]);
}

/// The quickstart's db, as README's tour and the example's comments say: `top` shows its init
/// and the Python under it, `stop db` ends it with its stop signal (SIGINT), `start db` brings
/// it back.
#[test]
fn quickstart_db_stops_with_sigint_under_its_init() {
    require_root("quickstart_db_stops_with_sigint_under_its_init");
    let lab = Lab::new("nc-xquick-");
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/compose.yaml");
    lab.nc_ok(&f, &["up", "-d"]);
    let init = running_pid(&lab, &f, "db-1");
    let mut top = serde_json::Value::Null;
    // The command shows once it has been exec'd: between the init's fork and the exec, its
    // child is still a copy of the init (seen once under a loaded CI run).
    let python = |p: &serde_json::Value| {
        p["cmd"]
            .as_str()
            .is_some_and(|c| c.contains("python3 -c import socket"))
    };
    assert!(
        wait_for(WAIT, || {
            top = serde_json::from_str(&lab.nc_ok(&f, &["top", "db", "--json"])).unwrap();
            top[0]["processes"]
                .as_array()
                .is_some_and(|p| p.len() == 2 && python(&p[1]))
        }),
        "{top}"
    );
    let listed = &top[0]["processes"];
    assert_eq!(listed[0]["pid"].as_i64(), Some(init), "{top}");
    assert_eq!(listed[0]["cmd"], "[netcompose-init]", "{top}");
    assert_eq!(listed[1]["ppid"].as_i64(), Some(init), "{top}");

    // Python handles SIGINT once it has started: wait until it listens.
    assert!(wait_for(WAIT, || {
        let ss = lab.in_ns("quickstart-db-1", &["ss", "-ltn"]);
        String::from_utf8_lossy(&ss.stdout).contains(":5432")
    }));
    lab.nc_ok(&f, &["stop", "db"]);
    assert_eq!(state(&lab, &f, "db-1"), "stopped");
    let log = lab.nc_ok(&f, &["logs", "db"]);
    assert!(log.contains("stopped (killed by SIGINT)"), "{log}");
    assert_eq!(state(&lab, &f, "web-1"), "running");
    lab.nc_ok(&f, &["start", "db"]);
    assert_ne!(running_pid(&lab, &f, "db-1"), init);
    lab.nc_ok(&f, &["down"]);
}
