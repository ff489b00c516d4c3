//! Failure drills with real packets (issue 12): `netcompose link SERVICE NETWORK down` cuts a
//! replica off, `plan` shows the link as drift, and `link ... up` or `up` restores it.

mod common;

use common::project::Project;
use common::sandbox::{require_root, Sandbox};

const LAB: &str = "
services:
  web:
    networks: [front]
  client:
    networks: [front]
networks:
  front: {}
";

fn reach(p: &Project, addr: &str) -> String {
    p.probe(Some(("client", 1)), &["icmp", addr])
        .first()
        .cloned()
        .unwrap_or_default()
}

/// `plan --detailed-exitcode`: 0 without changes, 2 with; and what it printed.
fn plan(p: &Project) -> (i32, String) {
    let out = p.nc(&["plan", "--detailed-exitcode"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_link_taken_down_is_unreachable_drift_and_repaired() {
    require_root("a_link_taken_down_is_unreachable_drift_and_repaired");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "ncdrill", LAB);
    p.up();
    let web = p.addr("web", 1, "front");
    assert_eq!(reach(&p, &web), "open");

    let said = p.nc_ok(&["link", "web", "front", "down"]);
    assert!(said.contains("web-1 front: down"), "{said}");
    assert_eq!(reach(&p, &web), "blocked");
    let (code, text) = plan(&p);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("service.web[1].link.front"), "{text}");
    assert!(text.contains("down"), "{text}");

    p.nc_ok(&["link", "web:1", "front", "up"]);
    assert_eq!(reach(&p, &web), "open");
    let (code, text) = plan(&p);
    assert_eq!(code, 0, "{text}");

    p.nc_ok(&["link", "web", "front", "down"]);
    assert_eq!(reach(&p, &web), "blocked");
    p.up();
    assert_eq!(reach(&p, &web), "open");
    assert_eq!(plan(&p).0, 0);
}

#[test]
fn a_drill_on_what_the_project_lacks_says_what_it_has() {
    require_root("a_drill_on_what_the_project_lacks_says_what_it_has");
    let sb = Sandbox::new();
    let p = Project::new(&sb, "ncdrill2", LAB);
    let out = p.nc(&["link", "web", "back", "down"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not attached to network `back`"), "{err}");
    let out = p.nc(&["link", "web:3", "front", "down"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replica 3"));
    let out = p.nc(&["link", "web", "front", "down"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no link service.web[1].link.front"), "{err}");
}
