//! kernel::nftables against the real kernel, inside a [`Sandbox`]: a table written over
//! nfnetlink from the neutral chain description is read back with its rule tags, changed
//! chain by chain, and deleted, where a missing table is a typed answer (no error text is
//! read); a map is changed element by element. Needs root.

mod common;

use common::{require_root, Sandbox};
use netcompose::kernel::nftables::expr::{Data, Expr, Reg, Verdict};
use netcompose::kernel::nftables::read as nfnl;
use netcompose::kernel::nftables::{
    self as nft, BaseChain, Chain, Element, KeyType, MapData, Rule, SetSpec, Table,
};
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

fn table(input: &[&str]) -> Table {
    Table {
        chains: chains(input),
        sets: vec![],
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

        nft::replace_table(&dir, ns, "t", &table(&["nc:a1"])).unwrap();
        assert_eq!(
            nfnl::table_tags(&dir, ns, "t").unwrap(),
            Some(tags(&["nc:a1"]))
        );
        nft::update_table(
            &dir,
            ns,
            "t",
            &table(&["nc:a1"]),
            &table(&["nc:a1", "nc:b2"]),
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
        let mut bad = table(&[]);
        bad.chains[0].base.as_mut().unwrap().hook = "sideways".into();
        let e = nft::replace_table(&dir, ns, "t", &bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    });
}

/// A map of ranges (a VIP's slots) with the given backends' last octets.
fn slots(backends: &[u8]) -> SetSpec {
    let n = backends.len() as u32;
    SetSpec {
        name: "vip_web_front".into(),
        key: KeyType::Mark,
        data: Some(MapData::Value(KeyType::Ipv4Addr)),
        interval: true,
        elements: backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let i = i as u32;
                Element {
                    key: (i * 65536 / n).to_be_bytes().to_vec(),
                    last: Some(((i + 1) * 65536 / n - 1).to_be_bytes().to_vec()),
                    data: Some(Data::Value(vec![10, 0, 0, *b])),
                }
            })
            .collect(),
    }
}

#[test]
fn a_map_changes_element_by_element_and_reads_back() {
    require_root("a_map_changes_element_by_element_and_reads_back");
    let sb = Sandbox::new();
    sb.enter(|| {
        let dir = NetnsDir::system();
        let ns = Some("kt-map");
        netns::create("kt-map").unwrap();
        let with = |backends: &[u8]| Table {
            chains: chains(&["nc:a1"]),
            sets: vec![slots(backends)],
        };
        nft::replace_table(&dir, ns, "t", &with(&[2, 3])).unwrap();
        let live = nfnl::read_table(&dir, ns, "t").unwrap().unwrap();
        assert_eq!(
            live.sets,
            vec![("vip_web_front".into(), slots(&[2, 3]).elements)]
        );
        // A scale: the elements move, the chains stay.
        nft::update_table(&dir, ns, "t", &with(&[2, 3]), &with(&[2, 3, 4])).unwrap();
        let live = nfnl::read_table(&dir, ns, "t").unwrap().unwrap();
        assert_eq!(
            live.sets,
            vec![("vip_web_front".into(), slots(&[2, 3, 4]).elements)]
        );
        assert_eq!(live.chains, tags(&["nc:a1"]));
        nft::update_table(&dir, ns, "t", &with(&[2, 3, 4]), &with(&[4])).unwrap();
        let live = nfnl::read_table(&dir, ns, "t").unwrap().unwrap();
        assert_eq!(
            live.sets,
            vec![("vip_web_front".into(), slots(&[4]).elements)]
        );
    });
}

/// A commit learns its transaction's generation from the kernel (the echo of NFT_MSG_NEWGEN),
/// the one a GETGEN reads after it; a refused batch commits nothing and announces none.
#[test]
fn a_commit_reports_the_generation_of_its_own_transaction() {
    in_generation_namespace(
        "a_commit_reports_the_generation_of_its_own_transaction",
        |ns, fd| {
            let before = nfnl::generation_on(&ctx(), fd).unwrap();
            let first = nft::replace_table_on(fd, Some(ns), "t", &table(&["nc:a1"])).unwrap();
            assert_eq!(first, Some(before.wrapping_add(1)));
            assert_eq!(first, Some(nfnl::generation_on(&ctx(), fd).unwrap()));
            let old = table(&["nc:a1"]);
            let second =
                nft::update_table_on(fd, Some(ns), "t", (&old, &table(&["nc:b2"])), None).unwrap();
            assert_eq!(second, first.map(|g| g.wrapping_add(1)));

            let mut bad = table(&[]);
            bad.chains[0].base.as_mut().unwrap().hook = "sideways".into();
            assert!(nft::replace_table_on(fd, Some(ns), "t", &bad).is_err());
            assert_eq!(nfnl::generation_on(&ctx(), fd).unwrap(), second.unwrap());
            // Nothing of the refused batch is left to be taken for the next one's answers.
            let third = nft::replace_table_on(fd, Some(ns), "t", &old).unwrap();
            assert_eq!(third, second.map(|g| g.wrapping_add(1)));
        },
    );
}

/// Only a batch's last message asks for an ack: a message the kernel refuses before it still
/// has its error reported, the batch commits nothing, and nothing of it is left on the socket
/// to be taken for the next batch's answers.
#[test]
fn an_error_early_in_a_batch_is_reported_and_nothing_is_left_behind() {
    use nft::wire::{Batch, MsgType, NLM_F_CREATE};
    in_generation_namespace(
        "an_error_early_in_a_batch_is_reported_and_nothing_is_left_behind",
        |ns, fd| {
            let before = nfnl::generation_on(&ctx(), fd).unwrap();
            const NAME: u16 = 1; // NFTA_TABLE_NAME, NFTA_CHAIN_TABLE
            const CHAIN_NAME: u16 = 3; // NFTA_CHAIN_NAME
            let mut batch = Batch::new();
            batch.push(MsgType::NewChain, NLM_F_CREATE, |m| {
                m.str(NAME, "no-such-table").str(CHAIN_NAME, "c");
            });
            batch.push(MsgType::NewTable, NLM_F_CREATE, |m| {
                m.str(NAME, "fine");
            });
            let refused = nft::wire::commit(&ctx(), fd, batch).unwrap_err();
            assert_eq!(refused.kind(), ErrorKind::NotFound, "{refused}");
            assert_eq!(
                nfnl::generation_on(&ctx(), fd).unwrap(),
                before,
                "nothing committed"
            );
            let next = nft::replace_table_on(fd, Some(ns), "t", &table(&["nc:a1"])).unwrap();
            assert_eq!(next, Some(before.wrapping_add(1)));
        },
    );
}

/// An update sent checked against the generation its table was read at commits only at that
/// generation, and its own is the next one, without an echo; checked against a generation the
/// ruleset has moved on from, the kernel refuses it and it is sent again unchecked, its
/// generation announced. A batch that changes nothing is never sent checked: it would leave
/// the generation where it was.
#[test]
fn a_checked_update_commits_at_its_generation_or_is_sent_again() {
    in_generation_namespace(
        "a_checked_update_commits_at_its_generation_or_is_sent_again",
        |ns, fd| {
            let generation = || nfnl::generation_on(&ctx(), fd).unwrap();
            let live = || {
                nfnl::read_table_on(fd, Some(ns), "t")
                    .unwrap()
                    .unwrap()
                    .chains
            };
            let (a, b, c) = (table(&["nc:a1"]), table(&["nc:b2"]), table(&["nc:c3"]));
            nft::replace_table_on(fd, Some(ns), "t", &a).unwrap();
            let read_at = generation();
            let checked = nft::update_table_on(fd, Some(ns), "t", (&a, &b), Some(read_at));
            assert_eq!(checked.unwrap(), Some(nft::wire::next_generation(read_at)));
            assert_eq!(generation(), nft::wire::next_generation(read_at));
            assert_eq!(live(), tags(&["nc:b2"]));

            let stale = nft::update_table_on(fd, Some(ns), "t", (&b, &c), Some(read_at)).unwrap();
            assert_eq!(
                stale,
                Some(generation()),
                "sent again, its generation announced"
            );
            assert_eq!(stale, Some(nft::wire::next_generation(read_at + 1)));
            assert_eq!(live(), tags(&["nc:c3"]));

            let now = generation();
            let nothing = nft::update_table_on(fd, Some(ns), "t", (&c, &c), Some(now)).unwrap();
            assert_eq!(nothing, None, "no transaction, no generation");
            assert_eq!(generation(), now);
        },
    );
}

/// The namespace of the generation tests.
const GEN_NS: &str = "kt-gen";

/// `body` in a sandbox of its own, with [`GEN_NS`] made and an nfnetlink socket inside it
/// (`test` is the test's name, for [`require_root`]).
fn in_generation_namespace(test: &str, body: impl FnOnce(&str, &std::os::fd::OwnedFd) + Send) {
    require_root(test);
    let sb = Sandbox::new();
    sb.enter(|| {
        netns::create(GEN_NS).unwrap();
        let fd = netns::run_in(Some(GEN_NS), || nft::wire::open(&ctx()))
            .unwrap()
            .unwrap();
        body(GEN_NS, &fd)
    });
}

fn ctx() -> netcompose::kernel::Ctx {
    netcompose::kernel::Ctx::new("test", "generation", Some(GEN_NS))
}

/// What a commit gives back: the generation the kernel announced for it, if it did.
type CommitResult = Result<Option<u32>, netcompose::kernel::KernelError>;

/// What a write leaves known of its table: a replacement at the generation the kernel
/// announced for it; an update only when no other commit came between the table's read and
/// the update, from the announced generation or, when none was announced, the one read after.
#[test]
fn a_write_records_its_table_only_when_the_generation_proves_it() {
    use netcompose::kernel::generations::{self, Change, Digest, Generations, Write};
    use std::sync::Mutex;
    in_generation_namespace(
        "a_write_records_its_table_only_when_the_generation_proves_it",
        |ns, fd| {
            let gens = Mutex::new(Generations::default());
            let known = |t: &Table| {
                let cookie = nft::wire::netns_cookie(&ctx(), fd).unwrap();
                let generation = nfnl::generation_on(&ctx(), fd).unwrap();
                generations::known(&gens, Some(ns), cookie, generation, Digest::of_table(t))
            };
            let write =
                |how: Write, announced: bool, commit: &dyn Fn(Option<u32>) -> CommitResult| {
                    let cookie = nft::wire::netns_cookie(&ctx(), fd).unwrap();
                    generations::write(&gens, (fd, cookie), Some(ns), "t", how, |at| {
                        Ok(commit(at)?.filter(|_| announced))
                    })
                    .unwrap()
                };
            let replace = |t: &Table, announced: bool| {
                write(Write::Replace(Digest::of_table(t)), announced, &|_| {
                    nft::replace_table_on(fd, Some(ns), "t", t)
                })
            };
            let update = |old: &Table, new: &Table, announced: bool| {
                write(Write::Update(Change::of(old, new)), announced, &|at| {
                    nft::update_table_on(fd, Some(ns), "t", (old, new), at)
                })
            };
            let (a, b, c) = (table(&["nc:a1"]), table(&["nc:b2"]), table(&["nc:c3"]));

            replace(&a, true);
            assert!(known(&a), "a replacement, announced");
            update(&a, &b, false);
            assert!(known(&b), "an update, the generation read after it");
            // Someone else commits in the namespace: the update no longer knows its table.
            nfnl::delete_table(&NetnsDir::system(), Some(ns), "other").unwrap();
            nft::replace_table(&NetnsDir::system(), Some(ns), "other", &table(&[])).unwrap();
            update(&b, &c, true);
            assert!(!known(&c), "an update after another writer's commit");
            replace(&a, false);
            assert!(
                !known(&a),
                "a replacement whose generation was not announced"
            );
        },
    );
}
