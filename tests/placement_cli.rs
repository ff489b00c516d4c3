//! `deploy.mode` and `deploy.placement` through the binary: a bad constraint stops `validate`
//! (and so every command) with a diagnostic at its file:line:col and a hint; `config` prints
//! them so that they load back; `plan` on one host notes that only a cluster honours them.

use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

fn project(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
    dir
}

const PLACED: &str = "name: plc-notes
services:
  web:
    deploy:
      replicas: 3
      placement:
        constraints: [node.labels.zone==eu, \"node.hostname != db1\"]
        max_replicas_per_node: 2
  mon:
    deploy: {mode: global}
";

#[test]
fn a_bad_constraint_is_located_and_explained_and_nothing_runs() {
    let dir = project(
        "services:\n  web:\n    deploy:\n      placement:\n        constraints:\n          \
         - node.name==h1\n          - zone=eu\n          - node.role==manager\n",
    );
    let out = run(dir.path(), &["validate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("compose.yaml:6:13"), "{err}");
    assert!(err.contains("unknown node field `node.name`"), "{err}");
    // A Swarm field docker compose ignores is only a warning.
    assert!(
        !err.contains("× invalid placement constraint `node.role"),
        "{err}"
    );
    assert!(
        err.contains("warning: service `web`: placement constraint `node.role==manager`"),
        "{err}"
    );
    assert!(err.contains("node.labels.KEY"), "{err}");
    assert!(err.contains("compose.yaml:7:13"), "{err}");
    assert!(
        err.contains("constraint expected one operator from ==, !="),
        "{err}"
    );
    // plan refuses the file too: no plan is printed.
    let out = run(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn config_prints_mode_and_placement_and_they_load_back() {
    let dir = project(PLACED);
    let out = run(dir.path(), &["config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("mode: global"), "{printed}");
    assert!(printed.contains("node.hostname!=db1"), "{printed}");
    assert!(printed.contains("max_replicas_per_node: 2"), "{printed}");
    let again = project(&printed);
    let out = run(again.path(), &["config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), printed);

    let out = run(dir.path(), &["config", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["services"]["web"]["deploy"]["placement"],
        serde_json::json!({
            "constraints": ["node.labels.zone==eu", "node.hostname!=db1"],
            "max_replicas_per_node": 2,
        })
    );
    assert_eq!(doc["services"]["mon"]["deploy"]["mode"], "global");
    assert!(doc["services"]["web"]["deploy"].get("mode").is_none());
}

#[test]
fn a_one_host_plan_notes_what_only_a_cluster_honours() {
    let dir = project(PLACED);
    let out = run(dir.path(), &["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "Note: service `web`: placement constraints (node.labels.zone==eu, \
             node.hostname!=db1), max_replicas_per_node: 2 are honoured only on a cluster \
             (--store); on this one host 3 replicas run, as with docker compose"
        ),
        "{text}"
    );
    assert!(
        text.contains("Note: service `mon`: deploy.mode: global"),
        "{text}"
    );
    // Every replica Compose counts is planned here.
    for ns in ["plc-notes-web-1", "plc-notes-web-3", "plc-notes-mon-1"] {
        assert!(text.contains(ns), "{ns} missing:\n{text}");
    }
    let out = run(dir.path(), &["plan", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["notes"].as_array().map(Vec::len), Some(2));
    // A file without placement has no notes at all.
    let plain = project("name: plc-plain\nservices:\n  web: {}\n");
    let out = run(plain.path(), &["plan", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc.get("notes").is_none(), "{doc}");
}
