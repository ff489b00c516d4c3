//! nft as an oracle for the in-process nftables writer: every table that the examples (and a
//! dual-stack project with policies, one of which drops a VIP in a client's dispatch) produce,
//! the host's and each replica's with its VIP chains spelled out, is written over nfnetlink
//! into a namespace of a [`Sandbox`]; then `nft -j list table` must show each chain with the
//! rules in the plan's order (known by their comment, the rule's tag), and `nft list table`
//! each rule as the plan prints it (`Display`), up to nft's normal form. Needs root and the
//! `nft` binary.

mod common;

use common::{require_root, Sandbox};
use netcompose::firewall::compile::{backend_slots, counter, peer_set, random_below};
use netcompose::firewall::rule::{kernel_table, rule_tag, Chain, Map, Set};
use netcompose::kernel::nftables;
use netcompose::kernel::nftables::expr::{Data, Expr, Reg, Verdict};
use netcompose::kernel::{netns, NetnsDir};
use netcompose::load::LoadOptions;
use netcompose::model::resource::Spec;
use netcompose::model::tables::replica::expand_all;
use std::collections::HashMap;
use std::path::PathBuf;

const DUAL_WITH_POLICIES: &str = "
name: oracle
services:
  web:
    deploy: {replicas: 2}
    networks: [front, back]
    ports: [\"8080:80\", \"8080:80/udp\", \"127.0.0.1:9000-9001:7000-7001\", \"[::1]:8443:443\"]
    x-policy:
      ingress:
        allow: [\"client:80/tcp\", \"10.9.0.0/16:22\", \"[fd00:9::/48]:443\"]
        deny: [\"0.0.0.0/0\", \"::/0\"]
  client:
    networks: [front]
    x-policy:
      egress:
        deny: [\"db\", \"10.66.0.0/16\"]
  db:
    deploy: {endpoint_mode: dnsrr}
    networks: [back]
  cache:
    networks: [front]
    x-policy:
      ingress:
        allow: [web]
        deny: [\"0.0.0.0/0\", \"::/0\"]
networks:
  front:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 172.30.5.0/24
        - subnet: \"fd00:c5::/64\"
  back:
    internal: true
    x-policy:
      egress:
        allow: [\"172.16.0.0/12\"]
        deny: [\"0.0.0.0/0\"]
";

/// A table of a Compose file: (a name for it, its chains, its maps, its named sets).
type Tables = Vec<(String, Vec<Chain>, Vec<Map>, Vec<Set>)>;

/// The firewall tables of a Compose file.
fn tables_of(file: PathBuf) -> Tables {
    let opts = LoadOptions {
        files: vec![file.clone()],
        environment: Some(Default::default()),
        ..Default::default()
    };
    let checked = netcompose::pipeline::checked_project(&opts)
        .unwrap_or_else(|_| panic!("{} loads", file.display()));
    let desired = netcompose::model::build(&checked.project, &Default::default())
        .unwrap_or_else(|_| panic!("{} builds", file.display()));
    expand_all(&desired.resources)
        .into_iter()
        .filter_map(|r| match r.spec {
            Spec::Firewall(f) => Some((
                r.address.to_string(),
                (*f.chains).clone(),
                (*f.maps).clone(),
                (*f.sets).clone(),
            )),
            _ => None,
        })
        .collect()
}

/// nft's normal form of a rule's text, applied to both sides: `meta l4proto tcp th dport`
/// reads `tcp dport`, a host address has no /32 or /128, a map's port is `} : 80`, set
/// elements are sorted, counters' figures are left out.
fn normal(text: &str) -> String {
    let mut t = text.to_string();
    for p in ["tcp", "udp", "sctp"] {
        t = t.replace(&format!("meta l4proto {p} th dport"), &format!("{p} dport"));
    }
    t = t
        .replace("/32", "")
        .replace("/128", "")
        .replace("}:", "} : ");
    let words: Vec<&str> = t.split_whitespace().collect();
    let mut t = words.join(" ");
    t = counter_figures(&t);
    // Sort the elements of each { ... }.
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..=open]);
        let mut items: Vec<&str> = rest[open + 1..close].split(',').map(str::trim).collect();
        items.sort();
        out.push(' ');
        out.push_str(&items.join(", "));
        out.push_str(" }");
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn counter_figures(t: &str) -> String {
    let words: Vec<&str> = t.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            i += 5;
        } else {
            i += 1;
        }
    }
    out.join(" ")
}

/// `nft list table`'s rules by tag: the text before ` comment "TAG"`.
fn listed_rules(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let at = l.rfind(" comment \"")?;
            let tag = l[at + 10..].trim_end_matches('"').to_string();
            Some((tag, l[..at].to_string()))
        })
        .collect()
}

/// `nft -j list table`'s chains with their rules' comments, in order.
fn listed_chains(json: &str) -> Vec<(String, Vec<String>)> {
    let doc: serde_json::Value = serde_json::from_str(json).expect("nft's JSON");
    let mut chains: Vec<(String, Vec<String>)> = Vec::new();
    for obj in doc["nftables"].as_array().expect("a list") {
        if let Some(c) = obj.get("chain") {
            chains.push((c["name"].as_str().unwrap_or_default().to_string(), vec![]));
        }
        if let Some(r) = obj.get("rule") {
            let chain = r["chain"].as_str().unwrap_or_default();
            let comment = r["comment"].as_str().unwrap_or("?").to_string();
            if let Some((_, rules)) = chains.iter_mut().find(|(n, _)| n == chain) {
                rules.push(comment);
            }
        }
    }
    chains
}

#[test]
fn nft_lists_every_rule_shape_as_the_plan_prints_it() {
    require_root("nft_lists_every_rule_shape_as_the_plan_prints_it");
    let dir = tempfile::tempdir().unwrap();
    let dual = dir.path().join("compose.yaml");
    std::fs::write(&dual, DUAL_WITH_POLICIES).unwrap();
    let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
    let mut files = vec![dual];
    for name in [
        "quickstart",
        "load-balancing",
        "policy",
        "internal",
        "dns",
        "bridge",
    ] {
        files.push(examples.join(name).join("compose.yaml"));
    }
    let tables: Tables = files.into_iter().flat_map(tables_of).collect();
    assert!(tables.len() > 10, "{} tables", tables.len());

    let sb = Sandbox::new();
    let ns = "oracle";
    sb.enter(|| netns::create(ns).unwrap());
    let mut checked = 0;
    let mut drops_checked = 0;
    let mut maps_checked = 0;
    let mut sets_checked = 0;
    for (i, (address, chains, maps, sets)) in tables.iter().enumerate() {
        let table = format!("t{i}");
        let kernel = kernel_table(chains, maps, sets).unwrap();
        let live = sb.enter(|| {
            let dir = NetnsDir::system();
            nftables::replace_table(&dir, Some(ns), &table, &kernel)
                .unwrap_or_else(|e| panic!("{address}: {e}"));
            nftables::read::read_table(&dir, Some(ns), &table)
                .unwrap()
                .unwrap()
        });
        for m in maps {
            let got = live.sets.iter().find(|(n, _)| *n == m.name);
            assert_eq!(
                got.map(|(_, e)| e),
                Some(&backend_slots(m).elements),
                "{address}: map {} reads back",
                m.name
            );
            maps_checked += 1;
        }
        for s in sets {
            let got = live.sets.iter().find(|(n, _)| *n == s.name);
            assert_eq!(
                got.map(|(_, e)| e),
                Some(&peer_set(s).elements),
                "{address}: set {} reads back",
                s.name
            );
        }
        let list = |json: bool| {
            let mut args = vec!["ip", "netns", "exec", ns, "nft"];
            if json {
                args.push("-j");
            }
            args.extend(["list", "table", "inet", &table]);
            sb.run_ok(&args)
        };
        let want: Vec<(String, Vec<String>)> = chains
            .iter()
            .map(|c| (c.name.clone(), c.rules.iter().map(rule_tag).collect()))
            .collect();
        let mut got = listed_chains(&list(true));
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{address}: chains and rule order");
        let text = list(false);
        for s in sets {
            assert_eq!(
                listed_set(&text, &s.name),
                Some(normal(&set_text(&s.elements))),
                "{address}: nft lists set {} as the plan's addresses\n{text}",
                s.name
            );
            sets_checked += 1;
        }
        let listed = listed_rules(&text);
        for c in chains {
            for r in &c.rules {
                let shown = listed
                    .get(&rule_tag(r))
                    .unwrap_or_else(|| panic!("{address}: {r} missing from\n{text}"));
                assert_eq!(
                    normal(shown),
                    normal(&r.to_string()),
                    "{address} chain {}: nft shows the rule otherwise",
                    c.name
                );
                checked += 1;
                drops_checked += usize::from(r.to_string().contains(" : drop"));
            }
        }
    }
    assert!(checked > 50, "{checked} rules checked");
    assert!(
        drops_checked >= 2,
        "{drops_checked} dispatches with a refused VIP checked"
    );
    assert!(maps_checked > 5, "{maps_checked} maps checked");
    assert!(sets_checked > 3, "{sets_checked} policy sets checked");
}

/// The plan's elements of a set as nft writes them: `{ a, b }`.
fn set_text(elements: &[ipnetwork::IpNetwork]) -> String {
    let items: Vec<String> = elements.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The elements of set `name` in `nft list table`'s text, in normal form: nft writes
/// `set NAME {`, its type and flags, then `elements = { a, b,` over as many lines as it takes.
fn listed_set(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("set {name} {{"))?;
    let body = &text[start..];
    let open = body.find("elements = {")? + "elements = ".len();
    let close = open + body[open..].find('}')?;
    Some(normal(&body[open..=close]))
}

/// The statements other rules are made of: a loss rule's `numgen random mod 100 < 5` and a
/// counter, read by nft as written and the counter read back over nfnetlink.
#[test]
fn nft_lists_random_loss_and_counters() {
    require_root("nft_lists_random_loss_and_counters");
    let sb = Sandbox::new();
    let ns = "oracle-loss";
    let mut expr = random_below(100, 5);
    expr.push(counter());
    expr.push(Expr::Immediate {
        dreg: Reg::Verdict,
        data: Data::Verdict(Verdict::Drop),
    });
    let table = nftables::Table {
        chains: vec![nftables::Chain {
            name: "egress".into(),
            base: Some(nftables::BaseChain {
                chain_type: "filter".into(),
                hook: "output".into(),
                priority: 0,
            }),
            rules: vec![nftables::Rule {
                expr,
                tag: "nc:loss".into(),
            }],
        }],
        sets: vec![],
    };
    let counters = sb.enter(|| {
        let dir = NetnsDir::system();
        netns::create(ns).unwrap();
        nftables::replace_table(&dir, Some(ns), "t", &table).unwrap();
        nftables::read::rule_counters(&dir, Some(ns), "t")
            .unwrap()
            .unwrap()
    });
    assert_eq!(counters.len(), 1);
    assert_eq!(
        (counters[0].tag.as_str(), counters[0].packets),
        ("nc:loss", 0)
    );
    let text = sb.run_ok(&[
        "ip", "netns", "exec", ns, "nft", "list", "table", "inet", "t",
    ]);
    let rules = listed_rules(&text);
    assert_eq!(
        rules.get("nc:loss").map(|r| normal(r)).as_deref(),
        Some("numgen random mod 100 < 5 counter drop"),
        "{text}"
    );
}

#[test]
fn normal_form() {
    assert_eq!(
        normal("meta l4proto tcp th dport 80 ip saddr { 10.0.0.3/32, 10.0.0.2/32 } accept"),
        "tcp dport 80 ip saddr { 10.0.0.2, 10.0.0.3 } accept"
    );
    assert_eq!(normal("counter packets 3 bytes 9 drop"), "counter drop");
    assert_eq!(
        normal("map { 0 : 10.0.0.2 }:80"),
        "map { 0 : 10.0.0.2 } : 80"
    );
}
