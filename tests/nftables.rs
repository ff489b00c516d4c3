//! kernel::nftables against the real kernel, inside a [`Sandbox`]: a table written over
//! nfnetlink from the neutral chain description is read back with its rule tags, changed
//! chain by chain, and deleted, where a missing table is a typed answer (no error text is
//! read); a map is changed element by element. Needs root.

mod common;

use common::{require_root, Sandbox};
use netcompose::kernel::nftables::expr::{Data, Expr, Reg, Verdict};
use netcompose::kernel::nftables::read as nfnl;
use netcompose::kernel::nftables::{self as nft, BaseChain, Chain, Rule};
use netcompose::kernel::{netns, ErrorKind, NetnsDir};

fn rule(tag: &str) -> Rule {
    Rule {
        expr: vec![
            Expr::Counter {
                packets: 0,
                bytes: 0,
            },
            Expr::Immediate {
                dreg: Reg::Verdict,
                data: Data::Verdict(Verdict::Accept),
            },
        ],
        tag: tag.into(),
    }
}

fn chains(input: &[&str]) -> Vec<Chain> {
    vec![
        Chain {
            name: "input".into(),
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "input".into(),
                priority: 0,
            }),
            rules: input.iter().map(|t| rule(t)).collect(),
        },
        Chain {
            name: "jump".into(),
            base: None,
            rules: vec![],
        },
    ]
}

fn tags(input: &[&str]) -> Vec<(String, Vec<String>)> {
    vec![
        (
            "input".to_string(),
            input.iter().map(|t| t.to_string()).collect(),
        ),
        ("jump".to_string(), vec![]),
    ]
}

#[test]
fn tables_load_read_back_and_delete_over_nfnetlink() {
    require_root("tables_load_read_back_and_delete_over_nfnetlink");
    let sb = Sandbox::new();
    sb.enter(|| {
        let dir = NetnsDir::system();
        let ns = Some("kt-nft");
        netns::create("kt-nft").unwrap();
        assert_eq!(nfnl::table_tags(&dir, ns, "t").unwrap(), None);

        nft::replace_table(&dir, ns, "t", &chains(&["nc:a1"]), &[]).unwrap();
        assert_eq!(
            nfnl::table_tags(&dir, ns, "t").unwrap(),
            Some(tags(&["nc:a1"]))
        );
        nft::update_table(
            &dir,
            ns,
            "t",
            (&chains(&["nc:a1"]), &[]),
            (&chains(&["nc:a1", "nc:b2"]), &[]),
        )
        .unwrap();
        assert_eq!(
            nfnl::table_tags(&dir, ns, "t").unwrap(),
            Some(tags(&["nc:a1", "nc:b2"]))
        );
        let counters = nfnl::rule_counters(&dir, ns, "t").unwrap().unwrap();
        let tags_counted: Vec<&str> = counters.iter().map(|c| c.tag.as_str()).collect();
        assert_eq!(tags_counted, ["nc:a1", "nc:b2"]);

        assert!(nfnl::delete_table(&dir, ns, "t").unwrap(), "deleted");
        assert!(!nfnl::delete_table(&dir, ns, "t").unwrap(), "already gone");
        assert_eq!(nfnl::table_tags(&dir, ns, "t").unwrap(), None);

        let e = nfnl::delete_table(&dir, Some("kt-missing"), "t").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let mut bad = chains(&[]);
        bad[0].base.as_mut().unwrap().hook = "sideways".into();
        let e = nft::replace_table(&dir, ns, "t", &bad, &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    });
}
