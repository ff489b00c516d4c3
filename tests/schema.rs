//! The editor schema (schemas/netcompose.schema.json, built by schemas/build.py) must accept
//! every file netcompose accepts — the examples and the fixture corpora — and must reject
//! malformed extension keys, as netcompose itself does.

use boon::{Compiler, SchemaIndex, Schemas};
use netcompose::load::LoadOptions;
use netcompose::pipeline::checked_project;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Schema {
    schemas: Schemas,
    index: SchemaIndex,
}

impl Schema {
    fn load() -> Schema {
        let path = root().join("schemas/netcompose.schema.json");
        let mut schemas = Schemas::new();
        let index = Compiler::new()
            .compile(&path.to_string_lossy(), &mut schemas)
            .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", path.display()));
        Schema { schemas, index }
    }

    /// Check YAML text as an editor would: before interpolation, with YAML 1.2 core-schema
    /// typing (the same conversion netcompose uses for its own key checks).
    fn check(&self, text: &str) -> Result<(), String> {
        let tree = netcompose::load::yaml::parse(text, 0).map_err(|e| e.message)?;
        self.schemas
            .validate(&tree.to_json(), self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

/// Every .yaml/.yml file under `dir`, sorted so that failures list in a stable order.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn assert_all_valid(schema: &Schema, files: &[PathBuf]) {
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            schema
                .check(&text)
                .err()
                .map(|e| format!("{}:\n{e}", f.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} files fail the schema:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn schema_is_up_to_date_with_build_script() {
    // The committed schema must be what build.py makes of compose-spec.json. Skipped quietly
    // where python3 is missing: the other tests still check the committed file.
    let out = std::process::Command::new("python3")
        .arg(root().join("schemas/build.py"))
        .arg("--check")
        .output();
    if let Ok(out) = out {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn examples_match_the_schema() {
    let files = yaml_files(&root().join("examples"));
    assert!(
        files.iter().any(|f| f.ends_with("quickstart/compose.yaml")),
        "examples/quickstart/compose.yaml is missing"
    );
    assert_all_valid(&Schema::load(), &files);
}

#[test]
fn fixture_corpora_match_the_schema() {
    let schema = Schema::load();
    for dir in ["fixtures/corpus", "fixtures/valid"] {
        let dir = root().join(dir);
        if dir.is_dir() {
            assert_all_valid(&schema, &yaml_files(&dir));
        } else {
            eprintln!("{} does not exist; skipped", dir.display());
        }
    }
}

/// A file using every extension correctly, the baseline the broken variants depart from.
const GOOD: &str = r#"
networks:
  back:
    x-policy:
      egress: {allow: ["10.0.0.0/8"], deny: ["0.0.0.0/0"]}
services:
  web:
    networks: [back]
    x-run: [python3, -m, http.server, "80"]
  db:
    networks: [back]
    x-run: sleep infinity
    x-policy:
      ingress:
        allow: ["web:5432/tcp", "192.168.1.0/24:53/udp", "[fd00::/64]:443", web]
        deny: 0.0.0.0/0
x-checks:
  - {from: web, to: db, port: 5432, expect: reach}
  - {from: db, to: 10.1.2.3, protocol: icmp, expect: blocked}
  - {from: web, to: db, port: "${DB_PORT:-5432}", protocol: udp}
"#;

/// Broken variants of GOOD: (what, YAML to append or replace, where the schema must complain).
const BAD: &[(&str, &str, &str)] = &[
    (
        "misspelt allow",
        "services:\n  db:\n    x-policy: {ingress: {alow: []}}\n",
        "/services/db/x-policy/ingress",
    ),
    (
        "unknown direction",
        "services:\n  db:\n    x-policy: {inbound: {allow: [web]}}\n",
        "/services/db/x-policy",
    ),
    (
        "rules as a list",
        "services:\n  db:\n    x-policy: {ingress: [web]}\n",
        "/services/db/x-policy/ingress",
    ),
    (
        "protocol without a port",
        "services:\n  db:\n    x-policy: {ingress: {allow: [web/tcp]}}\n",
        "/services/db/x-policy/ingress/allow",
    ),
    (
        "policy entry with a space",
        "networks:\n  back:\n    x-policy: {egress: {deny: [\"a b\"]}}\n",
        "/networks/back/x-policy/egress/deny",
    ),
    (
        "x-run as a mapping",
        "services:\n  web:\n    x-run: {cmd: echo}\n",
        "/services/web/x-run",
    ),
    (
        "check without to",
        "x-checks:\n  - {from: web, port: 80}\n",
        "/x-checks/0",
    ),
    (
        "check with an unknown expectation",
        "x-checks:\n  - {from: web, to: db, port: 80, expect: maybe}\n",
        "/x-checks/0/expect",
    ),
    (
        "tcp check without a port",
        "x-checks:\n  - {from: web, to: db, protocol: tcp}\n",
        "/x-checks/0",
    ),
    (
        "check with an unknown key",
        "x-checks:\n  - {from: web, to: db, port: 80, timeout: 3}\n",
        "/x-checks/0",
    ),
    (
        "check port out of range",
        "x-checks:\n  - {from: web, to: db, port: 70000}\n",
        "/x-checks/0/port",
    ),
    (
        "x-checks as a mapping",
        "x-checks: {from: web, to: db}\n",
        "/x-checks",
    ),
];

/// GOOD with `patch`'s top-level sections replacing GOOD's own sections of the same name.
fn patched(patch: &str) -> String {
    let patch_tree = netcompose::load::yaml::parse(patch, 0).unwrap().to_json();
    let mut doc = netcompose::load::yaml::parse(GOOD, 0).unwrap().to_json();
    merge(&mut doc, patch_tree);
    // JSON is YAML: netcompose reads it back like any Compose file.
    serde_json::to_string_pretty(&doc).unwrap()
}

fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => *b = p,
    }
}

/// Does netcompose itself accept the text? (load + validate, with no variables set)
fn netcompose_accepts(text: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, text).unwrap();
    checked_project(&LoadOptions {
        files: vec![file],
        project_name: Some("schema-test".into()),
        environment: Some(Default::default()),
        ..Default::default()
    })
    .is_ok()
}

#[test]
fn well_formed_extensions_pass() {
    let schema = Schema::load();
    if let Err(e) = schema.check(GOOD) {
        panic!("the baseline fails the schema:\n{e}");
    }
    assert!(netcompose_accepts(GOOD), "netcompose rejects the baseline");
}

#[test]
fn malformed_extensions_fail() {
    let schema = Schema::load();
    for (what, patch, pointer) in BAD {
        let text = patched(patch);
        match schema.check(&text) {
            Ok(()) => panic!("{what}: the schema accepts\n{text}"),
            Err(e) => assert!(
                e.contains(&format!("at '{pointer}'")),
                "{what}: expected a complaint at {pointer}, got:\n{e}"
            ),
        }
        // The schema is a front for netcompose's own checks: they must agree.
        assert!(
            !netcompose_accepts(&text),
            "{what}: the schema rejects it but netcompose accepts\n{text}"
        );
    }
}
