//! Encrypted overlays with real packets. The input rule on a real kernel: a hand-made plain
//! VXLAN packet for an encrypted network's VNI, sent to a host's underlay address, never
//! reaches the network, while the same packet for a plain network's VNI does (the control).
//! Root tests.
//!
//! Cleanup: capture threads end with their guard, every host is a sandbox (its processes,
//! links and namespaces go with it) and the cluster removes its underlay, panic included.

mod common;

use common::cluster::{underlay_ip, Cluster};
use common::project::Project;
use common::require_root;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const COMPOSE: &str = "
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
networks:
  secret:
    driver: overlay
    driver_opts: {encrypted: \"\"}
    ipam: {config: [{subnet: 10.73.0.0/24}]}
  plain:
    driver: overlay
    ipam: {config: [{subnet: 10.74.0.0/24}]}
";

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
    let p = Project::new(h0, &format!("ag{}", std::process::id()), COMPOSE);
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
