//! A Compose project inside a [`Sandbox`]: write the file, run netcompose on it, start the test
//! services (tests/support/echo_server.py) in its replicas, and probe from them
//! (tests/support/probe.py).

use super::sandbox::Sandbox;
use std::path::PathBuf;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

pub struct Project<'s> {
    pub sb: &'s Sandbox,
    pub name: String,
    _dir: tempfile::TempDir,
    pub file: PathBuf,
}

pub fn support(script: &str) -> String {
    format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"))
}

impl<'s> Project<'s> {
    pub fn new(sb: &'s Sandbox, name: &str, yaml: &str) -> Project<'s> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, format!("name: {name}\n{yaml}")).expect("write compose file");
        Project {
            sb,
            name: name.to_string(),
            _dir: dir,
            file,
        }
    }

    /// Replace the file's contents (same project name).
    pub fn rewrite(&self, yaml: &str) {
        std::fs::write(&self.file, format!("name: {}\n{yaml}", self.name))
            .expect("rewrite compose file");
    }

    pub fn nc(&self, args: &[&str]) -> Output {
        let mut all = vec!["-f", self.file.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        self.sb.netcompose(&all)
    }

    /// Run netcompose and insist that it succeeds; returns stdout.
    pub fn nc_ok(&self, args: &[&str]) -> String {
        let out = self.nc(args);
        assert!(
            out.status.success(),
            "netcompose {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn up(&self) -> String {
        self.nc_ok(&["up"])
    }

    pub fn ns(&self, service: &str, n: u32) -> String {
        format!("{}-{service}-{n}", self.name)
    }

    pub fn ps(&self) -> serde_json::Value {
        serde_json::from_str(&self.nc_ok(&["ps", "--json"])).expect("ps --json")
    }

    /// The first address of a replica on `network`.
    pub fn addr(&self, service: &str, n: u32, network: &str) -> String {
        let ps = self.ps();
        let replica = ps["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["service"] == service && r["replica"] == n)
            .cloned()
            .unwrap_or_default();
        let iface = replica["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["network"] == network)
            .cloned()
            .unwrap_or_default();
        iface["addresses"][0]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn vip(&self, service: &str, network: &str) -> String {
        let ps = self.ps();
        let vip = ps["vips"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["service"] == service && v["network"] == network)
            .cloned()
            .unwrap_or_default();
        vip["address"].as_str().unwrap_or_default().to_string()
    }

    /// Start the echo service (TCP and UDP `port`) in a replica, answering as `label`.
    pub fn serve(&self, service: &str, n: u32, port: u16) -> Child {
        let ns = self.ns(service, n);
        let label = format!("{service}-{n}");
        self.sb.spawn(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "python3",
            &support("echo_server.py"),
            &label,
            &port.to_string(),
        ])
    }

    /// Run probe.py in a replica (`None`: in the sandbox host); its output lines.
    pub fn probe(&self, from: Option<(&str, u32)>, args: &[&str]) -> Vec<String> {
        let script = support("probe.py");
        let mut cmd: Vec<String> = match from {
            Some((s, n)) => vec!["ip".into(), "netns".into(), "exec".into(), self.ns(s, n)],
            None => vec![],
        };
        cmd.extend(["python3".to_string(), script]);
        cmd.extend(args.iter().map(|a| a.to_string()));
        let out = self.sb.run(&cmd);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Wait until a TCP probe from `from` to `addr:port` gets an answer.
    pub fn wait_open(&self, from: Option<(&str, u32)>, addr: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .probe(from, &["tcp", addr, &port.to_string()])
                .first()
                .is_some_and(|l| l != "blocked")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{addr}:{port} never answered");
    }
}
