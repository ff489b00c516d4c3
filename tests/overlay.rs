//! One overlay network over three sandbox hosts, each driven by `up --cluster-view` with the
//! view an agent would build from the store: the allocations of one `plan` run, this host's
//! replicas, and every other replica as a remote endpoint (its address and MAC from those
//! allocations, its host's underlay address as VTEP). Real packets: ICMP, TCP and UDP across
//! hosts, a remote replica's name, a VIP over local and remote replicas, the overlay MTU with
//! DF, an endpoint that moves to another host, and a VXLAN port taken by another socket.
//!
//! Cleanup: every host is a sandbox (its processes killed and its namespaces freed on drop,
//! panic included), the underlay namespace goes with the [`Cluster`], and the views and the
//! Compose file live in temporary directories.

mod common;

use common::Servers;

use common::cluster::{underlay_ip, Cluster};
use common::project::Project;
use common::{require_root, Sandbox};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Output;

const PROJECT: &str = "ov";
const COMPOSE: &str = "
services:
  web:
    deploy: {replicas: 3}
    networks: [mesh]
  client:
    networks: [mesh]
networks:
  mesh:
    driver: overlay
    ipam: {config: [{subnet: 10.70.0.0/24}]}
";
const PORT: u16 = 8080;

/// Which host (0-based) runs each replica.
type Placement = Vec<(&'static str, u32, usize)>;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The allocations of the whole project, as `up` would store them.
fn allocations(p: &Project) -> Value {
    let plan: Value = serde_json::from_str(&p.nc_ok(&["plan", "--json"])).expect("plan --json");
    plan["desired"]["allocations"].clone()
}

fn owner_addr(alloc: &Value, service: &str, index: u32) -> String {
    alloc["networks"]["mesh"]["addresses"][format!("{service}[{index}]")][0]
        .as_str()
        .expect("an address")
        .to_string()
}

/// The view of host `me`.
fn view(alloc: &Value, placement: &Placement, me: usize) -> Value {
    let mesh = &alloc["networks"]["mesh"];
    let local: Vec<Value> = placement
        .iter()
        .filter(|(_, _, h)| *h == me)
        .map(|(s, i, _)| json!([s, i]))
        .collect();
    let remote: Vec<Value> = placement
        .iter()
        .filter(|(_, _, h)| *h != me)
        .map(|(s, i, h)| {
            let owner = format!("{s}[{i}]");
            json!({
                "network": "mesh",
                "service": s,
                "index": i,
                "node": format!("h{h}"),
                "vtep": underlay_ip(*h),
                "mac": mesh["macs"][&owner],
                "ipv4": mesh["addresses"][&owner][0],
                "ipv6": null,
            })
        })
        .collect();
    json!({
        "node": format!("h{me}"),
        "underlay": underlay_ip(me),
        "underlay_mtu": 1500,
        "local": local,
        "remote": remote,
        "allocations": alloc,
    })
}

/// Write host `me`'s view and run `up` with it there.
fn up_on(p: &Project, dir: &tempfile::TempDir, view: &Value, me: usize) -> Output {
    let path: PathBuf = dir.path().join(format!("view-{me}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(view).unwrap()).unwrap();
    p.nc(&["up", "--cluster-view", path.to_str().unwrap()])
}

fn up_all(projects: &[Project], dir: &tempfile::TempDir, alloc: &Value, placement: &Placement) {
    for (me, p) in projects.iter().enumerate() {
        let out = up_on(p, dir, &view(alloc, placement, me), me);
        assert!(out.status.success(), "up on h{me}:\n{}", text(&out));
    }
}

fn ping(p: &Project, from: &str, args: &[&str]) -> Output {
    let mut cmd = vec!["ip", "netns", "exec", from, "ping", "-c", "1", "-W", "2"];
    cmd.extend_from_slice(args);
    p.sb.run(&cmd)
}

/// The VXLAN device's FDB and neighbour entries on a host, as `bridge` and `ip` show them.
fn entries(p: &Project) -> String {
    let links =
        p.sb.run_ok(&["ip", "-o", "-d", "link", "show", "type", "vxlan"]);
    let name = links
        .split(':')
        .nth(1)
        .map(str::trim)
        .expect("a vxlan device")
        .to_string();
    format!(
        "{}\n{}",
        p.sb.run_ok(&["bridge", "fdb", "show", "dev", &name]),
        p.sb.run_ok(&["ip", "neigh", "show", "dev", &name])
    )
}

#[test]
fn an_overlay_carries_traffic_names_and_vips_across_hosts() {
    require_root("an_overlay_carries_traffic_names_and_vips_across_hosts");
    let cluster = Cluster::without_store(3);
    // One project name per host: the sandboxes share the machine's cgroup tree, where a
    // project's daemon claims `netcompose/<project>` (separate machines have their own).
    let projects: Vec<Project> = (0..3)
        .map(|i| Project::new(cluster.host(i), &format!("{PROJECT}{i}"), COMPOSE))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let alloc = allocations(&projects[0]);
    let mut placement: Placement = vec![
        ("client", 1, 0),
        ("web", 1, 0),
        ("web", 2, 1),
        ("web", 3, 2),
    ];
    let first = dir.path().join("first-view.json");
    std::fs::write(&first, view(&alloc, &placement, 1).to_string()).unwrap();
    let planned = projects[1].nc_ok(&["plan", "--cluster-view", first.to_str().unwrap()]);
    for shown in [
        "network.mesh.vxlan (vxlan)",
        &format!(
            "network.mesh.remote.{} (remote)",
            owner_addr(&alloc, "web", 3)
        ),
        "service.web[2] (namespace)",
        "Note: node h1: 1 of the project's replicas run here",
    ] {
        assert!(planned.contains(shown), "{shown}:\n{planned}");
    }
    assert!(!planned.contains("service.web[1] (namespace)"), "{planned}");
    up_all(&projects, &dir, &alloc, &placement);
    let (c, client) = (&projects[0], "ov0-client-1");
    let mut servers = Servers(
        [(0, 1), (1, 2), (2, 3)]
            .into_iter()
            .map(|(h, i)| projects[h].serve("web", i, PORT))
            .collect(),
    );
    let web2 = owner_addr(&alloc, "web", 2);
    let web3 = owner_addr(&alloc, "web", 3);
    c.wait_open(Some(("client", 1)), &web2, PORT);

    // ICMP, TCP and UDP to replicas on the two other hosts.
    for addr in [&web2, &web3] {
        assert_eq!(c.probe(Some(("client", 1)), &["icmp", addr]), ["open"]);
        let tcp = c.probe(Some(("client", 1)), &["tcp", addr, "8080"]);
        assert!(tcp[0].starts_with("web-"), "tcp {addr}: {tcp:?}");
        let udp = c.probe(Some(("client", 1)), &["udp", addr, "8080"]);
        assert!(udp[0].starts_with("web-"), "udp {addr}: {udp:?}");
    }
    // A remote replica's name resolves (and answers).
    let named = c.probe(Some(("client", 1)), &["tcp", "ov0-web-3", "8080"]);
    assert!(named[0].starts_with("web-3 "), "{named:?}");
    // The VIP spreads over the local replica and the remote ones.
    let vip = alloc["networks"]["mesh"]["addresses"]["web.vip"][0]
        .as_str()
        .unwrap()
        .to_string();
    let answers = c.probe(Some(("client", 1)), &["tcp", &vip, "8080", "30"]);
    let seen: std::collections::BTreeSet<&str> =
        answers.iter().filter_map(|l| l.split(' ').next()).collect();
    assert!(seen.contains("web-1"), "{answers:?}");
    assert!(
        seen.contains("web-2") || seen.contains("web-3"),
        "{answers:?}"
    );
    // The overlay MTU (1500 - 50): a DF ping that fills it passes, one byte more does not.
    let fits = ping(c, client, &["-M", "do", "-s", "1422", &web2]);
    assert!(fits.status.success(), "{}", text(&fits));
    let over = ping(c, client, &["-M", "do", "-s", "1423", &web2]);
    assert!(!over.status.success());
    let said = text(&over).to_lowercase();
    assert!(
        said.contains("message too long") || said.contains("frag needed"),
        "{said}"
    );

    // web[2] moves from h1 to h2, keeping its address and MAC: h0's entries follow its `up`.
    let mac2 = alloc["networks"]["mesh"]["macs"]["web[2]"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        entries(c).contains(&format!("{mac2} dst {}", underlay_ip(1))),
        "{}",
        entries(c)
    );
    placement[2] = ("web", 2, 2);
    for me in [1, 2, 0] {
        let out = up_on(&projects[me], &dir, &view(&alloc, &placement, me), me);
        assert!(out.status.success(), "up on h{me}:\n{}", text(&out));
    }
    let now = entries(c);
    assert!(
        now.contains(&format!("{mac2} dst {}", underlay_ip(2))),
        "{now}"
    );
    assert!(
        !now.contains(&format!("{mac2} dst {}", underlay_ip(1))),
        "{now}"
    );
    assert!(now.contains(&format!("{web2} lladdr {mac2}")), "{now}");
    servers.0.push(projects[2].serve("web", 2, PORT));
    c.wait_open(Some(("client", 1)), &web2, PORT);
    let there = c.probe(Some(("client", 1)), &["tcp", &web2, "8080"]);
    assert!(there[0].starts_with("web-2 "), "{there:?}");
    // An FDB entry deleted behind netcompose's back is drift, written again by the next `up`.
    let vx = c.sb.run_ok(&["ip", "-o", "link", "show", "type", "vxlan"]);
    let vx = vx.split(':').nth(1).map(str::trim).unwrap().to_string();
    c.sb.run_ok(&["bridge", "fdb", "del", &mac2, "dev", &vx, "self"]);
    assert!(
        !entries(c).contains(&format!("{mac2} dst")),
        "{}",
        entries(c)
    );
    let out = up_on(c, &dir, &view(&alloc, &placement, 0), 0);
    assert!(
        text(&out).contains("changed outside netcompose"),
        "{}",
        text(&out)
    );
    assert!(
        entries(c).contains(&format!("{mac2} dst {}", underlay_ip(2))),
        "{}",
        entries(c)
    );
    // Nothing is left to do on any host.
    for (me, p) in projects.iter().enumerate() {
        let path = dir.path().join(format!("view-{me}.json"));
        let out = p.nc(&["up", "--cluster-view", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("No changes"), "h{me}: {}", text(&out));
    }
    // `down` takes the VXLAN port (and its entries) away with the rest.
    c.nc_ok(&["down"]);
    let left = c.sb.run_ok(&["ip", "-o", "link", "show", "type", "vxlan"]);
    assert!(left.trim().is_empty(), "{left}");
    assert!(c.sb.run_ok(&["ip", "netns", "list"]).trim().is_empty());
}

/// A host's view for the whole project on this host alone (no remote endpoints).
fn alone(p: &Project) -> Value {
    let alloc = allocations(p);
    let placement: Placement = vec![
        ("client", 1, 0),
        ("web", 1, 0),
        ("web", 2, 0),
        ("web", 3, 0),
    ];
    view(&alloc, &placement, 0)
}

#[test]
fn a_taken_vxlan_port_stops_up_before_anything_is_built() {
    require_root("a_taken_vxlan_port_stops_up_before_anything_is_built");
    let sb = Sandbox::new();
    let p = Project::new(&sb, PROJECT, COMPOSE);
    let dir = tempfile::tempdir().unwrap();
    let mut holder = Servers(vec![sb.spawn(&[
        "python3",
        "-c",
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0',4789))\nprint('ready',flush=True)\ntime.sleep(600)",
    ])]);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0[0].stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let out = up_on(&p, &dir, &alone(&p), 0);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("UDP port 4789"), "{said}");
    assert!(said.contains("compose.yaml:"), "{said}");
    assert!(sb.run_ok(&["ip", "netns", "list"]).trim().is_empty());
    assert!(!sb.run_ok(&["ip", "-o", "link"]).contains("ncbr"));
}

#[test]
fn a_cluster_view_that_is_not_one_is_a_diagnostic() {
    require_root("a_cluster_view_that_is_not_one_is_a_diagnostic");
    let sb = Sandbox::new();
    let p = Project::new(&sb, PROJECT, COMPOSE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.json");
    std::fs::write(&path, "{\n  \"node\": \"h0\",\n  \"local\": 7\n}\n").unwrap();
    let out = p.nc(&["up", "--cluster-view", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("view.json:3:"), "{said}");
    assert!(said.contains("not a cluster view"), "{said}");
    assert!(sb.run_ok(&["ip", "netns", "list"]).trim().is_empty());
}
