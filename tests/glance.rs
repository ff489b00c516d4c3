//! A lab at a glance (issue 13): `up` and `down` show live progress on a terminal and nothing
//! of it when piped; `graph --format svg` draws the topology with graphviz, and once the
//! project is up the picture carries its addresses, VIPs, published ports and process states.
//!
//! The tests that run a project build their own sandbox host and need root.

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::require_root;
use lab::{text, Lab};
use netcompose::load::LoadOptions;
use netcompose::model::Desired;
use netcompose::spec::Project;
use netcompose::topology::{render, GraphFormat, Process, Running};

/// The lab under project `name`: tests run at once, and a project's cgroups are the machine's.
fn lab(name: &str) -> String {
    LAB.replace("@NAME@", name)
}

const LAB: &str = r#"
name: @NAME@
networks:
  front:
    ipam: {config: [{subnet: 10.77.1.0/24}]}
  back:
    internal: true
    ipam: {config: [{subnet: 10.77.2.0/24}]}
services:
  web:
    deploy: {replicas: 4}
    networks: [front, back]
    ports: ["8080:80"]
    x-run: ["sleep", "infinity"]
  db:
    networks: [back]
  client:
    networks: [front]
"#;

/// Piped, `up` and `down` print their summary and no status line, carriage return or escape.
#[test]
fn piped_up_and_down_show_no_progress() {
    require_root("piped_up_and_down_show_no_progress");
    let lab = Lab::new("nc-glance-");
    let f = lab.file("compose.yaml", &self::lab("gl-piped"));
    for args in [&["up", "-d"][..], &["down"][..]] {
        let out = lab.nc(&f, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let all = text(&out);
        assert!(!all.contains('\x1b') && !all.contains('\r'), "{all:?}");
        assert!(!all.contains(" done"), "{all:?}");
        assert!(!all.contains(" ms)"), "a line per resource: {all:?}");
    }
}

/// On a terminal, the status line (if the run lasted long enough to draw one) is erased before
/// the summary, and says how many operations are done out of how many; resources get a line
/// of their own only when they were slow.
#[test]
fn a_terminal_gets_a_status_line_that_is_erased() {
    require_root("a_terminal_gets_a_status_line_that_is_erased");
    let lab = Lab::new("nc-glance-");
    let f = lab.file("compose.yaml", &self::lab("gl-tty"));
    // Enough replicas that the run likely lasts long enough to draw the line.
    let up = "up -d --scale web=60";
    for (verb, summary) in [(up, "Applied in "), ("down", "Removed project gl-tty")] {
        let command = format!(
            "{} -f {} {verb}",
            env!("CARGO_BIN_EXE_netcompose"),
            f.display()
        );
        // `script` runs the command on a pseudo-terminal and copies what it writes.
        let out = lab
            .sb
            .command("script", &["-qec", &command, "/dev/null"])
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .env_remove("COLUMNS")
            .output()
            .unwrap();
        let all = text(&out);
        assert!(out.status.success(), "{verb}: {all:?}");
        let end = all.find(summary).unwrap_or_else(|| panic!("{all:?}"));
        let before = &all[..end];
        if let Some(last) = before.rfind("\x1b[K") {
            assert!(before[..last].ends_with('\r'), "not erased: {all:?}");
            let drawn = before
                .split('\r')
                .find(|l| l.ends_with("\x1b[K") && l.len() > 3)
                .unwrap_or_else(|| panic!("{all:?}"));
            let (count, _) = drawn
                .split_once(" done")
                .unwrap_or_else(|| panic!("{drawn:?}"));
            let (done, total) = count.split_once('/').unwrap_or_else(|| panic!("{drawn:?}"));
            assert!(done.parse::<usize>().unwrap() <= total.parse::<usize>().unwrap());
        }
        // The terminal ends lines with \r\n.
        let lines = before.lines().map(|l| l.trim_end_matches('\r'));
        for line in lines.filter(|l| l.ends_with(" ms)")) {
            let ms: u64 = line
                .rsplit_once('(')
                .and_then(|(_, ms)| ms.strip_suffix(" ms)"))
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("{line:?}"));
            assert!(ms >= 1000, "a fast resource got a line: {line:?}");
        }
    }
}

/// The text of every `<text>` element of an SVG, which must parse as XML.
fn svg_texts(svg: &[u8]) -> Vec<String> {
    let svg = std::str::from_utf8(svg).expect("an SVG is text");
    // graphviz declares the SVG 1.1 DTD.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, options)
        .unwrap_or_else(|e| panic!("{e}: {svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(String::from))
        .collect()
}

/// The SVG names every service, and once the project is up says so and carries its
/// addresses, VIPs, published port and x-run processes; the PNG is a PNG.
#[test]
fn svg_names_every_service_and_once_up_what_runs() {
    require_root("svg_names_every_service_and_once_up_what_runs");
    let lab = Lab::new("nc-glance-");
    let f = lab.file("compose.yaml", &self::lab("gl-svg"));
    let svg = |lab: &Lab| {
        let out = lab.nc(&f, &["graph", "--format", "svg"]);
        assert!(out.status.success(), "{}", text(&out));
        svg_texts(&out.stdout)
    };
    let planned = svg(&lab);
    for service in ["web ×4", "db ×1", "client ×1"] {
        assert!(
            planned.iter().any(|t| t == service),
            "{service}: {planned:?}"
        );
    }
    assert!(
        planned.iter().any(|t| t == "gl-svg (planned, not up)"),
        "{planned:?}"
    );

    lab.nc_ok(&f, &["up", "-d"]);
    let up = svg(&lab);
    let has = |what: &str| up.iter().any(|t| t.contains(what));
    assert!(has("gl-svg (up, live)"), "{up:?}");
    for service in ["web ×4", "db ×1", "client ×1"] {
        assert!(up.iter().any(|t| t == service), "{service}: {up:?}");
    }
    assert!(has("10.77.1.") && has("10.77.2."), "addresses: {up:?}");
    assert!(has("VIP 10.77.1."), "{up:?}");
    assert!(has("8080→80/tcp"), "{up:?}");
    assert!(has("x-run: ") && has(" running"), "{up:?}");

    let png = lab.nc(&f, &["graph", "--format", "png"]);
    assert!(png.status.success(), "{}", text(&png));
    assert!(png.stdout.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    lab.nc_ok(&f, &["down"]);
}

/// Without graphviz: exit 1 with a hint, before anything is planned.
#[test]
fn without_dot_the_picture_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, lab("gl-nodot")).unwrap();
    for format in ["svg", "png"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_netcompose"))
            .arg("-f")
            .arg(&file)
            .args(["graph", "--format", format])
            .env("PATH", dir.path())
            .output()
            .unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("`dot`, which is not on PATH"), "{all}");
        assert!(all.contains("apt-get install graphviz"), "{all}");
        assert!(out.stdout.is_empty(), "{all}");
    }
}

/// The quickstart example as the renderer gets it, for the tests of the picture's text (no
/// root: nothing runs).
fn quickstart() -> (Project, Desired) {
    let opts = LoadOptions {
        files: vec![concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/quickstart/compose.yaml"
        )
        .into()],
        environment: Some(Default::default()),
        ..Default::default()
    };
    let checked = netcompose::pipeline::checked_project(&opts).unwrap();
    let desired = netcompose::model::build(&checked.project, &Default::default()).unwrap();
    (checked.project, desired)
}

fn process(service: &str, state: &str, health: Option<&str>) -> Process {
    Process {
        service: service.into(),
        state: state.into(),
        health: health.map(Into::into),
    }
}

#[test]
fn a_planned_project_says_so_and_shows_addresses_vips_and_ports() {
    let (project, desired) = quickstart();
    let dot = render(&project, &desired, None, GraphFormat::Dot);
    assert!(
        dot.contains("label=\"quickstart (planned, not up)\";"),
        "{dot}"
    );
    assert!(dot.contains("\\nVIP 172.16."), "{dot}");
    assert!(dot.contains("[label=\"172.16."), "{dot}");
    assert!(
        dot.contains("host -- svc_web [label=\"8080→80/tcp\"];"),
        "{dot}"
    );
    assert!(!dot.contains("x-run:"), "{dot}");
}

#[test]
fn an_up_project_shows_its_processes_by_state_and_health() {
    let (project, desired) = quickstart();
    let running = Running {
        source: "live".into(),
        processes: vec![
            process("web", "running", Some("healthy")),
            process("web", "exited", None),
            process("web", "running", Some("healthy")),
            process("db", "running", None),
        ],
    };
    let dot = render(&project, &desired, Some(&running), GraphFormat::Dot);
    assert!(dot.contains("label=\"quickstart (up, live)\";"), "{dot}");
    assert!(
        dot.contains("\\nx-run: 1 exited, 2 running (healthy)\"];"),
        "{dot}"
    );
    assert!(dot.contains("\\nx-run: 1 running\"];"), "{dot}");
    let mermaid = render(&project, &desired, Some(&running), GraphFormat::Mermaid);
    assert!(
        mermaid.starts_with("---\ntitle: quickstart (up, live)\n---\nflowchart LR\n"),
        "{mermaid}"
    );
    assert!(mermaid.contains("<br/>x-run: 1 running"), "{mermaid}");
}
