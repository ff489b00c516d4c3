//! Real Compose files (fixtures/corpus/awesome-compose, CC0, see its README.md): they were
//! written for Docker, not for netcompose, and netcompose must still accept every one of them,
//! through the library and through the CLI.

use netcompose::load::LoadOptions;
use netcompose::pipeline::{checked_project, render_plain, Failure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DIR: &str = "fixtures/corpus/awesome-compose";

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("the corpus directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The binary with an empty environment, so that variables the files use are unset here as on
/// a fresh machine (and COMPOSE_* variables of the developer's shell cannot leak in).
fn netcompose(file: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netcompose"))
        .env_clear()
        .arg("-f")
        .arg(file)
        .args(args)
        .output()
        .expect("the netcompose binary runs")
}

fn stdout_of(file: &Path, args: &[&str]) -> String {
    let out = netcompose(file, args);
    assert!(
        out.status.success(),
        "`netcompose -f {} {}` failed:\n{}",
        file.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn the_corpus_is_large_enough() {
    let n = corpus().len();
    assert!(n >= 30, "only {n} corpus files");
}

#[test]
fn every_corpus_file_validates_with_unset_variables_as_warnings() {
    let mut failures = Vec::new();
    let mut unset_warnings = 0;
    for path in corpus() {
        let opts = LoadOptions {
            files: vec![path.clone()],
            environment: Some(HashMap::new()),
            ..Default::default()
        };
        match checked_project(&opts) {
            Ok(checked) => {
                unset_warnings += checked
                    .warnings
                    .iter()
                    .filter(|w| w.contains("is not set"))
                    .count();
            }
            Err(Failure::Invalid { diags, sources }) => failures.push(format!(
                "{}:\n{}",
                path.display(),
                render_plain(&diags, &sources)
            )),
            Err(Failure::Load(e)) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    // Report every file at once: one failing file must not hide the next.
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Several files use ${VAR} (pihole, wireguard, ...): if none warned, the environment was
    // not empty after all and the "unset is only a warning" half of this test proved nothing.
    assert!(
        unset_warnings > 0,
        "no unset-variable warning in the corpus"
    );
}

#[test]
fn validate_accepts_every_corpus_file() {
    for path in corpus() {
        let out = netcompose(&path, &["validate"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "`validate` rejected {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn config_renders_every_corpus_file_as_yaml_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    for path in corpus() {
        let json = stdout_of(&path, &["config", "--format", "json"]);
        let value: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{}: bad JSON from config: {e}\n{json}", path.display()));
        assert!(value["services"].is_object(), "{}: {json}", path.display());

        // The YAML output is a Compose file too: it must load again and render the same, so
        // that `config > out.yaml` is a faithful, stable normalization.
        let yaml = stdout_of(&path, &["config"]);
        let again = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&again, &yaml).unwrap();
        let yaml_again = stdout_of(&again, &["config"]);
        assert_eq!(yaml, yaml_again, "{}: config is not stable", path.display());
    }
}
