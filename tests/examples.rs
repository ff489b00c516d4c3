//! The examples are documentation that runs: each must load and validate cleanly, render with
//! `config --format json`, and be listed in examples/README.md.

use netcompose::load::LoadOptions;
use netcompose::pipeline::{checked_project, render_plain, Failure};
use std::path::PathBuf;
use std::process::Command;

/// One directory per system of the design note, plus the quickstart.
const EXPECTED: &[&str] = &[
    "quickstart",
    "bridge",
    "host",
    "container-mode",
    "overlay",
    "macvlan",
    "ipam",
    "policy",
    "dns",
    "load-balancing",
    "mtu",
    "internal",
    "qos",
];

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every examples/*/compose.yaml, by directory name.
fn examples() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("compose.yaml").is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, p.join("compose.yaml"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_expected_example_exists() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for want in EXPECTED {
        assert!(
            names.iter().any(|n| n == want),
            "examples/{want} is missing"
        );
    }
}

#[test]
fn examples_validate_without_warnings() {
    for (name, file) in examples() {
        let opts = LoadOptions {
            files: vec![file],
            ..Default::default()
        };
        match checked_project(&opts) {
            Ok(checked) => {
                assert!(
                    checked.warnings.is_empty(),
                    "{name}: warnings {:?}",
                    checked.warnings
                );
                assert!(!checked.project.services.is_empty(), "{name}: no services");
            }
            Err(Failure::Load(e)) => panic!("{name}: {e}"),
            Err(Failure::Invalid { diags, sources }) => {
                panic!("{name}:\n{}", render_plain(&diags, &sources))
            }
        }
    }
}

#[test]
fn examples_render_as_json() {
    for (name, file) in examples() {
        let out = Command::new(env!("CARGO_BIN_EXE_netcompose"))
            .arg("-f")
            .arg(&file)
            .args(["config", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: config failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: config --format json is not JSON: {e}"));
        // Every example names its project, so the output does not depend on the directory.
        assert!(
            json["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{name}: no project name in {json}"
        );
        assert!(
            json["services"].as_object().is_some_and(|s| !s.is_empty()),
            "{name}: no services in {json}"
        );
    }
}

#[test]
fn readme_lists_every_example() {
    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    for (name, _) in examples() {
        assert!(
            readme.contains(&format!("]({name}/compose.yaml)")),
            "examples/README.md does not link {name}/compose.yaml"
        );
    }
}
