//! The mesh against the in-memory KV and the fake tunnel: a key pair kept root-only and
//! reused, a bad or missing key file replaced; tunnel addresses unique (also when nodes
//! race) and sticky per node name; one peer per other live node with a key; a node back with
//! a new key replaces its peer; a device that refused is tried again.

use super::*;
use crate::kernel::fake::wireguard::FakeTunnel;
use crate::kernel::wireguard::Engine;
use crate::state::cluster::memory::MemoryKv;
use crate::state::cluster::{node_key, NodeRecord};
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

struct Log(Mutex<Vec<String>>);

impl AgentLog for Log {
    fn info(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

fn log() -> Log {
    Log(Mutex::new(Vec::new()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_key_pair_is_made_once_kept_root_only_and_replaced_when_bad() {
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("a");
    super::super::create_private(&agent_dir).unwrap();
    let log = log();
    let first = load_keys(&agent_dir, &log).unwrap();
    assert_eq!(mode(&key_file(&agent_dir)), 0o600);
    assert_eq!(mode(&agent_dir), 0o700);
    let again = load_keys(&agent_dir, &log).unwrap();
    assert!(again == first, "the stored key is reused");
    std::fs::write(key_file(&agent_dir), "not a key").unwrap();
    let replaced = load_keys(&agent_dir, &log).unwrap();
    assert!(replaced != first);
    std::fs::remove_file(key_file(&agent_dir)).unwrap();
    let fresh = load_keys(&agent_dir, &log).unwrap();
    assert!(fresh != replaced);
    let lines = log.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].contains("holds no key"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains(&first.private.to_base64())));
}

#[test]
fn tunnel_addresses_are_unique_and_sticky_even_when_nodes_race() {
    let kv = MemoryKv::default();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let kv = kv.clone();
            std::thread::spawn(move || tunnel_address(&kv, &format!("n{i}")).unwrap())
        })
        .collect();
    let mut got: Vec<Ipv4Addr> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(tunnel_address(&kv, "n3").unwrap(), got[3], "sticky");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 8, "unique");
    assert!(got.iter().all(|a| TUNNEL_RANGE.contains(*a)));
    assert_eq!(got[0], Ipv4Addr::new(10, 232, 0, 1));
    let taken: TunnelAddresses = [("x".to_string(), Ipv4Addr::new(10, 232, 0, 1))].into();
    assert_eq!(free_address(&taken), Some(Ipv4Addr::new(10, 232, 0, 2)));
}

fn record(underlay: &str, mtu: u32, wireguard: Option<WireguardRecord>) -> NodeRecord {
    NodeRecord {
        underlay: underlay.parse().unwrap(),
        underlay_mtu: mtu,
        vxlan_port: 4789,
        labels: Default::default(),
        version: "0".into(),
        wireguard,
    }
}

fn wg(public: &Key, address: &str) -> WireguardRecord {
    WireguardRecord {
        public_key: public.clone(),
        port: PORT,
        address: address.parse().unwrap(),
        engine: Engine::Userspace,
    }
}

fn register(kv: &MemoryKv, node: &str, record: &NodeRecord) -> i64 {
    let lease = kv.grant(5).unwrap();
    let key = node_key(node);
    let value = encode(&key, record).unwrap();
    kv.commit_on(Some(lease), &[], &[Op::Put { key, value }])
        .unwrap();
    lease
}

#[test]
fn peers_are_the_other_live_nodes_with_a_key_and_a_new_key_replaces_a_peer() {
    let kv = MemoryKv::default();
    let dir = tempfile::tempdir().unwrap();
    super::super::create_private(dir.path()).unwrap();
    let log = log();
    let (fake, device) = FakeTunnel::new(Engine::Userspace);
    let mut mesh = Mesh::start(&kv, "a", dir.path(), Box::new(fake), &log).unwrap();
    let mine = mesh.record();
    assert_eq!(mine.address, "10.232.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(mesh.end().device, DEVICE);
    register(&kv, "a", &record("192.0.2.1", 1500, Some(mine.clone())));
    let b_keys = KeyPair::generate();
    let b = register(
        &kv,
        "b",
        &record("192.0.2.2", 1400, Some(wg(&b_keys.public, "10.232.0.2"))),
    );
    register(&kv, "c", &record("192.0.2.3", 1500, None));

    assert!(mesh.converge(&ClusterSnapshot::read(&kv).unwrap(), "a", 1500, &log));
    let applied = device.lock().unwrap().device.clone().unwrap();
    assert_eq!(applied.name, DEVICE);
    assert_eq!(applied.address.to_string(), "10.232.0.1/16");
    assert_eq!(applied.listen_port, PORT);
    assert_eq!(applied.mtu, 1400 - 80, "the smallest underlay's");
    assert_eq!(
        applied.peers,
        [Peer {
            public_key: b_keys.public.clone(),
            endpoint: "192.0.2.2:51820".parse().unwrap(),
            allowed_ips: vec!["10.232.0.2/32".parse().unwrap()],
        }],
        "c has no key, a is this host"
    );
    assert!(mesh.converge(&ClusterSnapshot::read(&kv).unwrap(), "a", 1500, &log));
    assert_eq!(device.lock().unwrap().applies, 1, "nothing changed");

    // b dies and comes back with a new key (its key file was lost), at the same address.
    kv.expire(b);
    let new_keys = KeyPair::generate();
    register(
        &kv,
        "b",
        &record("192.0.2.2", 1400, Some(wg(&new_keys.public, "10.232.0.2"))),
    );
    device.lock().unwrap().fail = Some("device busy".into());
    assert!(!mesh.converge(&ClusterSnapshot::read(&kv).unwrap(), "a", 1500, &log));
    assert!(mesh.converge(&ClusterSnapshot::read(&kv).unwrap(), "a", 1500, &log));
    let peers = device.lock().unwrap().device.clone().unwrap().peers;
    assert_eq!(peers.len(), 1);
    assert!(peers[0].public_key == new_keys.public);
    let lines = log.0.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("device busy")), "{lines:?}");
}
