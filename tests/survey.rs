//! `kernel::survey` against the real kernel, inside a [`Sandbox`]: many namespaces read in one
//! go answer exactly what the asynchronous listings of each namespace answer (and its files
//! and ruleset generation what they are; the host's links likewise), a pin file with nothing
//! mounted on it is no namespace, and a read of links only leaves addresses, routes and files
//! out. Needs root; fails, saying so, otherwise.

mod common;

use std::os::fd::AsFd;

use common::{require_root, Sandbox};
use ipnetwork::IpNetwork;
use netcompose::kernel::netlink::BlockingNetlink;
use netcompose::kernel::nftables::read::generation_on;
use netcompose::kernel::nftables::wire;
use netcompose::kernel::survey::survey;
use netcompose::kernel::{netns, Ctx, LinkKind, Netlink, NetnsDir, VethSpec};

fn net(s: &str) -> IpNetwork {
    s.parse().expect("a CIDR")
}

/// Wait (up to 5 s) until each namespace's eth0 has its carrier and its IPv6 link-local
/// address: the kernel adds both a moment after the link comes up (linkwatch, then addrconf),
/// and a survey that raced them would differ from the listing after it.
fn settle(rt: &tokio::runtime::Runtime, names: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for n in names {
        let inner = Netlink::open(Some(n), rt.handle()).unwrap();
        rt.block_on(async {
            while std::time::Instant::now() < deadline {
                let eth0 = inner.link_index("eth0").await.unwrap();
                let carrier = inner
                    .links()
                    .await
                    .unwrap()
                    .iter()
                    .any(|l| Some(l.index) == eth0 && l.lower_up);
                let link_local = inner.addresses().await.unwrap().iter().any(|(i, a)| {
                    Some(*i) == eth0
                        && matches!(a, IpNetwork::V6(v6) if v6.ip().segments()[0] == 0xfe80)
                });
                if carrier && link_local {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
    }
}

#[test]
fn a_survey_reads_what_each_namespace_holds_and_skips_stale_pins() {
    require_root("a_survey_reads_what_each_namespace_holds_and_skips_stale_pins");
    let sb = Sandbox::new();
    sb.enter(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let host = Netlink::open(None, rt.handle()).unwrap();
        let names: Vec<String> = (1..=12).map(|i| format!("sv-web-{i}")).collect();
        for n in &names {
            netns::create(n).unwrap();
        }
        // A pin file with nothing mounted on it, as a run killed half-way leaves.
        let dir = NetnsDir::system();
        std::fs::write(dir.path("sv-stale-1"), b"").unwrap();
        rt.block_on(async {
            let br = host.create_bridge("svbr0", None, None).await.unwrap();
            host.add_address(br, net("10.66.0.1/24")).await.unwrap();
            for (i, n) in names.iter().enumerate() {
                let fd = netns::open(Some(n)).unwrap();
                host.create_veth(&VethSpec {
                    name: format!("sv-vh{i}"),
                    master: Some(br),
                    up: true,
                    peer_name: "eth0".into(),
                    peer_ns: Some(fd.as_fd()),
                    ..VethSpec::default()
                })
                .await
                .unwrap();
                let inner = Netlink::open(Some(n), rt.handle()).unwrap();
                inner.lo_up().await.unwrap();
                inner
                    .set_alias(1, Some("netcompose:sv/mark"))
                    .await
                    .unwrap();
                let eth0 = inner.link_index("eth0").await.unwrap().unwrap();
                inner.set_up(eth0).await.unwrap();
                let addr = net(&format!("10.66.0.{}/24", i + 2));
                inner.add_address(eth0, addr).await.unwrap();
                inner
                    .add_default_route("10.66.0.1".parse().unwrap(), None)
                    .await
                    .unwrap();
            }
        });
        // The namespaces' files: two for the first, none (no directory) for the others.
        let etc = tempfile::tempdir().unwrap();
        std::fs::create_dir(etc.path().join(&names[0])).unwrap();
        std::fs::write(etc.path().join(&names[0]).join("hosts"), "10.66.0.2 web\n").unwrap();
        std::fs::write(
            etc.path().join(&names[0]).join("resolv.conf"),
            "nameserver 127.0.0.11\n",
        )
        .unwrap();
        settle(&rt, &names);
        let mut asked = names.clone();
        asked.insert(3, "sv-stale-1".into());
        let found = survey(&dir, etc.path(), &asked, true);
        assert_eq!(found.len(), asked.len());
        for (name, answer) in asked.iter().zip(found) {
            let answer = answer.unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "sv-stale-1" {
                assert!(answer.is_none(), "a stale pin is no namespace");
                continue;
            }
            let (got, nft) = answer.expect("a live namespace");
            let nft = nft.expect("a full read opens the table's socket");
            let ctx = Ctx::new("test", "generation", Some(name));
            assert_eq!(
                nft.generation,
                Some((
                    wire::netns_cookie(&ctx, &nft.socket).unwrap(),
                    generation_on(&ctx, &nft.socket).unwrap()
                )),
                "{name}: the ruleset's generation as read"
            );
            let files: Vec<(&str, &str)> = got
                .files
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_str()))
                .collect();
            match name == &names[0] {
                true => assert_eq!(
                    files,
                    [
                        ("hosts", "10.66.0.2 web\n"),
                        ("resolv.conf", "nameserver 127.0.0.11\n")
                    ]
                ),
                false => assert!(files.is_empty(), "{name}: {files:?}"),
            }
            let inner = Netlink::open(Some(name), rt.handle()).unwrap();
            let (links, addresses, routes) = rt.block_on(async {
                (
                    inner.links().await.unwrap(),
                    inner.addresses().await.unwrap(),
                    inner.routes().await.unwrap(),
                )
            });
            assert_eq!(got.links, links, "{name}");
            assert_eq!(got.addresses, addresses, "{name}");
            assert_eq!(got.routes, routes, "{name}");
            assert!(got.routes.iter().any(|r| r.dst.prefix() == 0));
            assert!(got
                .links
                .iter()
                .any(|l| l.alias.as_deref() == Some("netcompose:sv/mark")));
        }
        // The host's links read on a blocking socket (attributes parsed only where read) are
        // what the asynchronous listing (every attribute parsed) gives: the bridge, and the
        // veths' host ends with their bridge port flags.
        let lean = BlockingNetlink::open_current(None)
            .unwrap()
            .links()
            .unwrap();
        assert_eq!(lean, rt.block_on(host.links()).unwrap());
        assert!(lean.iter().any(|l| l.kind == LinkKind::Bridge));
        assert_eq!(lean.iter().filter(|l| l.bridge_port.is_some()).count(), 12);
        // Links only: what `down` needs.
        let outline = survey(&dir, etc.path(), &names[..2], false);
        for answer in outline {
            let (got, nft) = answer.unwrap().expect("a live namespace");
            assert_eq!(got.links.len(), 2, "lo and eth0: {:?}", got.links);
            assert!(got.addresses.is_empty() && got.routes.is_empty() && got.files.is_empty());
            assert!(nft.is_none());
        }
    });
}

/// The real machine holds each namespace its survey read: while a pin still names that very
/// namespace, the mark of its lo is answered from the survey (even one rewritten since), a
/// namespace made again under the name is read again, and a deleted namespace stays held, with
/// the host end of its veth, until the machine lets go of it.
#[test]
fn a_surveyed_namespace_is_held_until_let_go() {
    use netcompose::kernel::machine::{Machine, Namespaces, NetnsInit};
    use netcompose::kernel::System;
    use std::time::{Duration, Instant};
    require_root("a_surveyed_namespace_is_held_until_let_go");
    let sb = Sandbox::new();
    sb.enter(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sys = System::open(rt.handle().clone()).unwrap();
        let host = Netlink::open(None, rt.handle()).unwrap();
        let mark = |alias: &str| NetnsInit {
            lo_alias: alias.into(),
            sysctls: vec![],
        };
        let (a, b) = ("hd-web-1".to_string(), "hd-web-2".to_string());
        let names = vec![a.clone(), b.clone(), "hd-none-1".to_string()];
        rt.block_on(async {
            sys.create_netns(&a, &mark("netcompose:hd/one"))
                .await
                .unwrap();
            sys.create_netns(&b, &mark("netcompose:hd/two"))
                .await
                .unwrap();
            let fd = netns::open(Some(&a)).unwrap();
            host.create_veth(&VethSpec {
                name: "hd-vh1".into(),
                peer_name: "eth0".into(),
                peer_ns: Some(fd.as_fd()),
                ..VethSpec::default()
            })
            .await
            .unwrap();
            drop(fd);
            let surveyed = sys.survey(&names, false).await.unwrap();
            assert_eq!(surveyed.iter().flatten().count(), 2);

            // Behind the survey's back: a's lo renamed, b unpinned and made again.
            let inner = Netlink::open(Some(&a), rt.handle()).unwrap();
            inner.set_alias(1, Some("rewritten")).await.unwrap();
            drop(inner);
            assert!(netns::delete(&b).unwrap());
            sys.create_netns(&b, &mark("netcompose:hd/three"))
                .await
                .unwrap();
            let marks = sys.netns_marks(&names).await.unwrap();
            assert_eq!(
                marks,
                vec![
                    Some(Some("netcompose:hd/one".to_string())),
                    Some(Some("netcompose:hd/three".to_string())),
                    None,
                ]
            );

            assert!(sys.delete_netns(&a).await.unwrap());
            assert!(!netns::exists(&a));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                host.link_index("hd-vh1").await.unwrap().is_some(),
                "a deleted namespace is held until let go"
            );
            sys.let_go();
            let deadline = Instant::now() + Duration::from_secs(10);
            while host.link_index("hd-vh1").await.unwrap().is_some() {
                assert!(Instant::now() < deadline, "the kernel never freed it");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    });
}
