//! Planning against a store, without root: other projects' subnets are avoided, and one whose
//! state cannot be read is reported, not skipped.

use super::*;
use crate::ipam::{Allocations, NetworkAllocation};
use crate::load::LoadOptions;
use crate::state::{FileStore, State};
use std::sync::Mutex;

#[derive(Default)]
struct Recorder {
    warnings: Mutex<Vec<String>>,
}

impl Events for Recorder {
    fn warning(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
    fn waiting_for_lock(&self, _: &ProjectName) {}
    fn drift(&self, _: &Change) {}
    fn applying(&self, _: &Summary) {}
    fn progress(&self, _: &str, _: &str, _: Duration) {}
    fn applied(&self, _: &Applied) {}
    fn daemon(&self, _: &DaemonEvent) {}
}

fn subnet_of_front(
    store: &FileStore,
    opts: &LoadOptions,
    events: &Recorder,
) -> ipnetwork::IpNetwork {
    let p = plan(store, opts, &Baseline::State, events).unwrap();
    p.plan.desired.allocations.networks["front"].subnets[0]
}

fn save_other(store: &FileStore, name: &str, allocations: Allocations) {
    let project = ProjectName::new(name).unwrap();
    let lock = store.lock(&project, Wait::No).unwrap();
    let state = State {
        format_version: crate::state::FORMAT_VERSION,
        project: name.into(),
        allocations,
        resources: Vec::new(),
        files: Vec::new(),
        scale: Default::default(),
    };
    store.save(&lock, &state).unwrap();
}

#[test]
fn plans_avoid_other_projects_and_report_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        "name: rt\nnetworks:\n  front: {}\nservices:\n  web:\n    networks: [front]\n",
    )
    .unwrap();
    let opts = LoadOptions {
        files: vec![file],
        ..Default::default()
    };
    let store = FileStore::new(dir.path().join("state"));
    let events = Recorder::default();
    let first = subnet_of_front(&store, &opts, &events);
    assert!(events.warnings.lock().unwrap().is_empty());

    let mut taken = Allocations::default();
    taken.networks.insert(
        "net".into(),
        NetworkAllocation {
            subnets: vec![first],
            ..Default::default()
        },
    );
    save_other(&store, "other", taken);
    let p = plan(&store, &opts, &Baseline::State, &events).unwrap();
    assert_eq!(
        p.plan.daemon.as_ref().map(|d| d.project.as_str()),
        Some("rt")
    );
    assert_ne!(
        p.plan.desired.allocations.networks["front"].subnets[0],
        first
    );

    std::fs::create_dir_all(dir.path().join("state/broken")).unwrap();
    std::fs::write(dir.path().join("state/broken/state.json"), "{").unwrap();
    subnet_of_front(&store, &opts, &events);
    let warnings = events.warnings.lock().unwrap();
    assert!(
        matches!(warnings.as_slice(), [w] if w.contains("broken/state.json")),
        "{warnings:?}"
    );
}

/// Lives here, not in model/, because it loads an example through the pipeline.
#[test]
fn every_spec_reads_back_with_its_kind_first_or_later() {
    let specs: Vec<crate::model::resource::Spec> = crate::pipeline::quickstart_resources()
        .into_iter()
        .map(|r| r.spec)
        .collect();
    let kinds: std::collections::BTreeSet<&str> = specs
        .iter()
        .map(crate::model::resource::Spec::kind)
        .collect();
    assert!(kinds.len() >= 6, "{kinds:?}");
    for spec in &specs {
        let text = serde_json::to_string(spec).unwrap();
        assert!(text.starts_with(r#"{"kind":"#), "{text}");
        assert_eq!(
            &serde_json::from_str::<crate::model::resource::Spec>(&text).unwrap(),
            spec
        );
        // By hand, `kind` may come anywhere.
        let mut value = serde_json::to_value(spec).unwrap();
        let fields = value.as_object_mut().unwrap();
        let kind = fields.shift_remove("kind").unwrap();
        fields.insert("kind".into(), kind);
        assert_eq!(
            &serde_json::from_value::<crate::model::resource::Spec>(value).unwrap(),
            spec
        );
    }
    let unknown =
        serde_json::from_str::<crate::model::resource::Spec>(r#"{"kind": "tunnel", "name": "x"}"#);
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown variant `tunnel`"));
    let untagged = serde_json::from_str::<crate::model::resource::Spec>(r#"{"name": "x"}"#);
    assert!(untagged
        .unwrap_err()
        .to_string()
        .contains("missing field `kind`"));
}

/// The host's listening sockets are read for a project that publishes ports (a socket bound
/// here shows among them), and not at all for one that publishes none.
#[test]
fn listening_sockets_are_read_only_for_published_ports() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let context_of = |services: &str| {
        let file = dir.path().join("compose.yaml");
        std::fs::write(
            &file,
            format!("name: rl\nnetworks:\n  front: {{}}\nservices:\n{services}"),
        )
        .unwrap();
        let opts = LoadOptions {
            files: vec![file],
            ..Default::default()
        };
        let checked = crate::pipeline::checked_project(&opts).unwrap();
        planning::context(&checked, &Allocations::default(), &Default::default(), None).unwrap()
    };
    let published = context_of("  web:\n    networks: [front]\n    ports: ['8080:80']\n");
    assert!(
        published.listening.iter().any(|l| l.port == port),
        "port {port} not among {:?}",
        published.listening
    );
    let unpublished = context_of("  web:\n    networks: [front]\n");
    assert!(unpublished.listening.is_empty());
}

/// A plan shows a created or deleted spec's attributes from the typed spec
/// (plan/render/fields.rs) exactly as it would from the spec's JSON, for every kind the
/// quickstart example makes. Lives here, not in plan/, because it loads an example through the
/// pipeline.
#[test]
fn created_and_deleted_specs_show_the_same_typed_as_through_their_json() {
    use crate::plan::{render::render, Attributes, Plan};
    let resources = crate::pipeline::quickstart_resources();
    let desired = |resources| crate::model::Desired {
        project: "quickstart".into(),
        resources,
        allocations: Default::default(),
    };
    let through_json = |plan: &Plan| {
        let mut plan = plan.clone();
        for c in &mut plan.resource_changes {
            for side in [&mut c.before, &mut c.after] {
                *side = side
                    .take()
                    .map(|a| Attributes::Value(serde_json::Value::Object(a.map().into_owned())));
            }
        }
        plan
    };
    let created = Plan::shown(desired(resources.clone()), &[], "empty");
    let deleted = Plan::shown(desired(Vec::new()), &resources, "state");
    for plan in [created, deleted] {
        assert_eq!(plan.resource_changes.len(), resources.len());
        let typed = render(&plan, false);
        assert!(typed.contains("      "), "no attribute shown: {typed}");
        assert_eq!(typed, render(&through_json(&plan), false));
    }
}
