//! Compose's everyday commands through the binary in a sandbox host (issue 13): `up -d
//! --scale` for one run (and `ps`/`exec` seeing its replicas), `ls` with its status and files, `port`, `--dry-run` for `up` and
//! `down` changing nothing, and a bad `--scale` refused before anything is applied.
//!
//! Every test builds its own sandbox host; needs root.

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::require_root;
use lab::{text, Lab};

const DEMO: &str = r#"
name: cm
networks:
  front:
    ipam: {config: [{subnet: 10.76.1.0/24}]}
services:
  web:
    networks: [front]
    ports: ["8080:80", "127.0.0.1:5353:53/udp"]
  client:
    networks: [front]
"#;

fn namespaces(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&lab.sh(&["ip", "netns", "list"]).stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    v.sort();
    v
}

#[test]
fn scale_ls_port_and_dry_run() {
    require_root("scale_ls_port_and_dry_run");
    let lab = Lab::new("nc-cmds-");
    let f = lab.file("compose.yaml", DEMO);

    // A dry run shows the plan and builds nothing.
    let out = lab.nc(&f, &["--dry-run", "up", "-d", "--scale", "web=3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("+ service.web[3]"), "{}", text(&out));
    assert!(namespaces(&lab).is_empty(), "a dry run built namespaces");
    assert!(!lab
        .sh(&["test", "-e", "/var/lib/netcompose/cm"])
        .status
        .success());

    lab.nc_ok(&f, &["up", "-d", "--scale", "web=3"]);
    assert_eq!(
        namespaces(&lab),
        ["cm-client-1", "cm-web-1", "cm-web-2", "cm-web-3"]
    );

    // ps and exec show and enter the replicas that exist, not only those the file names.
    let ps: serde_json::Value = serde_json::from_str(&lab.nc_ok(&f, &["ps", "--json"])).unwrap();
    let web: Vec<(u64, bool)> = ps["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "web")
        .map(|r| (r["replica"].as_u64().unwrap(), r["running"] == true))
        .collect();
    assert_eq!(web, [(1, true), (2, true), (3, true)]);
    lab.nc_ok(&f, &["exec", "web", "--index", "3", "--", "true"]);

    // An unknown service or a bad count: exit 1, nothing applied.
    for bad in ["nope=2", "web=many", "web"] {
        let out = lab.nc(&f, &["up", "--scale", bad]);
        assert_eq!(out.status.code(), Some(1), "--scale {bad}: {}", text(&out));
        assert!(text(&out).contains("--scale"), "{}", text(&out));
        assert_eq!(
            namespaces(&lab).len(),
            4,
            "--scale {bad} changed the machine"
        );
    }

    let ls: serde_json::Value = serde_json::from_str(&lab.nc_ok(&f, &["ls", "--json"])).unwrap();
    assert_eq!(
        ls,
        serde_json::json!([{
            "Name": "cm",
            "Status": "running(4)",
            "ConfigFiles": f.display().to_string(),
        }])
    );
    let table = lab.nc_ok(&f, &["ls"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("cm    running(4)"), "{table}");

    assert_eq!(lab.nc_ok(&f, &["port", "web", "80"]), "0.0.0.0:8080\n");
    assert_eq!(
        lab.nc_ok(&f, &["port", "web", "53/udp", "--index", "2"]),
        "127.0.0.1:5353\n"
    );
    let out = lab.nc(&f, &["port", "web", "80", "--index", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no replica 4"), "{}", text(&out));
    let out = lab.nc(&f, &["port", "web", "53"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not published"), "{}", text(&out));

    // down --dry-run lists what would go and leaves it.
    let out = lab.nc(&f, &["--dry-run", "down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("- service.web[3]"), "{}", text(&out));
    assert_eq!(namespaces(&lab).len(), 4);

    // Without --scale, `up` goes back to the file's count, as Compose does.
    lab.nc_ok(&f, &["up", "-d"]);
    assert_eq!(namespaces(&lab), ["cm-client-1", "cm-web-1"]);
    let ps: serde_json::Value = serde_json::from_str(&lab.nc_ok(&f, &["ps", "--json"])).unwrap();
    assert_eq!(ps["replicas"].as_array().unwrap().len(), 2, "{ps}");

    lab.nc_ok(&f, &["down"]);
    assert_eq!(lab.nc_ok(&f, &["ls", "--json"]).trim(), "[]");
    // As Compose's `port` needs a running container, ours needs the project up.
    let out = lab.nc(&f, &["port", "web", "80"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not up"), "{}", text(&out));
}

#[test]
fn ls_reads_state_files_written_before_files_were_recorded() {
    require_root("ls_reads_state_files_written_before_files_were_recorded");
    let lab = Lab::new("nc-cmdls-");
    let f = lab.file("compose.yaml", DEMO);
    lab.sh_ok(&["mkdir", "-p", "/var/lib/netcompose/old"]);
    lab.sb.write_file(
        "/var/lib/netcompose/old/state.json",
        r#"{"format_version":1,"project":"old","allocations":{"networks":{}},"resources":[]}"#,
    );
    let out = lab.nc_ok(&f, &["ls"]);
    assert_eq!(out, "NAME  STATUS   CONFIG FILES\nold   running\n");
}

/// README's tour: what its comments say `port`, `ls` and `--scale` print for the quickstart.
#[test]
fn the_readme_tour_says_what_these_commands_print() {
    require_root("the_readme_tour_says_what_these_commands_print");
    let lab = Lab::new("nc-cmdtour-");
    let f =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/compose.yaml");
    lab.nc_ok(&f, &["up", "-d"]);
    assert_eq!(lab.nc_ok(&f, &["port", "web", "80"]), "0.0.0.0:8080\n");
    let ls = lab.nc_ok(&f, &["ls"]);
    let row = format!("quickstart  running(5)  {}\n", f.display());
    assert!(ls.ends_with(&row), "{ls}");
    lab.nc_ok(&f, &["up", "-d", "--scale", "web=5"]);
    assert!(lab.nc_ok(&f, &["ls"]).contains("running(7)"));
    lab.nc_ok(&f, &["up", "-d"]);
    assert!(lab.nc_ok(&f, &["ls"]).contains("running(5)"));
    lab.nc_ok(&f, &["down"]);
}
