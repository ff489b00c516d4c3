//! Containment of a project's processes (issue 9): every process a project starts lives in the
//! project's cgroups, so `down` leaves none behind even after the daemon was SIGKILLed or `up`
//! runs were SIGKILLed at random points; one daemon per project at most; the run directory,
//! its files and the control socket are root's only whatever the umask.
//!
//! The sandbox has a private /run, but the cgroup file system is the machine's: each test uses
//! a project name of its own, and a guard removes the project's cgroups even on panic. Needs
//! root (else a notice and an early return).

mod common;

use common::project::Project;
use common::{require_root, wait_for, Sandbox};
use netcompose::daemon::contain::Cgroups;
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Two services × two replicas: a plain command, and a shell that leaves a child behind when
/// it is killed alone.
const YAML: &str = r#"
networks:
  front:
    ipam: {config: [{subnet: 10.77.1.0/24}]}
services:
  plain:
    deploy: {replicas: 2}
    networks: [front]
    x-run: [sleep, "1000"]
  shell:
    deploy: {replicas: 2}
    networks: [front]
    x-run: "sleep 1000 & sleep 1000"
"#;

/// The daemon, 2 sleeps, and 2 × (sh + 2 sleeps).
const ALL_PROCESSES: usize = 1 + 2 + 2 * 3;

fn unique(tag: &str) -> String {
    format!("ct{tag}{}", std::process::id())
}

/// Kills and removes the project's cgroups when the test ends, however it ends.
struct CgroupGuard(Cgroups);

impl CgroupGuard {
    fn new(project: &str) -> CgroupGuard {
        let name = netcompose::project_name::ProjectName::new(project).expect("a valid name");
        CgroupGuard(Cgroups::find(&name).expect("a cgroup v2 hierarchy"))
    }

    fn pids(&self) -> Vec<i32> {
        self.0.project().pids().expect("read the project's cgroups")
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill_and_remove() {
            eprintln!("cleanup of {}: {e}", self.0.project().path().display());
        }
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Live processes that are `netcompose daemon --project <project>`, anywhere on the machine,
/// less the daemon's own children between fork and exec (they still bear its command line).
fn daemons(project: &str) -> Vec<i32> {
    let is_daemon = |pid: i32| {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.iter().any(|a| *a == b"daemon")
            && args
                .windows(2)
                .any(|w| w[0] == b"--project" && w[1] == project.as_bytes())
    };
    live_pids()
        .filter(|pid| is_daemon(*pid) && !parent(*pid).is_some_and(is_daemon))
        .collect()
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn live_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
}

/// `/run/netns` of the sandbox, seen from here.
fn sandbox_netns(sb: &Sandbox) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root/run/netns", sb.holder_pid()))
}

/// The inodes of the project's namespaces.
fn project_netns(sb: &Sandbox, project: &str) -> HashSet<u64> {
    std::fs::read_dir(sandbox_netns(sb))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{project}-")))
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok().map(|m| m.ino()))
        .collect()
}

/// Live processes whose network namespace is one of `inodes`.
fn in_netns(inodes: &HashSet<u64>) -> Vec<i32> {
    live_pids()
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| inodes.contains(&m.ino()))
        })
        .collect()
}

fn daemon_pid(sb: &Sandbox, project: &str) -> Option<i32> {
    std::fs::read_to_string(format!(
        "/proc/{}/root/run/netcompose/{project}/daemon.pid",
        sb.holder_pid()
    ))
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// Nothing of the project is left: no process, daemon, cgroup, namespace, link or table.
fn assert_all_gone(sb: &Sandbox, cg: &CgroupGuard, project: &str, netns: &HashSet<u64>) {
    assert!(cg.pids().is_empty(), "processes left: {:?}", cg.pids());
    assert!(
        !cg.0.project().exists(),
        "{} was not removed",
        cg.0.project().path().display()
    );
    assert_eq!(daemons(project), Vec::<i32>::new(), "daemons left");
    assert_eq!(
        in_netns(netns),
        Vec::<i32>::new(),
        "processes in its namespaces"
    );
    assert!(
        project_netns(sb, project).is_empty(),
        "namespaces left in the sandbox's /run/netns"
    );
    let links = sb.run_ok(&["ip", "-d", "link", "show"]);
    assert!(
        !links.contains(&format!("netcompose:{project}:")),
        "links left:\n{links}"
    );
    let tables = sb.run_ok(&["nft", "list", "tables"]);
    assert!(
        !tables
            .lines()
            .any(|l| l.split_whitespace().last() == Some(project)),
        "tables left:\n{tables}"
    );
}

#[test]
fn down_after_the_daemon_was_killed_leaves_no_process() {
    require_root("down_after_the_daemon_was_killed_leaves_no_process");
    let sb = Sandbox::new();
    let name = unique("k");
    let cg = CgroupGuard::new(&name);
    let p = Project::new(&sb, &name, YAML);
    p.up();
    assert!(
        wait_for(Duration::from_secs(10), || cg.pids().len() == ALL_PROCESSES),
        "{:?}",
        cg.pids()
    );
    let netns = project_netns(&sb, &name);
    assert_eq!(netns.len(), 4);
    assert!(in_netns(&netns).len() >= 2 * 3 + 2);

    let daemon = daemon_pid(&sb, &name).expect("the daemon's pid file");
    sb.run_ok(&["kill", "-9", &daemon.to_string()]);
    assert!(wait_for(Duration::from_secs(5), || !alive(daemon)));
    // Its children die with it (PR_SET_PDEATHSIG), but what the shells started does not.
    assert!(
        wait_for(Duration::from_secs(5), || cg.pids().len() == 2 * 2),
        "{:?}",
        cg.pids()
    );

    let start = Instant::now();
    let out = p.nc(&["down"]);
    let took = start.elapsed();
    eprintln!("down after kill -9 of the daemon: {} ms", took.as_millis());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_gone(&sb, &cg, &name, &netns);
}

#[test]
fn up_killed_at_random_points_never_leaves_a_second_daemon_or_an_orphan() {
    require_root("up_killed_at_random_points_never_leaves_a_second_daemon_or_an_orphan");
    let sb = Sandbox::new();
    let name = unique("r");
    let cg = CgroupGuard::new(&name);
    let p = Project::new(&sb, &name, YAML);

    let start = Instant::now();
    p.up();
    let typical = start.elapsed();
    assert!(wait_for(Duration::from_secs(10), || cg.pids().len() == ALL_PROCESSES));
    let netns = project_netns(&sb, &name);
    p.nc_ok(&["down"]);
    assert_all_gone(&sb, &cg, &name, &netns);

    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("typical up: {} ms; seed {seed}", typical.as_millis());
    let file = p.file.to_str().expect("a UTF-8 path").to_string();
    for round in 1..=50 {
        let delay = typical.mul_f64(rng.f64());
        let mut up = sb
            .command(env!("CARGO_BIN_EXE_netcompose"), &["-f", &file, "up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start netcompose up");
        std::thread::sleep(delay);
        let _ = up.kill();
        let _ = up.wait();
        assert!(
            daemons(&name).len() <= 1,
            "round {round}: two daemons {:?}",
            daemons(&name)
        );
        if round % 5 == 0 {
            p.nc_ok(&["down"]);
            assert!(
                cg.pids().is_empty() && daemons(&name).is_empty(),
                "round {round}: down left {:?}",
                cg.pids()
            );
        }
    }
    p.up();
    assert!(
        wait_for(Duration::from_secs(10), || cg.pids().len() == ALL_PROCESSES),
        "{:?}",
        cg.pids()
    );
    let netns = project_netns(&sb, &name);
    p.nc_ok(&["down"]);
    assert_all_gone(&sb, &cg, &name, &netns);
}

#[test]
fn one_daemon_per_project_and_private_run_files_whatever_the_umask() {
    require_root("one_daemon_per_project_and_private_run_files_whatever_the_umask");
    let sb = Sandbox::new();
    let name = unique("u");
    let cg = CgroupGuard::new(&name);
    let p = Project::new(&sb, &name, YAML);
    let file = p.file.to_str().expect("a UTF-8 path").to_string();
    let exe = env!("CARGO_BIN_EXE_netcompose");
    let up = sb.run(&[
        "sh",
        "-c",
        "umask 000 && exec \"$0\" -f \"$1\" up",
        exe,
        &file,
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let daemon = daemon_pid(&sb, &name).expect("the daemon's pid file");
    assert!(wait_for(Duration::from_secs(10), || cg.pids().len() == ALL_PROCESSES));

    let root = PathBuf::from(format!("/proc/{}/root/run/netcompose", sb.holder_pid()));
    let dir = root.join(&name);
    let mode = |p: &PathBuf| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&dir), 0o700);
    for f in [
        "daemon.json",
        "daemon.pid",
        "daemon.lock",
        "daemon.log",
        "run.log",
        "control.sock",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    // A second daemon exits at once; `up` keeps the one that runs.
    let second = sb.run(&[exe, "daemon", "--project", &name]);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another daemon"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let again = p.nc_ok(&["up"]);
    assert_eq!(daemons(&name), vec![daemon], "{again}");
    assert_eq!(cg.pids().len(), ALL_PROCESSES);

    let netns = project_netns(&sb, &name);
    p.nc_ok(&["down"]);
    assert_all_gone(&sb, &cg, &name, &netns);
}

#[test]
fn without_cgroup_v2_down_kills_the_daemons_session() {
    require_root("without_cgroup_v2_down_kills_the_daemons_session");
    let sb = Sandbox::new();
    let name = unique("s");
    // Out of reach anyway: the sandbox will not see the hierarchy.
    let cg = CgroupGuard::new(&name);
    let mount = netcompose::kernel::cgroup::hierarchy().expect("a cgroup v2 hierarchy");
    // Only in the sandbox's private mount namespace.
    sb.run_ok(&["umount", "-l", mount.path().to_str().expect("a UTF-8 path")]);
    let p = Project::new(&sb, &name, YAML);
    let up = p.nc(&["up"]);
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(up.status.success(), "{stderr}");
    assert!(
        stderr.contains("no cgroup v2 hierarchy is mounted"),
        "no warning: {stderr}"
    );
    let netns = project_netns(&sb, &name);
    assert!(
        wait_for(Duration::from_secs(10), || in_netns(&netns).len()
            == 2 + 2 * 3),
        "{:?}",
        in_netns(&netns)
    );
    let daemon = daemon_pid(&sb, &name).expect("the daemon's pid file");
    sb.run_ok(&["kill", "-9", &daemon.to_string()]);
    assert!(wait_for(Duration::from_secs(5), || !alive(daemon)));
    assert!(
        wait_for(Duration::from_secs(5), || in_netns(&netns).len() == 2 * 2),
        "{:?}",
        in_netns(&netns)
    );
    p.nc_ok(&["down"]);
    assert_eq!(in_netns(&netns), Vec::<i32>::new(), "processes left");
    assert!(daemons(&name).is_empty());
    assert!(cg.pids().is_empty());
}

#[test]
fn a_shell_command_is_stopped_with_its_whole_group() {
    require_root("a_shell_command_is_stopped_with_its_whole_group");
    let sb = Sandbox::new();
    let name = unique("g");
    let cg = CgroupGuard::new(&name);
    let marks = tempfile::tempdir().expect("temp dir");
    let dir = marks.path().to_str().expect("a UTF-8 path");
    // The inner shell runs in the background of the outer one: only a signal to the whole
    // process group reaches it (the cgroup kill after it would leave no mark).
    let yaml = format!(
        r#"
networks:
  front:
    ipam: {{config: [{{subnet: 10.77.2.0/24}}]}}
services:
  grouped:
    deploy: {{replicas: 2}}
    networks: [front]
    x-run: "sh -c 'trap \"echo term > {dir}/$(hostname); exit 0\" TERM; touch {dir}/ready-$(hostname); while :; do sleep 0.1; done' & wait"
"#
    );
    let p = Project::new(&sb, &name, &yaml);
    p.up();
    let ready = || {
        std::fs::read_dir(marks.path())
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    // Both inner shells have set their traps (a count of processes alone can be met while
    // the trap's own `$(hostname)` runs, before the trap is set), and the cgroup holds the
    // daemon, two outer shells, two inner ones and a sleep of each.
    assert!(
        wait_for(Duration::from_secs(10), || ready() == 2
            && cg.pids().len() == 1 + 2 * 3),
        "{:?}",
        cg.pids()
    );
    let netns = project_netns(&sb, &name);
    let out = p.nc_ok(&["down"]);
    let mut marked: Vec<String> = std::fs::read_dir(marks.path())
        .expect("the marks directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|m| !m.starts_with("ready-"))
        .collect();
    marked.sort();
    assert_eq!(marked.len(), 2, "SIGTERM reached {marked:?}\n{out}");
    assert_all_gone(&sb, &cg, &name, &netns);
}
