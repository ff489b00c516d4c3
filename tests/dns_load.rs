//! The resolver under load (issue 11): bursts of UDP queries, more than one batch of the
//! server's receive loop at a time, are all answered, each to its own question and ID, and
//! none is lost while `up --scale` reloads the daemon over and over.
//!
//! Needs root (a sandbox host, tests/common/sandbox.rs); without it the test fails, saying so.

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::require_root;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use lab::Lab;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const PROJECT: &str = r#"
name: dl
networks:
  front:
    ipam: {config: [{subnet: 10.72.1.0/24}]}
services:
  app:
    deploy: {replicas: 3}
    networks: [front]
  client:
    networks: [front]
"#;

/// Queries sent back to back before the first reply is read: several receive batches.
const BURST: u16 = 150;

/// What a burst found wrong, if anything.
#[derive(Debug, Default)]
struct Burst {
    lost: usize,
    wrong: Vec<String>,
}

/// From the client's namespace: send [`BURST`] queries for `names` in turn, then read every
/// reply, checking that each answers its own question with NOERROR and an address.
fn burst(sock: &std::net::UdpSocket, names: &[&str], round: u16) -> Burst {
    let mut asked: HashMap<u16, &str> = HashMap::new();
    for i in 0..BURST {
        let id = round.wrapping_mul(BURST).wrapping_add(i);
        let name = names[usize::from(i) % names.len()];
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii(format!("{name}.")).unwrap(),
            RecordType::A,
        ));
        sock.send(&m.to_vec().unwrap()).unwrap();
        asked.insert(id, name);
    }
    let mut found = Burst::default();
    let mut buf = [0u8; 4096];
    while !asked.is_empty() {
        let Ok(n) = sock.recv(&mut buf) else {
            found.lost = asked.len();
            break;
        };
        let m = Message::from_vec(&buf[..n]).unwrap();
        let Some(name) = asked.remove(&m.metadata.id) else {
            found.wrong.push(format!("a reply to no query: {m:?}"));
            continue;
        };
        let qname = m.queries.first().map(|q| q.name().to_ascii());
        let answered = m.answers.iter().any(|r| matches!(r.data, RData::A(_)));
        if m.metadata.response_code != ResponseCode::NoError
            || qname.as_deref() != Some(&format!("{name}.")[..])
            || !answered
        {
            found.wrong.push(format!("{name}: {m:?}"));
        }
    }
    found
}

struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[test]
fn bursts_are_answered_whole_while_the_service_scales() {
    require_root("bursts_are_answered_whole_while_the_service_scales");
    let lab = Lab::new("nc-dnsload-");
    let f = lab.file("compose.yaml", PROJECT);
    lab.nc_ok(&f, &["up"]);
    let scaling = AtomicBool::new(true);
    let (bursts, lost, wrong) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            lab.sb.enter(|| {
                use nix::sched::{setns, CloneFlags};
                let ns = std::fs::File::open("/run/netns/dl-client-1").expect("the client");
                setns(&ns, CloneFlags::CLONE_NEWNET).expect("enter the client namespace");
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect("127.0.0.11:53").unwrap();
                // A bound on a hang (a lost reply), not a measurement.
                sock.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let names = ["dl-app-1", "dl-app-2", "dl-app-3", "app"];
                let (mut bursts, mut lost, mut wrong) = (0u16, 0usize, Vec::new());
                // At least a few bursts, then as many as the scaling leaves time for.
                while bursts < 3 || scaling.load(Ordering::Relaxed) {
                    let b = burst(&sock, &names, bursts);
                    bursts += 1;
                    lost += b.lost;
                    wrong.extend(b.wrong);
                }
                (bursts, lost, wrong)
            })
        });
        // Stops the client's loop however this thread leaves (a failed `up` panics).
        let stop = Stop(&scaling);
        for n in ["4", "3", "4", "3"] {
            lab.nc_ok(&f, &["up", "--scale", &format!("app={n}")]);
        }
        drop(stop);
        client.join().unwrap()
    });
    assert_eq!(lost, 0, "{lost} queries lost in {bursts} bursts of {BURST}");
    assert!(wrong.is_empty(), "wrong replies: {wrong:#?}");
    lab.nc_ok(&f, &["down"]);
}
