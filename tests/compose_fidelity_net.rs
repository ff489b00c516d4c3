//! Issue 15, items 3-6: ports, names and links, networks, internal networks with ports, each
//! read as Docker Compose reads it. Every case comes from compose-go's or docker/compose's own
//! tests (named at each test). The loader cases need no root; the others build a sandbox host
//! (tests/common/sandbox.rs, which removes everything when dropped, also on panic) and fail,
//! saying so, without root.

mod common;

use common::project::Project;
use common::{require_root, Sandbox};
use netcompose::load::LoadOptions;
use netcompose::pipeline::{checked_project, Checked, Failure};
use std::collections::HashMap;

/// Load and validate `yaml` (project `fid`) with an empty environment.
fn load(yaml: &str) -> Result<Checked, Failure> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, yaml).unwrap();
    checked_project(&LoadOptions {
        files: vec![file],
        project_name: Some("fid".into()),
        environment: Some(HashMap::new()),
        ..Default::default()
    })
}

fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => Vec::new(),
        Err(Failure::Invalid { diags, .. }) => diags.errors.iter().map(|e| e.to_string()).collect(),
        Err(Failure::Load(e)) => vec![e.to_string()],
    }
}

// ---------------------------------------------------------------- item 4: extra_hosts

/// compose-go types/hostList_test.go ("host=1.2.3.4,5.6.7.8" is split on commas): one entry,
/// so one hosts line, per address, in both the list and the mapping form.
#[test]
fn extra_hosts_with_several_addresses_give_one_entry_per_address() {
    let checked = load(
        r#"
services:
  web:
    image: nginx
    extra_hosts:
      - "myhost=1.2.3.4,5.6.7.8"
      - "other:[::1]"
  api:
    image: nginx
    extra_hosts:
      myhost: "10.0.0.1,10.0.0.2"
"#,
    )
    .unwrap_or_else(|_| panic!("must load"));
    let pairs = |svc: &str| -> Vec<(String, String)> {
        checked.project.services[svc]
            .extra_hosts
            .iter()
            .map(|h| (h.host.clone(), h.addr.clone()))
            .collect()
    };
    let p = |h: &str, a: &str| (h.to_string(), a.to_string());
    assert_eq!(
        pairs("web"),
        [
            p("myhost", "1.2.3.4"),
            p("myhost", "5.6.7.8"),
            p("other", "::1")
        ]
    );
    assert_eq!(
        pairs("api"),
        [p("myhost", "10.0.0.1"), p("myhost", "10.0.0.2")]
    );
}

/// compose-go types/hostList.go refuses an entry without an address; an address that is not
/// one would make a malformed hosts line, so it is refused too.
#[test]
fn extra_hosts_without_an_address_is_refused() {
    let errs = errors("services:\n  web:\n    image: x\n    extra_hosts: [\"myhost=1.2.3.4,\"]\n");
    assert!(
        errs.iter().any(|e| e.contains("extra_hosts address")),
        "{errs:?}"
    );
}

// ---------------------------------------------------------------- item 5: networks

/// compose-go loader/loader_test.go, TestLoadVolumeInvalidExternalNameAndNameCombination (the
/// same rule holds for networks): `name` next to a different legacy `external.name` is
/// refused with Compose's message; the same name twice is accepted.
#[test]
fn name_next_to_a_different_legacy_external_name_is_refused() {
    let file = |name: &str| {
        format!(
            "services:\n  web:\n    image: x\n    networks: [ext]\nnetworks:\n  ext:\n    name: {name}\n    external:\n      name: external_name\n"
        )
    };
    let errs = errors(&file("user_specified_name"));
    assert!(
        errs.iter()
            .any(|e| e == "networks.ext: name and external.name conflict; only use name"),
        "{errs:?}"
    );
    assert_eq!(errors(&file("external_name")), Vec::<String>::new());
}

// ---------------------------------------------------------------- item 6: internal + ports

/// The issue's case (a fixture of Docker's with `ports:` on a service whose only network is
/// internal): Docker creates no port mapping on an internal network and says nothing. Here
/// the file loads, with a warning.
#[test]
fn ports_on_a_service_attached_only_to_internal_networks_is_a_warning() {
    let checked = load(
        r#"
services:
  db:
    image: postgres
    networks: [back]
    ports: ["5432:5432"]
networks:
  back:
    internal: true
"#,
    )
    .unwrap_or_else(|_| panic!("must load"));
    assert!(
        checked
            .warnings
            .iter()
            .any(|w| w.contains("attached only to internal networks")),
        "{:?}",
        checked.warnings
    );
}

// ---------------------------------------------------------------- root: the kernel

/// A background process (a listener), killed and reaped when dropped, also on panic.
struct Bg(std::process::Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hosts_of(sb: &Sandbox, ns: &str) -> String {
    sb.run_ok(&["cat", &format!("/etc/netns/{ns}/hosts")])
}

/// compose-go types/hostList_test.go's `myhost=1.2.3.4,5.6.7.8`, applied: the replica's
/// /etc/netns/<ns>/hosts has one line per address.
#[test]
fn extra_hosts_lines_in_the_replica_hosts_file() {
    require_root("extra_hosts_lines_in_the_replica_hosts_file");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "fidhosts",
        r#"
services:
  web:
    extra_hosts: ["myhost=1.2.3.4,5.6.7.8"]
"#,
    );
    p.up();
    let hosts = hosts_of(&sb, &p.ns("web", 1));
    let lines: Vec<&str> = hosts.lines().filter(|l| l.ends_with("myhost")).collect();
    assert_eq!(lines, ["1.2.3.4\tmyhost", "5.6.7.8\tmyhost"], "{hosts}");
}

/// docker/compose pkg/compose/create.go's refusal of a missing external network ("network X
/// declared as external, but could not be found"): `up` fails with that message, pointing at
/// the file, before anything is built.
#[test]
fn a_missing_external_network_fails_up_and_builds_nothing() {
    require_root("a_missing_external_network_fails_up_and_builds_nothing");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "fidext",
        r#"
services:
  web:
    networks: [front, ext]
networks:
  front: {}
  ext:
    name: nc-missing0
    external: true
"#,
    );
    let out = p.nc(&["up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up succeeded: {stderr}");
    assert!(
        stderr.contains("network nc-missing0 declared as external, but could not be found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("compose.yaml:"),
        "no file:line:col: {stderr}"
    );
    let netns = sb.run_ok(&["ip", "netns", "list"]);
    assert!(!netns.contains("fidext"), "a namespace was made: {netns}");
    let links = sb.run_ok(&["ip", "-o", "link", "show"]);
    assert!(
        !links.contains("netcompose:fidext"),
        "a link was made: {links}"
    );
    // Once the bridge exists, the same file comes up.
    sb.run_ok(&["ip", "link", "add", "nc-missing0", "type", "bridge"]);
    p.up();
}

// ---------------------------------------------------------------- item 3: ephemeral ports

/// docker/compose pkg/e2e/fixtures/network-test/compose.yaml (`words` publishes `"8080"`,
/// `web` publishes `"80"`): each gets an ephemeral host port from the kernel's
/// ip_local_port_range, skipping one a socket holds; the port is reachable from the host,
/// shown by `port` and `ps --json`, and the same after a second `up`.
#[test]
fn a_target_only_port_is_published_on_a_sticky_ephemeral_host_port() {
    require_root("a_target_only_port_is_published_on_a_sticky_ephemeral_host_port");
    let sb = Sandbox::new();
    // The sandbox host's own range (a per-namespace sysctl), with its first port taken.
    sb.run_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40010"]);
    let _holder = Bg(sb.spawn(&[
        "python3",
        "-c",
        "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',40000))\ns.listen()\nprint('ok',flush=True)\ntime.sleep(600)",
    ]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sb
        .run_ok(&["ss", "-Htln", "sport = :40000"])
        .contains("40000")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let p = Project::new(
        &sb,
        "fidports",
        r#"
services:
  words:
    ports: ["8080"]
  web:
    ports: ["80"]
"#,
    );
    p.up();
    let words = p.nc_ok(&["port", "words", "8080"]).trim().to_string();
    let web = p.nc_ok(&["port", "web", "80"]).trim().to_string();
    assert_eq!(words, "0.0.0.0:40001", "the lowest free port of the range");
    assert_eq!(web, "0.0.0.0:40002");
    let _server = Bg(p.serve("words", 1, 8080));
    p.wait_open(None, "127.0.0.1", 40001);
    let ps = p.ps();
    let replica = ps["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["service"] == "words")
        .cloned()
        .unwrap_or_default();
    assert_eq!(replica["ports"], "0.0.0.0:40001->8080/tcp", "{replica}");
    assert_eq!(replica["publishers"][0]["published_port"], 40001);
    assert_eq!(replica["publishers"][0]["target_port"], 8080);
    // Sticky: a second `up` keeps them, and changes nothing.
    p.up();
    assert_eq!(p.nc_ok(&["port", "words", "8080"]).trim(), "0.0.0.0:40001");
    assert_eq!(p.nc_ok(&["port", "web", "80"]).trim(), "0.0.0.0:40002");
}

// ---------------------------------------------------------------- item 5: enable_ipv4

/// The IPv6-only network of docker/compose#13785 (`enable_ipv4: false`, `enable_ipv6: true`,
/// compose-go's NetworkConfig.EnableIPv4): no IPv4 subnet, no IPv4 address on the replica or
/// the bridge.
#[test]
fn enable_ipv4_false_builds_an_ipv6_only_network() {
    require_root("enable_ipv4_false_builds_an_ipv6_only_network");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "fidv6",
        r#"
services:
  web:
    networks: [v6only]
networks:
  v6only:
    enable_ipv4: false
    enable_ipv6: true
"#,
    );
    p.up();
    let ns = p.ns("web", 1);
    let v4 = sb.run_ok(&[
        "ip", "-n", &ns, "-4", "-o", "addr", "show", "scope", "global",
    ]);
    assert!(v4.trim().is_empty(), "IPv4 addresses in {ns}: {v4}");
    let v6 = sb.run_ok(&[
        "ip", "-n", &ns, "-6", "-o", "addr", "show", "scope", "global",
    ]);
    assert!(v6.contains("eth0"), "no IPv6 address on eth0: {v6}");
    let bridge_v4 = sb.run_ok(&["ip", "-4", "-o", "addr", "show"]);
    assert!(
        !bridge_v4.lines().any(|l| l.contains("ncbr")),
        "the bridge has an IPv4 address: {bridge_v4}"
    );
}

/// What an IPv6-only network cannot have: no IPv6 at all, an IPv4 subnet, a static IPv4.
#[test]
fn enable_ipv4_false_refuses_what_needs_ipv4() {
    let errs = errors(
        r#"
services:
  web:
    image: x
    networks:
      a: {ipv4_address: 10.1.0.5}
networks:
  a:
    enable_ipv4: false
    enable_ipv6: true
    ipam: {config: [{subnet: 10.1.0.0/24}]}
  b:
    enable_ipv4: false
"#,
    );
    let has = |s: &str| errs.iter().any(|e| e.contains(s));
    assert!(
        has("network `b` has `enable_ipv4: false` but no IPv6"),
        "{errs:?}"
    );
    assert!(
        has("network `a` has `enable_ipv4: false` but an IPv4 subnet"),
        "{errs:?}"
    );
    assert!(has("asks for an IPv4 address on network `a`"), "{errs:?}");
}

// ---------------------------------------------------------------- item 4: links

/// compose-go loader/full-example.yml's `links: [db, db:database, redis]`: from the linking
/// service, `database` resolves to db's service address (its VIP) through the embedded
/// resolver; another service of the same network does not see the alias (Docker scopes a
/// link to the container that declares it).
#[test]
fn a_link_alias_resolves_from_the_linking_service_only() {
    require_root("a_link_alias_resolves_from_the_linking_service_only");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "fidlinks",
        r#"
services:
  db: {}
  redis: {}
  web:
    links: [db, "db:database", redis]
  other: {}
"#,
    );
    p.up();
    let vip = p.vip("db", "default");
    assert!(!vip.is_empty(), "db has no VIP");
    let dig = |svc: &str, name: &str| {
        let ns = p.ns(svc, 1);
        let out = sb.run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "dig",
            "+short",
            "+tries=3",
            "@127.0.0.11",
            name,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dig("web", "db").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the resolver never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(dig("web", "database"), vip);
    assert_eq!(
        dig("other", "db"),
        vip,
        "the service name resolves for everyone"
    );
    assert_eq!(dig("other", "database"), "", "the alias is web's only");
}

/// docker/compose pkg/e2e/fixtures/network-links/compose.yaml (TestNetworkLinks): two
/// `network_mode: bridge` services, one linking the other. Both get an interface on the
/// project's bridge network (never silently none), and container2 reaches container1 by name.
#[test]
fn network_mode_bridge_attaches_to_a_bridge_network() {
    require_root("network_mode_bridge_attaches_to_a_bridge_network");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "fidbridge",
        r#"
services:
  container1:
    network_mode: bridge
  container2:
    network_mode: bridge
    links:
      - container1
"#,
    );
    p.up();
    for svc in ["container1", "container2"] {
        let ns = p.ns(svc, 1);
        let v4 = sb.run_ok(&["ip", "-n", &ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(v4.contains("inet "), "{svc} has no address on eth0: {v4}");
    }
    let _server = Bg(p.serve("container1", 1, 80));
    let addr = p.addr("container1", 1, "bridge");
    p.wait_open(Some(("container2", 1)), &addr, 80);
    let answer = p.probe(Some(("container2", 1)), &["tcp", "container1", "80"]);
    assert!(
        answer
            .first()
            .is_some_and(|a| a.starts_with("container1-1 ")),
        "container1 by name from container2: {answer:?}"
    );
}

// ---------------------------------------------------------------- item 5: driver_opts

/// docker/compose passes `interface_name` to the engine as the endpoint driver option
/// `com.docker.network.endpoint.ifname` (pkg/compose/create.go); a file that writes the
/// option itself gets the same: the interface in the namespace carries that name.
#[test]
fn the_endpoint_ifname_driver_option_names_the_interface() {
    require_root("the_endpoint_ifname_driver_option_names_the_interface");
    let sb = Sandbox::new();
    let p = Project::new(
        &sb,
        "fidifname",
        r#"
services:
  web:
    networks:
      front:
        driver_opts:
          com.docker.network.endpoint.ifname: front0
networks:
  front: {}
"#,
    );
    p.up();
    let ns = p.ns("web", 1);
    let link = sb.run_ok(&["ip", "-n", &ns, "-4", "-o", "addr", "show", "dev", "front0"]);
    assert!(link.contains("inet "), "front0 has no address: {link}");
}
