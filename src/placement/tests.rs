//! One test per placement rule (place.rs); tests/placement_props.rs checks them over generated
//! clusters.

use super::*;
use crate::spec::DeployMode;

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        name: name.into(),
        id: format!("id-{name}"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        alive: true,
    }
}

fn nodes(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| node(n, &[])).collect()
}

fn replicated(service: &str, replicas: u32) -> Demand {
    Demand {
        service: service.into(),
        mode: DeployMode::Replicated,
        replicas,
        constraints: Vec::new(),
        max_per_node: None,
        joins: None,
    }
}

fn global(service: &str) -> Demand {
    Demand {
        mode: DeployMode::Global,
        ..replicated(service, 1)
    }
}

fn with(mut d: Demand, constraints: &[&str]) -> Demand {
    d.constraints = constraints.iter().map(|c| parse(c).unwrap()).collect();
    d
}

fn key(s: &str) -> ReplicaKey {
    s.parse().unwrap()
}

/// `[("web[1]", "h1"), ...]` as an assignment.
fn assignment(pairs: &[(&str, &str)]) -> Assignment {
    pairs.iter().map(|(k, n)| (key(k), n.to_string())).collect()
}

/// The assignment as `web[1]@h1` strings, in key order.
fn shown(p: &Placement) -> Vec<String> {
    p.assignment
        .iter()
        .map(|(k, n)| format!("{k}@{n}"))
        .collect()
}

#[test]
fn replicas_spread_evenly_in_index_and_name_order() {
    let p = place(
        &nodes(&["h2", "h1", "h3"]),
        &[replicated("web", 5)],
        &Assignment::new(),
    );
    assert_eq!(
        shown(&p),
        [
            "web[1]@h1",
            "web[2]@h2",
            "web[3]@h3",
            "web[4]@h1",
            "web[5]@h2"
        ]
    );
    assert!(p.pending.is_empty() && p.moved.is_empty());
}

#[test]
fn services_fill_the_least_loaded_nodes_first() {
    let p = place(
        &nodes(&["h1", "h2", "h3"]),
        &[replicated("a", 1), replicated("b", 1), replicated("c", 1)],
        &Assignment::new(),
    );
    assert_eq!(shown(&p), ["a[1]@h1", "b[1]@h2", "c[1]@h3"]);
}

#[test]
fn constraints_pick_the_nodes() {
    let ns = [
        node("h1", &[("zone", "eu")]),
        node("h2", &[("zone", "us")]),
        node("h3", &[("zone", "EU")]),
    ];
    let p = place(
        &ns,
        &[
            with(replicated("eu", 3), &["node.labels.zone==eu"]),
            with(replicated("not-h1", 2), &["node.hostname!=h1"]),
        ],
        &Assignment::new(),
    );
    assert_eq!(
        shown(&p),
        [
            "eu[1]@h1",
            "eu[2]@h3",
            "eu[3]@h1",
            "not-h1[1]@h2",
            "not-h1[2]@h3"
        ]
    );
}

#[test]
fn global_runs_once_on_every_live_matching_node() {
    let mut ns = vec![
        node("h1", &[("gpu", "yes")]),
        node("h2", &[]),
        node("h3", &[]),
    ];
    ns[2].alive = false;
    let p = place(
        &ns,
        &[
            global("mon"),
            with(global("gpu"), &["node.labels.gpu==yes"]),
        ],
        &Assignment::new(),
    );
    assert_eq!(shown(&p), ["gpu[1]@h1", "mon[1]@h1", "mon[2]@h2"]);
}

#[test]
fn global_keeps_its_replicas_and_drops_those_of_gone_nodes() {
    let mut ns = nodes(&["h1", "h2", "h3", "h4"]);
    ns[0].alive = false;
    let current = assignment(&[("mon[1]", "h1"), ("mon[2]", "h2"), ("mon[3]", "h2")]);
    let p = place(&ns, &[global("mon")], &current);
    // h1 died (its replica goes with it) and h2 keeps one (the lowest index); h3 and h4 get
    // the lowest free indexes, which are moves of those identities.
    assert_eq!(shown(&p), ["mon[1]@h3", "mon[2]@h2", "mon[3]@h4"]);
    assert_eq!(p.moved[&key("mon[1]")].from, "h1");
    assert_eq!(p.moved[&key("mon[3]")].from, "h2");
    assert!(p.removed(&current).is_empty());
    let fewer = place(&ns[..2], &[global("mon")], &current);
    assert_eq!(shown(&fewer), ["mon[2]@h2"]);
    assert_eq!(
        fewer.removed(&current),
        assignment(&[("mon[1]", "h1"), ("mon[3]", "h2")])
    );
}

#[test]
fn the_maximum_per_node_holds_and_the_rest_is_pending_with_swarms_reason() {
    let mut d = replicated("web", 5);
    d.max_per_node = Some(2);
    let p = place(&nodes(&["h1", "h2"]), &[d], &Assignment::new());
    assert_eq!(
        shown(&p),
        ["web[1]@h1", "web[2]@h2", "web[3]@h1", "web[4]@h2"]
    );
    assert_eq!(p.pending.keys().collect::<Vec<_>>(), [&key("web[5]")]);
    assert_eq!(
        p.pending[&key("web[5]")].to_string(),
        "no suitable node (max replicas per node limit exceed)"
    );
}

#[test]
fn a_pending_reason_counts_dead_and_excluded_nodes() {
    let mut ns = vec![
        node("h1", &[("zone", "us")]),
        node("h2", &[]),
        node("h3", &[]),
    ];
    ns[2].alive = false;
    let p = place(
        &ns,
        &[with(replicated("eu", 1), &["node.labels.zone==eu"])],
        &Assignment::new(),
    );
    assert!(p.assignment.is_empty());
    assert_eq!(
        p.pending[&key("eu[1]")].to_string(),
        "no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not \
         available for new tasks)"
    );
    let none = place(&[], &[replicated("web", 1)], &Assignment::new());
    assert_eq!(none.pending[&key("web[1]")].to_string(), "no suitable node");
}

#[test]
fn adding_a_node_moves_nothing() {
    let first = place(
        &nodes(&["h1", "h2"]),
        &[replicated("web", 4)],
        &Assignment::new(),
    );
    let second = place(
        &nodes(&["h1", "h2", "h0"]),
        &[replicated("web", 4)],
        &first.assignment,
    );
    assert_eq!(second, first);
    // The next replica goes to the empty node.
    let third = place(
        &nodes(&["h1", "h2", "h0"]),
        &[replicated("web", 5)],
        &first.assignment,
    );
    assert_eq!(third.assignment[&key("web[5]")], "h0");
}

#[test]
fn a_replica_whose_node_died_moves_and_keeps_its_identity() {
    let current = assignment(&[("web[1]", "h1"), ("web[2]", "h2"), ("web[3]", "h3")]);
    let mut ns = nodes(&["h1", "h2", "h3"]);
    ns[1].alive = false;
    let p = place(&ns, &[replicated("web", 3)], &current);
    assert_eq!(shown(&p), ["web[1]@h1", "web[2]@h1", "web[3]@h3"]);
    assert_eq!(
        p.moved[&key("web[2]")],
        Move {
            from: "h2".into(),
            to: "h1".into()
        }
    );
    assert!(p.removed(&current).is_empty());
    // A node missing from the list counts as dead.
    let gone = place(&nodes(&["h1", "h3"]), &[replicated("web", 3)], &current);
    assert_eq!(gone.assignment, p.assignment);
}

#[test]
fn a_replica_that_no_longer_matches_moves() {
    let current = assignment(&[("web[1]", "h1"), ("web[2]", "h2")]);
    let p = place(
        &nodes(&["h1", "h2", "h3"]),
        &[with(replicated("web", 2), &["node.hostname!=h2"])],
        &current,
    );
    assert_eq!(shown(&p), ["web[1]@h1", "web[2]@h3"]);
    assert_eq!(p.moved[&key("web[2]")].from, "h2");
}

#[test]
fn a_lowered_maximum_moves_the_highest_indexes() {
    let current = assignment(&[("web[1]", "h1"), ("web[2]", "h1"), ("web[3]", "h1")]);
    let mut d = replicated("web", 3);
    d.max_per_node = Some(1);
    let p = place(&nodes(&["h1", "h2", "h3"]), &[d], &current);
    assert_eq!(shown(&p), ["web[1]@h1", "web[2]@h2", "web[3]@h3"]);
    assert_eq!(p.moved.len(), 2);
}

#[test]
fn scale_down_drops_homeless_replicas_then_the_most_loaded_nodes_highest_index_first() {
    let current = assignment(&[
        ("web[1]", "h1"),
        ("web[2]", "h2"),
        ("web[3]", "h1"),
        ("web[4]", "h2"),
        ("web[5]", "h1"),
        ("web[6]", "gone"),
    ]);
    let ns = nodes(&["h1", "h2"]);
    let p = place(&ns, &[replicated("web", 4)], &current);
    // web[6] lost its node: dropped first; then h1 (3) gives up its highest, web[5].
    assert_eq!(
        shown(&p),
        ["web[1]@h1", "web[2]@h2", "web[3]@h1", "web[4]@h2"]
    );
    assert!(p.moved.is_empty());
    let p = place(&ns, &[replicated("web", 1)], &current);
    // Then h2 holds the highest index among equally loaded nodes (4), h1 its 3, h2 its 2.
    assert_eq!(shown(&p), ["web[1]@h1"]);
}

#[test]
fn new_replicas_take_the_lowest_free_indexes() {
    let current = assignment(&[("web[2]", "h1"), ("web[5]", "h2")]);
    let p = place(&nodes(&["h1", "h2"]), &[replicated("web", 4)], &current);
    assert_eq!(
        shown(&p),
        ["web[1]@h1", "web[2]@h1", "web[3]@h2", "web[5]@h2"]
    );
}

#[test]
fn a_removed_service_leaves_every_node() {
    let current = assignment(&[("old[1]", "h1"), ("web[1]", "h1")]);
    let p = place(&nodes(&["h1"]), &[replicated("web", 1)], &current);
    assert_eq!(shown(&p), ["web[1]@h1"]);
    assert_eq!(p.removed(&current), assignment(&[("old[1]", "h1")]));
}

fn joining(service: &str, replicas: u32, target: &str) -> Demand {
    Demand {
        joins: Some(key(target)),
        ..replicated(service, replicas)
    }
}

#[test]
fn a_service_in_another_replicas_namespace_runs_on_its_node() {
    let current = assignment(&[("web[1]", "h2")]);
    let p = place(
        &nodes(&["h1", "h2"]),
        &[
            joining("side", 2, "web[1]"),
            joining("tail", 1, "side[2]"),
            replicated("web", 2),
        ],
        &current,
    );
    assert_eq!(
        shown(&p),
        [
            "side[1]@h2",
            "side[2]@h2",
            "tail[1]@h2",
            "web[1]@h2",
            "web[2]@h1"
        ]
    );
    // Its target runs nowhere, or on a node its own constraints exclude: pending.
    let p = place(
        &nodes(&["h1"]),
        &[
            joining("side", 1, "web[1]"),
            with(joining("picky", 1, "web[1]"), &["node.hostname!=h1"]),
            replicated("web", 0),
        ],
        &Assignment::new(),
    );
    assert!(p.assignment.is_empty());
    assert_eq!(p.pending[&key("side[1]")].to_string(), "no suitable node");
    let p = place(
        &nodes(&["h1"]),
        &[
            with(joining("picky", 1, "web[1]"), &["node.hostname!=h1"]),
            replicated("web", 1),
        ],
        &Assignment::new(),
    );
    assert_eq!(
        p.pending[&key("picky[1]")].to_string(),
        "no suitable node (scheduling constraints not satisfied on 1 node)"
    );
    // A cycle (validate refuses it) places nothing and does not loop.
    let p = place(
        &nodes(&["h1"]),
        &[joining("a", 1, "b[1]"), joining("b", 1, "a[1]")],
        &Assignment::new(),
    );
    assert_eq!(p.pending.len(), 2);
}

#[test]
fn a_demand_joins_the_replica_its_network_mode_names() {
    use crate::spec::{NetworkMode, Service, Spanned};
    let at = crate::source::Span::default();
    let svc = |mode: Option<NetworkMode>, container: Option<&str>| Service {
        network_mode: mode.map(|m| Spanned::new(m, at)),
        container_name: container.map(|c| Spanned::new(c.to_string(), at)),
        ..Default::default()
    };
    let project = crate::spec::Project {
        name: "lab".into(),
        services: [
            ("web-api", svc(None, Some("front"))),
            ("a", svc(Some(NetworkMode::Service("web-api".into())), None)),
            ("b", svc(Some(NetworkMode::Container("front".into())), None)),
            (
                "c",
                svc(Some(NetworkMode::Container("lab-web-api-2".into())), None),
            ),
            (
                "d",
                svc(Some(NetworkMode::Container("elsewhere".into())), None),
            ),
            ("e", svc(Some(NetworkMode::Host), None)),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_string(), s))
        .collect(),
        ..Default::default()
    };
    let joins: Vec<Option<String>> = Demand::of_project(&project)
        .iter()
        .map(|d| d.joins.as_ref().map(ToString::to_string))
        .collect();
    let web = Some("web-api[1]".to_string());
    assert_eq!(
        joins,
        [
            web.clone(),
            web,
            Some("web-api[2]".to_string()),
            None,
            None,
            None
        ]
    );
}

/// A project of `web` (3 replicas, a constraint, max_replicas_per_node: 0) and `mon`
/// (global), as the loader makes it; render.rs's tests share it.
pub(super) fn deploy_project() -> crate::spec::Project {
    use crate::spec::{Deploy, Placement as Where, Service, Spanned};
    let at = crate::source::Span::default();
    let web = Service {
        deploy: Deploy {
            replicas: Some(Spanned::new(3, at)),
            placement: Where {
                constraints: vec![Spanned::new(parse("node.labels.zone==eu").unwrap(), at)],
                max_replicas_per_node: Some(Spanned::new(0, at)),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let mon = Service {
        deploy: Deploy {
            mode: Some(Spanned::new(DeployMode::Global, at)),
            ..Default::default()
        },
        ..Default::default()
    };
    let plain = Service {
        deploy: Deploy {
            mode: Some(Spanned::new(DeployMode::Replicated, at)),
            ..Default::default()
        },
        ..Default::default()
    };
    crate::spec::Project {
        services: [
            ("web".to_string(), web),
            ("mon".to_string(), mon),
            ("plain".to_string(), plain),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

#[test]
fn a_demand_read_from_a_project_carries_its_deploy_keys() {
    assert_eq!(
        Demand::of_project(&deploy_project()),
        [
            global("mon"),
            replicated("plain", 1),
            with(replicated("web", 3), &["node.labels.zone==eu"]),
        ]
    );
}

#[test]
fn a_replica_key_reads_and_writes_as_ipam_names_an_owner() {
    let k: ReplicaKey = "web-api[12]".parse().unwrap();
    assert_eq!(k, ReplicaKey::new("web-api", 12));
    assert_eq!(k.to_string(), "web-api[12]");
    for bad in ["web", "web[]", "[2]", "web[x]", "web[2"] {
        assert_eq!(
            bad.parse::<ReplicaKey>(),
            Err(BadReplicaKey(bad.into())),
            "{bad}"
        );
    }
    let a: Assignment = [(k, "h1".to_string())].into();
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, r#"{"web-api[12]":"h1"}"#);
    assert_eq!(serde_json::from_str::<Assignment>(&json).unwrap(), a);
}

#[test]
fn a_global_service_is_numbered_as_placed_and_the_others_keep_their_count() {
    let mut project = deploy_project();
    let placed = place(
        &nodes(&["h1", "h2", "h3"]),
        &Demand::of_project(&project),
        &assignment(&[("mon[2]", "h3")]),
    );
    number_global(&mut project, &placed.assignment);
    assert_eq!(project.services["mon"].indexes(), [1, 2, 3]);
    assert_eq!(project.services["plain"].placed, None);
    let fewer = place(
        &nodes(&["h1", "h3"]),
        &Demand::of_project(&project),
        &placed.assignment,
    );
    number_global(&mut project, &fewer.assignment);
    assert_eq!(
        project.services["mon"].indexes(),
        [1, 2],
        "h2's mon[3] went with it"
    );
}
