//! The WireGuard engine with real packets: two sandbox hosts on one underlay, each with a
//! userspace engine (this kernel has no WireGuard) opened inside its namespace from one test
//! process. Ping and TCP through the tunnel addresses; VXLAN over the tunnel addresses; a host
//! that regenerates its key is reachable again once the other applies the new peer key;
//! `peers()` reports what was applied; after drop no TUN link is left.
//!
//! Cleanup: the tunnels are dropped before the cluster (declared after it), on panic too, and
//! dropping one removes its device; every host is a sandbox whose namespaces are freed on drop,
//! the underlay namespace goes with the [`Cluster`].

mod common;

use common::Servers;

use common::cluster::{underlay_ip, Cluster};
use common::{env_or, require_root};
use netcompose::kernel::netlink::Netlink;
use netcompose::kernel::wireguard::{self, Engine, KeyPair, Peer, Tunnel, TunnelSpec};
use netcompose::kernel::{ErrorKind, VxlanSpec};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const DEVICE: &str = "wgt0";
const PORT: u16 = 51820;
/// How many one-second pings a path may take to come up (a first handshake, ARP on VXLAN).
const PING_TRIES: u32 = 20;

fn tunnel_ip(i: usize) -> String {
    format!("10.232.0.{}", i + 1)
}

fn spec(i: usize, keys: &[KeyPair; 2]) -> TunnelSpec {
    let j = 1 - i;
    TunnelSpec {
        name: DEVICE.to_string(),
        private_key: keys[i].private.clone(),
        listen_port: PORT,
        address: format!("{}/24", tunnel_ip(i)).parse().unwrap(),
        mtu: 1420,
        peers: vec![Peer {
            public_key: keys[j].public.clone(),
            endpoint: SocketAddr::new(underlay_ip(j).parse().unwrap(), PORT),
            allowed_ips: vec![format!("{}/32", tunnel_ip(j)).parse().unwrap()],
        }],
    }
}

/// An engine opened inside host `i`'s namespace (its threads stay there).
fn open_on(cluster: &Cluster, i: usize) -> Box<dyn Tunnel> {
    cluster.host(i).enter(|| {
        assert_eq!(wireguard::detect().unwrap(), Engine::Userspace);
        wireguard::open(Engine::Userspace).unwrap()
    })
}

/// Whether host `from` gets an answer from `to` within [`PING_TRIES`] pings.
fn pings(cluster: &Cluster, from: usize, to: &str) -> bool {
    (0..PING_TRIES).any(|_| {
        cluster
            .host(from)
            .run(&["ping", "-c", "1", "-W", "1", to])
            .status
            .success()
    })
}

/// A TCP round trip from host 0 to host 1's `addr`, through sockets opened in each namespace.
fn tcp_echo(cluster: &Cluster, addr: &str) {
    let listener = cluster
        .host(1)
        .enter(|| TcpListener::bind((addr, 7000)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let mut conn = cluster.host(0).enter(|| {
        TcpStream::connect_timeout(
            &(addr.parse::<IpAddr>().unwrap(), 7000).into(),
            Duration::from_secs(10),
        )
        .unwrap()
    });
    conn.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    server.join().unwrap();
}

/// Rtnetlink in host `i`'s namespace, on `rt`.
fn netlink(cluster: &Cluster, i: usize, rt: &tokio::runtime::Runtime) -> Netlink {
    Netlink::open(Some(cluster.host(i).host_ns()), rt.handle()).unwrap()
}

/// A VXLAN link on each host whose local and remote ends are the tunnel addresses.
fn vxlan_over_tunnel(cluster: &Cluster, rt: &tokio::runtime::Runtime) {
    for i in 0..2 {
        let nl = netlink(cluster, i, rt);
        rt.block_on(async {
            let index = nl
                .create_vxlan(&VxlanSpec {
                    name: "vxt0".to_string(),
                    vni: 42,
                    local: Some(tunnel_ip(i).parse().unwrap()),
                    port: 4789,
                    underlay: None,
                    learning: false,
                    proxy: false,
                    mtu: Some(1370),
                    alias: None,
                    master: None,
                    up: true,
                })
                .await
                .unwrap();
            nl.add_address(index, format!("10.233.0.{}/24", i + 1).parse().unwrap())
                .await
                .unwrap();
            nl.add_fdb(index, [0; 6], tunnel_ip(1 - i).parse().unwrap())
                .await
                .unwrap();
        });
    }
}

#[test]
fn userspace_tunnels_carry_ping_tcp_and_vxlan_and_follow_a_new_key() {
    require_root("userspace_tunnels_carry_ping_tcp_and_vxlan_and_follow_a_new_key");
    let cluster = Cluster::without_store(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut keys = [KeyPair::generate(), KeyPair::generate()];
    let mut tunnels = [open_on(&cluster, 0), open_on(&cluster, 1)];
    for (i, tunnel) in tunnels.iter_mut().enumerate() {
        assert_eq!(tunnel.engine(), Engine::Userspace);
        tunnel.apply(&spec(i, &keys)).unwrap();
        // Applying the same spec again changes nothing and breaks nothing.
        tunnel.apply(&spec(i, &keys)).unwrap();
        assert_eq!(tunnel.peers().unwrap(), spec(i, &keys).peers);
    }

    assert!(
        pings(&cluster, 0, &tunnel_ip(1)),
        "no ping through the tunnel"
    );
    tcp_echo(&cluster, &tunnel_ip(1));
    vxlan_over_tunnel(&cluster, &rt);
    assert!(
        pings(&cluster, 0, "10.233.0.2"),
        "no ping over VXLAN over the tunnel"
    );
    tcp_echo(&cluster, "10.233.0.2");

    // Host 1 comes back with a new key; host 0 learns it from its next apply.
    keys[1] = KeyPair::generate();
    tunnels[1].apply(&spec(1, &keys)).unwrap();
    tunnels[0].apply(&spec(0, &keys)).unwrap();
    assert_eq!(tunnels[0].peers().unwrap(), spec(0, &keys).peers);
    assert!(
        pings(&cluster, 0, &tunnel_ip(1)),
        "no ping after the key change"
    );
    tcp_echo(&cluster, "10.233.0.2");

    // A peer gone from the spec is gone from the device.
    let mut alone = spec(0, &keys);
    alone.peers.clear();
    tunnels[0].apply(&alone).unwrap();
    assert_eq!(tunnels[0].peers().unwrap(), Vec::new());

    let [first, second] = tunnels;
    drop(first);
    drop(second);
    for i in 0..2 {
        let nl = netlink(&cluster, i, &rt);
        let link = rt.block_on(nl.link_by_name(DEVICE)).unwrap();
        assert_eq!(link, None, "host {i} kept its TUN link after drop");
    }
}

#[test]
fn a_taken_port_is_a_typed_error_and_leaves_no_link() {
    require_root("a_taken_port_is_a_typed_error_and_leaves_no_link");
    let cluster = Cluster::without_store(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = [KeyPair::generate(), KeyPair::generate()];
    let _taken = cluster
        .host(0)
        .enter(|| std::net::UdpSocket::bind(("0.0.0.0", PORT)).unwrap());
    let mut tunnel = open_on(&cluster, 0);
    let err = tunnel.apply(&spec(0, &keys)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddressInUse, "{err}");
    assert_eq!(tunnel.peers().unwrap(), Vec::new());
    let nl = netlink(&cluster, 0, &rt);
    assert_eq!(rt.block_on(nl.link_by_name(DEVICE)).unwrap(), None);
}

/// A plain VXLAN link on each host over the underlay addresses (the unencrypted baseline).
fn vxlan_over_underlay(cluster: &Cluster, rt: &tokio::runtime::Runtime) {
    for i in 0..2 {
        let nl = netlink(cluster, i, rt);
        rt.block_on(async {
            let index = nl
                .create_vxlan(&VxlanSpec {
                    name: "vxp0".to_string(),
                    vni: 43,
                    local: Some(underlay_ip(i).parse().unwrap()),
                    port: 4790,
                    underlay: None,
                    learning: false,
                    proxy: false,
                    mtu: Some(1450),
                    alias: None,
                    master: None,
                    up: true,
                })
                .await
                .unwrap();
            nl.add_address(index, format!("10.234.0.{}/24", i + 1).parse().unwrap())
                .await
                .unwrap();
            nl.add_fdb(index, [0; 6], underlay_ip(1 - i).parse().unwrap())
                .await
                .unwrap();
        });
    }
}

/// wireguard-go on each host, set up by hand with `wg` and `ip` as its users do (multihost
/// notes §5.6), addressed 10.235.0.i; its processes die with the sandboxes.
fn wireguard_go(cluster: &Cluster) -> Vec<std::process::Child> {
    let keys = [KeyPair::generate(), KeyPair::generate()];
    let mut children = Vec::new();
    for i in 0..2 {
        let host = cluster.host(i);
        let dev = format!("wgg{i}");
        children.push(
            host.command("wireguard-go", &["-f", &dev])
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert!(
            (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                host.run(&["ip", "link", "show", &dev]).status.success()
            }),
            "wireguard-go made no {dev}"
        );
        host.write_file("/run/wgg.key", &keys[i].private.to_base64());
        let j = 1 - i;
        host.run_ok(&[
            "wg",
            "set",
            &dev,
            "private-key",
            "/run/wgg.key",
            "listen-port",
            "51821",
            "peer",
            &keys[j].public.to_base64(),
            "endpoint",
            &format!("{}:51821", underlay_ip(j)),
            "allowed-ips",
            &format!("10.235.0.{}/32", j + 1),
        ]);
        host.run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.235.0.{}/24", i + 1),
            "dev",
            &dev,
        ]);
        host.run_ok(&["ip", "link", "set", &dev, "mtu", "1420", "up"]);
    }
    children
}

/// One iperf3 run from host 0 to `addr` (a server runs on host 1), in Gbit/s.
fn iperf(cluster: &Cluster, addr: &str, seconds: usize) -> f64 {
    let out = cluster
        .host(0)
        .run(&["iperf3", "-c", addr, "-t", &seconds.to_string(), "-J"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 to {addr}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 to {addr} measured nothing: {report}"))
        / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// bench/encrypted.sh's figures (ignored: run with `--ignored --nocapture`, release build):
/// one TCP stream (iperf3, BENCH_SECONDS per run, BENCH_ROUNDS rounds, each path once per
/// round) between two hosts: direct on the underlay, plain VXLAN, our userspace engine, VXLAN
/// over it, and wireguard-go set up by hand.
#[test]
#[ignore]
fn bench_encrypted() {
    require_root("bench_encrypted");
    let (seconds, rounds) = (env_or("BENCH_SECONDS", 5), env_or("BENCH_ROUNDS", 3));
    let cluster = Cluster::without_store(2);
    // The server first: it is listening by the time the paths are set up.
    let mut children = Servers(vec![cluster
        .host(1)
        .command("iperf3", &["-s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = [KeyPair::generate(), KeyPair::generate()];
    let mut tunnels = [open_on(&cluster, 0), open_on(&cluster, 1)];
    for (i, tunnel) in tunnels.iter_mut().enumerate() {
        tunnel.apply(&spec(i, &keys)).unwrap();
    }
    vxlan_over_tunnel(&cluster, &rt);
    vxlan_over_underlay(&cluster, &rt);
    children.0.extend(wireguard_go(&cluster));
    let paths = [
        ("direct (underlay)", underlay_ip(1)),
        ("plain VXLAN", "10.234.0.2".to_string()),
        ("netcompose userspace WireGuard", tunnel_ip(1)),
        ("VXLAN over netcompose WireGuard", "10.233.0.2".to_string()),
        ("wireguard-go by hand", "10.235.0.2".to_string()),
    ];
    for (name, addr) in &paths {
        assert!(pings(&cluster, 0, addr), "{name}: {addr} does not answer");
    }
    let mut figures = vec![Vec::new(); paths.len()];
    for round in 1..=rounds {
        for (k, (name, addr)) in paths.iter().enumerate() {
            let gbits = iperf(&cluster, addr, seconds);
            println!("round {round}: {name:<34} {gbits:6.2} Gbit/s");
            figures[k].push(gbits);
        }
    }
    println!("median of {rounds} rounds of {seconds} s, one TCP stream:");
    for ((name, _), runs) in paths.iter().zip(figures) {
        println!("  {name:<34} {:6.2} Gbit/s", median(runs));
    }
}
