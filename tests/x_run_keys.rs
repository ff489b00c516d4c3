//! `x-run` processes honour their service's `user`, `working_dir`, `environment`,
//! `security_opt: [no-new-privileges]` and `cap_add`/`cap_drop` (issue 13), as the kernel
//! reports them in /proc.
//!
//! Builds its own sandbox host; needs root (else it fails, saying so).

mod common;
#[path = "dns/lab.rs"]
mod lab;

use common::{require_root, wait_for};
use lab::Lab;
use std::time::Duration;

const KEYS: &str = r#"
name: xk
networks:
  front:
    ipam: {config: [{subnet: 10.74.9.0/24}]}
services:
  app:
    networks: [front]
    user: "65534:65534"
    security_opt: [no-new-privileges]
    cap_drop: [ALL]
    cap_add: [NET_RAW]
    environment: {FOO: bar}
    working_dir: /tmp
    x-run: [sleep, "1003"]
"#;

/// What `args` prints inside the sandbox.
fn out(lab: &Lab, args: &[&str]) -> String {
    String::from_utf8_lossy(&lab.sh(args).stdout).into_owned()
}

/// The value of `key:` in a /proc/PID/status text.
fn field<'s>(status: &'s str, key: &str) -> &'s str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
}

#[test]
fn x_run_honours_user_directory_environment_and_privileges() {
    require_root("x_run_honours_user_directory_environment_and_privileges");
    let lab = Lab::new("nc-xkeys-");
    let f = lab.file("compose.yaml", KEYS);
    lab.nc_ok(&f, &["up"]);
    let mut pid = String::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            pid = out(&lab, &["pgrep", "-f", "^sleep 1003"])
                .trim()
                .to_string();
            !pid.is_empty()
        }),
        "the x-run process never started"
    );
    let status = out(&lab, &["cat", &format!("/proc/{pid}/status")]);
    let words = |k| field(&status, k).split_whitespace().collect::<Vec<_>>();
    assert_eq!(words("Uid"), ["65534"; 4], "{status}");
    assert_eq!(words("Gid"), ["65534"; 4], "{status}");
    assert_eq!(field(&status, "Groups"), "65534", "{status}");
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    let net_raw = format!("{:016x}", 1u64 << 13);
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(field(&status, set), net_raw, "{set}: {status}");
    }
    let environ = out(&lab, &["cat", &format!("/proc/{pid}/environ")]);
    assert!(environ.split('\0').any(|v| v == "FOO=bar"), "{environ:?}");
    let cwd = out(&lab, &["readlink", &format!("/proc/{pid}/cwd")]);
    assert_eq!(cwd.trim(), "/tmp");
    lab.nc_ok(&f, &["down"]);
}
