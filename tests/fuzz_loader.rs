//! Fuzzing the pure stages: whatever a Compose file (or its .env) holds, loading and validating
//! it must end in a project or in diagnostics that point into the file and render, never in a
//! panic, a stack overflow or an exhausted memory.
//!
//! Three kinds of input, one test each:
//! - arbitrary bytes and YAML-ish text;
//! - the corpus and fixture files with random edits (byte flips, deletions, YAML-significant
//!   insertions), sometimes as an override of a pristine file, to reach the merge;
//! - generated Compose documents, well-formed but with random values in the networking keys
//!   (ports, CIDRs, addresses, network_mode, x-policy, x-checks), to reach the validator.
//!
//! A plain `cargo test` runs a few hundred cases of each in seconds. To fuzz for longer, set
//! NETCOMPOSE_FUZZ_SECONDS: each test then draws fresh random cases until the time is up.
//!
//!     NETCOMPOSE_FUZZ_SECONDS=600 cargo test --test fuzz_loader -- --nocapture --test-threads 3
//!
//! (three threads so that the three fuzz tests share the whole time; each prints its count.)

#[path = "fuzz/compose_gen.rs"]
mod compose_gen;
#[path = "fuzz/mutate.rs"]
mod mutate;

use netcompose::load::LoadOptions;
use netcompose::pipeline::{checked_project, render_plain, Failure};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Cases per test in a plain `cargo test` run (well under 20 s in a debug build).
const DEFAULT_CASES: u32 = 1000;

/// Run `check` on cases drawn from `strategy`: DEFAULT_CASES of them, or batches of fresh
/// random cases until NETCOMPOSE_FUZZ_SECONDS have passed. A panic in `check` is caught by
/// proptest, shrunk to a small input and reported.
fn fuzz<S>(name: &str, strategy: S, check: impl Fn(&Path, S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let seconds = std::env::var("NETCOMPOSE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    // One deadline for the whole process: with fewer test threads than tests, a test that
    // starts late stops with the others instead of stretching the run.
    static START: OnceLock<Instant> = OnceLock::new();
    let deadline = seconds.map(|s| *START.get_or_init(Instant::now) + Duration::from_secs(s));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config {
        // Small batches in timed mode, so that the run ends close to its deadline.
        cases: if deadline.is_some() {
            100
        } else {
            DEFAULT_CASES
        },
        // Runs are random on purpose; a failure prints its minimal input instead of writing
        // a regression file next to the sources.
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        // A new runner takes a new random seed: every batch explores fresh inputs.
        let mut runner = TestRunner::new(config.clone());
        let count = std::cell::Cell::new(0u64);
        let result = runner.run(&strategy, |value| {
            count.set(count.get() + 1);
            check(dir.path(), value)
        });
        cases += count.get();
        if let Err(e) = result {
            panic!("{name}: after {cases} cases: {e}");
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    eprintln!(
        "fuzz_loader {name}: {cases} cases in {:.1} s, no panic",
        started.elapsed().as_secs_f64()
    );
}

/// The environment interpolation sees: a few set variables (one empty), the rest unset.
fn environment() -> HashMap<String, String> {
    [("PORT", "8080"), ("SUBNET", "10.1.0.0/24"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Write the files (and the .env, if any) into `dir`, load and validate them. Whatever the
/// outcome, every diagnostic must point inside a file that was read, and render.
fn run_case(dir: &Path, files: &[&[u8]], env_file: Option<&[u8]>) -> Result<(), TestCaseError> {
    let env_path = dir.join(".env");
    match env_file {
        Some(bytes) => std::fs::write(&env_path, bytes).unwrap(),
        None => {
            let _ = std::fs::remove_file(&env_path);
        }
    }
    let paths: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.join(format!("compose{i}.yaml"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let opts = LoadOptions {
        files: paths,
        project_name: Some("fuzz".into()),
        environment: Some(environment()),
        ..Default::default()
    };
    // Failure::Load is a fine outcome too: a file that is not UTF-8 cannot be read.
    if let Err(Failure::Invalid { diags, sources }) = checked_project(&opts) {
        prop_assert!(diags.has_errors());
        for e in &diags.errors {
            let at = e.at();
            let file = sources.get(at.file);
            prop_assert!(file.is_some(), "{e:?} points at no file");
            let text = &file.unwrap().text;
            let (start, end) = (at.offset as usize, (at.offset + at.len) as usize);
            prop_assert!(
                end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end),
                "{e:?} points outside its file or inside a character"
            );
            sources.line_col(at);
        }
        render_plain(&diags, &sources);
    }
    Ok(())
}

/// File contents, shown as (lossy) text when proptest reports a failing input.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let input = (
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400).prop_map(Bytes),
            any::<String>().prop_map(|s| Bytes(s.into_bytes())),
            mutate::yamlish_text().prop_map(|s| Bytes(s.into_bytes())),
        ],
        prop::option::weighted(0.2, mutate::env_text().prop_map(|s| Bytes(s.into_bytes()))),
    );
    fuzz("arbitrary bytes", input, |dir, (file, env)| {
        run_case(dir, &[&file.0], env.as_ref().map(|e| e.0.as_slice()))
    });
}

#[test]
fn mutated_fixtures_never_panic() {
    fuzz("mutated fixtures", mutate::mutated_files(), |dir, case| {
        let files: Vec<&[u8]> = case.files.iter().map(Vec::as_slice).collect();
        run_case(dir, &files, None)
    });
}

#[test]
fn generated_compose_documents_never_panic() {
    fuzz(
        "generated documents",
        compose_gen::document(),
        |dir, doc| run_case(dir, &[doc.as_bytes()], None),
    );
}

/// Inputs that once crashed the loader, kept as plain regression tests.
#[test]
fn regressions() {
    let dir = tempfile::tempdir().unwrap();
    let base = "services:\n  web:\n    image: x\n";
    // 100 000 nested block sequences in 200 kB: overflowed the stack of recursive walks.
    let deep = format!("{base}x-deep:\n  {}x\n", "- ".repeat(100_000));
    // Nested aliases expanding to 10^8 values: exhausted memory.
    let mut bomb = format!("{base}x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb += &format!("x-a{i}: &a{i} [{refs}]\n");
    }
    for doc in [deep, bomb] {
        run_case(dir.path(), &[doc.as_bytes()], None).unwrap();
    }
    // A bad line after CRLF lines and a multi-byte character: its span was computed with one
    // byte per line terminator and fell inside the `é`.
    let env = "_=\r\n_é\r\nA=1\r\n-bad\r\n";
    run_case(dir.path(), &[base.as_bytes()], Some(env.as_bytes())).unwrap();
}
