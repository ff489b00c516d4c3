//! Encrypted overlays with real packets: three sandbox hosts, a 3-member etcd, one agent per
//! host (each with its WireGuard device), a project with an encrypted and a plain overlay
//! side by side. TCP crosses hosts on the encrypted network; an AF_PACKET capture on the
//! underlay holds no byte of a payload marker sent 1,000 times over the encrypted network,
//! and finds the same marker sent over the plain one; a hand-made plain VXLAN packet for the
//! encrypted VNI, sent to a host's underlay address, never reaches the network (the same
//! packet for the plain VNI does: the control); an agent restarted without its key file comes
//! back with a new key and is reachable again, no other agent restarted. The input rule is
//! also tested alone on a real kernel (with the rule flushed, the forged packet gets through).
//! Root tests.
//!
//! Cleanup: the agents are killed by their guard, the echo servers by theirs, capture threads
//! end with their guard, every host is a sandbox (its processes, links and namespaces go with
//! it) and the cluster removes its etcd members and underlay, panic included.

mod common;

use common::Servers;

use common::agents::{until, values, Agents, ROOT};
use common::cluster::{underlay_ip, Cluster};
use common::project::Project;
use common::{env_or, require_root};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVICES: &str = "
services:
  web:
    deploy:
      replicas: 3
      placement: {max_replicas_per_node: 1}
    networks: [secret, plain]
  client:
    deploy:
      placement: {constraints: [node.hostname == n0]}
    networks: [secret, plain]
";

/// Both tests' networks: an encrypted overlay and a plain one side by side.
const NETWORKS: &str = "
networks:
  secret:
    driver: overlay
    driver_opts: {encrypted: \"\"}
    ipam: {config: [{subnet: 10.73.0.0/24}]}
  plain:
    driver: overlay
    ipam: {config: [{subnet: 10.74.0.0/24}]}
";

/// A Compose file of `services` on [`NETWORKS`].
fn compose(services: &str) -> String {
    format!("{services}{NETWORKS}")
}

const PORT: u16 = 8080;
const SINK: u16 = 9999;

/// An AF_PACKET socket that receives every frame of the network namespace it was opened in,
/// read by a thread into a buffer until the guard is dropped (panic included).
struct Capture {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Open the socket on a thread that entered `netns`: the socket stays in that namespace.
    fn start(enter: impl FnOnce() -> OwnedFd + Send) -> Capture {
        let fd = std::thread::scope(|s| s.spawn(enter).join().unwrap());
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (frames, stop) = (frames.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    // SAFETY: buf is ours and as long as the length given.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n > 0 {
                        frames.lock().unwrap().push(buf[..n as usize].to_vec());
                    }
                }
            })
        };
        Capture {
            frames,
            stop,
            reader: Some(reader),
        }
    }

    /// How many captured frames hold `marker`.
    fn count(&self, marker: &[u8]) -> usize {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.windows(marker.len()).any(|w| w == marker))
            .count()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// An AF_PACKET socket for every protocol, reads time out after 100 ms (so the reader sees
/// its stop flag).
fn packet_socket() -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: tv lives for the call and its size is given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(rc, 0);
    let size: libc::c_int = 8 << 20;
    // SAFETY: as above.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    fd
}

fn enter_netns(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A capture on the underlay (the namespace every host's underlay veth ends in).
fn capture_underlay(cluster: &Cluster) -> Capture {
    let path = format!("/run/netns/{}", cluster.underlay_ns());
    Capture::start(move || {
        enter_netns(&path);
        packet_socket()
    })
}

/// A capture inside replica namespace `ns` of host `h`.
fn capture_replica(cluster: &Cluster, h: usize, ns: &str) -> Capture {
    let path = format!("/run/netns/{ns}");
    let host = cluster.host(h);
    Capture::start(move || {
        host.enter(move || {
            enter_netns(&path);
            packet_socket()
        })
    })
}

/// Send `marker` `times` times over UDP from the client replica to `addr`.
fn send_marker(p: &Project, marker: &str, addr: &str, times: u32) {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for _ in range({times}): s.sendto(b'{marker}', ('{addr}', {SINK}))\n"
    );
    let out = p.sb.run(&[
        "ip",
        "netns",
        "exec",
        &p.ns("client", 1),
        "python3",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// A plain VXLAN packet (flags: VNI valid) carrying a broadcast Ethernet frame whose payload
/// is `marker`, sent from host 1 to host 0's underlay address on VXLAN's port.
fn inject(cluster: &Cluster, vni: u32, marker: &str) {
    let mut packet = vec![0x08, 0, 0, 0];
    packet.extend_from_slice(&vni.to_be_bytes()[1..]);
    packet.push(0);
    packet.extend_from_slice(&[0xff; 6]);
    packet.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    packet.extend_from_slice(&[0x88, 0xb5]);
    packet.extend_from_slice(marker.as_bytes());
    let (from, to) = (underlay_ip(1), underlay_ip(0));
    cluster.host(1).enter(move || {
        let s = std::net::UdpSocket::bind((from.as_str(), 0)).unwrap();
        for _ in 0..20 {
            s.send_to(&packet, (to.as_str(), 4789)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// The VNI of host 0's VXLAN device of `network` (its alias names the resource).
fn vni_of(cluster: &Cluster, network: &str) -> u32 {
    let out = cluster
        .host(0)
        .run_ok(&["ip", "-d", "-o", "link", "show", "type", "vxlan"]);
    let line = out
        .lines()
        .find(|l| l.ends_with(&format!(":network.{network}.vxlan")))
        .unwrap_or_else(|| panic!("no VXLAN device of {network}: {out}"));
    let mut words = line.split_whitespace();
    words.find(|w| *w == "id");
    words.next().unwrap().parse().unwrap()
}

/// The public key in `node`'s record (None while it has no record).
fn node_key_of(cluster: &Cluster, node: &str) -> Option<String> {
    let v = values(cluster, &format!("{ROOT}nodes/{node}"));
    let record: serde_json::Value = serde_json::from_str(v.values().next()?).ok()?;
    Some(record["wireguard"]["public_key"].as_str()?.to_string())
}

/// Host 0's view for `up --cluster-view`: client[1] here, nothing remote, the tunnel end on
/// `DEVICE_STANDIN`.
fn guard_view(alloc: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "node": "h0",
        "underlay": underlay_ip(0),
        "underlay_mtu": 1500,
        "local": [["client", 1]],
        "remote": [],
        "allocations": alloc,
        "tunnel": {"device": "ncwg0", "address": "10.232.0.1"},
    })
}

/// The nftables rule alone, on a real kernel, without an engine: host 0 gets its share from a
/// view whose tunnel end is a veth named as the tunnel; host 1 plays the attacker on the
/// underlay.
#[test]
fn plain_vxlan_for_an_encrypted_vni_is_dropped_at_input() {
    require_root("plain_vxlan_for_an_encrypted_vni_is_dropped_at_input");
    let cluster = Cluster::without_store(2);
    let h0 = cluster.host(0);
    h0.run_ok(&[
        "ip", "link", "add", "ncwg0", "type", "veth", "peer", "name", "ncwg0p",
    ]);
    h0.run_ok(&["ip", "addr", "add", "10.232.0.1/16", "dev", "ncwg0"]);
    h0.run_ok(&["ip", "link", "set", "ncwg0", "up"]);
    let p = Project::new(h0, &format!("ag{}", std::process::id()), &compose(SERVICES));
    let plan: serde_json::Value =
        serde_json::from_str(&p.nc_ok(&["plan", "--json"])).expect("plan --json");
    let alloc = plan["desired"]["allocations"].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.json");
    std::fs::write(&path, serde_json::to_vec(&guard_view(&alloc)).unwrap()).unwrap();
    let out = p.nc(&["up", "--cluster-view", path.to_str().unwrap()]);
    assert!(out.status.success(), "up: {out:?}");
    let table_name = format!("netcompose-{}", p.name);
    let table = h0.run_ok(&["nft", "list", "chain", "inet", &table_name, "input"]);
    let vni = |net: &str| alloc["networks"][net]["vni"].as_u64().unwrap() as u32;
    assert!(
        table.contains(&format!("@th,96,24 {} drop", vni("secret")))
            || table.contains(&format!("@th,96,24 0x{:x} drop", vni("secret"))),
        "{table}"
    );

    let forged = format!("NC-FORGED-{}", std::process::id());
    let inside = capture_replica(&cluster, 0, &p.ns("client", 1));
    inject(&cluster, vni("secret"), &forged);
    inject(&cluster, vni("plain"), "NC-CONTROL-SENT-AFTER");
    let patience = std::time::Instant::now() + Duration::from_secs(10);
    while inside.count(b"NC-CONTROL-SENT-AFTER") == 0 {
        assert!(
            std::time::Instant::now() < patience,
            "the control: plain VXLAN for the plain VNI never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        inside.count(forged.as_bytes()),
        0,
        "plain VXLAN for the encrypted VNI reached the network"
    );

    // The rule is what stops it: without the chain's rules the same packet gets through.
    h0.run_ok(&["nft", "flush", "chain", "inet", &table_name, "input"]);
    inject(&cluster, vni("secret"), &forged);
    while inside.count(forged.as_bytes()) == 0 {
        assert!(
            std::time::Instant::now() < patience + Duration::from_secs(10),
            "without the rule the forged packet still did not arrive: the test proves nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn encrypted_overlays_hide_payloads_refuse_plain_vxlan_and_follow_a_new_key() {
    require_root("encrypted_overlays_hide_payloads_refuse_plain_vxlan_and_follow_a_new_key");
    let cluster = Cluster::new(3);
    let mut agents = Agents::start(&cluster, &[]);
    let name = format!("ae{}", std::process::id());
    let projects: Vec<Project> = (0..3)
        .map(|h| Project::new(cluster.host(h), &name, &compose(SERVICES)))
        .collect();
    let url = cluster.store_url();
    let out = projects[0].nc(&["--store", &url, "up"]);
    common::agents::ok(&out, "up", &agents);
    let nodes = projects[0].nc_ok(&["--store", &url, "nodes"]);
    assert!(
        nodes.contains("userspace") || nodes.contains("kernel"),
        "{nodes}"
    );

    // web[i] on host i-1's node? Find each replica's host by its namespace.
    let c = &projects[0];
    let host_of = |ns: &str| {
        (0..3)
            .find(|&h| common::agents::namespaces(&cluster, h).contains(&ns.to_string()))
            .expect("every replica runs somewhere")
    };
    let far = (1..=3)
        .find(|&i| host_of(&c.ns("web", i)) != 0)
        .expect("a web replica on another host");
    let far_host = host_of(&c.ns("web", far));
    let far_p = &projects[far_host];
    let secret = far_p.addr("web", far, "secret");
    let plain = far_p.addr("web", far, "plain");
    let _servers = Servers(vec![far_p.serve("web", far, PORT)]);

    // TCP across hosts on the encrypted network.
    c.wait_open(Some(("client", 1)), &secret, PORT);
    let tcp = c.probe(Some(("client", 1)), &["tcp", &secret, "8080"]);
    assert!(tcp[0].starts_with(&format!("web-{far} ")), "{tcp:?}");

    // The underlay never carries the marker sent over the encrypted network, and carries it
    // sent over the plain one.
    let marker = format!("NC-MARKER-{}", std::process::id());
    let capture = capture_underlay(&cluster);
    send_marker(c, &marker, &secret, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let hidden = capture.count(marker.as_bytes());
    let seen_encrypted_traffic = capture
        .frames
        .lock()
        .unwrap()
        .iter()
        .filter(|f| f.len() > 100)
        .count();
    drop(capture);
    assert_eq!(hidden, 0, "the marker crossed the underlay in the clear");
    assert!(
        seen_encrypted_traffic >= 1000,
        "the capture saw the tunnel's packets"
    );
    let capture = capture_underlay(&cluster);
    send_marker(c, &marker, &plain, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let found = capture.count(marker.as_bytes());
    drop(capture);
    assert!(
        found > 0,
        "the control: the plain overlay's marker shows on the underlay"
    );

    // Plain VXLAN for the encrypted VNI, straight to host 0's underlay address: dropped; the
    // same packet for the plain VNI arrives.
    let secret_vni = vni_of(&cluster, "secret");
    let plain_vni = vni_of(&cluster, "plain");
    let forged = format!("NC-FORGED-{}", std::process::id());
    let inside = capture_replica(&cluster, 0, &c.ns("client", 1));
    inject(&cluster, secret_vni, &forged);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        inside.count(forged.as_bytes()),
        0,
        "plain VXLAN for the encrypted VNI reached the network"
    );
    inject(&cluster, plain_vni, &forged);
    let took = until(
        &agents,
        "the control: plain VXLAN for the plain VNI arrives",
        || inside.count(forged.as_bytes()) > 0,
    );
    drop(inside);
    eprintln!("control packet seen after {took:?}");

    // The far host's agent restarts without its key: a new key, and reachable again.
    let node = format!("n{far_host}");
    let before = node_key_of(&cluster, &node).expect("the far node has a key");
    agents.kill(far_host);
    cluster.host(far_host).run_ok(&[
        "rm",
        "-f",
        &format!("/run/netcompose/_agent/{node}/wireguard.key"),
    ]);
    agents.launch(&cluster, far_host, &[]);
    until(&agents, "the restarted agent registered a new key", || {
        node_key_of(&cluster, &node).is_some_and(|k| k != before)
    });
    let took = until(&agents, "the restarted host is reachable again", || {
        c.probe(Some(("client", 1)), &["tcp", &secret, "8080"])
            .first()
            .is_some_and(|l| l.starts_with(&format!("web-{far} ")))
    });
    eprintln!("reachable {took:?} after the new key was registered");
}

const BENCH_SERVICES: &str = "
services:
  server:
    deploy: {placement: {constraints: [node.hostname == n1]}}
    networks: [secret, plain]
  client:
    deploy: {placement: {constraints: [node.hostname == n0]}}
    networks: [secret, plain]
";

/// Gbit/s of one TCP stream of `seconds` from host 0 to `addr` (the iperf3 client run after
/// `prefix`, e.g. to enter a replica), retried while the server is not yet listening.
fn iperf(sandbox: &common::Sandbox, prefix: &[&str], addr: &str, seconds: usize) -> f64 {
    let t = seconds.to_string();
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend(["iperf3", "-c", addr, "-t", &t, "-J"]);
    let mut last = String::new();
    for _ in 0..40 {
        let out = sandbox.run(&args);
        let report: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if let Some(bps) = report
            .as_ref()
            .and_then(|r| r["end"]["sum_received"]["bits_per_second"].as_f64())
        {
            return bps / 1e9;
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("iperf3 to {addr} never measured: {last}");
}

/// bench/encrypted.sh's figures for the overlays netcompose's agents build (ignored: run
/// with `--ignored --nocapture`, release build): two sandbox hosts with etcd and an agent
/// each, a replica on each host, one TCP stream (iperf3, BENCH_SECONDS per run, BENCH_ROUNDS
/// rounds, each path once per round) over the encrypted network, the plain one, and the
/// underlay between the hosts themselves.
#[test]
#[ignore]
fn bench_encrypted_overlay() {
    require_root("bench_encrypted_overlay");
    let (seconds, rounds) = (env_or("BENCH_SECONDS", 5), env_or("BENCH_ROUNDS", 3));
    let cluster = Cluster::new(2);
    let agents = Agents::start(&cluster, &[]);
    let name = format!("ab{}", std::process::id());
    let projects: Vec<Project> = (0..2)
        .map(|h| Project::new(cluster.host(h), &name, &compose(BENCH_SERVICES)))
        .collect();
    let out = projects[0].nc(&["--store", &cluster.store_url(), "up"]);
    common::agents::ok(&out, "up", &agents);
    let server_ns = projects[1].ns("server", 1);
    let client_ns = projects[0].ns("client", 1);
    let quiet = |sandbox: &common::Sandbox, args: &[&str]| {
        sandbox
            .command(args[0], &args[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let _servers = Servers(vec![
        quiet(
            cluster.host(1),
            &["ip", "netns", "exec", &server_ns, "iperf3", "-s"],
        ),
        quiet(cluster.host(1), &["iperf3", "-s"]),
    ]);
    let in_client = ["ip", "netns", "exec", client_ns.as_str()];
    let paths: [(&str, &[&str], String); 3] = [
        ("direct (underlay)", &[], underlay_ip(1)),
        (
            "plain overlay",
            &in_client,
            projects[1].addr("server", 1, "plain"),
        ),
        (
            "encrypted overlay",
            &in_client,
            projects[1].addr("server", 1, "secret"),
        ),
    ];
    let mut figures = vec![Vec::new(); paths.len()];
    for round in 1..=rounds {
        for (k, (label, prefix, addr)) in paths.iter().enumerate() {
            let gbits = iperf(cluster.host(0), prefix, addr, seconds);
            println!("round {round}: {label:<20} {gbits:6.2} Gbit/s");
            figures[k].push(gbits);
        }
    }
    println!("median of {rounds} rounds of {seconds} s, one TCP stream, netcompose's agents:");
    for ((label, _, _), mut runs) in paths.iter().zip(figures) {
        runs.sort_by(f64::total_cmp);
        println!("  {label:<20} {:6.2} Gbit/s", runs[runs.len() / 2]);
    }
}
