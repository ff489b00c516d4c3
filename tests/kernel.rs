//! Integration tests of src/kernel against the real kernel, inside a [`Sandbox`].
//!
//! Each test builds a sandbox and runs the library on a thread that entered it
//! ([`Sandbox::enter`]): `/run/netns` there is the sandbox's private tmpfs, and the "current"
//! network namespace is the sandbox host. So the default paths of the library are exercised
//! exactly as in production (including `ip netns exec` compatibility), and everything vanishes
//! with the sandbox even if a test panics. Needs root; fails, saying so, otherwise.

mod common;

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::time::Instant;

use common::sandbox::{UPLINK_HOST_IP, UPLINK_IF, UPLINK_OUTSIDE_IP};
use common::{require_root, Sandbox};
use ipnetwork::IpNetwork;
use netcompose::kernel::netlink::LinkKind;
use netcompose::kernel::{
    netns, sysctl, ErrorKind, MacvlanMode, MacvlanSpec, Netlink, NetnsDir, VethSpec, VxlanSpec,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("a CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP")
}

/// Run a command from the current thread (inside `enter`, it inherits the sandbox).
fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn sh_ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "`{}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(ns: &str, dst: &str) -> bool {
    sh(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", dst])
        .status
        .success()
}

#[test]
fn netns_lifecycle_is_iproute2_compatible() {
    require_root("netns_lifecycle_is_iproute2_compatible");
    let sb = Sandbox::new();
    sb.enter(|| {
        let dir = NetnsDir::system();
        assert!(dir.list().unwrap().is_empty(), "the sandbox starts empty");
        netns::create("kt-a").unwrap();
        assert!(netns::exists("kt-a"));
        assert_eq!(netns::list().unwrap(), vec!["kt-a".to_string()]);

        // iproute2 sees and enters it; it starts with only lo, down.
        assert!(sh_ok(&["ip", "netns", "list"]).contains("kt-a"));
        let links = sh_ok(&["ip", "netns", "exec", "kt-a", "ip", "-o", "link"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:"));

        // A second create is an `Exists` error naming the namespace.
        let e = netns::create("kt-a").unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert_eq!(
            e.to_string(),
            "create netns kt-a: File exists (os error 17)"
        );

        // run_in really runs inside: same namespace inode as open().
        let fd = netns::open(Some("kt-a")).unwrap();
        let want = netns::namespace_id(fd.as_fd()).unwrap();
        let got = netns::run_in(Some("kt-a"), || {
            std::fs::metadata(netns::THREAD_SELF_NET).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
        })
        .unwrap()
        .unwrap();
        assert_eq!(got, want);
        let here = netns::namespace_id(netns::open(None).unwrap().as_fd()).unwrap();
        assert_ne!(here, want, "the caller's thread did not move");
        drop(fd);

        // A stale pin file (crash between create and mount) is not a namespace and is replaced.
        std::fs::write("/run/netns/kt-stale", b"").unwrap();
        assert!(!netns::exists("kt-stale"));
        assert!(netns::open(Some("kt-stale")).unwrap_err().is_not_found());
        netns::create("kt-stale").unwrap();
        assert!(netns::exists("kt-stale"));

        // Delete, and delete again is fine.
        assert!(netns::delete("kt-a").unwrap());
        assert!(!netns::delete("kt-a").unwrap());
        assert!(netns::delete("kt-stale").unwrap());
        assert!(!netns::exists("kt-a"));
        assert!(!sh_ok(&["ip", "netns", "list"]).contains("kt-"));
        assert!(netns::open(Some("kt-a")).unwrap_err().is_not_found());

        // create_then runs the follow-up on the creating thread, inside the new namespace.
        let rt = runtime();
        let (inside, nl) = netns::create_then("kt-c", || {
            let ino = std::fs::metadata(netns::THREAD_SELF_NET).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            (
                ino.unwrap(),
                Netlink::open_current(Some("kt-c"), rt.handle()).unwrap(),
            )
        })
        .unwrap();
        let fd = netns::open(Some("kt-c")).unwrap();
        assert_eq!(inside, netns::namespace_id(fd.as_fd()).unwrap());
        let links = rt.block_on(nl.links()).unwrap();
        assert_eq!(links.len(), 1, "a fresh namespace has only lo: {links:?}");
        assert_eq!(links[0].name, "lo");
        assert!(netns::create_then("kt-c", || ()).unwrap_err().is_exists());
        drop((nl, fd, rt));
        assert!(netns::delete("kt-c").unwrap());

        // Another directory works the same way (and stays out of `ip netns`).
        let other = NetnsDir::new("/run/netcompose/test-netns");
        other.create("kt-x").unwrap();
        assert!(other.exists("kt-x") && !netns::exists("kt-x"));
        let lo_up = other
            .run_in(Some("kt-x"), || {
                std::fs::read_to_string("/sys/class/net/lo/operstate")
            })
            .unwrap();
        assert!(lo_up.is_ok());
        assert!(other.delete("kt-x").unwrap());
        assert!(other.list().unwrap().is_empty());
    });
}

#[test]
fn bridge_and_veths_carry_packets_and_are_reported() {
    require_root("bridge_and_veths_carry_packets_and_are_reported");
    let sb = Sandbox::new();
    sb.enter(|| {
        let rt = runtime();
        let host = Netlink::open(None, rt.handle()).unwrap();
        let names = ["kt-web-1", "kt-web-2"];
        let macs = [[0x02, 0x4e, 0x43, 0, 0, 2], [0x02, 0x4e, 0x43, 0, 0, 3]];
        for n in names {
            netns::create(n).unwrap();
        }
        rt.block_on(async {
            let br = host
                .create_bridge("ktbr0", Some(1400), Some("netcompose:kt/network.front"))
                .await
                .unwrap();
            host.add_address(br, net("10.77.0.1/24")).await.unwrap();
            // Replace semantics: adding the same address again is fine.
            host.add_address(br, net("10.77.0.1/24")).await.unwrap();

            let mut veths = Vec::new();
            for (i, n) in names.iter().enumerate() {
                let fd = netns::open(Some(n)).unwrap();
                let vh = format!("kt-vh{i}");
                let index = host
                    .create_veth(&VethSpec {
                        name: vh.clone(),
                        alias: Some(format!("netcompose:kt/service.web[{}].link.front", i + 1)),
                        mtu: Some(1400),
                        master: Some(br),
                        up: true,
                        peer_name: "eth0".into(),
                        peer_ns: Some(fd.as_fd()),
                        peer_mac: Some(macs[i]),
                        ..VethSpec::default()
                    })
                    .await
                    .unwrap();
                veths.push(index);

                let inner = Netlink::open(Some(n), rt.handle()).unwrap();
                assert_eq!(inner.netns(), Some(*n));
                inner.lo_up().await.unwrap();
                let eth0 = inner
                    .link_index("eth0")
                    .await
                    .unwrap()
                    .expect("eth0 inside");
                inner.set_up(eth0).await.unwrap();
                inner
                    .add_address(eth0, net(&format!("10.77.0.{}/24", i + 2)))
                    .await
                    .unwrap();
                inner
                    .add_default_route(ip("10.77.0.1"), None)
                    .await
                    .unwrap();

                // Inside: eth0 with our MAC, MTU, up, peer in another netns; lo up.
                let links = inner.links().await.unwrap();
                let e = links.iter().find(|l| l.name == "eth0").unwrap();
                assert_eq!(e.kind, LinkKind::Veth);
                assert_eq!(e.mac, Some(macs[i]));
                assert_eq!(e.mtu, Some(1400));
                assert!(e.up);
                assert!(e.link_netnsid.is_some(), "peer is in another netns: {e:?}");
                assert_eq!(e.link, Some(index), "IFLA_LINK is the host end's index");
                assert!(links.iter().any(|l| l.name == "lo" && l.up));
                let addrs = inner.addresses().await.unwrap();
                assert!(addrs.contains(&(eth0, net(&format!("10.77.0.{}/24", i + 2)))));
                let routes = inner.routes().await.unwrap();
                assert!(
                    routes.iter().any(|r| r.dst == net("0.0.0.0/0")
                        && r.gateway == Some(ip("10.77.0.1"))
                        && r.oif == Some(eth0)),
                    "{routes:?}"
                );
                assert!(routes
                    .iter()
                    .any(|r| r.dst == net("10.77.0.0/24") && r.gateway.is_none()));
            }

            // Host side: bridge and ports as made.
            let links = host.links().await.unwrap();
            let b = links.iter().find(|l| l.name == "ktbr0").unwrap();
            assert_eq!(b.index, br);
            assert_eq!(b.kind, LinkKind::Bridge);
            assert_eq!(b.alias.as_deref(), Some("netcompose:kt/network.front"));
            assert_eq!(b.mtu, Some(1400));
            assert!(b.up);
            for (i, idx) in veths.iter().enumerate() {
                let v = links.iter().find(|l| l.index == *idx).unwrap();
                assert_eq!(v.name, format!("kt-vh{i}"));
                assert_eq!(v.kind, LinkKind::Veth);
                assert_eq!(v.master, Some(br));
                assert!(v.up);
                assert_eq!(
                    v.alias.as_deref(),
                    Some(format!("netcompose:kt/service.web[{}].link.front", i + 1).as_str())
                );
                assert!(v.bridge_port.is_some());
            }
            let addrs = host.addresses().await.unwrap();
            assert_eq!(
                addrs
                    .iter()
                    .filter(|(i, a)| *i == br && a.is_ipv4())
                    .count(),
                1,
                "the replaced address is there once: {addrs:?}"
            );
            veths
        });

        // Real packets, both ways, through iproute2's view of our namespaces.
        assert!(ping("kt-web-1", "10.77.0.3"), "web-1 -> web-2");
        assert!(ping("kt-web-2", "10.77.0.2"), "web-2 -> web-1");
        assert!(ping("kt-web-1", "10.77.0.1"), "web-1 -> gateway");

        rt.block_on(async {
            let vh0 = host.link_index("kt-vh0").await.unwrap().unwrap();
            // Port isolation and learning are reported back.
            host.set_bridge_port_isolated(vh0, true).await.unwrap();
            host.set_bridge_port_learning(vh0, false).await.unwrap();
            let l = host.link_by_index(vh0).await.unwrap().unwrap();
            let port = l.bridge_port.unwrap();
            assert_eq!(port.isolated, Some(true));
            assert_eq!(port.learning, Some(false));
            host.set_bridge_port_isolated(vh0, false).await.unwrap();

            // Changing attributes.
            host.set_down(vh0).await.unwrap();
            host.rename(vh0, "kt-renamed").await.unwrap();
            host.set_mtu(vh0, 1300).await.unwrap();
            host.set_mac(vh0, [0x02, 0, 0, 0, 0, 0x99]).await.unwrap();
            host.set_alias(vh0, None).await.unwrap();
            host.set_master(vh0, None).await.unwrap();
            let l = host.link_by_name("kt-renamed").await.unwrap().unwrap();
            assert_eq!(l.index, vh0);
            assert_eq!(l.mtu, Some(1300));
            assert_eq!(l.mac, Some([0x02, 0, 0, 0, 0, 0x99]));
            assert_eq!(l.alias, None);
            assert_eq!(l.master, None);
            assert!(!l.up);
            assert!(host.link_by_name("kt-vh0").await.unwrap().is_none());

            // Routes and addresses go away on request.
            let br = host.link_index("ktbr0").await.unwrap().unwrap();
            host.add_route(net("10.78.0.0/24"), Some(ip("10.77.0.2")), None)
                .await
                .unwrap();
            host.add_route(net("10.79.0.0/24"), None, Some(br))
                .await
                .unwrap();
            let routes = host.routes().await.unwrap();
            assert!(routes
                .iter()
                .any(|r| r.dst == net("10.78.0.0/24") && r.gateway == Some(ip("10.77.0.2"))));
            assert!(routes
                .iter()
                .any(|r| r.dst == net("10.79.0.0/24") && r.oif == Some(br) && r.scope == 253));
            host.delete_route(net("10.78.0.0/24"), None, None)
                .await
                .unwrap();
            host.delete_route(net("10.79.0.0/24"), None, Some(br))
                .await
                .unwrap();
            let e = host
                .delete_route(net("10.78.0.0/24"), None, None)
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "{e}");
            host.delete_address(br, net("10.77.0.1/24")).await.unwrap();
            let e = host
                .delete_address(br, net("10.77.0.1/24"))
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "{e}");

            // Delete everything and check it is gone, on both sides of the veths.
            for name in ["kt-renamed", "kt-vh1", "ktbr0"] {
                let idx = host.link_index(name).await.unwrap().unwrap();
                host.delete_link(idx).await.unwrap();
            }
            let left: Vec<_> = host
                .links()
                .await
                .unwrap()
                .into_iter()
                .filter(|l| l.name.starts_with("kt"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
            for n in names {
                let inner = Netlink::open(Some(n), rt.handle()).unwrap();
                assert!(inner.link_by_name("eth0").await.unwrap().is_none());
            }
        });
        drop(host);
        drop(rt);
        for n in names {
            assert!(netns::delete(n).unwrap());
        }
        assert!(netns::list().unwrap().is_empty());
    });
}

#[test]
fn macvlan_bridge_mode_endpoints_talk() {
    require_root("macvlan_bridge_mode_endpoints_talk");
    let sb = Sandbox::new();
    sb.enter(|| {
        let rt = runtime();
        let host = Netlink::open(None, rt.handle()).unwrap();
        for n in ["kt-m1", "kt-m2", "kt-m3"] {
            netns::create(n).unwrap();
        }
        rt.block_on(async {
            // The parent is a veth end this test made (never a real NIC).
            let parent = host
                .create_veth(&VethSpec {
                    name: "kt-par0".into(),
                    up: true,
                    peer_name: "kt-par1".into(),
                    ..VethSpec::default()
                })
                .await
                .unwrap();
            let par1 = host.link_index("kt-par1").await.unwrap().unwrap();
            host.set_up(par1).await.unwrap();
            for (i, n) in ["kt-m1", "kt-m2"].iter().enumerate() {
                let fd = netns::open(Some(n)).unwrap();
                let made = host
                    .create_macvlan(&MacvlanSpec {
                        name: "eth0".into(),
                        parent,
                        mode: MacvlanMode::Bridge,
                        ns: Some(fd.as_fd()),
                        mac: Some([0x02, 0x4d, 0x56, 0, 0, i as u8 + 2]),
                        mtu: Some(1500),
                        up: true,
                    })
                    .await
                    .unwrap();
                assert_eq!(made, None, "created in another namespace");
                let inner = Netlink::open(Some(n), rt.handle()).unwrap();
                let l = inner.link_by_name("eth0").await.unwrap().unwrap();
                assert_eq!(l.kind, LinkKind::Macvlan);
                assert_eq!(l.macvlan_mode, Some(MacvlanMode::Bridge));
                assert_eq!(l.mac, Some([0x02, 0x4d, 0x56, 0, 0, i as u8 + 2]));
                assert!(l.link_netnsid.is_some(), "parent is in another namespace");
                inner.lo_up().await.unwrap();
                inner
                    .add_address(l.index, net(&format!("10.88.0.{}/24", i + 2)))
                    .await
                    .unwrap();
            }
            // The two-step fallback (create beside the parent, move + rename, up) also works.
            let fd = netns::open(Some("kt-m3")).unwrap();
            host.create_macvlan_moved(&MacvlanSpec {
                name: "eth0".into(),
                parent,
                mode: MacvlanMode::Bridge,
                ns: Some(fd.as_fd()),
                mac: None,
                mtu: None,
                up: true,
            })
            .await
            .unwrap();
            let inner = Netlink::open(Some("kt-m3"), rt.handle()).unwrap();
            let l = inner.link_by_name("eth0").await.unwrap().unwrap();
            assert!(l.up && l.kind == LinkKind::Macvlan, "{l:?}");
            inner
                .add_address(l.index, net("10.88.0.4/24"))
                .await
                .unwrap();
            assert!(
                !host
                    .links()
                    .await
                    .unwrap()
                    .iter()
                    .any(|l| l.name.starts_with("nc-tmp")),
                "no temporary link left behind"
            );

            // A macvlan next to its parent returns its index.
            let local = host
                .create_macvlan(&MacvlanSpec {
                    name: "kt-mvl".into(),
                    parent,
                    mode: MacvlanMode::Private,
                    ns: None,
                    mac: None,
                    mtu: None,
                    up: false,
                })
                .await
                .unwrap()
                .expect("index of a local macvlan");
            let l = host.link_by_index(local).await.unwrap().unwrap();
            assert_eq!(l.name, "kt-mvl");
            assert_eq!(l.macvlan_mode, Some(MacvlanMode::Private));
            assert_eq!(l.link, Some(parent));
        });
        assert!(ping("kt-m1", "10.88.0.3"), "macvlan m1 -> m2");
        assert!(ping("kt-m2", "10.88.0.2"), "macvlan m2 -> m1");
        assert!(ping("kt-m1", "10.88.0.4"), "macvlan m1 -> m3 (moved)");
    });
}

#[test]
fn vxlan_without_learning_carries_an_overlay() {
    require_root("vxlan_without_learning_carries_an_overlay");
    let sb = Sandbox::new();
    let outside = sb.open_outside_ns();
    sb.enter(|| {
        let rt = runtime();
        let host = Netlink::open(None, rt.handle()).unwrap();
        let out = Netlink::open_fd(outside.as_fd(), Some("outside"), rt.handle()).unwrap();
        rt.block_on(async {
            // One VTEP at each end of the uplink, FDB programmed, learning off.
            for (nl, local, remote, addr) in [
                (&host, UPLINK_HOST_IP, UPLINK_OUTSIDE_IP, "10.99.0.1/24"),
                (&out, UPLINK_OUTSIDE_IP, UPLINK_HOST_IP, "10.99.0.2/24"),
            ] {
                let uplink = nl.link_index(UPLINK_IF).await.unwrap().unwrap();
                let vx = nl
                    .create_vxlan(&VxlanSpec {
                        name: "kt-vx42".into(),
                        vni: 4242,
                        local: Some(ip(local)),
                        port: 4789,
                        underlay: Some(uplink),
                        learning: false,
                        proxy: false,
                        mtu: Some(1350),
                        alias: Some("netcompose:kt/network.overlay".into()),
                        master: None,
                        up: true,
                    })
                    .await
                    .unwrap();
                nl.add_fdb(vx, [0; 6], ip(remote)).await.unwrap();
                nl.add_fdb(vx, [0; 6], ip(remote)).await.unwrap(); // append is idempotent
                nl.add_address(vx, net(addr)).await.unwrap();
                let l = nl.link_by_index(vx).await.unwrap().unwrap();
                assert_eq!(l.kind, LinkKind::Vxlan);
                assert_eq!(l.alias.as_deref(), Some("netcompose:kt/network.overlay"));
                assert_eq!(l.mtu, Some(1350));
                let v = l.vxlan.unwrap();
                assert_eq!(v.vni, Some(4242));
                assert_eq!(v.learning, Some(false));
                assert_eq!(v.port, Some(4789));
                assert_eq!(v.local, Some(ip(local)));
                assert_eq!(v.underlay, Some(uplink));
            }
            // A static neighbour entry on the overlay (what the agent programs per endpoint).
            let vx = host.link_index("kt-vx42").await.unwrap().unwrap();
            host.add_neighbour(vx, ip("10.99.0.9"), [0x02, 0, 0, 0, 0, 9])
                .await
                .unwrap();
        });
        let fdb = sh_ok(&["bridge", "fdb", "show", "dev", "kt-vx42"]);
        assert!(fdb.contains("00:00:00:00:00:00 dst 198.18.0.1"), "{fdb}");
        let neigh = sh_ok(&["ip", "neigh", "show", "dev", "kt-vx42"]);
        assert!(
            neigh.contains("10.99.0.9 lladdr 02:00:00:00:00:09 PERMANENT"),
            "{neigh}"
        );
        let ping = sh(&["ping", "-c", "1", "-W", "2", "10.99.0.2"]);
        assert!(
            ping.status.success(),
            "ping over the overlay: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        // Learning off: the remote MAC was not learned into the FDB.
        let fdb = sh_ok(&["bridge", "fdb", "show", "dev", "kt-vx42"]);
        assert_eq!(fdb.lines().count(), 1, "only the static flood entry: {fdb}");
    });
}

#[test]
fn sysctls_are_per_namespace() {
    require_root("sysctls_are_per_namespace");
    let sb = Sandbox::new();
    sb.enter(|| {
        netns::create("kt-s").unwrap();
        let before_host = sysctl::read(None, "net.ipv4.ip_forward").unwrap();
        // A new namespace starts with forwarding off, or inherits the host's value where
        // net.core.devconf_inherit_init_net says so: flip whatever it has.
        let flipped = match sysctl::read(Some("kt-s"), "net.ipv4.ip_forward")
            .unwrap()
            .as_str()
        {
            "0" => "1",
            "1" => "0",
            other => panic!("net.ipv4.ip_forward in kt-s reads {other:?}"),
        };
        sysctl::write(Some("kt-s"), "net.ipv4.ip_forward", flipped).unwrap();
        assert_eq!(
            sysctl::read(Some("kt-s"), "net.ipv4.ip_forward").unwrap(),
            flipped
        );
        assert_eq!(
            sysctl::read(None, "net.ipv4.ip_forward").unwrap(),
            before_host,
            "the sandbox host is unaffected"
        );
        sysctl::write(Some("kt-s"), "net/ipv6/conf/lo/disable_ipv6", "1").unwrap();
        assert_eq!(
            sysctl::read(Some("kt-s"), "net.ipv6.conf.lo.disable_ipv6").unwrap(),
            "1"
        );
        let e = sysctl::write(Some("kt-s"), "kernel.hostname", "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let e = sysctl::read(Some("kt-s"), "net.ipv4.no_such_knob").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e
            .to_string()
            .starts_with("read sysctl net.ipv4.no_such_knob in netns kt-s: "));
        let e = sysctl::read(Some("kt-missing"), "net.ipv4.ip_forward").unwrap_err();
        assert!(e.is_not_found(), "{e}");
    });
}

#[test]
fn errors_say_what_and_where() {
    require_root("errors_say_what_and_where");
    let sb = Sandbox::new();
    sb.enter(|| {
        let rt = runtime();
        netns::create("kt-e").unwrap();
        let inner = Netlink::open(Some("kt-e"), rt.handle()).unwrap();
        let host = Netlink::open(None, rt.handle()).unwrap();
        rt.block_on(async {
            inner.create_bridge("kt-br", None, None).await.unwrap();
            let e = inner.create_bridge("kt-br", None, None).await.unwrap_err();
            assert!(e.is_exists(), "{e}");
            assert_eq!(
                e.to_string(),
                "create bridge kt-br in netns kt-e: File exists (os error 17)"
            );

            // A kind this kernel lacks (ipvlan here; any missing module behaves the same).
            let lo = netcompose::kernel::netlink::LOOPBACK_INDEX;
            let msg = rtnetlink::LinkIpVlan::new(
                "kt-ipvl",
                lo,
                netlink_packet_route::link::IpVlanMode::L2,
            )
            .build();
            match inner.create_link_message("ipvlan", "kt-ipvl", msg).await {
                Ok(_) => eprintln!("note: this kernel has ipvlan; unsupported-kind path not hit"),
                Err(e) => {
                    eprintln!("ipvlan: {e}");
                    assert!(e.is_unsupported(), "{e}");
                    let text = e.to_string();
                    assert!(
                        text.contains("create ipvlan kt-ipvl in netns kt-e"),
                        "{text}"
                    );
                    assert!(text.contains("module `ipvlan`"), "{text}");
                }
            }

            let e = inner.delete_link(4242).await.unwrap_err();
            assert!(e.is_not_found(), "{e}");
            assert_eq!(
                e.to_string(),
                "delete link ifindex 4242 in netns kt-e: No such device (os error 19)"
            );
            assert!(inner.set_up(4242).await.unwrap_err().is_not_found());
            assert!(inner.link_by_name("nope").await.unwrap().is_none());
            assert!(inner.link_by_index(4242).await.unwrap().is_none());

            // The kernel's own words come along when it gives them.
            let e = host
                .add_route(net("10.55.0.0/24"), Some(ip("10.56.0.1")), None)
                .await
                .unwrap_err();
            eprintln!("unreachable gateway: {e}");
            assert!(e
                .to_string()
                .starts_with("add route 10.55.0.0/24 via 10.56.0.1: "));
        });
        let e = netns::open(Some("kt-none")).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "open netns kt-none: No such file or directory (os error 2)"
        );
        let e = Netlink::open(Some("kt-none"), rt.handle()).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(netns::create("a/b").unwrap_err().kind(), ErrorKind::Invalid);
    });
}

#[test]
fn sandbox_keeps_everything_inside() {
    require_root("sandbox_keeps_everything_inside");
    let sb = Sandbox::new();
    let (host_ns, out_ns) = (sb.host_ns().to_string(), sb.outside_ns().to_string());
    let real_list = || {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert!(real_list().contains(&host_ns));

    // Namespaces and files made inside do not appear on the real host.
    sb.run_ok(&["ip", "netns", "add", "kt-inner"]);
    sb.run_ok(&["mkdir", "-p", "/etc/netns/kt-inner"]);
    sb.run_ok(&[
        "sh",
        "-c",
        "echo nameserver 127.0.0.11 > /etc/netns/kt-inner/resolv.conf",
    ]);
    sb.run_ok(&[
        "sh",
        "-c",
        "mkdir -p /var/lib/netcompose/p && touch /var/lib/netcompose/p/state",
    ]);
    assert!(sb.run_ok(&["ip", "netns", "list"]).contains("kt-inner"));
    assert!(!real_list().contains("kt-inner"));
    assert!(!std::path::Path::new("/etc/netns/kt-inner").exists());
    assert!(!std::path::Path::new("/var/lib/netcompose/p").exists());
    // `ip netns exec` picks up the sandbox's /etc/netns.
    let resolv = sb.run_ok(&["ip", "netns", "exec", "kt-inner", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("127.0.0.11"));

    // DNS is private: the only upstream is the outside end; writing it leaves the host alone.
    let real_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = sb.run_ok(&["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv.trim(), format!("nameserver {UPLINK_OUTSIDE_IP}"));
    sb.write_file(
        "/etc/resolv.conf",
        "nameserver 198.18.0.1\noptions ndots:1\n",
    );
    assert!(sb.run_ok(&["cat", "/etc/resolv.conf"]).contains("ndots:1"));
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        real_resolv
    );

    // The uplink works both ways; the host's default route goes out through it.
    sb.run_ok(&["ping", "-c", "1", "-W", "2", UPLINK_OUTSIDE_IP]);
    let o = sb.run_in_outside(&["ping", "-c", "1", "-W", "2", UPLINK_HOST_IP]);
    assert!(o.status.success());
    assert!(sb
        .run_ok(&["ip", "route", "show", "default"])
        .contains(UPLINK_OUTSIDE_IP));

    // The binary under test runs inside, with a working directory of our choice.
    let o = sb.netcompose(&["--help"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sb.run_in_dir(std::path::Path::new("/tmp"), &["pwd"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "/tmp");

    // A process left running inside is killed by Drop, and everything disappears.
    let mut sleeper = sb.spawn(&["ip", "netns", "exec", "kt-inner", "sleep", "600"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let holder = sb.holder_pid();
    drop(sb);
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the process inside was killed: {status}");
    assert!(!std::path::Path::new(&format!("/proc/{holder}")).exists());
    let list = real_list();
    assert!(
        !list.contains(&host_ns) && !list.contains(&out_ns),
        "{list}"
    );
}

/// `cargo test --test kernel -- --ignored --nocapture bench`: N namespaces, each with a veth
/// into one bridge, an address, up — through the API, then with `ip -batch`.
#[test]
#[ignore]
fn bench_endpoints_api_vs_ip_batch() {
    require_root("bench_endpoints_api_vs_ip_batch");
    let n: usize = std::env::var("NCT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);

    // --- through the API
    let sb = Sandbox::new();
    let (api_ms, split) = sb.enter(|| {
        let rt = runtime();
        let host = Netlink::open(None, rt.handle()).unwrap();
        let t0 = Instant::now();
        let br = rt
            .block_on(host.create_bridge("bnbr0", None, None))
            .unwrap();
        rt.block_on(host.add_address(br, net("10.60.0.1/16")))
            .unwrap();
        // netns create + netlink open inside, veth create, lo up + eth0 lookup/up + address
        let mut split = [std::time::Duration::ZERO; 3];
        for i in 0..n {
            let name = format!("bn-{i}");
            let t = Instant::now();
            // Create the namespace and open its netlink socket on the same thread.
            let inner = netns::create_then(&name, || {
                Netlink::open_current(Some(name.as_str()), rt.handle())
            })
            .unwrap()
            .unwrap();
            let fd = netns::open(Some(&name)).unwrap();
            split[0] += t.elapsed();
            rt.block_on(async {
                let t = Instant::now();
                host.create_veth(&VethSpec {
                    name: format!("bv{i}"),
                    master: Some(br),
                    up: true,
                    peer_name: "eth0".into(),
                    peer_ns: Some(fd.as_fd()),
                    ..VethSpec::default()
                })
                .await
                .unwrap();
                split[1] += t.elapsed();

                let t = Instant::now();
                inner.lo_up().await.unwrap();
                let eth0 = inner.link_index("eth0").await.unwrap().unwrap();
                inner.set_up(eth0).await.unwrap();
                let a = IpAddr::from([10, 60, (i / 250 + 1) as u8, (i % 250 + 2) as u8]);
                inner
                    .add_address(eth0, IpNetwork::new(a, 16).unwrap())
                    .await
                    .unwrap();
                split[2] += t.elapsed();
            });
        }
        let total = t0.elapsed();
        assert!(ping(&format!("bn-{}", n - 1), "10.60.0.1"));
        (
            total.as_secs_f64() * 1e3,
            split.map(|d| d.as_secs_f64() * 1e3 / n as f64),
        )
    });
    let t = Instant::now();
    drop(sb);
    let api_teardown = t.elapsed().as_secs_f64() * 1e3;

    // --- with iproute2: one batch for the host side, one `ip -n NS -batch` per namespace
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let host_batch = dir.path().join("host.batch");
    let mut text = String::from(
        "link add bnbr0 type bridge\nlink set bnbr0 up\naddr add 10.60.0.1/16 dev bnbr0\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "netns add bn-{i}\nlink add bv{i} type veth peer name eth0 netns bn-{i}\nlink set bv{i} master bnbr0 up\n"
        ));
    }
    std::fs::write(&host_batch, text).unwrap();
    let mut inner_batches = Vec::new();
    for i in 0..n {
        let p = dir.path().join(format!("ns{i}.batch"));
        let a = format!("10.60.{}.{}", i / 250 + 1, i % 250 + 2);
        std::fs::write(
            &p,
            format!("link set lo up\naddr add {a}/16 dev eth0\nlink set eth0 up\n"),
        )
        .unwrap();
        inner_batches.push(p);
    }
    let (ip_host_ms, ip_total_ms) = sb.enter(|| {
        let t0 = Instant::now();
        sh_ok(&["ip", "-batch", host_batch.to_str().unwrap()]);
        let host_ms = t0.elapsed().as_secs_f64() * 1e3;
        for (i, p) in inner_batches.iter().enumerate() {
            sh_ok(&[
                "ip",
                "-n",
                &format!("bn-{i}"),
                "-batch",
                p.to_str().unwrap(),
            ]);
        }
        let total = t0.elapsed().as_secs_f64() * 1e3;
        assert!(ping(&format!("bn-{}", n - 1), "10.60.0.1"));
        (host_ms, total)
    });
    let t = Instant::now();
    drop(sb);
    let ip_teardown = t.elapsed().as_secs_f64() * 1e3;

    println!("N = {n} endpoints (netns + veth into one bridge + address + up)");
    println!(
        "  API      : {api_ms:8.1} ms total, {:.3} ms/endpoint = netns+socket {:.3} + veth {:.3} + lo/eth0 up, addr {:.3}; teardown {api_teardown:.0} ms",
        api_ms / n as f64,
        split[0],
        split[1],
        split[2]
    );
    println!(
        "  ip -batch: {ip_total_ms:8.1} ms total, {:.3} ms/endpoint (host batch alone {:.3} ms/endpoint); teardown {ip_teardown:.0} ms",
        ip_total_ms / n as f64,
        ip_host_ms / n as f64
    );
}
