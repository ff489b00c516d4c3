//! `x-qos` applied, observed, drifted and repaired on the in-memory kernel: the tc trees of
//! each side of a link, the loss rule, and netem missing at validation and at apply.

use crate::apply::{apply, ApplyError, Step};
use crate::kernel::fake::Fake;
use crate::kernel::machine::{HtbClass, Qdisc, QdiscKind};
use crate::kernel::Kernel;
use crate::load::LoadOptions;
use crate::model::resource::{Link, Resource};
use crate::model::{self, Context, Spec};
use crate::observe::live::observe;
use crate::pipeline::checked_project;
use crate::plan::{self, Action};
use std::collections::HashMap;

const COMPOSE: &str = "
name: q
services:
  web:
    x-qos:
      egress: {rate: 10mbit, ceil: 20mbit}
      loss: 20%
    networks:
      front:
        x-qos:
          ingress: {rate: 5mbit, burst: 32kb}
  db:
    networks: [front]
networks:
  front: {}
";

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

async fn converge(
    k: &Kernel<Fake>,
    state: &[Resource],
    desired: &[Resource],
) -> Result<Vec<plan::Change>, Vec<ApplyError>> {
    let observed = observe(k, state, desired).await.unwrap();
    let changes = plan::diff(&observed, desired);
    apply(k, &observed, desired, &changes, &quiet).await?;
    Ok(changes)
}

fn web_link(desired: &[Resource]) -> Link {
    desired
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Link(l) if l.namespace == "q-web-1" => Some((**l).clone()),
            _ => None,
        })
        .unwrap()
}

/// The qdiscs and classes of link `name` in `ns` (None: the host).
fn tree(k: &Kernel<Fake>, ns: Option<&str>, name: &str) -> (Vec<Qdisc>, Vec<HtbClass>) {
    k.with(|w| {
        let l = w.link_named(ns, name).unwrap();
        (l.qdiscs.clone(), l.classes.clone())
    })
}

#[tokio::test]
async fn shaped_both_ways_then_no_change() {
    let desired = desired_of(COMPOSE);
    let k = Kernel::new("q", Fake::new());
    converge(&k, &[], &desired).await.unwrap();
    let l = web_link(&desired);
    let (qdiscs, classes) = tree(&k, Some("q-web-1"), &l.ifname);
    assert_eq!(
        qdiscs[0].kind,
        QdiscKind::Htb {
            default_class: 0x10
        }
    );
    let leaf = classes.iter().find(|c| c.handle == 0x1_0010).unwrap();
    assert_eq!((leaf.rate, leaf.ceil), (1_250_000, 2_500_000));
    let host = l.host_ifname.clone().unwrap();
    let (_, classes) = tree(&k, None, &host);
    let leaf = classes.iter().find(|c| c.handle == 0x1_0010).unwrap();
    assert_eq!((leaf.rate, leaf.burst), (625_000, 32 * 1024));
    // The db replica has no x-qos: nothing on its link.
    let db = desired
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Link(l) if l.namespace == "q-db-1" => Some(l.clone()),
            _ => None,
        })
        .unwrap();
    assert!(tree(&k, Some("q-db-1"), &db.ifname).0.is_empty());
    let again = converge(&k, &desired, &desired).await.unwrap();
    assert!(again.is_empty(), "{again:#?}");
}

#[tokio::test]
async fn a_deleted_tree_is_drift_and_up_rebuilds_it() {
    let desired = desired_of(COMPOSE);
    let k = Kernel::new("q", Fake::new());
    converge(&k, &[], &desired).await.unwrap();
    let l = web_link(&desired);
    k.with(|w| {
        let link = w.link_named(Some("q-web-1"), &l.ifname).unwrap();
        link.qdiscs.clear();
        link.classes.clear();
    });
    let changes = converge(&k, &desired, &desired).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].actions, vec![Action::Update]);
    assert!(!tree(&k, Some("q-web-1"), &l.ifname).1.is_empty());
    assert!(converge(&k, &desired, &desired).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_changed_rate_is_an_update_and_a_removed_qos_takes_the_tree_away() {
    let desired = desired_of(COMPOSE);
    let k = Kernel::new("q", Fake::new());
    converge(&k, &[], &desired).await.unwrap();
    let faster = desired_of(&COMPOSE.replace("rate: 10mbit", "rate: 15mbit"));
    let changes = converge(&k, &desired, &faster).await.unwrap();
    assert!(changes.iter().all(|c| c.actions == vec![Action::Update]));
    let l = web_link(&faster);
    let (_, classes) = tree(&k, Some("q-web-1"), &l.ifname);
    let leaf = classes.iter().find(|c| c.handle == 0x1_0010).unwrap();
    assert_eq!(leaf.rate, 1_875_000);
    let plain = desired_of(
        "name: q\nservices:\n  web:\n    networks: [front]\n  db:\n    networks: [front]\nnetworks:\n  front: {}\n",
    );
    converge(&k, &faster, &plain).await.unwrap();
    assert!(tree(&k, Some("q-web-1"), &l.ifname).0.is_empty());
    assert!(tree(&k, None, l.host_ifname.as_deref().unwrap())
        .0
        .is_empty());
    assert!(converge(&k, &plain, &plain).await.unwrap().is_empty());
}

#[tokio::test]
async fn loss_is_a_rule_of_the_replica_table() {
    let desired = desired_of(COMPOSE);
    let fw = desired
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Firewall(f) if f.namespace.as_deref() == Some("q-web-1") => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    let faults = fw.chains.iter().find(|c| c.name == "faults").unwrap();
    let l = web_link(&desired);
    assert_eq!(
        faults.rules[0].to_string(),
        format!("oifname \"{}\" numgen random mod 100 < 20 drop", l.ifname)
    );
}

#[tokio::test]
async fn delay_needs_netem_and_says_so() {
    let desired = desired_of("name: q\nservices:\n  web:\n    x-qos: {delay: 50ms, jitter: 5ms}\n");
    let k = Kernel::new("q", Fake::new());
    k.with(|w| w.lacking_qdiscs.insert("netem".into()));
    let errors = converge(&k, &[], &desired).await.unwrap_err();
    let text = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("sch_netem"), "{text}");

    let k = Kernel::new("q", Fake::new());
    converge(&k, &[], &desired).await.unwrap();
    let l = web_link(&desired);
    let (qdiscs, _) = tree(&k, Some("q-web-1"), &l.ifname);
    assert_eq!(
        qdiscs[0].kind,
        QdiscKind::Netem {
            delay_ns: 50_000_000,
            jitter_ns: 5_000_000
        }
    );
    assert!(converge(&k, &desired, &desired).await.unwrap().is_empty());
}

/// The errors of checking `yaml` on a kernel with these facts.
fn errors_on(yaml: &str, facts: &crate::validate::KernelFacts) -> Vec<crate::diag::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, yaml).unwrap();
    let opts = LoadOptions {
        files: vec![file],
        environment: Some(HashMap::new()),
        ..Default::default()
    };
    match crate::pipeline::checked_on(&opts, || facts.clone()) {
        Ok(_) => vec![],
        Err(crate::pipeline::Failure::Invalid { diags, .. }) => diags.errors,
        Err(crate::pipeline::Failure::Load(e)) => panic!("{e}"),
    }
}

#[test]
fn macvlan_ingress_is_refused_and_egress_is_not() {
    let yaml = "services:\n  a:\n    networks:\n      lan:\n        x-qos: {ingress: {rate: 1mbit}}\n  b:\n    networks: [lan]\n    x-qos: {egress: {rate: 1mbit}}\nnetworks:\n  lan:\n    driver: macvlan\n    driver_opts: {parent: eth9}\n";
    let e = errors_on(yaml, &Default::default());
    assert!(
        matches!(&e[..], [crate::diag::ConfigError::Invalid { message, .. }] if message.contains("macvlan")),
        "{e:?}"
    );
}

#[test]
fn delay_names_netem_only_when_the_kernel_lacks_it() {
    use crate::validate::{KernelFacts, Presence};
    let yaml = "services:\n  a:\n    x-qos: {delay: 10ms, loss: 5%}\n";
    assert!(errors_on(yaml, &KernelFacts::default()).is_empty());
    let present = KernelFacts {
        netem: Presence::Present,
    };
    assert!(errors_on(yaml, &present).is_empty());
    let missing = KernelFacts {
        netem: Presence::Missing("not in /proc/config.gz".into()),
    };
    let e = errors_on(yaml, &missing);
    assert!(
        matches!(&e[..], [crate::diag::ConfigError::MissingModule { module, .. }] if module == "sch_netem"),
        "{e:?}"
    );
    let shaped = "services:\n  a:\n    x-qos: {egress: {rate: 1mbit}, loss: 5%}\n";
    assert!(errors_on(shaped, &missing).is_empty());
}
