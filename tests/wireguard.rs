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

use common::cluster::{underlay_ip, Cluster};
use common::require_root;
use netcompose::kernel::netlink::Netlink;
use netcompose::kernel::wireguard::{self, Engine, KeyPair, Peer, Tunnel, TunnelSpec};
use netcompose::kernel::VxlanSpec;
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
