//! One `netcompose agent` per host of a [`Cluster`], started inside its host with its stderr
//! in a file, killed (SIGKILL) by [`Drop`], also on panic. Node i is `n<i>`, on host i's
//! underlay address, with a lease of [`TTL`] seconds. Also what the agents' tests read of
//! the store and of the hosts.

use super::cluster::{underlay_ip, Cluster};
use std::collections::BTreeMap;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// The agents' lease in tests (etcd's minimum is 2 s).
pub const TTL: u64 = 2;

pub fn node(i: usize) -> String {
    format!("n{i}")
}

/// The agents of a cluster.
pub struct Agents {
    running: Vec<Option<Child>>,
    logs: tempfile::TempDir,
    /// Their lease, in seconds.
    ttl: u64,
}

impl Agents {
    pub fn start(cluster: &Cluster, labels: &[&[&str]]) -> Agents {
        Agents::start_with_ttl(cluster, labels, TTL)
    }

    /// [`Agents::start`] with leases of `ttl` seconds (a test that stops an agent for a while
    /// without losing its lease).
    pub fn start_with_ttl(cluster: &Cluster, labels: &[&[&str]], ttl: u64) -> Agents {
        let mut agents = Agents {
            running: (0..cluster.len()).map(|_| None).collect(),
            logs: tempfile::tempdir().unwrap(),
            ttl,
        };
        for i in 0..cluster.len() {
            agents.launch(cluster, i, labels.get(i).copied().unwrap_or(&[]));
        }
        // A run started before an agent registered would find no live node.
        let nodes = format!("{ROOT}nodes/");
        until(&agents, "every agent registered its node", || {
            cluster.keys(&nodes).len() == cluster.len()
        });
        // Nor does a test start while the agents' VXLAN probes still write their first
        // findings (`health/<node>`, once the peers answer).
        if cluster.len() > 1 {
            let health = format!("{ROOT}health/");
            until(&agents, "every agent's probe reported", || {
                cluster.keys(&health).len() == cluster.len()
            });
        }
        agents
    }

    pub fn launch(&mut self, cluster: &Cluster, i: usize, labels: &[&str]) {
        let url = cluster.store_url();
        let (name, ttl, underlay) = (node(i), format!("{}s", self.ttl), underlay_ip(i));
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

    /// Send `signal` to agent `i` (SIGSTOP holds it where it is, SIGCONT lets it go on; a
    /// stopped agent is still killed by the guard).
    pub fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(c) = &self.running[i] {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            nix::sys::signal::kill(pid, signal).expect("signal the agent");
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

pub const ROOT: &str = "/netcompose/v1/";
/// How long a test waits for something the agents do before it fails (a deadline, not a
/// measurement: the figures come from bench/cluster.sh).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A project name unique to this test process (cgroups are machine-wide).
pub fn project(tag: &str) -> String {
    format!("ag{}{tag}", std::process::id())
}

pub fn ok(out: &Output, what: &str, agents: &Agents) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agents.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `f` holds, or fail with `what` and the agents' logs.
pub fn until(agents: &Agents, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "{what}\n{}", agents.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Every key under `prefix` and its value.
pub fn values(cluster: &Cluster, prefix: &str) -> BTreeMap<String, String> {
    let prefix = prefix.to_string();
    cluster
        .with_client(cluster.running_endpoints(), move |mut c| {
            Box::pin(async move {
                let resp = c
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
                    .expect("etcd get");
                resp.kvs()
                    .iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            String::from_utf8_lossy(kv.value()).into_owned(),
                        )
                    })
                    .collect()
            })
        })
        .expect("connect to etcd")
}

pub fn live_nodes(cluster: &Cluster) -> Vec<String> {
    values(cluster, &format!("{ROOT}nodes/"))
        .keys()
        .map(|k| k.trim_start_matches(&format!("{ROOT}nodes/")).to_string())
        .collect()
}

/// The stored placement of `project`: replica (`web[1]`) → node.
pub fn placement(cluster: &Cluster, project: &str) -> BTreeMap<String, String> {
    let v = values(cluster, &format!("{ROOT}projects/{project}/placement"));
    let Some(text) = v.values().next() else {
        return BTreeMap::new();
    };
    let p: serde_json::Value = serde_json::from_str(text).unwrap();
    p["assignment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

pub fn namespaces(cluster: &Cluster, i: usize) -> Vec<String> {
    let out = cluster.host(i).run(&["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

pub fn compose(dir: &std::path::Path, name: &str, body: &str) -> String {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, format!("name: {name}\n{body}")).unwrap();
    file.display().to_string()
}

/// The address IPAM gave `owner` (`web[2]`) on `network` of `project`, once `up` wrote it.
pub fn address(cluster: &Cluster, project: &str, network: &str, owner: &str) -> Option<String> {
    let key = format!("{ROOT}projects/{project}/allocations");
    let text = values(cluster, &key).remove(&key)?;
    let a: serde_json::Value = serde_json::from_str(&text).ok()?;
    a["networks"][network]["addresses"][owner][0]
        .as_str()
        .map(String::from)
}

/// The revision `node` last reported for `project` (None: no report).
pub fn status_revision(cluster: &Cluster, project: &str, node: &str) -> Option<i64> {
    let key = format!("{ROOT}projects/{project}/status/{node}");
    let text = values(cluster, &key).remove(&key)?;
    let s: serde_json::Value = serde_json::from_str(&text).ok()?;
    s["revision"].as_i64()
}

/// The overlay's VXLAN device on host `h` (not the agent's probe device).
fn overlay_device(cluster: &Cluster, h: usize) -> Option<String> {
    let links = cluster
        .host(h)
        .run_ok(&["ip", "-o", "link", "show", "type", "vxlan"]);
    links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .find(|d| *d != "ncprobe")
        .map(String::from)
}

/// The overlay's forwarding entries on host `h` (`bridge fdb` on its VXLAN device).
pub fn fdb(cluster: &Cluster, h: usize) -> String {
    let Some(dev) = overlay_device(cluster, h) else {
        return String::new();
    };
    cluster
        .host(h)
        .run_ok(&["bridge", "fdb", "show", "dev", &dev])
}

/// The overlay's neighbour entries on host `h` (`ip neigh` on its VXLAN device: the overlay's,
/// not the agent's probe device).
pub fn neighbours(cluster: &Cluster, h: usize) -> String {
    let Some(dev) = overlay_device(cluster, h) else {
        return String::new();
    };
    cluster
        .host(h)
        .run_ok(&["ip", "neigh", "show", "dev", &dev])
}

/// The MAC stored for `owner` (`web[1]`) on `network` of `project`, once allocated.
pub fn mac(cluster: &Cluster, project: &str, network: &str, owner: &str) -> Option<String> {
    let key = format!("{ROOT}projects/{project}/allocations");
    let text = values(cluster, &key).remove(&key)?;
    let a: serde_json::Value = serde_json::from_str(&text).ok()?;
    a["networks"][network]["macs"][owner]
        .as_str()
        .map(String::from)
}
