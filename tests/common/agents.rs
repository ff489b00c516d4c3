//! One `netcompose agent` per host of a [`Cluster`], started inside its host with its stderr
//! in a file, killed (SIGKILL) by [`Drop`], also on panic. Node i is `n<i>`, on host i's
//! underlay address, with a lease of [`TTL`] seconds.

use super::cluster::{underlay_ip, Cluster};
use std::process::{Child, Stdio};

/// The agents' lease in tests (etcd's minimum is 2 s).
pub const TTL: u64 = 2;

pub fn node(i: usize) -> String {
    format!("n{i}")
}

/// The agents of a cluster.
pub struct Agents {
    running: Vec<Option<Child>>,
    logs: tempfile::TempDir,
}

impl Agents {
    pub fn start(cluster: &Cluster, labels: &[&[&str]]) -> Agents {
        let mut agents = Agents {
            running: (0..cluster.len()).map(|_| None).collect(),
            logs: tempfile::tempdir().unwrap(),
        };
        for i in 0..cluster.len() {
            agents.launch(cluster, i, labels.get(i).copied().unwrap_or(&[]));
        }
        agents
    }

    pub fn launch(&mut self, cluster: &Cluster, i: usize, labels: &[&str]) {
        let url = cluster.store_url();
        let (name, ttl, underlay) = (node(i), format!("{TTL}s"), underlay_ip(i));
        let mut args = vec![
            "--store",
            url.as_str(),
            "agent",
            "--node",
            name.as_str(),
            "--underlay",
            underlay.as_str(),
            "--ttl",
            ttl.as_str(),
            "--insecure-store",
        ];
        for l in labels {
            args.extend(["--label", l]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join(format!("{name}.log")))
            .unwrap();
        let child = cluster
            .host(i)
            .command(env!("CARGO_BIN_EXE_netcompose"), &args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        self.running[i] = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.running[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
        (0..self.running.len())
            .map(|i| {
                let p = self.logs.path().join(format!("{}.log", node(i)));
                format!(
                    "--- {}:\n{}",
                    node(i),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for i in 0..self.running.len() {
            self.kill(i);
        }
    }
}
