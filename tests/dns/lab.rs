//! The harness of the resolver and daemon tests: a [`Sandbox`] host, a directory of Compose
//! files, `netcompose` run inside, `dig` run in a replica's namespace, and a fake upstream DNS
//! server (tests/dns/fake_upstream.py) in a namespace of the sandbox.

#![allow(dead_code)]

use crate::common::Sandbox;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub sb: Sandbox,
}

/// A background process, killed when dropped.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `dig` said.
#[derive(Debug, Clone)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    /// The data of the answer section (addresses, PTR names), sorted.
    pub answers: Vec<String>,
    /// TTLs of the answer section.
    pub ttls: Vec<u32>,
    pub elapsed: Duration,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

pub fn parse_dig(raw: &str, elapsed: Duration) -> Dig {
    let mut status = String::new();
    let mut flags = Vec::new();
    let mut answers = Vec::new();
    let mut ttls = Vec::new();
    let mut in_answer = false;
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            status = rest.split(',').next().unwrap_or("").trim().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() {
                in_answer = false;
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                ttls.push(f[1].parse().unwrap_or(0));
                answers.push(f[4..].join(" "));
            }
        }
    }
    answers.sort();
    Dig {
        status,
        flags,
        answers,
        ttls,
        elapsed,
        raw: raw.to_string(),
    }
}

impl Lab {
    pub fn new(prefix: &str) -> Lab {
        Lab {
            dir: tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("temp dir"),
            sb: Sandbox::new(),
        }
    }

    /// Write a file readable inside the sandbox (/tmp is shared) and return its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }

    /// `netcompose -f FILE ARGS...` inside the sandbox.
    pub fn nc(&self, file: &Path, args: &[&str]) -> Output {
        let mut all: Vec<OsString> = vec!["-f".into(), file.into()];
        all.extend(args.iter().map(OsString::from));
        self.sb.netcompose(&all)
    }

    pub fn nc_ok(&self, file: &Path, args: &[&str]) -> String {
        let out = self.nc(file, args);
        assert!(
            out.status.success(),
            "`netcompose {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        text(&out)
    }

    /// A command in the sandbox host.
    pub fn sh(&self, args: &[&str]) -> Output {
        self.sb.run(args)
    }

    pub fn sh_ok(&self, args: &[&str]) -> String {
        self.sb.run_ok(args)
    }

    /// A command in a replica's namespace, with its /etc/netns files (`ip netns exec`).
    pub fn in_ns(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        self.sb.run(&all)
    }

    /// `dig @127.0.0.11 NAME [TYPE] [EXTRA...]` from namespace `ns` (one try, 4 s).
    pub fn dig(&self, ns: &str, name: &str, extra: &[&str]) -> Dig {
        let mut args = vec!["dig", "+tries=1", "+timeout=4", "@127.0.0.11", name];
        args.extend_from_slice(extra);
        let start = Instant::now();
        let out = self.in_ns(ns, &args);
        parse_dig(&String::from_utf8_lossy(&out.stdout), start.elapsed())
    }

    /// `dig -x IP` from `ns`.
    pub fn ptr(&self, ns: &str, ip: &str) -> Dig {
        let args = ["dig", "+tries=1", "+timeout=4", "@127.0.0.11", "-x", ip];
        let start = Instant::now();
        let out = self.in_ns(ns, &args);
        parse_dig(&String::from_utf8_lossy(&out.stdout), start.elapsed())
    }

    /// The addresses `dig` finds for `name` from `ns` (A records).
    pub fn addrs(&self, ns: &str, name: &str) -> Vec<String> {
        self.dig(ns, name, &[]).answers
    }

    /// `getent hosts NAME` from `ns`: the addresses, sorted (empty when it does not resolve).
    pub fn getent(&self, ns: &str, name: &str) -> Vec<String> {
        let out = self.in_ns(ns, &["getent", "ahostsv4", name]);
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("STREAM"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The daemon's pid, from its pid file in the sandbox.
    pub fn daemon_pid(&self, project: &str) -> Option<u32> {
        let out = self.sh(&["cat", &format!("/run/netcompose/{project}/daemon.pid")]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// Whether a process is alive (seen from the sandbox).
    /// (A zombie is dead: the machine's init may be slow to reap the detached daemon.)
    pub fn alive(&self, pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    }

    /// Start the fake upstream in the outside namespace on `addr:53` (the sandbox host's
    /// resolv.conf names 198.18.0.1); its queries are logged to the returned path.
    pub fn fake_upstream_outside(&self, addr: &str) -> (Bg, PathBuf) {
        let script = self.fake_script();
        let log = self.dir.path().join("upstream.log");
        std::fs::write(&log, "").unwrap();
        // The outside namespace is pinned outside the sandbox: enter it by its path.
        let mut cmd = std::process::Command::new("nsenter");
        let mut mnt = OsString::from("--mount=");
        mnt.push(self.sb.mount_ns_path());
        let mut net = OsString::from("--net=");
        net.push(self.sb.outside_netns_path());
        cmd.arg(mnt).arg(net).arg("--").args([
            "python3",
            script.to_str().unwrap(),
            addr,
            "53",
            log.to_str().unwrap(),
        ]);
        cmd.stdin(Stdio::null());
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the fake upstream");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        assert_eq!(line.trim(), "ready", "the fake upstream did not start");
        (Bg(child), log)
    }

    /// The fake upstream's script, copied next to the Compose files.
    pub fn fake_script(&self) -> PathBuf {
        self.file("fake_upstream.py", include_str!("fake_upstream.py"))
    }

    /// Lines of the fake upstream's query log.
    pub fn upstream_queries(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}
