//! Property tests of placement over generated clusters: no node over a service's maximum, only
//! live matching nodes used, an even spread when placing from scratch, global = one per
//! matching node, stickiness (an extra node changes nothing; a second run changes nothing),
//! identity kept when a node dies, and the same answer whatever the order of the inputs.

use netcompose::placement::{place, Assignment, Demand, Node, Placement, ReplicaKey};
use netcompose::spec::DeployMode;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const CONSTRAINTS: &[&str] = &[
    "node.labels.zone==a",
    "node.labels.zone!=a",
    "node.hostname!=n0",
    "node.labels.ssd==true",
];

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    proptest::collection::vec((0..3u8, any::<bool>(), 0..5u8), 0..6).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (zone, ssd, alive))| Node {
                name: format!("n{i}"),
                id: format!("id{i}"),
                labels: [
                    (
                        "zone".to_string(),
                        ["a", "b", "c"][zone as usize].to_string(),
                    ),
                    ("ssd".to_string(), ssd.to_string()),
                ]
                .into(),
                // Mostly alive: a dead node now and then.
                alive: alive > 0,
            })
            .collect()
    })
}

fn demands() -> impl Strategy<Value = Vec<Demand>> {
    proptest::collection::vec(
        (
            0..5u8,
            0..9u32,
            proptest::option::of(0..CONSTRAINTS.len()),
            proptest::option::of(1..4u32),
        ),
        1..4,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (mode, replicas, constraint, max))| Demand {
                service: format!("s{i}"),
                mode: if mode == 0 {
                    DeployMode::Global
                } else {
                    DeployMode::Replicated
                },
                replicas,
                constraints: constraint
                    .map(|c| netcompose::placement::parse(CONSTRAINTS[c]).unwrap())
                    .into_iter()
                    .collect(),
                max_per_node: max,
                joins: None,
            })
            .collect()
    })
}

fn eligible<'a>(nodes: &'a [Node], d: &Demand) -> BTreeSet<&'a str> {
    nodes
        .iter()
        .filter(|n| n.alive && netcompose::placement::matches_all(&d.constraints, n))
        .map(|n| n.name.as_str())
        .collect()
}

/// How many replicas of `service` each node runs (nodes without any absent).
fn counts<'a>(p: &'a Placement, service: &str) -> BTreeMap<&'a str, usize> {
    let mut out = BTreeMap::new();
    for (k, n) in &p.assignment {
        if k.service == service {
            *out.entry(n.as_str()).or_default() += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn from_scratch_the_rules_hold(nodes in nodes(), demands in demands()) {
        let p = place(&nodes, &demands, &Assignment::new());
        for d in &demands {
            let ok = eligible(&nodes, d);
            let counts = counts(&p, &d.service);
            for (node, n) in &counts {
                prop_assert!(ok.contains(node), "{} on {node}, which may not run it", d.service);
                if let Some(max) = d.max_per_node {
                    prop_assert!(*n <= max as usize, "{} runs {n} on {node}", d.service);
                }
            }
            let pending = p.pending.keys().filter(|k| k.service == d.service).count();
            match d.mode {
                DeployMode::Global => {
                    prop_assert_eq!(counts.len(), ok.len());
                    prop_assert!(counts.values().all(|n| *n == 1));
                    prop_assert_eq!(pending, 0);
                }
                DeployMode::Replicated => {
                    let per_node: Vec<usize> =
                        ok.iter().map(|n| counts.get(n).copied().unwrap_or(0)).collect();
                    let (lo, hi) = (per_node.iter().min(), per_node.iter().max());
                    if let (Some(lo), Some(hi)) = (lo, hi) {
                        prop_assert!(hi - lo <= 1, "{}: uneven {per_node:?}", d.service);
                    }
                    let placed: usize = counts.values().sum();
                    let room = match d.max_per_node {
                        _ if ok.is_empty() => 0,
                        Some(m) => m as usize * ok.len(),
                        None => usize::MAX,
                    };
                    prop_assert_eq!(placed, (d.replicas as usize).min(room));
                    prop_assert_eq!(placed + pending, d.replicas as usize);
                    // From scratch, identities are 1..=N.
                    let keys: BTreeSet<u32> = p
                        .assignment
                        .keys()
                        .chain(p.pending.keys())
                        .filter(|k| k.service == d.service)
                        .map(|k| k.index)
                        .collect();
                    prop_assert_eq!(keys, (1..=d.replicas).collect::<BTreeSet<u32>>());
                }
            }
        }
        prop_assert!(p.moved.is_empty());
    }

    #[test]
    fn a_second_run_and_an_extra_node_change_nothing(
        nodes in nodes(),
        demands in demands(),
        labels in (0..3u8, any::<bool>()),
    ) {
        let first = place(&nodes, &demands, &Assignment::new());
        let again = place(&nodes, &demands, &first.assignment);
        prop_assert_eq!(&again, &first);

        let mut more = nodes.clone();
        more.push(Node {
            name: "extra".into(),
            id: "extra".into(),
            labels: [
                ("zone".to_string(), ["a", "b", "c"][labels.0 as usize].to_string()),
                ("ssd".to_string(), labels.1.to_string()),
            ]
            .into(),
            alive: true,
        });
        let second = place(&more, &demands, &first.assignment);
        // What ran stays where it ran; only a global service or a pending replica may use
        // the new node.
        for (key, node) in &first.assignment {
            prop_assert_eq!(second.assignment.get(key), Some(node), "{} moved", key);
        }
        prop_assert!(second.moved.is_empty());
        for (key, node) in &second.assignment {
            if !first.assignment.contains_key(key) {
                prop_assert_eq!(node.as_str(), "extra");
            }
        }
    }

    #[test]
    fn a_dead_nodes_replicas_move_under_their_own_keys(
        nodes in nodes(),
        demands in demands(),
        victim in any::<proptest::sample::Index>(),
    ) {
        let first = place(&nodes, &demands, &Assignment::new());
        let alive: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].alive).collect();
        prop_assume!(!alive.is_empty());
        let dead = alive[victim.index(alive.len())];
        let mut after = nodes.clone();
        after[dead].alive = false;
        let dead = after[dead].name.clone();
        let second = place(&after, &demands, &first.assignment);
        for (key, node) in &first.assignment {
            let global = demands
                .iter()
                .any(|d| d.service == key.service && d.mode == DeployMode::Global);
            if *node != dead {
                prop_assert_eq!(second.assignment.get(key), Some(node), "{} moved", key);
            } else if !global {
                // Same key elsewhere, or pending under the same key.
                match second.assignment.get(key) {
                    Some(to) => {
                        prop_assert_ne!(to, &dead);
                        prop_assert_eq!(&second.moved[key].from, &dead);
                    }
                    None => prop_assert!(second.pending.contains_key(key), "{} lost", key),
                }
            }
        }
        prop_assert!(second.assignment.values().all(|n| *n != dead));
    }

    #[test]
    fn the_order_of_the_inputs_does_not_matter(
        nodes in nodes(),
        demands in demands(),
        seed in any::<u64>(),
    ) {
        let first = place(&nodes, &demands, &Assignment::new());
        let current: Assignment = first
            .assignment
            .iter()
            .filter(|(k, _)| k.index % 2 == 1)
            .map(|(k, n)| (k.clone(), n.clone()))
            .chain([(ReplicaKey::new("s0", 7), "n1".to_string())])
            .collect();
        let expected = place(&nodes, &demands, &current);
        let mut nodes = nodes;
        let mut demands = demands;
        let rng = fastrand::Rng::with_seed(seed);
        rng.clone().shuffle(&mut nodes);
        rng.clone().shuffle(&mut demands);
        prop_assert_eq!(place(&nodes, &demands, &current), expected);
    }
}
