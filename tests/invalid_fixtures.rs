//! Every file in fixtures/invalid/ is a broken Compose file. Each must be rejected, and what
//! netcompose says about it is pinned by a snapshot (tests/snapshots/), so that a change in a
//! message or in the position it points at shows up in review.

use netcompose::load::LoadOptions;
use netcompose::pipeline::{checked_project, render_plain, Failure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const DIR: &str = "fixtures/invalid";

/// The fixtures in a stable order, as paths relative to the crate root (cargo runs integration
/// tests there), so that the file names in snapshots do not depend on where the checkout lives.
fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("fixtures/invalid exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Load and validate one file with an empty environment (so `${VAR:?}` fixtures fail the same
/// way everywhere) and a fixed project name (so the directory name does not matter).
fn check(path: &Path) -> Result<(), Failure> {
    let opts = LoadOptions {
        files: vec![path.to_path_buf()],
        project_name: Some("fixture".into()),
        environment: Some(HashMap::new()),
        ..Default::default()
    };
    checked_project(&opts).map(|_| ())
}

/// `file:line:col code: message` for each error, then the full miette rendering.
fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Load(e) => format!("load error: {e}\n"),
        Failure::Invalid { diags, sources } => {
            let mut out = String::new();
            for e in diags.sorted() {
                let (line, col) = sources.line_col(e.at());
                let file = sources.get(e.at().file).map_or("?", |f| f.name.as_str());
                out += &format!("{file}:{line}:{col} {}: {e}\n", e.code_str());
            }
            for w in &diags.warnings {
                out += &format!("warning: {w}\n");
            }
            out += "\n";
            out += &render_plain(diags, sources);
            out
        }
    }
}

#[test]
fn there_are_enough_invalid_fixtures() {
    let n = fixtures().len();
    assert!(n >= 34, "only {n} invalid fixtures");
}

#[test]
fn every_invalid_fixture_is_rejected_and_explained() {
    let mut results = Vec::new();
    let mut accepted = Vec::new();
    for path in fixtures() {
        match check(&path) {
            Ok(()) => accepted.push(path.display().to_string()),
            Err(f) => results.push((path, f)),
        }
    }
    // Checked before any snapshot so that a fixture that slipped through is never hidden
    // behind an unrelated snapshot diff.
    assert!(
        accepted.is_empty(),
        "these should not validate: {accepted:?}"
    );

    for (path, failure) in &results {
        if let Failure::Invalid { diags, sources } = failure {
            // Every fixture opens with a comment line, so an error at 1:1 points at nothing.
            for e in &diags.errors {
                assert_ne!(
                    sources.line_col(e.at()),
                    (1, 1),
                    "{}: {e} has no real position",
                    path.display()
                );
            }
        }
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        insta::assert_snapshot!(name, describe(failure));
    }
}
