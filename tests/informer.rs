//! The daemon's survey cache (`daemon::informer`) against the real kernel, inside a
//! [`Sandbox`]: after every kind of change made behind its back (a link's MTU, an address, a
//! route, a file written or made, a table added, a pin that names a new namespace) it answers
//! exactly what a survey of the kernel answers at that moment, and it reads again only the
//! namespaces that changed (a table written is followed from its notification alone).
//! Needs root; fails, saying so, otherwise.

mod common;

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use common::{require_root, Sandbox};
use netcompose::daemon::informer::Informer;
use netcompose::kernel::survey::{survey, Kept};
use netcompose::kernel::{netns, Netlink, NetnsDir, VethSpec};

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

        // A namespace no longer wanted is let go (its sockets closed) and not answered for.
        let wanted: BTreeSet<String> = names[..7].iter().cloned().collect();
        informer.want(wanted);
        assert!(informer.surveys(&names)[7].is_none());
    });
}
