//! `netcompose plan` end to end through the binary: byte-identical output for the same inputs,
//! a JSON document that matches schemas/plan.schema.json, --detailed-exitcode, --against, and
//! a plan by an unprivileged user that changes nothing on the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netcompose"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plan(file: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("-f")
        .arg(file)
        .arg("plan")
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("compose.yaml")))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 10, "examples are missing");
    v
}

#[test]
fn same_inputs_give_byte_identical_plans() {
    for file in examples() {
        for flags in [&[][..], &["--json"][..]] {
            let (a, b) = (plan(&file, flags), plan(&file, flags));
            assert!(
                a.status.success(),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&a.stderr)
            );
            assert_eq!(
                a.stdout,
                b.stdout,
                "{} {flags:?} differs between runs",
                file.display()
            );
        }
    }
}

#[test]
fn json_plan_matches_its_schema() {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let schema_path = root().join("schemas/plan.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    compiler.add_resource("plan.schema.json", schema).unwrap();
    let index = compiler.compile("plan.schema.json", &mut schemas).unwrap();
    for file in examples() {
        let out = plan(&file, &["--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Err(e) = schemas.validate(&doc, index) {
            panic!(
                "{}: plan JSON does not match the schema: {e}",
                file.display()
            );
        }
        assert_eq!(doc["format_version"], "1.2");
        assert_eq!(doc["daemon"]["project"], doc["project"]);
        let adds = doc["resource_changes"].as_array().unwrap().len();
        assert_eq!(doc["summary"]["add"].as_u64().unwrap() as usize, adds);
    }
    let mut broken: serde_json::Value =
        serde_json::from_slice(&plan(&examples()[0], &["--json"]).stdout).unwrap();
    broken["resource_changes"][0]["actions"] = serde_json::json!(["explode"]);
    assert!(
        schemas.validate(&broken, index).is_err(),
        "the schema must reject unknown actions"
    );
}

#[test]
fn detailed_exitcode_and_against() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    std::fs::write(
        &old,
        "name: ci\nservices:\n  web: {deploy: {replicas: 2}}\n  db: {}\n",
    )
    .unwrap();
    std::fs::write(
        &new,
        "name: ci\nservices:\n  web: {deploy: {replicas: 3}}\n  db: {}\n",
    )
    .unwrap();
    let same = plan(
        &old,
        &["--against", old.to_str().unwrap(), "--detailed-exitcode"],
    );
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("No changes."));
    let changed = plan(
        &new,
        &["--against", old.to_str().unwrap(), "--detailed-exitcode"],
    );
    assert_eq!(changed.status.code(), Some(2));
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(text.contains("+ service.web[3]"), "{text}");
    assert!(text.contains("~ service.web.vip.default"), "{text}");
    // The scale reads element by element: the new name and backend, not two whole zones.
    assert!(text.contains("+ ci-web-3 = 172.16."), "{text}");
    assert!(text.contains("unchanged elements hidden)"), "{text}");
    assert!(!text.contains("ci-web-1 = "), "{text}");
    // The host's way to the VIP: one more element in its map, its chain untouched.
    assert!(
        text.contains("      ~ vip.web.default: + 172.16.0.7\n"),
        "{text}"
    );
    assert!(!text.contains("chain vip_web_default"), "{text}");
    assert!(
        !text.contains("service.db[1].link"),
        "db must not be renumbered: {text}"
    );
    // A saved plan is a baseline too.
    let saved = dir.path().join("plan.json");
    assert!(plan(&old, &["--out", saved.to_str().unwrap()])
        .status
        .success());
    let against_saved = plan(
        &new,
        &["--against", saved.to_str().unwrap(), "--detailed-exitcode"],
    );
    assert_eq!(against_saved.status.code(), Some(2));
    assert_eq!(
        changed.stdout.len() - format!("the file {}", old.display()).len(),
        against_saved.stdout.len() - format!("the file {}", saved.display()).len()
    );
    // Invalid input: exit 1 and a located diagnostic.
    std::fs::write(&new, "services:\n  web: {networks: [nope]}\n").unwrap();
    let bad = plan(&new, &["--detailed-exitcode"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("new.yaml:2:"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// A long plan at a glance: scaling a service of twelve replicas to thirteen is one block for
/// the twelve tables of the service whose policy admits it (changed alike), nothing for the
/// service's own tables (its new backend is an element of the VIP's map), and the name of the
/// service gains one address, with the twelve it keeps hidden.
#[test]
fn a_long_plan_hides_what_does_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    let file = |n: u32| {
        format!(
            "name: ci\nservices:\n  web: {{deploy: {{replicas: {n}}}}}\n  db:\n    deploy: {{replicas: 12}}\n    x-policy: {{ingress: {{allow: [\"web:5432/tcp\"]}}}}\n"
        )
    };
    std::fs::write(&old, file(12)).unwrap();
    std::fs::write(&new, file(13)).unwrap();
    let out = plan(&new, &["--against", old.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("  ~ service.db[1-12].firewall (firewall)\n"),
        "{text}"
    );
    assert_eq!(text.matches("~ service.db[").count(), 1, "{text}");
    assert_eq!(text.matches("~ service.web[").count(), 0, "{text}");
    assert!(
        text.contains("      # (5 unchanged attributes hidden)\n"),
        "{text}"
    );
    let tasks = text.find("~ tasks.web\n").expect(&text);
    let rest = &text[tasks..];
    assert!(
        rest.lines().nth(1).unwrap().trim().starts_with("+ 172.16."),
        "{text}"
    );
    assert_eq!(
        rest.lines().nth(2).unwrap().trim(),
        "# (12 unchanged elements hidden)",
        "{text}"
    );
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn machine_snapshot() -> String {
    let run = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    [
        run(&["ip", "-o", "link"]),
        run(&["ip", "netns", "list"]),
        run(&["nft", "list", "tables"]),
    ]
    .join("\n")
}

#[test]
fn unprivileged_plan_changes_nothing() {
    assert!(
        is_root(),
        "unprivileged_plan_changes_nothing needs root (to run plan as the nobody user): run it \
         as root, e.g. `sudo -E env PATH=$PATH cargo test --test plan_cli`"
    );
    let file = root().join("examples/quickstart/compose.yaml");
    let before = machine_snapshot();
    // The binary and the example must be readable by nobody: copy both to a world-readable place.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("netcompose");
    std::fs::copy(env!("CARGO_BIN_EXE_netcompose"), &exe).unwrap();
    let compose = dir.path().join("compose.yaml");
    std::fs::copy(&file, &compose).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "-f",
            compose.to_str().unwrap(),
            "plan",
            "--detailed-exitcode",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("to add"));
    assert_eq!(before, machine_snapshot(), "plan changed the machine");
}
