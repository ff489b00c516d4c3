//! The applier and the observer against the in-memory kernel: a desired state built by the real
//! pure pipeline from a Compose text is applied, observed back, drifted and repaired, and
//! taken down, without root.

use crate::apply::{apply, apply_when_ready, ApplyError, Step};
use crate::kernel::fake::Fake;
use crate::kernel::machine::{Namespaces, NetnsInit};
use crate::kernel::netlink::{LinkKind, LOOPBACK_INDEX};
use crate::kernel::Kernel;
use crate::load::LoadOptions;
use crate::model::resource::Resource;
use crate::model::{self, Context, ResourceId, Spec};
use crate::observe::live::observe;
use crate::pipeline::checked_project;
use crate::plan::{self, Action};
use std::collections::HashMap;

const PROJECT: &str = "t";

const COMPOSE: &str = "
name: t
services:
  web:
    deploy: {replicas: 2}
    networks:
      front: {}
      back: {}
    ports: ['8080:80']
    sysctls: {net.ipv4.tcp_syncookies: '1'}
    x-policy:
      ingress: {allow: [10.40.0.0/16], deny: [0.0.0.0/0]}
  db:
    networks: [back]
networks:
  front:
    enable_ipv6: true
    ipam: {config: [{subnet: 10.40.1.0/24}, {subnet: 'fd00:40::/64'}]}
  back:
    internal: true
";

fn desired() -> Vec<Resource> {
    desired_of(COMPOSE)
}

fn desired_of(text: &str) -> Vec<Resource> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, text).unwrap();
    let opts = LoadOptions {
        files: vec![file],
        environment: Some(HashMap::new()),
        ..Default::default()
    };
    let checked = checked_project(&opts).unwrap_or_else(|e| panic!("{e:?}"));
    model::build(&checked.project, &Context::default())
        .unwrap()
        .resources
}

fn quiet(_: Step<'_>) {}

/// Observe (with `state`, what the last run applied, as `up` and `down` do), diff against
/// `desired`, apply; returns what the diff held.
async fn converge(k: &Kernel<Fake>, state: &[Resource], desired: &[Resource]) -> Vec<plan::Change> {
    let observed = observe(k, state, desired).await.unwrap();
    let changes = plan::diff(&observed, desired);
    if let Err(errors) = apply(k, &observed, desired, &changes, &quiet).await {
        panic!("apply failed: {errors:?}");
    }
    changes
}

async fn assert_converged(k: &Kernel<Fake>, desired: &[Resource]) {
    let observed = observe(k, desired, desired).await.unwrap();
    let changes = plan::diff(&observed, desired);
    assert!(changes.is_empty(), "left over: {changes:#?}");
}

fn find(desired: &[Resource], pred: impl Fn(&Spec) -> bool) -> &Resource {
    desired.iter().find(|r| pred(&r.spec)).unwrap()
}

fn changed(changes: &[plan::Change]) -> Vec<&ResourceId> {
    changes.iter().map(|c| &c.address).collect()
}

#[tokio::test]
async fn applied_then_observed_is_no_change() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    let first = converge(&k, &[], &desired).await;
    assert!(first.iter().all(|c| c.actions == vec![Action::Create]));
    assert_converged(&k, &desired).await;
    // The namespaces, links, tables and files are really there.
    k.with(|w| {
        assert_eq!(w.namespaces.len(), 3, "{:?}", w.namespaces.keys());
        assert_eq!(w.files.len(), 3);
        assert!(w.host.tables.contains_key("netcompose-t"));
    });
}

#[tokio::test]
async fn drift_is_observed_and_repaired() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    converge(&k, &[], &desired).await;
    let link = find(
        &desired,
        |s| matches!(s, Spec::Link(l) if l.namespace == "t-web-1"),
    );
    let Spec::Link(l) = &link.spec else { panic!() };
    let bridge = find(
        &desired,
        |s| matches!(s, Spec::Bridge(b) if !b.gateways.is_empty()),
    );
    let Spec::Bridge(b) = &bridge.spec else {
        panic!()
    };
    let host_fw = find(
        &desired,
        |s| matches!(s, Spec::Firewall(f) if f.namespace.is_none()),
    );
    let ns = find(
        &desired,
        |s| matches!(s, Spec::Namespace(n) if n.name == "t-web-2"),
    );
    k.with(|w| {
        let index = w.link_named(Some("t-web-1"), &l.ifname).unwrap().link.index;
        w.remove_link(Some("t-web-1"), index);
        w.link_named(None, &b.name).unwrap().addresses.clear();
        let chains = w.host.tables.get_mut("netcompose-t").unwrap();
        let chain = chains
            .chains
            .iter_mut()
            .find(|(_, tags)| !tags.is_empty())
            .unwrap();
        chain.1.remove(0);
        let web2 = w.namespaces.get_mut("t-web-2").unwrap();
        web2.sysctls
            .insert("net.ipv4.tcp_syncookies".into(), "0".into());
    });
    let observed = observe(&k, &desired, &desired).await.unwrap();
    let changes = plan::diff(&observed, &desired);
    let addresses = changed(&changes);
    for drifted in [link, bridge, host_fw, ns] {
        assert!(
            addresses.contains(&&drifted.address),
            "{} not seen in {addresses:?}",
            drifted.address
        );
    }
    converge(&k, &desired, &desired).await;
    assert_converged(&k, &desired).await;
}

#[tokio::test]
async fn a_replica_file_edited_by_hand_is_drift_and_other_files_are_left_alone() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    converge(&k, &[], &desired).await;
    k.with(|w| {
        let dir = w.files.get_mut("t-web-1").unwrap();
        dir.insert("hosts".into(), "10.9.9.9 web\n".into());
        dir.insert("nsswitch.conf".into(), "hosts: files\n".into());
    });
    let observed = observe(&k, &desired, &desired).await.unwrap();
    let changes = plan::diff(&observed, &desired);
    let files = find(
        &desired,
        |s| matches!(s, Spec::Files(f) if f.namespace == "t-web-1"),
    );
    assert_eq!(changed(&changes), [&files.address]);
    converge(&k, &desired, &desired).await;
    assert_converged(&k, &desired).await;
    k.with(|w| {
        let dir = &w.files["t-web-1"];
        assert_ne!(dir["hosts"], "10.9.9.9 web\n");
        assert_eq!(dir["nsswitch.conf"], "hosts: files\n", "not netcompose's");
    });
}

#[tokio::test]
async fn a_link_drill_is_drift_that_up_repairs() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    converge(&k, &[], &desired).await;
    let link = find(
        &desired,
        |s| matches!(s, Spec::Link(l) if l.namespace == "t-web-1"),
    );
    let Spec::Link(l) = &link.spec else { panic!() };
    let host = l.host_ifname.clone().unwrap();
    k.with(|w| w.link_named(None, &host).unwrap().link.up = false);
    let observed = observe(&k, &desired, &desired).await.unwrap();
    assert!(observed
        .iter()
        .any(|r| r.address == link.address && matches!(&r.spec, Spec::Link(o) if o.down)));
    assert_eq!(changed(&plan::diff(&observed, &desired)), [&link.address]);
    converge(&k, &desired, &desired).await;
    assert!(k.with(|w| w.link_named(None, &host).unwrap().link.up));
    assert_converged(&k, &desired).await;
}

#[tokio::test]
async fn a_replaced_bridge_gets_its_ports_back() {
    let before = desired();
    let after = desired_of(&COMPOSE.replace(
        "  front:\n",
        "  front:\n    driver_opts: {com.docker.network.bridge.name: ncfront0}\n",
    ));
    let k = Kernel::new(PROJECT, Fake::new());
    converge(&k, &[], &before).await;
    let changes = converge(&k, &before, &after).await;
    assert!(
        changes.iter().any(|c| c.actions.contains(&Action::Delete)
            && c.actions.contains(&Action::Create)
            && c.kind == "bridge"),
        "{changes:#?}"
    );
    assert_converged(&k, &after).await;
    k.with(|w| {
        let bridge = w.link_named(None, "ncfront0").unwrap().link.index;
        let ports = w
            .host
            .links
            .values()
            .filter(|l| l.link.master == Some(bridge))
            .count();
        assert_eq!(ports, 2, "both web replicas are on the new bridge");
    });
}

/// What the fake logs when `r` is deleted on its own (not with its namespace).
fn delete_entry(r: &Resource) -> Option<String> {
    match &r.spec {
        Spec::Namespace(n) => Some(format!("delete netns {}", n.name)),
        Spec::Bridge(b) => Some(format!("delete link {}", b.name)),
        Spec::Firewall(f) if f.namespace.is_none() => Some(format!("delete table {}", f.table)),
        _ => None,
    }
}

#[tokio::test]
async fn down_deletes_everything_in_reverse_dependency_order() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    converge(&k, &[], &desired).await;
    k.take_log();
    let changes = converge(&k, &desired, &[]).await;
    assert!(changes.iter().all(|c| c.actions == vec![Action::Delete]));
    let log = k.take_log();
    let at = |entry: &str| log.iter().position(|l| l == entry);
    let by_address: HashMap<&ResourceId, &Resource> =
        desired.iter().map(|r| (&r.address, r)).collect();
    let mut pairs = 0;
    for r in &desired {
        let Some(mine) = delete_entry(r) else {
            continue;
        };
        let mine = at(&mine).unwrap_or_else(|| panic!("{mine} not in {log:#?}"));
        for dep in r.depends_on.iter().filter_map(|d| by_address.get(d)) {
            if let Some(theirs) = delete_entry(dep).and_then(|e| at(&e)) {
                assert!(
                    mine < theirs,
                    "{} deleted after {}: {log:#?}",
                    r.address,
                    dep.address
                );
                pairs += 1;
            }
        }
    }
    assert!(pairs > 0, "no ordered pair checked: {log:#?}");
    k.with(|w| {
        assert!(w.namespaces.is_empty() && w.files.is_empty() && w.host.tables.is_empty());
        let left: Vec<&str> = w
            .host
            .links
            .values()
            .map(|l| l.link.name.as_str())
            .collect();
        assert_eq!(left, ["lo"], "host links left");
    });
}

#[tokio::test]
async fn a_foreign_object_of_the_same_name_is_refused() {
    let desired = desired();
    let bridge = find(&desired, |s| matches!(s, Spec::Bridge(_)));
    let Spec::Bridge(b) = &bridge.spec else {
        panic!()
    };
    let k = Kernel::new(PROJECT, Fake::new());
    k.with(|w| w.add_foreign_link(None, &b.name, LinkKind::Bridge));
    let init = NetnsInit {
        lo_alias: "somebody else".into(),
        sysctls: vec![],
    };
    k.create_netns("t-db-1", &init).await.unwrap();
    let observed = observe(&k, &[], &desired).await.unwrap();
    let changes = plan::diff(&observed, &desired);
    let errors = apply(&k, &observed, &desired, &changes, &quiet)
        .await
        .unwrap_err();
    let refused = not_ours(&errors);
    assert!(
        refused.contains(&bridge.address.to_string().as_str())
            && refused.contains(&"service.db[1]"),
        "{errors:?}"
    );
    // Neither was touched.
    k.with(|w| {
        assert!(w.link_named(None, &b.name).unwrap().link.alias.is_none());
        assert!(w.namespaces.contains_key("t-db-1"));
    });
}

/// An apply whose caller's work before the kernel changes (the state's save) failed does
/// nothing, and reports no operation.
#[tokio::test]
async fn an_apply_that_is_not_let_start_changes_nothing() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    let changes = plan::diff(&[], &desired);
    let steps = std::sync::Mutex::new(0);
    let count = |_: Step<'_>| *steps.lock().unwrap() += 1;
    let outcome = apply_when_ready(&k, &[], &desired, &changes, &count, async { false })
        .await
        .unwrap();
    assert_eq!(
        (outcome.created, outcome.updated, outcome.deleted),
        (0, 0, 0)
    );
    assert_eq!(*steps.lock().unwrap(), 0, "no step reported");
    k.with(|w| assert!(w.namespaces.is_empty(), "no namespace made"));
    let outcome = apply_when_ready(&k, &[], &desired, &changes, &count, async { true })
        .await
        .unwrap();
    assert!(outcome.created > 0);
}

/// `down` checks that each namespace is ours just before deleting it: one that another
/// program took over after observe is refused and left alone, and the others go.
#[tokio::test]
async fn down_refuses_a_namespace_that_stopped_being_ours() {
    let desired = desired();
    let k = Kernel::new(PROJECT, Fake::new());
    converge(&k, &[], &desired).await;
    let observed = observe(&k, &desired, &[]).await.unwrap();
    k.with(|w| {
        let ns = w.namespaces.get_mut("t-db-1").unwrap();
        let lo = ns.links.get_mut(&LOOPBACK_INDEX).unwrap();
        lo.link.alias = Some("somebody else".into());
    });
    let changes = plan::diff(&observed, &[]);
    let errors = apply(&k, &observed, &[], &changes, &quiet)
        .await
        .unwrap_err();
    let refused = not_ours(&errors);
    assert_eq!(refused, ["service.db[1]"], "{errors:?}");
    k.with(|w| {
        let left: Vec<&String> = w.namespaces.keys().collect();
        assert_eq!(left, ["t-db-1"]);
    });
}

/// Every operation a run plans is reported as started and then as done, once: up, a change
/// that replaces a bridge (its links are rebuilt), and down (where the kernel takes a
/// namespace's links along), so that a front end counts done/total and names what is in
/// flight from the real steps.
#[tokio::test]
async fn every_planned_operation_starts_and_ends_once() {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Seen {
        planned: Vec<usize>,
        started: Vec<String>,
        done: Vec<String>,
    }
    let desired = desired();
    let renumbered = desired_of(&COMPOSE.replace("10.40.1.0/24", "10.40.9.0/24"));
    let k = Kernel::new(PROJECT, Fake::new());
    for (state, target) in [
        (&[][..], &desired[..]),
        (&desired[..], &renumbered[..]),
        (&renumbered[..], &[][..]),
    ] {
        let seen = Mutex::new(Seen::default());
        let record = |step: Step<'_>| {
            let mut s = seen.lock().unwrap();
            match step {
                Step::Planned(n) => s.planned.push(n),
                Step::Started { address, .. } => s.started.push(address.to_string()),
                Step::Done { address, .. } => {
                    assert!(s.started.iter().any(|a| a == address), "{address}");
                    s.done.push(address.to_string());
                }
            }
        };
        let observed = observe(&k, state, target).await.unwrap();
        let changes = plan::diff(&observed, target);
        apply(&k, &observed, target, &changes, &record)
            .await
            .unwrap();
        let mut s = seen.into_inner().unwrap();
        assert_eq!(s.planned, [s.started.len()]);
        s.started.sort();
        s.done.sort();
        assert_eq!(s.started, s.done);
        assert!(
            s.started.windows(2).all(|w| w[0] != w[1]),
            "{:?}",
            s.started
        );
    }
    assert_converged(&k, &[]).await;
}

/// The addresses of the resources that apply refused as not ours.
fn not_ours(errors: &[ApplyError]) -> Vec<&str> {
    errors
        .iter()
        .filter_map(|e| match e {
            ApplyError::NotOurs { address, .. } => Some(address.as_str()),
            _ => None,
        })
        .collect()
}

/// The replica tables of `service` in `resources`.
fn replica_tables<'a>(
    resources: &'a [Resource],
    service: &str,
) -> Vec<&'a crate::model::resource::Firewall> {
    resources
        .iter()
        .filter_map(|r| match (&r.address, &r.spec) {
            (ResourceId::ReplicaFirewall(id), Spec::Firewall(f)) if id.service == service => {
                Some(&**f)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_replicas_of_a_service_hold_one_copy_of_their_chains_and_sets_and_a_state_one_too() {
    let desired = desired();
    let tables = replica_tables(&desired, "web");
    let [one, two] = tables[..] else {
        panic!("two replica tables: {tables:?}")
    };
    assert_ne!(one.namespace, two.namespace);
    assert!(std::ptr::eq(&*one.chains, &*two.chains));
    assert!(std::ptr::eq(&*one.sets, &*two.sets));
    assert!(!one.chains.is_empty());

    let state = crate::state::State {
        format_version: crate::state::FORMAT_VERSION,
        project: PROJECT.into(),
        resources: desired.clone(),
        ..Default::default()
    };
    let text = crate::state::encode(&state).unwrap();
    let whole = serde_json::to_vec(&state).unwrap();
    let chains = serde_json::to_string(&*one.chains).unwrap();
    let count = |hay: &[u8]| String::from_utf8_lossy(hay).matches(&chains).count();
    assert_eq!((count(&text), count(&whole)), (1, 2));
    let back = crate::state::decode(&text).unwrap();
    assert_eq!(back, state);
    let tables = replica_tables(&back.resources, "web");
    assert!(std::ptr::eq(&*tables[0].chains, &*tables[1].chains));
    // A state written before parts were shared spells every one out, and reads the same.
    assert_eq!(crate::state::decode(&whole).unwrap(), state);
}

#[test]
fn the_replicas_of_a_service_hold_one_list_of_the_vips_they_drop_and_a_state_one_too() {
    let desired = desired_of(
        "
name: t
services:
  web:
    deploy: {replicas: 2}
    networks: [front]
  db:
    networks: [front]
    x-policy: {ingress: {allow: [api], deny: [0.0.0.0/0]}}
  api:
    networks: [front]
networks:
  front: {}
",
    );
    let same = |resources: &[Resource]| {
        let tables = replica_tables(resources, "web");
        let [one, two] = tables[..] else {
            panic!("two replica tables: {tables:?}")
        };
        assert_eq!(one.vip_refused.len(), 1, "{one:?}");
        std::ptr::eq(&*one.vip_refused, &*two.vip_refused)
    };
    assert!(same(&desired));
    let state = crate::state::State {
        format_version: crate::state::FORMAT_VERSION,
        project: PROJECT.into(),
        resources: desired,
        ..Default::default()
    };
    let back = crate::state::decode(&crate::state::encode(&state).unwrap()).unwrap();
    assert_eq!(back, state);
    assert!(same(&back.resources));
}

#[test]
fn the_replicas_of_a_service_are_expanded_to_one_list_of_chains_and_maps() {
    let desired = desired();
    let expander = crate::model::tables::replica::Expander::new(&desired);
    let full: Vec<Resource> = desired
        .iter()
        .filter(|r| matches!(&r.address, ResourceId::ReplicaFirewall(id) if id.service == "web"))
        .map(|r| expander.expand(r).into_owned())
        .collect();
    let tables = replica_tables(&full, "web");
    let [one, two] = tables[..] else {
        panic!("two replica tables: {tables:?}")
    };
    assert!(std::ptr::eq(&*one.chains, &*two.chains));
    assert!(std::ptr::eq(&*one.maps, &*two.maps));
    assert!(one.chains.len() > replica_tables(&desired, "web")[0].chains.len());
    assert!(!one.maps.is_empty());
}
