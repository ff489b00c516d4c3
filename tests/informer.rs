//! The daemon's survey cache (`daemon::informer`) against the real kernel, inside a
//! [`Sandbox`]: after every kind of change made behind its back (a link's MTU, an address, a
//! route, a file written or made, a table added, a pin that names a new namespace) it answers
//! exactly what a survey of the kernel answers at that moment, and it reads again only the
//! namespaces that changed (a table written is followed from its notification alone).
//! Needs root; fails, saying so, otherwise.

mod common;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::process::Command;

use common::project::Project;
use common::{require_root, wait_for, Sandbox};
use netcompose::daemon::informer::Informer;
use netcompose::kernel::nftables::read::generation_on;
use netcompose::kernel::nftables::wire::{self, Msg, MsgType};
use netcompose::kernel::survey::{survey, Kept};
use netcompose::kernel::{netns, Ctx, Netlink, NetnsDir, VethSpec};
use nix::sys::socket::{recv, send, MsgFlags};

/// What a survey of the kernel reads of each of `names` now (None: no namespace).
fn direct(dir: &NetnsDir, etc: &Path, names: &[String]) -> Vec<Option<Kept>> {
    survey(dir, etc, names, true)
        .into_iter()
        .map(|a| {
            a.expect("a survey").map(|(survey, nft)| Kept {
                survey,
                generation: nft.and_then(|n| n.generation),
            })
        })
        .collect()
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run a command");
    assert!(out.status.success(), "{args:?}: {out:?}");
}

#[test]
fn the_informer_answers_what_the_kernel_holds_and_reads_only_what_changed() {
    require_root("the_informer_answers_what_the_kernel_holds_and_reads_only_what_changed");
    let sb = Sandbox::new();
    sb.enter(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let names: Vec<String> = (1..=8).map(|i| format!("if-web-{i}")).collect();
        let etc = tempfile::tempdir().unwrap();
        for (i, n) in names.iter().enumerate() {
            netns::create(n).unwrap();
            let inner = Netlink::open(Some(n), rt.handle()).unwrap();
            rt.block_on(async {
                inner.lo_up().await.unwrap();
                let fd = netns::open(Some(n)).unwrap();
                inner
                    .create_veth(&VethSpec {
                        name: "eth0".into(),
                        up: true,
                        peer_name: "peer0".into(),
                        peer_ns: Some(fd.as_fd()),
                        ..VethSpec::default()
                    })
                    .await
                    .unwrap();
                let eth0 = inner.link_index("eth0").await.unwrap().unwrap();
                let addr = format!("10.66.0.{}/24", i + 2).parse().unwrap();
                inner.add_address(eth0, addr).await.unwrap();
            });
        }
        std::fs::create_dir(etc.path().join(&names[0])).unwrap();
        std::fs::write(etc.path().join(&names[0]).join("hosts"), "10.66.0.2 web\n").unwrap();

        let dir = NetnsDir::system();
        let mut informer = Informer::new(dir.clone(), etc.path().to_path_buf());
        informer.want(names.iter().cloned().collect::<BTreeSet<_>>());
        informer.catch_up();
        assert_eq!(informer.reads(), names.len(), "every namespace read once");
        let same = |informer: &mut Informer, what: &str| {
            let kept = informer.surveys(&names);
            assert_eq!(kept, direct(&dir, etc.path(), &names), "after {what}");
            assert!(kept.iter().all(Option::is_some), "after {what}");
        };
        same(&mut informer, "the first reads");
        assert_eq!(
            informer.reads(),
            names.len(),
            "nothing changed, nothing read"
        );

        let ipn = |n: usize, rest: &[&str]| {
            let mut args = vec!["ip", "-n", names[n].as_str()];
            args.extend_from_slice(rest);
            sh(&args);
        };
        ipn(1, &["link", "set", "eth0", "mtu", "1400"]);
        same(&mut informer, "an MTU changed");
        assert_eq!(
            informer.reads(),
            names.len() + 1,
            "only the changed one read"
        );
        ipn(2, &["addr", "add", "10.66.9.9/24", "dev", "eth0"]);
        ipn(3, &["route", "add", "10.77.0.0/16", "via", "10.66.0.1"]);
        same(&mut informer, "an address and a route added");
        assert_eq!(informer.reads(), names.len() + 3);

        // Files: one rewritten in place, one renamed into place, a directory made.
        std::fs::write(etc.path().join(&names[0]).join("hosts"), "10.66.0.9 web\n").unwrap();
        let fresh = etc.path().join(&names[0]).join(".resolv.tmp");
        std::fs::write(&fresh, "nameserver 127.0.0.11\n").unwrap();
        std::fs::rename(&fresh, etc.path().join(&names[0]).join("resolv.conf")).unwrap();
        std::fs::create_dir(etc.path().join(&names[4])).unwrap();
        std::fs::write(etc.path().join(&names[4]).join("hosts"), "10.66.0.6 web\n").unwrap();
        same(&mut informer, "files written");
        assert_eq!(informer.reads(), names.len() + 5);
        // The directory made after the first read is followed from now on.
        std::fs::write(etc.path().join(&names[4]).join("hosts"), "10.66.0.7 web\n").unwrap();
        same(&mut informer, "a file of a new directory written");
        assert_eq!(informer.reads(), names.len() + 6);

        // A table written: the generation moves on, nothing is read again.
        let generation =
            |informer: &mut Informer| informer.surveys(&names)[5].clone().unwrap().generation;
        let before = generation(&mut informer);
        sh(&[
            "ip", "netns", "exec", &names[5], "nft", "add", "table", "inet", "t",
        ]);
        sh(&[
            "ip", "netns", "exec", &names[5], "nft", "add", "chain", "inet", "t", "c",
        ]);
        same(&mut informer, "a table written");
        assert_ne!(generation(&mut informer), before, "two transactions later");
        assert_eq!(informer.reads(), names.len() + 6, "a table is no survey");

        // A pin that names another namespace now: not answered for (the run reads it).
        sh(&["ip", "netns", "del", &names[6]]);
        netns::create(&names[6]).unwrap();
        let kept = informer.surveys(&names);
        assert!(kept[6].is_none(), "a new namespace under the old pin");
        let mut others = direct(&dir, etc.path(), &names);
        others[6] = None;
        assert_eq!(kept, others);

        // The socket lent is the namespace's, with nothing left on it by an earlier borrower.
        let kept = informer.surveys(&names[..1]).remove(0).expect("kept");
        let lent = informer.lend(&names[..1]).remove(0).expect("a socket lent");
        let ctx = Ctx::new("test", "lent socket", Some(&names[0]));
        let cookie = wire::netns_cookie(&ctx, &lent).unwrap();
        assert_eq!(kept.generation.map(|g| g.0), Some(cookie));
        assert_eq!(
            kept.generation.map(|g| g.1),
            Some(generation_on(&ctx, &lent).unwrap())
        );
        let unread = Msg::new(MsgType::GetGen, wire::NLM_F_REQUEST | wire::NLM_F_ACK, 9);
        send(lent.as_raw_fd(), &unread.finish(), MsgFlags::empty()).unwrap();
        let again = informer.lend(&names[..1]).remove(0).expect("lent again");
        let mut buf = [0u8; 64];
        assert_eq!(
            recv(again.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT),
            Err(nix::errno::Errno::EAGAIN),
            "the answer a borrower left unread is gone"
        );

        // A namespace no longer wanted is let go (its sockets closed) and not answered for.
        let wanted: BTreeSet<String> = names[..7].iter().cloned().collect();
        informer.want(wanted);
        assert!(informer.surveys(&names)[7].is_none());
    });
}

const LENT: &str = r#"
networks: {front: {ipam: {config: [{subnet: 10.93.0.0/24}]}}}
services:
  web: {networks: [front], deploy: {replicas: 2}}
  api:
    networks: [front]
    deploy: {replicas: 2}
    x-policy: {ingress: {allow: [web], deny: ["0.0.0.0/0"]}}
"#;

/// `up` with `NETCOMPOSE_TIMINGS`, which must succeed; returns its observe line and the
/// notes that follow its stages.
fn timed_up(p: &Project) -> String {
    let out =
        p.sb.command(
            env!("CARGO_BIN_EXE_netcompose"),
            &["-f", p.file.to_str().unwrap(), "up"],
        )
        .env("NETCOMPOSE_TIMINGS", "1")
        .output()
        .expect("run netcompose");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "up failed: {err}");
    let observe = err
        .lines()
        .find(|l| l.starts_with("timing: observe:"))
        .unwrap_or_else(|| panic!("no observe timing in {err}"));
    let notes = err
        .lines()
        .filter(|l| l.starts_with("timing: up:") && !l.contains(" ms ("));
    std::iter::once(observe)
        .chain(notes)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The inode numbers of the sockets process `pid` holds.
fn sockets_of(sb: &Sandbox, pid: &str) -> BTreeSet<String> {
    sb.enter(|| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the daemon's descriptors")
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|l| l.display().to_string())
            .filter(|l| l.starts_with("socket:"))
            .collect()
    })
}

#[test]
fn the_daemon_holds_sockets_handed_to_it_until_the_connection_closes() {
    require_root("the_daemon_holds_sockets_handed_to_it_until_the_connection_closes");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "held", LENT);
    p.up();
    let pid = sb.run_ok(&["cat", "/run/netcompose/held/daemon.pid"]);
    let pid = pid.trim();
    let project = netcompose::project_name::ProjectName::new("held").unwrap();
    let (holding, inode) = sb.enter(|| {
        let ctx = Ctx::new("test", "handed socket", None);
        let socket = wire::open(&ctx).expect("an nfnetlink socket");
        let inode = nix::sys::stat::fstat(socket.as_fd()).unwrap().st_ino;
        let holding = netcompose::daemon::hand_over(&project, std::slice::from_ref(&socket))
            .expect("the daemon takes the socket");
        (holding, format!("socket:[{inode}]"))
    });
    // Ours is closed: the daemon's copy is what keeps the socket open now, once the daemon
    // has read it off the connection (until then the kernel holds it in flight).
    let five = std::time::Duration::from_secs(5);
    assert!(
        wait_for(five, || sockets_of(&sb, pid).contains(&inode)),
        "the daemon does not hold {inode} 5 s after it was handed over"
    );
    drop(holding);
    assert!(
        wait_for(five, || !sockets_of(&sb, pid).contains(&inode)),
        "the daemon still holds {inode} 5 s after the connection closed"
    );
    p.nc_ok(&["down"]);
}

#[test]
fn up_takes_surveys_and_sockets_from_the_daemon_and_does_without_it() {
    require_root("up_takes_surveys_and_sockets_from_the_daemon_and_does_without_it");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "lent", LENT);
    p.up();
    let again = timed_up(&p);
    assert!(
        again.contains("4 namespaces (4 kept by the daemon, 4 sockets lent)"),
        "{again}"
    );
    // A scale writes every api table with the sockets lent: the new web replica is let in.
    p.rewrite(&LENT.replace("replicas: 2}}\n  api", "replicas: 3}}\n  api"));
    let scaled = timed_up(&p);
    assert!(
        scaled.contains("(4 kept by the daemon, 4 sockets lent)"),
        "{scaled}"
    );
    // Its own sockets (the host's, the new replica's) go to the daemon rather than closed.
    assert!(
        scaled.contains("timing: up: 2 nfnetlink sockets handed to the daemon in "),
        "{scaled}"
    );
    let web3 = p.addr("web", 3, "front");
    for n in 1..=2 {
        let set = sb.run_ok(&[
            "ip",
            "netns",
            "exec",
            &p.ns("api", n),
            "nft",
            "list",
            "set",
            "inet",
            "netcompose",
            "from.web",
        ]);
        assert!(set.contains(&web3), "api-{n} lets web-3 ({web3}) in: {set}");
    }
    assert_eq!(p.nc(&["plan"]).status.code(), Some(0), "nothing left to do");
    // Without a daemon (killed), a run reads every namespace itself, and starts it again.
    let pid = sb.run_ok(&["cat", "/run/netcompose/lent/daemon.pid"]);
    sb.run_ok(&["kill", "-9", pid.trim()]);
    let alone = timed_up(&p);
    assert!(
        alone.contains("5 namespaces (0 kept by the daemon, 0 sockets lent)"),
        "{alone}"
    );
    let back = timed_up(&p);
    assert!(
        back.contains("5 namespaces (5 kept by the daemon, 5 sockets lent)"),
        "{back}"
    );
    p.nc_ok(&["down"]);
}
