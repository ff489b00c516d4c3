//! Integration tests of `up`, `down`, `plan` (live), `ps` and `exec` against the real kernel,
//! with real packets (issue 4: up and down on one host).
//!
//! Every test builds its own [`Sandbox`] (a throwaway host: network + mount namespace with
//! private /run/netns, /etc/netns and /var/lib/netcompose, and an uplink to an "outside"
//! namespace) and runs the real `netcompose` binary inside it, on a Compose file written to a
//! temporary directory. Traffic is ICMP (`ping`) and TCP (`socat`), started with
//! `ip netns exec` in the replicas, the outside namespace or namespaces the test made.
//! Whatever a test creates dies with its sandbox, even when the test panics. Needs root;
//! without it each test fails, saying so.

mod common;

use common::sandbox::{UPLINK_HOST_IP, UPLINK_IF, UPLINK_OUTSIDE_IP};
use common::{require_root, Sandbox};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: the one cargo built for this test run, unless NETCOMPOSE_BIN names
/// another (e.g. a copy, while the build tree is busy).
fn nc_bin() -> OsString {
    std::env::var_os("NETCOMPOSE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_netcompose").into())
}

// ---------------------------------------------------------------------------------- harness

/// A sandbox plus a directory for the test's Compose files.
struct Lab {
    dir: tempfile::TempDir,
    sb: Sandbox,
}

/// A background process (a listener), killed when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    fn new() -> Lab {
        Lab {
            dir: tempfile::Builder::new()
                .prefix("nc-apply-")
                .tempdir()
                .expect("temp dir"),
            sb: Sandbox::new(),
        }
    }

    /// Write a Compose file (readable inside the sandbox: /tmp is shared) and return its path.
    fn compose(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write compose file");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `netcompose -f FILE ARGS...` inside the sandbox.
    fn nc(&self, file: &Path, args: &[&str]) -> Output {
        let mut all: Vec<OsString> = vec!["-f".into(), file.into()];
        all.extend(args.iter().map(OsString::from));
        self.run_nc(&all)
    }

    /// [`Lab::nc`], which must succeed; returns stdout + stderr.
    fn nc_ok(&self, file: &Path, args: &[&str]) -> String {
        let out = self.nc(file, args);
        assert!(
            out.status.success(),
            "`netcompose {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        text(&out)
    }

    /// `netcompose ARGS...` inside the sandbox.
    fn run_nc<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let out = self.sb.command(nc_bin(), args).output();
        out.expect("run netcompose")
    }

    fn up(&self, file: &Path) -> String {
        self.nc_ok(file, &["up"])
    }

    fn down(&self, file: &Path) -> String {
        self.nc_ok(file, &["down"])
    }

    /// `plan --detailed-exitcode`: (exit code, output).
    fn plan_code(&self, file: &Path) -> (i32, String) {
        let out = self.nc(file, &["plan", "--detailed-exitcode"]);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn assert_converged(&self, file: &Path) {
        let (code, out) = self.plan_code(file);
        assert_eq!(code, 0, "plan should show no changes:\n{out}");
    }

    /// A command inside the sandbox host.
    fn sh(&self, args: &[&str]) -> Output {
        self.sb.run(args)
    }

    fn sh_ok(&self, args: &[&str]) -> String {
        self.sb.run_ok(args)
    }

    /// A command inside namespace `ns` (as `ip netns exec` runs it).
    fn in_ns(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        self.sb.run(&all)
    }

    fn in_ns_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.in_ns(ns, args);
        assert!(
            out.status.success(),
            "`{}` in {ns} failed: {}",
            args.join(" "),
            text(&out)
        );
        stdout(&out)
    }

    /// One ping from `ns` (None: the sandbox host) to `dst`; a few tries when `expect`ing an
    /// answer (the first packet may wait for ARP), one try of two packets otherwise.
    fn ping(&self, ns: Option<&str>, dst: &str, expect: bool) -> bool {
        let tries = if expect { 3 } else { 1 };
        for _ in 0..tries {
            let args = ["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst];
            let out = match ns {
                Some(ns) => self.in_ns(ns, &args),
                None => self.sh(&args),
            };
            if out.status.success() {
                return true;
            }
        }
        false
    }

    fn assert_ping(&self, ns: &str, dst: &str) {
        assert!(self.ping(Some(ns), dst, true), "{ns} should reach {dst}");
    }

    fn assert_no_ping(&self, ns: &str, dst: &str) {
        assert!(
            !self.ping(Some(ns), dst, false),
            "{ns} must not reach {dst}"
        );
    }

    /// A TCP server in `ns` that answers every connection with one line: `reply` given to a
    /// shell (so `$SOCAT_PEERADDR` is the client's address as the server sees it).
    fn listen(&self, ns: &str, port: u16, reply: &str) -> Bg {
        self.listen_on(
            ns,
            &format!("TCP-LISTEN:{port},reuseaddr,fork"),
            port,
            reply,
        )
    }

    /// [`Lab::listen`] on IPv6 (and IPv4).
    fn listen6(&self, ns: &str, port: u16, reply: &str) -> Bg {
        let spec = format!("TCP6-LISTEN:{port},reuseaddr,fork,ipv6only=0");
        self.listen_on(ns, &spec, port, reply)
    }

    fn listen_on(&self, ns: &str, listen: &str, port: u16, reply: &str) -> Bg {
        let system = format!("SYSTEM:echo {reply}");
        let bg = Bg(self
            .sb
            .spawn(&["ip", "netns", "exec", ns, "socat", listen, &system]));
        self.wait_listening(&["ip", "netns", "exec", ns], port);
        bg
    }

    /// The same in the outside namespace (the sandbox host's "internet").
    fn listen_outside(&self, port: u16, reply: &str) -> Bg {
        let mut mnt = OsString::from("--mount=");
        mnt.push(self.sb.mount_ns_path());
        let mut net = OsString::from("--net=");
        net.push(self.sb.outside_netns_path());
        // Wrapped at once: killed and reaped when dropped, on every path.
        let child = Bg(Command::new("nsenter")
            .arg(&mnt)
            .arg(&net)
            .args([
                "--",
                "socat",
                &format!("TCP-LISTEN:{port},reuseaddr,fork"),
                &format!("SYSTEM:echo {reply}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nsenter"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let out = self
                .sb
                .run_in_outside(&["ss", "-Hltn", &format!("sport = :{port}")]);
            if !stdout(&out).trim().is_empty() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the outside listener on port {port} never started");
    }

    fn wait_listening(&self, prefix: &[&str], port: u16) {
        let sport = format!("sport = :{port}");
        let mut args = prefix.to_vec();
        args.extend_from_slice(&["ss", "-Hltn", &sport]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !stdout(&self.sh(&args)).trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("listener on port {port} never started ({prefix:?})");
    }

    /// Connect from `ns` to `ip:port`; the server's line, or None when nothing answered.
    fn tcp(&self, ns: &str, ip: &str, port: u16) -> Option<String> {
        let target = format!("TCP:{ip}:{port},connect-timeout=2");
        let out = self.in_ns(ns, &["timeout", "5", "socat", "-u", &target, "STDOUT"]);
        let line = stdout(&out).trim().to_string();
        (out.status.success() && !line.is_empty()).then_some(line)
    }

    /// Names in the sandbox's /run/netns.
    fn namespaces(&self) -> BTreeSet<String> {
        self.sh_ok(&["ls", "-A", "/run/netns"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Interface names of the sandbox host.
    fn host_links(&self) -> BTreeSet<String> {
        links_json(&self.sh_ok(&["ip", "-j", "link", "show"]))
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    /// The host-side interface that carries `mark` as its alias.
    fn link_with_alias(&self, mark: &str) -> Option<String> {
        links_json(&self.sh_ok(&["ip", "-j", "link", "show"]))
            .iter()
            .find(|l| l["ifalias"].as_str() == Some(mark))
            .and_then(|l| l["ifname"].as_str().map(String::from))
    }

    /// Names of the nft tables of the sandbox host ("family name").
    fn nft_tables(&self) -> BTreeSet<String> {
        self.sh_ok(&["nft", "list", "tables"])
            .lines()
            .filter_map(|l| l.strip_prefix("table "))
            .map(str::to_string)
            .collect()
    }

    /// The IPv4 address (no prefix) of `ifname` inside `ns`.
    fn addr_of(&self, ns: &str, ifname: &str) -> String {
        let j: Value = serde_json::from_str(
            &self.sh_ok(&["ip", "-n", ns, "-4", "-j", "addr", "show", "dev", ifname]),
        )
        .expect("ip -j addr");
        j[0]["addr_info"][0]["local"]
            .as_str()
            .unwrap_or_else(|| panic!("{ifname} in {ns} has no IPv4 address: {j}"))
            .to_string()
    }

    /// Nothing of `project` remains in the sandbox: no namespace but `keep_ns`, no link but
    /// lo, the uplink and `keep_links`, no nft table but `keep_tables`, no /etc/netns entry,
    /// no state.
    fn assert_clean(
        &self,
        project: &str,
        keep_ns: &[&str],
        keep_links: &[&str],
        keep_tables: &[&str],
    ) {
        let want_ns: BTreeSet<String> = keep_ns.iter().map(|s| s.to_string()).collect();
        assert_eq!(self.namespaces(), want_ns, "namespaces left in /run/netns");
        let mut want_links: BTreeSet<String> = keep_links.iter().map(|s| s.to_string()).collect();
        want_links.insert("lo".into());
        want_links.insert(UPLINK_IF.into());
        assert_eq!(self.host_links(), want_links, "links left in the host");
        let want_tables: BTreeSet<String> = keep_tables.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            self.nft_tables(),
            want_tables,
            "nft tables left in the host"
        );
        let etc = self.sh_ok(&["ls", "-A", "/etc/netns"]);
        assert!(etc.trim().is_empty(), "/etc/netns entries left: {etc}");
        let state = self.sh(&["test", "-e", &format!("/var/lib/netcompose/{project}")]);
        assert!(
            !state.status.success(),
            "the state directory of {project} is left"
        );
    }

    /// Everything observable of the sandbox's network, for before/after comparisons: per
    /// namespace (and the host) links with index, MAC, MTU, master, alias and admin state;
    /// addresses; routes; nft rule sets with handles (a reloaded table gets new handles); and
    /// the /etc/netns files.
    fn world(&self) -> String {
        let mut out = String::new();
        let mut spaces: Vec<Option<String>> = vec![None];
        spaces.extend(self.namespaces().into_iter().map(Some));
        for ns in spaces {
            let prefix: Vec<&str> = match &ns {
                Some(n) => vec!["ip", "netns", "exec", n],
                None => vec![],
            };
            let run = |args: &[&str]| {
                let mut all = prefix.clone();
                all.extend_from_slice(args);
                self.sh_ok(&all)
            };
            out.push_str(&format!("== {}\n", ns.as_deref().unwrap_or("(host)")));
            for l in links_json(&run(&["ip", "-j", "link", "show"])) {
                let up = l["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "UP"));
                out.push_str(&format!(
                    "link {} {} {} mtu={} master={} alias={} up={up}\n",
                    l["ifindex"], l["ifname"], l["address"], l["mtu"], l["master"], l["ifalias"]
                ));
            }
            let addrs: Value =
                serde_json::from_str(&run(&["ip", "-j", "addr", "show"])).unwrap_or(Value::Null);
            for l in addrs.as_array().into_iter().flatten() {
                for a in l["addr_info"].as_array().into_iter().flatten() {
                    if a["scope"] != "link" {
                        out.push_str(&format!(
                            "addr {} {}/{}\n",
                            l["ifname"], a["local"], a["prefixlen"]
                        ));
                    }
                }
            }
            out.push_str(&run(&["ip", "route", "show"]));
            out.push_str(&run(&["nft", "-a", "list", "ruleset"]));
        }
        out.push_str(&self.sh_ok(&[
            "sh",
            "-c",
            "cd /etc/netns && for f in */*; do echo \"-- $f\"; cat \"$f\"; done 2>/dev/null; true",
        ]));
        out
    }
}

fn links_json(s: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(s)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// A line-by-line diff of two `world()` snapshots, for assertion messages.
fn world_diff(a: &str, b: &str) -> String {
    let (la, lb): (BTreeSet<&str>, BTreeSet<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for l in la.difference(&lb) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in lb.difference(&la) {
        out.push_str(&format!("+ {l}\n"));
    }
    out
}

/// Parse `ps --json`.
fn ps_json(lab: &Lab, file: &Path) -> Value {
    serde_json::from_str(&stdout(&lab.nc(file, &["ps", "--json"]))).expect("ps --json is JSON")
}

/// A small deterministic generator (xorshift64*), seeded from the clock or NC_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("NC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("random seed: {seed} (rerun with NC_TEST_SEED={seed})");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

// ---------------------------------------------------------------------------------- tests

const TWO_NETWORKS: &str = r#"
name: ap-net
networks:
  front:
    ipam:
      config:
        - subnet: 10.61.1.0/24
  back:
    ipam:
      config:
        - subnet: 10.61.2.0/24
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
  db:
    networks: [back]
"#;

#[test]
fn replicas_on_one_network_talk_and_networks_are_isolated() {
    require_root("replicas_on_one_network_talk_and_networks_are_isolated");
    let lab = Lab::new();
    let f = lab.compose("compose.yaml", TWO_NETWORKS);
    lab.up(&f);
    let (w1, w2, db) = ("ap-net-web-1", "ap-net-web-2", "ap-net-db-1");
    let ip_w1 = lab.addr_of(w1, "eth0");
    let ip_w2 = lab.addr_of(w2, "eth0");
    let ip_db = lab.addr_of(db, "eth0");
    assert!(ip_w1.starts_with("10.61.1.") && ip_w2.starts_with("10.61.1."));
    assert!(ip_db.starts_with("10.61.2."));

    // Same network: ICMP and TCP both ways.
    lab.assert_ping(w1, &ip_w2);
    lab.assert_ping(w2, &ip_w1);
    let _l2 = lab.listen(w2, 7000, "hello-from-web-2");
    let _l1 = lab.listen(w1, 7000, "hello-from-web-1");
    assert_eq!(
        lab.tcp(w1, &ip_w2, 7000).as_deref(),
        Some("hello-from-web-2")
    );
    assert_eq!(
        lab.tcp(w2, &ip_w1, 7000).as_deref(),
        Some("hello-from-web-1")
    );
    // Each replica reaches its gateway (the bridge address on the host).
    lab.assert_ping(w1, "10.61.1.1");
    lab.assert_ping(db, "10.61.2.1");

    // Two networks of one project: nothing either way, ICMP or TCP.
    let _ldb = lab.listen(db, 7000, "hello-from-db");
    lab.assert_no_ping(w1, &ip_db);
    lab.assert_no_ping(db, &ip_w1);
    assert_eq!(
        lab.tcp(w1, &ip_db, 7000),
        None,
        "web reached db across networks"
    );
    assert_eq!(
        lab.tcp(db, &ip_w1, 7000),
        None,
        "db reached web across networks"
    );
    // ... while each listener does answer on its own network / from itself.
    assert_eq!(lab.tcp(db, &ip_db, 7000).as_deref(), Some("hello-from-db"));
}

#[test]
fn two_projects_cannot_reach_each_other() {
    require_root("two_projects_cannot_reach_each_other");
    let lab = Lab::new();
    let a = lab.compose(
        "a.yaml",
        r#"
name: ap-one
networks:
  lan:
    ipam: {config: [{subnet: 10.62.1.0/24}]}
services:
  app:
    deploy: {replicas: 2}
    networks: [lan]
"#,
    );
    let b = lab.compose(
        "b.yaml",
        r#"
name: ap-two
networks:
  lan:
    ipam: {config: [{subnet: 10.62.2.0/24}]}
services:
  app:
    networks: [lan]
"#,
    );
    lab.up(&a);
    lab.up(&b);
    let (a1, a2, b1) = ("ap-one-app-1", "ap-one-app-2", "ap-two-app-1");
    let (ip_a1, ip_a2, ip_b1) = (
        lab.addr_of(a1, "eth0"),
        lab.addr_of(a2, "eth0"),
        lab.addr_of(b1, "eth0"),
    );
    lab.assert_ping(a1, &ip_a2);
    let _la = lab.listen(a1, 7100, "one");
    let _lb = lab.listen(b1, 7100, "two");
    assert_eq!(lab.tcp(a2, &ip_a1, 7100).as_deref(), Some("one"));
    lab.assert_no_ping(a1, &ip_b1);
    lab.assert_no_ping(b1, &ip_a1);
    assert_eq!(lab.tcp(a1, &ip_b1, 7100), None, "project one reached two");
    assert_eq!(lab.tcp(b1, &ip_a1, 7100), None, "project two reached one");
    // Taking one project down leaves the other whole.
    lab.down(&b);
    lab.assert_converged(&a);
    assert_eq!(lab.tcp(a2, &ip_a1, 7100).as_deref(), Some("one"));
    lab.down(&a);
    lab.assert_clean("ap-one", &[], &[], &[]);
}

#[test]
fn internal_network_has_no_way_out_and_normal_one_is_masqueraded() {
    require_root("internal_network_has_no_way_out_and_normal_one_is_masqueraded");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-out
networks:
  front:
    ipam: {config: [{subnet: 10.63.1.0/24}]}
  back:
    internal: true
    ipam: {config: [{subnet: 10.63.2.0/24}]}
services:
  edge:
    networks: [front]
  vault:
    networks: [back]
"#,
    );
    lab.up(&f);
    let (edge, vault) = ("ap-out-edge-1", "ap-out-vault-1");
    // The outside answers every connection with the source address it sees.
    let _srv = lab.listen_outside(7200, "$SOCAT_PEERADDR");

    // A normal network gets out, masqueraded behind the host's uplink address.
    lab.assert_ping(edge, UPLINK_OUTSIDE_IP);
    assert_eq!(
        lab.tcp(edge, UPLINK_OUTSIDE_IP, 7200).as_deref(),
        Some(UPLINK_HOST_IP),
        "the outside should see the sandbox host's uplink address"
    );

    // An internal network has no route out...
    let routes = lab.in_ns_ok(vault, &["ip", "-4", "route", "show", "default"]);
    assert!(
        routes.trim().is_empty(),
        "internal replica has a default route: {routes}"
    );
    lab.assert_no_ping(vault, UPLINK_OUTSIDE_IP);
    assert_eq!(lab.tcp(vault, UPLINK_OUTSIDE_IP, 7200), None);
    // ... and even a route added by hand leads nowhere: the host does not forward it.
    lab.in_ns_ok(
        vault,
        &["ip", "route", "add", "default", "via", "10.63.2.1"],
    );
    lab.assert_no_ping(vault, UPLINK_OUTSIDE_IP);
    assert_eq!(lab.tcp(vault, UPLINK_OUTSIDE_IP, 7200), None);
    lab.in_ns_ok(vault, &["ip", "route", "del", "default"]);
    // The outside never saw a packet from the internal network (only the edge's source).
    lab.down(&f);
    lab.assert_clean("ap-out", &[], &[], &[]);
}

#[test]
fn macvlan_endpoints_reach_a_host_on_the_parent_segment() {
    require_root("macvlan_endpoints_reach_a_host_on_the_parent_segment");
    let lab = Lab::new();
    // The "LAN": a veth whose host end is the macvlan parent, whose other end is a LAN host
    // in a namespace made by the test.
    for step in [
        vec![
            "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p",
        ],
        vec!["ip", "netns", "add", "lanhost"],
        vec!["ip", "link", "set", "lan0p", "netns", "lanhost"],
        vec![
            "ip",
            "-n",
            "lanhost",
            "addr",
            "add",
            "192.168.77.250/24",
            "dev",
            "lan0p",
        ],
        vec!["ip", "-n", "lanhost", "link", "set", "lan0p", "up"],
        vec!["ip", "-n", "lanhost", "link", "set", "lo", "up"],
        vec!["ip", "link", "set", "lan0", "up"],
    ] {
        lab.sh_ok(&step);
    }
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-mv
networks:
  lan:
    driver: macvlan
    driver_opts:
      parent: lan0
      macvlan_mode: bridge
    ipam:
      config:
        - subnet: 192.168.77.0/24
          gateway: 192.168.77.1
          ip_range: 192.168.77.128/26
services:
  printer:
    networks:
      lan:
        ipv4_address: 192.168.77.20
    mac_address: "02:00:c0:a8:4d:14"
  sensor:
    deploy: {replicas: 2}
    networks: [lan]
"#,
    );
    lab.up(&f);
    let (printer, s1, s2) = ("ap-mv-printer-1", "ap-mv-sensor-1", "ap-mv-sensor-2");
    assert_eq!(lab.addr_of(printer, "eth0"), "192.168.77.20");
    let mac = lab.in_ns_ok(printer, &["cat", "/sys/class/net/eth0/address"]);
    let kind = lab.in_ns_ok(printer, &["ip", "-d", "-o", "link", "show", "eth0"]);
    assert!(
        kind.contains("macvlan") && kind.contains("mode bridge"),
        "{kind}"
    );
    assert_eq!(mac.trim(), "02:00:c0:a8:4d:14");
    let ip_s1 = lab.addr_of(s1, "eth0");
    let ip_s2 = lab.addr_of(s2, "eth0");
    for ip in [&ip_s1, &ip_s2] {
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!((128..192).contains(&last), "{ip} is outside ip_range");
    }

    // Endpoints and the LAN host reach each other, both ways, ICMP and TCP.
    for ns in [printer, s1, s2] {
        lab.assert_ping(ns, "192.168.77.250");
    }
    lab.assert_ping("lanhost", "192.168.77.20");
    lab.assert_ping("lanhost", &ip_s1);
    let _lan = lab.listen("lanhost", 7300, "lan-host");
    let _prn = lab.listen(printer, 7300, "printer");
    assert_eq!(
        lab.tcp(s1, "192.168.77.250", 7300).as_deref(),
        Some("lan-host")
    );
    assert_eq!(
        lab.tcp("lanhost", "192.168.77.20", 7300).as_deref(),
        Some("printer")
    );
    // Bridge mode: siblings talk through the parent.
    assert_eq!(
        lab.tcp(s2, "192.168.77.20", 7300).as_deref(),
        Some("printer")
    );
    lab.assert_ping(s1, &ip_s2);

    assert!(lab.up(&f).contains("No changes."));
    lab.down(&f);
    // The parent and the LAN host are the test's: still there, still working.
    lab.assert_clean("ap-mv", &["lanhost"], &["lan0"], &[]);
    let lan0 = lab.sh_ok(&["ip", "-o", "link", "show", "lan0"]);
    assert!(lan0.contains("UP"), "the parent was changed: {lan0}");
}

#[test]
fn network_modes_host_none_and_service() {
    require_root("network_modes_host_none_and_service");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-mode
networks:
  lab:
    ipam: {config: [{subnet: 10.64.1.0/24}]}
services:
  app:
    deploy: {replicas: 2}
    networks: [lab]
  side:
    network_mode: service:app
  probe:
    network_mode: host
  iso:
    network_mode: none
  client:
    networks: [lab]
"#,
    );
    lab.up(&f);
    let ns = lab.namespaces();
    let want: BTreeSet<String> = [
        "ap-mode-app-1",
        "ap-mode-app-2",
        "ap-mode-client-1",
        "ap-mode-iso-1",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        ns, want,
        "host and service: modes make no namespace of their own"
    );

    // host: the command runs in the host's own namespace and sees its links.
    let host_net = lab.sh_ok(&["readlink", "/proc/self/ns/net"]);
    let out = lab.nc_ok(
        &f,
        &["exec", "probe", "--", "readlink", "/proc/self/ns/net"],
    );
    assert_eq!(out.trim(), host_net.trim());
    let links = lab.nc_ok(&f, &["exec", "probe", "--", "ip", "-o", "link"]);
    assert!(links.contains(UPLINK_IF), "{links}");

    // none: a namespace with lo only, up.
    let links = lab.in_ns_ok("ap-mode-iso-1", &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(
        links.starts_with("1: lo:") && links.contains(",UP"),
        "{links}"
    );
    lab.in_ns_ok("ap-mode-iso-1", &["ping", "-c1", "-W1", "127.0.0.1"]);
    lab.assert_no_ping("ap-mode-iso-1", "10.64.1.1");

    // service:app: the namespace of app's first replica, same interfaces and addresses.
    let app_net = lab.nc_ok(&f, &["exec", "app", "--", "readlink", "/proc/self/ns/net"]);
    let side_net = lab.nc_ok(&f, &["exec", "side", "--", "readlink", "/proc/self/ns/net"]);
    let app2_net = lab.nc_ok(
        &f,
        &[
            "exec",
            "app",
            "--index",
            "2",
            "--",
            "readlink",
            "/proc/self/ns/net",
        ],
    );
    assert_eq!(app_net, side_net);
    assert_ne!(app_net, app2_net);
    let app_addrs = lab.nc_ok(&f, &["exec", "app", "--", "ip", "-o", "-4", "addr"]);
    let side_addrs = lab.nc_ok(&f, &["exec", "side", "--", "ip", "-o", "-4", "addr"]);
    assert_eq!(app_addrs, side_addrs);
    // A server of the sidecar answers on app's address.
    let app_ip = lab.addr_of("ap-mode-app-1", "eth0");
    let mut side_srv = lab.sb.command(
        nc_bin(),
        &[
            "-f",
            f.to_str().unwrap(),
            "exec",
            "side",
            "--",
            "socat",
            "TCP-LISTEN:7400,reuseaddr,fork",
            "SYSTEM:echo sidecar",
        ],
    );
    let _side = Bg(side_srv
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn"));
    lab.wait_listening(&["ip", "netns", "exec", "ap-mode-app-1"], 7400);
    assert_eq!(
        lab.tcp("ap-mode-client-1", &app_ip, 7400).as_deref(),
        Some("sidecar")
    );

    // ps shows each mode.
    let ps = ps_json(&lab, &f);
    let mode = |svc: &str| {
        ps["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == svc)
            .map(|r| r["mode"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(mode("probe"), "host");
    assert_eq!(mode("iso"), "own");
    assert_eq!(mode("side"), "shared:ap-mode-app-1");

    drop(_side);
    lab.down(&f);
    lab.assert_clean("ap-mode", &[], &[], &[]);
}

#[test]
fn up_twice_changes_nothing() {
    require_root("up_twice_changes_nothing");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-idem
networks:
  front:
    ipam: {config: [{subnet: 10.65.1.0/24}]}
  back:
    internal: true
    ipam: {config: [{subnet: 10.65.2.0/24}]}
services:
  web:
    deploy: {replicas: 3}
    networks: [front, back]
    sysctls:
      net.ipv4.tcp_keepalive_time: "120"
    extra_hosts: ["gateway.lab:10.65.1.1"]
  db:
    networks: [back]
    dns: [10.65.2.53]
"#,
    );
    let first = lab.up(&f);
    assert!(first.contains("Applied"), "{first}");
    std::thread::sleep(Duration::from_millis(300));
    let before = lab.world();
    let second = lab.nc_ok(&f, &["up"]);
    assert!(
        second.contains("No changes."),
        "the second up should say No changes.:\n{second}"
    );
    assert!(!second.contains("Applied"), "{second}");
    let after = lab.world();
    assert!(
        before == after,
        "the second up changed the machine:\n{}",
        world_diff(&before, &after)
    );
    lab.assert_converged(&f);
    // The settings asked for are in place.
    let v = lab.in_ns_ok(
        "ap-idem-web-2",
        &["cat", "/proc/sys/net/ipv4/tcp_keepalive_time"],
    );
    assert_eq!(v.trim(), "120");
    let hosts = lab.nc_ok(
        &f,
        &["exec", "web", "--index", "2", "--", "cat", "/etc/hosts"],
    );
    assert!(
        hosts.contains("gateway.lab") && hosts.contains("ap-idem-web-2"),
        "{hosts}"
    );
    lab.down(&f);
    lab.assert_clean("ap-idem", &[], &[], &[]);
}

const DRIFT: &str = r#"
name: ap-drift
networks:
  front:
    ipam: {config: [{subnet: 10.66.1.0/24}]}
services:
  web:
    deploy: {replicas: 3}
    networks: [front]
"#;

/// Plan shows the drift, up repairs it, plan is clean again, packets flow.
fn repair(lab: &Lab, f: &Path, expect: &[&str]) {
    let (code, plan) = lab.plan_code(f);
    assert_eq!(code, 2, "plan should show changes:\n{plan}");
    assert!(
        plan.contains("Changed outside netcompose"),
        "plan should report drift:\n{plan}"
    );
    for e in expect {
        assert!(plan.contains(e), "plan should mention {e}:\n{plan}");
    }
    let up = lab.up(f);
    assert!(up.contains("drift:"), "up should report the drift:\n{up}");
    lab.assert_converged(f);
    let ips: Vec<String> = (1..=3)
        .map(|i| lab.addr_of(&format!("ap-drift-web-{i}"), "eth0"))
        .collect();
    assert_eq!(ips, ["10.66.1.2", "10.66.1.3", "10.66.1.4"]);
    lab.assert_ping("ap-drift-web-1", "10.66.1.3");
    lab.assert_ping("ap-drift-web-2", "10.66.1.4");
    lab.assert_ping("ap-drift-web-3", "10.66.1.2");
}

#[test]
fn drift_is_planned_and_repaired() {
    require_root("drift_is_planned_and_repaired");
    let lab = Lab::new();
    let f = lab.compose("compose.yaml", DRIFT);
    lab.up(&f);
    lab.assert_converged(&f);

    // 1. The host end of a veth deleted by someone else (its peer goes with it).
    let host_end = lab
        .link_with_alias("netcompose:ap-drift:service.web[1].link.front")
        .expect("the veth host end carries its mark");
    lab.sh_ok(&["ip", "link", "del", &host_end]);
    lab.assert_no_ping("ap-drift-web-2", "10.66.1.2");
    repair(&lab, &f, &["service.web[1].link.front"]);

    // 2. An address changed inside a replica.
    lab.sh_ok(&[
        "ip",
        "-n",
        "ap-drift-web-2",
        "addr",
        "del",
        "10.66.1.3/24",
        "dev",
        "eth0",
    ]);
    lab.sh_ok(&[
        "ip",
        "-n",
        "ap-drift-web-2",
        "addr",
        "add",
        "10.66.1.99/24",
        "dev",
        "eth0",
    ]);
    repair(&lab, &f, &["service.web[2].link.front", "10.66.1.99/24"]);
    let all = lab.in_ns_ok("ap-drift-web-2", &["ip", "-4", "-o", "addr"]);
    assert!(
        !all.contains("10.66.1.99"),
        "the stray address stays: {all}"
    );

    // 3. A namespace deleted with `ip netns del`.
    lab.sh_ok(&["ip", "netns", "del", "ap-drift-web-3"]);
    assert!(!lab.namespaces().contains("ap-drift-web-3"));
    repair(&lab, &f, &["service.web[3]"]);
    assert!(lab.namespaces().contains("ap-drift-web-3"));

    // 4. A bridge deleted (every veth on it stays, unattached).
    let bridge = lab
        .link_with_alias("netcompose:ap-drift:network.front")
        .expect("the bridge carries its mark");
    lab.sh_ok(&["ip", "link", "del", &bridge]);
    repair(&lab, &f, &["network.front"]);

    // 5. The host's nft table deleted.
    lab.sh_ok(&["nft", "delete", "table", "inet", "netcompose-ap-drift"]);
    repair(&lab, &f, &["firewall.host"]);
    assert!(lab.nft_tables().contains("inet netcompose-ap-drift"));

    lab.down(&f);
    lab.assert_clean("ap-drift", &[], &[], &[]);
}

const CRASH: &str = r#"
name: ap-crash
networks:
  front:
    ipam: {config: [{subnet: 10.67.1.0/24}]}
  back:
    internal: true
    ipam: {config: [{subnet: 10.67.2.0/24}]}
services:
  web:
    deploy: {replicas: 6}
    networks: [front, back]
  db:
    deploy: {replicas: 3}
    networks: [back]
  side:
    network_mode: service:db
  iso:
    network_mode: none
"#;

/// Start `netcompose -f f args` in its own process group and SIGKILL the group after `ms`;
/// returns whether it had already finished.
fn kill_after(lab: &Lab, f: &Path, args: &[&str], ms: u64) -> bool {
    let mut all = vec!["-f", f.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut child = lab
        .sb
        .command(nc_bin(), &all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn netcompose");
    // nsenter execs netcompose (no --fork): the child is netcompose itself, and its group
    // holds whatever it spawned (nft).
    std::thread::sleep(Duration::from_millis(ms));
    let done = matches!(child.try_wait(), Ok(Some(_)));
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = child.wait().expect("wait netcompose");
    done || status.signal().is_none()
}

#[test]
fn sigkilled_up_converges_when_run_again_and_down_leaves_nothing() {
    require_root("sigkilled_up_converges_when_run_again_and_down_leaves_nothing");
    let lab = Lab::new();
    let f = lab.compose("compose.yaml", CRASH);
    let mut rng = Rng::new();
    let trials = std::env::var("NC_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    // Kill points cover 0-150 ms and, on a slower machine or build, the whole of a run: the
    // window is the longer of 150 ms and a full `up` (timed once here).
    let t = Instant::now();
    lab.up(&f);
    let full = t.elapsed().as_millis() as u64;
    lab.down(&f);
    let window = full.max(150);
    eprintln!("a full up takes {full} ms: kills land in 0-{window} ms");
    let mut finished = 0;
    for trial in 0..trials {
        let ms = rng.below(window + 1);
        let t = Instant::now();
        let done = kill_after(&lab, &f, &["up"], ms);
        finished += usize::from(done);
        eprintln!(
            "trial {trial}: up SIGKILLed at {ms} ms{}",
            if done {
                " (it had already finished)"
            } else {
                ""
            }
        );
        let out = lab.nc(&f, &["up"]);
        assert!(
            out.status.success(),
            "trial {trial}: up after a SIGKILL at {ms} ms failed:\n{}",
            text(&out)
        );
        let (code, plan) = lab.plan_code(&f);
        assert_eq!(
            code, 0,
            "trial {trial}: not converged after a SIGKILL at {ms} ms:\n{plan}"
        );
        lab.assert_ping("ap-crash-web-1", &lab.addr_of("ap-crash-web-6", "eth0"));
        // Every other trial also interrupts a `down`.
        if trial % 2 == 1 {
            let ms = rng.below(101);
            kill_after(&lab, &f, &["down"], ms);
        }
        let out = lab.nc(&f, &["down"]);
        assert!(
            out.status.success(),
            "trial {trial}: down failed:\n{}",
            text(&out)
        );
        lab.assert_clean("ap-crash", &[], &[], &[]);
        eprintln!(
            "trial {trial}: converged and cleaned up in {:?}",
            t.elapsed()
        );
    }
    eprintln!("{finished} of {trials} runs of `up` finished before the kill");
    assert!(
        finished < trials,
        "no `up` was interrupted: the kills came too late to test anything"
    );
}

#[test]
fn objects_that_are_not_the_projects_are_never_touched() {
    require_root("objects_that_are_not_the_projects_are_never_touched");
    let lab = Lab::new();
    // Look-alikes: a bridge named and marked like a netcompose bridge of a similarly named
    // project, a namespace named like a replica of this project, a link marked for another
    // project, nft tables named like this project's (in another family, and a suffix).
    for step in [
        "ip link add ncbrlookalike01 type bridge",
        "ip link set ncbrlookalike01 alias netcompose:ap-own2:network.front",
        "ip link set ncbrlookalike01 up",
        "ip addr add 10.68.9.1/24 dev ncbrlookalike01",
        "ip link add ncdummy0 type bridge",
        "ip link set ncdummy0 alias netcompose:ap-other:service.web[1].link.front",
        "ip netns add ap-own-web-9",
        "ip -n ap-own-web-9 link add eth0 type veth peer name eth1",
        "ip -n ap-own-web-9 link set lo alias netcompose:ap-own-x:service.web[9]",
        "nft add table ip netcompose-ap-own",
        "nft add chain ip netcompose-ap-own forward { type filter hook forward priority 0 ; }",
        "nft add rule ip netcompose-ap-own forward accept",
        "nft add table inet netcompose-ap-own-old",
    ] {
        let args: Vec<&str> = step.split(' ').collect();
        lab.sh_ok(&args);
    }
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-own
networks:
  front:
    ipam: {config: [{subnet: 10.68.1.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
"#,
    );
    let foreign = |lab: &Lab| {
        let mut s = String::new();
        for l in links_json(&lab.sh_ok(&["ip", "-j", "-d", "link", "show"])) {
            let name = l["ifname"].as_str().unwrap_or_default();
            if name == "ncbrlookalike01" || name == "ncdummy0" {
                s.push_str(&format!(
                    "{} {} {} {} {}\n",
                    l["ifindex"], name, l["address"], l["ifalias"], l["flags"]
                ));
            }
        }
        s.push_str(&lab.sh_ok(&["ip", "-4", "-o", "addr", "show", "dev", "ncbrlookalike01"]));
        s.push_str(&lab.sh_ok(&["ip", "-n", "ap-own-web-9", "-o", "link"]));
        s.push_str(&lab.sh_ok(&["nft", "-a", "list", "table", "ip", "netcompose-ap-own"]));
        s.push_str(&lab.sh_ok(&[
            "nft",
            "-a",
            "list",
            "table",
            "inet",
            "netcompose-ap-own-old",
        ]));
        s
    };
    let before = foreign(&lab);
    let plan = lab.nc_ok(&f, &["plan"]);
    assert!(
        !plan.contains("lookalike") && !plan.contains("web[9]"),
        "{plan}"
    );
    lab.up(&f);
    lab.assert_ping("ap-own-web-1", "10.68.1.3");
    assert_eq!(
        foreign(&lab),
        before,
        "up touched an object that is not the project's"
    );
    let ps = lab.nc_ok(&f, &["ps"]);
    assert!(!ps.contains("web-9"), "{ps}");
    lab.down(&f);
    assert_eq!(
        foreign(&lab),
        before,
        "down touched an object that is not the project's"
    );
    lab.assert_clean(
        "ap-own",
        &["ap-own-web-9"],
        &["ncbrlookalike01", "ncdummy0"],
        &["ip netcompose-ap-own", "inet netcompose-ap-own-old"],
    );
}

#[test]
fn an_object_in_the_way_stops_up_and_is_left_alone() {
    require_root("an_object_in_the_way_stops_up_and_is_left_alone");
    let lab = Lab::new();
    // Someone else's bridge with the exact name the network asks for, and someone else's
    // namespace with the exact name of a replica.
    lab.sh_ok(&["ip", "link", "add", "br-taken", "type", "bridge"]);
    lab.sh_ok(&["ip", "netns", "add", "ap-way-web-1"]);
    lab.sh_ok(&[
        "ip",
        "-n",
        "ap-way-web-1",
        "link",
        "add",
        "keepme",
        "type",
        "veth",
        "peer",
        "name",
        "keepme2",
    ]);
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-way
networks:
  front:
    driver_opts:
      com.docker.network.bridge.name: br-taken
    ipam: {config: [{subnet: 10.69.1.0/24}]}
services:
  web:
    networks: [front]
"#,
    );
    let out = lab.nc(&f, &["up"]);
    assert!(!out.status.success(), "up must refuse:\n{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("not this project's"), "{msg}");
    assert!(msg.contains("br-taken"), "{msg}");
    // Untouched: no address, no alias, still there; the namespace keeps its link.
    let br = lab.sh_ok(&["ip", "-d", "addr", "show", "br-taken"]);
    assert!(!br.contains("10.69.1.1") && !br.contains("alias"), "{br}");
    let inside = lab.in_ns_ok("ap-way-web-1", &["ip", "-o", "link"]);
    assert!(
        inside.contains("keepme") && !inside.contains("alias"),
        "{inside}"
    );
    lab.down(&f);
    assert!(lab.host_links().contains("br-taken"));
    assert!(lab.namespaces().contains("ap-way-web-1"));
    lab.assert_clean("ap-way", &["ap-way-web-1"], &["br-taken"], &[]);
}

#[test]
fn a_saved_plan_applies_and_is_refused_once_the_world_changed() {
    require_root("a_saved_plan_applies_and_is_refused_once_the_world_changed");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-plan
networks:
  front:
    ipam: {config: [{subnet: 10.70.1.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
"#,
    );
    let p1 = lab.path("first.plan");
    let p2 = lab.path("second.plan");
    lab.nc_ok(&f, &["plan", "--out", p1.to_str().unwrap()]);
    // The saved plan is applied (the Compose file is not even read).
    let out = lab.run_nc(&["up", "--plan", p1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Applied"), "{}", text(&out));
    lab.assert_converged(&f);
    lab.assert_ping("ap-plan-web-1", "10.70.1.3");

    // The same plan again: the machine is no longer what it was planned against.
    let out = lab.run_nc(&["up", "--plan", p1.to_str().unwrap()]);
    assert!(!out.status.success(), "a stale plan was applied");
    assert!(
        text(&out).contains("changed since the plan"),
        "{}",
        text(&out)
    );

    // A plan made now, then a change by hand: refused, and nothing applied.
    lab.nc_ok(&f, &["plan", "--out", p2.to_str().unwrap()]);
    let host_end = lab
        .link_with_alias("netcompose:ap-plan:service.web[2].link.front")
        .unwrap();
    lab.sh_ok(&["ip", "link", "del", &host_end]);
    let before = lab.world();
    let out = lab.run_nc(&["up", "--plan", p2.to_str().unwrap()]);
    assert!(!out.status.success(), "a stale plan was applied");
    assert!(
        text(&out).contains("changed since the plan"),
        "{}",
        text(&out)
    );
    assert_eq!(before, lab.world(), "a refused plan changed the machine");
    // A fresh plan repairs it.
    lab.nc_ok(&f, &["plan", "--out", p2.to_str().unwrap()]);
    let out = lab.run_nc(&["up", "--plan", p2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    lab.assert_converged(&f);
    lab.down(&f);
    lab.assert_clean("ap-plan", &[], &[], &[]);
}

#[test]
fn concurrent_ups_wait_on_the_lock() {
    require_root("concurrent_ups_wait_on_the_lock");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-lock
networks:
  front:
    ipam: {config: [{subnet: 10.71.1.0/24}]}
services:
  web:
    deploy: {replicas: 8}
    networks: [front]
"#,
    );
    let spawn = || {
        lab.sb
            .command(nc_bin(), &["-f", f.to_str().unwrap(), "up"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn up")
    };
    // Two at once: both succeed, one after the other.
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    let both = format!("{}\n{}", text(&a), text(&b));
    assert_eq!(both.matches("Applied").count(), 1, "{both}");
    assert_eq!(both.matches("No changes.").count(), 1, "{both}");
    lab.assert_converged(&f);
    lab.assert_ping("ap-lock-web-1", "10.71.1.9");

    // A held lock: up says it waits, and goes on when the lock is released.
    lab.nc_ok(&f, &["down"]);
    lab.sh_ok(&["mkdir", "-p", "/var/lib/netcompose/ap-lock"]);
    let holder = Bg(lab
        .sb
        .spawn(&["flock", "/var/lib/netcompose/ap-lock/lock", "sleep", "1.5"]));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let up = spawn().wait_with_output().unwrap();
    let waited = t.elapsed();
    drop(holder);
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        text(&up).contains("Waiting for another netcompose"),
        "{}",
        text(&up)
    );
    assert!(
        waited >= Duration::from_millis(900),
        "up did not wait: {waited:?}"
    );
    lab.assert_converged(&f);
    lab.down(&f);
    lab.assert_clean("ap-lock", &[], &[], &[]);
}

#[test]
fn exec_runs_in_the_replica_and_returns_the_exit_code() {
    require_root("exec_runs_in_the_replica_and_returns_the_exit_code");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-exec
networks:
  front:
    ipam: {config: [{subnet: 10.72.1.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
"#,
    );
    lab.up(&f);
    let code = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        lab.nc(&f, &all).status.code()
    };
    assert_eq!(code(&["web", "--", "true"]), Some(0));
    assert_eq!(code(&["web", "--", "false"]), Some(1));
    assert_eq!(code(&["web", "--", "sh", "-c", "exit 7"]), Some(7));
    assert_eq!(
        code(&["web", "--index", "2", "--", "sh", "-c", "exit 42"]),
        Some(42)
    );
    assert_ne!(code(&["web", "--index", "3", "--", "true"]), Some(0));
    assert_ne!(code(&["nosuch", "--", "true"]), Some(0));
    assert_ne!(code(&["web", "--", "/nonexistent/command"]), Some(0));
    // It runs inside the replica, with the replica's /etc files.
    let addr = lab.nc_ok(
        &f,
        &[
            "exec", "web", "--index", "2", "--", "ip", "-4", "-o", "addr",
        ],
    );
    assert!(addr.contains("10.72.1.3/24"), "{addr}");
    let hosts = lab.nc_ok(&f, &["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("ap-exec-web-1"), "{hosts}");
    let resolv = lab.nc_ok(&f, &["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver"), "{resolv}");
    assert!(
        !resolv.contains(UPLINK_OUTSIDE_IP),
        "host's resolv.conf: {resolv}"
    );
    let ping = lab.nc(
        &f,
        &["exec", "web", "--", "ping", "-c1", "-W2", "10.72.1.3"],
    );
    assert!(ping.status.success(), "{}", text(&ping));
    lab.down(&f);
    // After down: a clear error, not a command run on the host.
    let out = lab.nc(&f, &["exec", "web", "--", "true"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("ap-exec-web-1"), "{}", text(&out));
}

#[test]
fn ps_json_lists_replicas_interfaces_addresses_and_macs() {
    require_root("ps_json_lists_replicas_interfaces_addresses_and_macs");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-ps
networks:
  front:
    ipam: {config: [{subnet: 10.73.1.0/24}]}
  back:
    ipam: {config: [{subnet: 10.73.2.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    networks: [front, back]
  db:
    networks: [back]
"#,
    );
    lab.up(&f);
    let ps = ps_json(&lab, &f);
    assert_eq!(ps["project"], "ap-ps");
    assert_eq!(ps["source"], "live");
    let reps = ps["replicas"].as_array().expect("replicas");
    let names: BTreeSet<String> = reps
        .iter()
        .map(|r| format!("{}/{}", r["service"].as_str().unwrap(), r["replica"]))
        .collect();
    assert_eq!(names, ["db/1", "web/1", "web/2"].map(String::from).into());
    let mut interfaces = 0;
    for r in reps {
        let ns = r["namespace"].as_str().expect("namespace");
        assert_eq!(r["running"], true, "{r}");
        let live = links_json(&lab.in_ns_ok(ns, &["ip", "-j", "link", "show"]));
        let want = if r["service"] == "web" { 2 } else { 1 };
        let ifs = r["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifs.len(), want, "{r}");
        for i in ifs {
            interfaces += 1;
            let name = i["name"].as_str().unwrap();
            let l = live
                .iter()
                .find(|l| l["ifname"] == name)
                .unwrap_or_else(|| panic!("{name} not in {ns}"));
            assert_eq!(i["mac"], l["address"], "MAC of {name} in {ns}");
            let ip = lab.addr_of(ns, name);
            let net = i["network"].as_str().unwrap();
            let prefix = if net == "front" {
                "10.73.1."
            } else {
                "10.73.2."
            };
            assert!(ip.starts_with(prefix), "{ns} {name} on {net}: {ip}");
            assert_eq!(i["addresses"], serde_json::json!([format!("{ip}/24")]));
        }
    }
    assert_eq!(interfaces, 5);
    // The table form shows the same.
    let table = lab.nc_ok(&f, &["ps"]);
    assert!(
        table.contains("ap-ps-web-2") && table.contains("10.73.2."),
        "{table}"
    );
    lab.down(&f);
    let ps = ps_json(&lab, &f);
    for r in ps["replicas"].as_array().unwrap() {
        assert_eq!(r["running"], false, "{r}");
        assert!(r["interfaces"].as_array().unwrap().is_empty(), "{r}");
    }
}

#[test]
fn a_subnet_overlapping_a_host_route_is_refused_at_plan_time() {
    require_root("a_subnet_overlapping_a_host_route_is_refused_at_plan_time");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-overlap
networks:
  lab:
    ipam:
      config:
        - subnet: 198.18.0.0/30
services:
  web:
    network_mode: none
"#,
    );
    for cmd in [&["plan"][..], &["up"][..]] {
        let out = lab.nc(&f, cmd);
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd:?} must refuse:\n{msg}");
        assert!(msg.contains("overlaps a route of the host"), "{msg}");
        assert!(msg.contains(UPLINK_IF), "{msg}");
        assert!(
            msg.contains("compose.yaml:7:") && msg.contains("198.18.0.0/30"),
            "the diagnostic points at the subnet: {msg}"
        );
    }
    // Nothing was made (the project's lock file may stay: it is taken before planning).
    lab.sh_ok(&["rm", "-rf", "/var/lib/netcompose/ap-overlap"]);
    lab.assert_clean("ap-overlap", &[], &[], &[]);
}

#[test]
fn down_works_without_the_state_file_or_the_compose_file() {
    require_root("down_works_without_the_state_file_or_the_compose_file");
    let lab = Lab::new();
    // A name of its own: the cgroups of a project are the machine's, shared by the sandboxes
    // of tests running at the same time.
    let f = lab.compose(
        "compose.yaml",
        &TWO_NETWORKS.replace("name: ap-net", "name: ap-gone"),
    );
    lab.up(&f);
    lab.sh_ok(&["rm", "-rf", "/var/lib/netcompose/ap-gone"]);
    // plan still sees every kernel object from its mark: nothing to create or change but what
    // only the state records (VIPs and DNS zones, which live in the project's daemon).
    let plan: Value =
        serde_json::from_str(&stdout(&lab.nc(&f, &["plan", "--json"]))).expect("plan --json");
    for c in plan["resource_changes"]
        .as_array()
        .expect("resource_changes")
    {
        assert!(
            c["kind"] == "vip" || c["kind"] == "dns",
            "a kernel object was lost with the state file: {c}"
        );
    }
    lab.down(&f);
    lab.assert_clean("ap-gone", &[], &[], &[]);

    lab.up(&f);
    std::fs::remove_file(&f).unwrap();
    let out = lab.run_nc(&["-p", "ap-gone", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.assert_clean("ap-gone", &[], &[], &[]);
}

#[test]
fn dual_stack_endpoints_talk_ipv6_and_ipv4_only_ones_stay_quiet() {
    require_root("dual_stack_endpoints_talk_ipv6_and_ipv4_only_ones_stay_quiet");
    let lab = Lab::new();
    let f = lab.compose(
        "compose.yaml",
        r#"
name: ap-v6
networks:
  dual:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 10.74.1.0/24
        - subnet: fd00:74::/64
          gateway: fd00:74::1
  plain:
    ipam: {config: [{subnet: 10.74.2.0/24}]}
services:
  web:
    deploy: {replicas: 2}
    networks: [dual]
  old:
    networks: [plain]
"#,
    );
    lab.up(&f);
    let (w1, w2, old) = ("ap-v6-web-1", "ap-v6-web-2", "ap-v6-old-1");
    let v6 = |ns: &str| {
        let j: Value = serde_json::from_str(&lab.sh_ok(&[
            "ip", "-n", ns, "-6", "-j", "addr", "show", "dev", "eth0", "scope", "global",
        ]))
        .unwrap();
        j[0]["addr_info"][0]["local"]
            .as_str()
            .unwrap_or_else(|| panic!("{ns} has no global IPv6 address: {j}"))
            .to_string()
    };
    let (a1, a2) = (v6(w1), v6(w2));
    assert!(
        a1.starts_with("fd00:74::") && a2.starts_with("fd00:74::"),
        "{a1} {a2}"
    );
    // Duplicate address detection may hold the addresses for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !lab.ping(Some(w1), &a2, false) {
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.assert_ping(w1, &a2);
    lab.assert_ping(w2, &a1);
    lab.assert_ping(w1, "fd00:74::1");
    let _srv = lab.listen6(w2, 7500, "over-v6");
    // socat wants IPv6 literals in brackets.
    assert_eq!(
        lab.tcp(w1, &format!("[{a2}]"), 7500).as_deref(),
        Some("over-v6")
    );
    lab.assert_ping(w1, &lab.addr_of(w2, "eth0"));
    // An IPv4-only endpoint has no IPv6 on its interface (no link-local chatter flooded to
    // every port of the bridge), but keeps ::1.
    let inside = lab.in_ns_ok(old, &["ip", "-6", "-o", "addr"]);
    assert!(!inside.contains("eth0"), "{inside}");
    assert!(inside.contains("::1/128"), "{inside}");
    lab.assert_converged(&f);
    lab.down(&f);
    lab.assert_clean("ap-v6", &[], &[], &[]);
}
