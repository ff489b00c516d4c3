//! Several sandbox hosts on one underlay, with a 3-member etcd: the fixture of multi-host
//! tests.
//!
//! Each host is a [`Sandbox`] (its own network and mount namespaces, private /run/netns,
//! /etc/netns, /var/lib/netcompose and /run/netcompose). An underlay namespace
//! `ncc-<pid>-<n>-ul` holds a bridge `ul0`; each host joins it by a veth whose host end is
//! `u0`, addressed 10.231.0.<i+1>/24 (private, and only inside these namespaces). One etcd
//! member runs in each host on its underlay address (client port 2379, peer port 2380), with
//! its data in a temporary directory.
//!
//! Containment: every member runs as PID 1 of its own PID namespace (`unshare --pid --fork
//! --kill-child`), and the `nsenter` → `unshare` process that starts it has
//! `PR_SET_PDEATHSIG=SIGKILL`. If the test thread dies, unshare dies, its child (etcd) is
//! killed, and with PID 1 goes everything in that namespace: no crash leaves an etcd behind.
//! [`Drop`] kills the members, drops the sandboxes (which kill whatever else ran in them and
//! free their namespaces), deletes the underlay namespace and the data directories. An
//! underlay namespace whose test process was SIGKILLed is reaped by the next [`Cluster::new`].
//!
//! Cgroups are machine-wide, and one project runs on several hosts here (each with its own
//! daemon in `netcompose/<project>/`): each host gets its own cgroup subtree,
//! `<hierarchy>/<id>-h<i>`, bind-mounted over the hierarchy inside its mount namespace, so
//! the hosts' daemons do not meet; [`Drop`] removes the subtrees once their processes are gone.

use super::sandbox::Sandbox;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The underlay's /24; host i (from 0) is .i+1.
pub const UNDERLAY_NET: &str = "10.231.0";
pub const UNDERLAY_PREFIX: u8 = 24;
/// The host end of each host's underlay veth.
pub const UNDERLAY_IF: &str = "u0";
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// How long a cluster may take to elect a leader (it took under 3 s here).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Hosts, their underlay, and one etcd member per host.
pub struct Cluster {
    hosts: Vec<Sandbox>,
    underlay: String,
    data: tempfile::TempDir,
    members: Vec<Option<Child>>,
    /// Each host's cgroup subtree, as the test process sees it.
    cgroups: Vec<PathBuf>,
}

impl Cluster {
    /// `n` hosts with an etcd member each, the cluster formed (a leader elected).
    pub fn new(n: usize) -> Cluster {
        let mut cluster = Cluster::without_store(n);
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster.wait_for_leader();
        cluster
    }

    /// `n` hosts on the underlay and no etcd (tests that drive each host themselves).
    pub fn without_store(n: usize) -> Cluster {
        reap_stale();
        let id = format!(
            "ncc-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut cluster = Cluster {
            hosts: Vec::new(),
            underlay: format!("{id}-ul"),
            data: tempfile::Builder::new()
                .prefix(&format!("{id}-etcd"))
                .tempdir()
                .expect("temp dir for etcd"),
            members: Vec::new(),
            cgroups: Vec::new(),
        };
        let hierarchy = netcompose::kernel::cgroup::hierarchy()
            .expect("a cgroup v2 hierarchy")
            .path()
            .to_path_buf();
        // From here on, Drop removes whatever exists.
        ip(&["netns", "add", &cluster.underlay]);
        ip(&["-n", &cluster.underlay, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &cluster.underlay,
            "link",
            "add",
            "ul0",
            "type",
            "bridge",
        ]);
        ip(&["-n", &cluster.underlay, "link", "set", "ul0", "up"]);
        for i in 0..n {
            let host = Sandbox::new();
            let port = format!("p{i}");
            let addr = format!("{}/{UNDERLAY_PREFIX}", underlay_ip(i));
            ip(&[
                "-n",
                &cluster.underlay,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_IF,
                "netns",
                host.host_ns(),
            ]);
            ip(&[
                "-n",
                &cluster.underlay,
                "link",
                "set",
                &port,
                "master",
                "ul0",
                "up",
            ]);
            ip(&[
                "-n",
                host.host_ns(),
                "addr",
                "add",
                &addr,
                "dev",
                UNDERLAY_IF,
            ]);
            ip(&["-n", host.host_ns(), "link", "set", UNDERLAY_IF, "up"]);
            let cgroup = hierarchy.join(format!("{id}-h{i}"));
            fs::create_dir(&cgroup).expect("a cgroup for the host");
            cluster.cgroups.push(cgroup.clone());
            host.run_ok(&[
                "mount".as_ref(),
                "--bind".as_ref(),
                cgroup.as_os_str(),
                hierarchy.as_os_str(),
            ]);
            cluster.hosts.push(host);
            cluster.members.push(None);
        }
        cluster
    }

    pub fn host(&self, i: usize) -> &Sandbox {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// `etcd://10.231.0.1:2379,...`: every member.
    pub fn store_url(&self) -> String {
        let members: Vec<String> = (0..self.len())
            .map(|i| format!("{}:{CLIENT_PORT}", underlay_ip(i)))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// The members' client URLs, for etcd-client.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| format!("http://{}:{CLIENT_PORT}", underlay_ip(i)))
            .collect()
    }

    /// Run netcompose on host `i` against the cluster's store.
    pub fn netcompose(&self, i: usize, args: &[&str]) -> Output {
        let url = self.store_url();
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        self.hosts[i].netcompose(&all)
    }

    /// [`Cluster::netcompose`] started, not waited for.
    pub fn spawn_netcompose(&self, i: usize, args: &[&str]) -> Child {
        let url = self.store_url();
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        self.hosts[i]
            .command(env!("CARGO_BIN_EXE_netcompose"), &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netcompose")
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.data.path().join(format!("m{i}"))
    }

    /// Start (or restart, on its data) the member of host `i`.
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} is running");
        let cluster: Vec<String> = (0..self.len())
            .map(|j| format!("m{j}=http://{}:{PEER_PORT}", underlay_ip(j)))
            .collect();
        let me = underlay_ip(i);
        let log = fs::File::create(self.data.path().join(format!("m{i}.log"))).expect("etcd log");
        let data = self.data_dir(i);
        let args: Vec<String> = vec![
            "--pid".into(),
            "--fork".into(),
            "--kill-child".into(),
            "etcd".into(),
            format!("--name=m{i}"),
            format!("--data-dir={}", data.display()),
            format!("--listen-peer-urls=http://{me}:{PEER_PORT}"),
            format!("--initial-advertise-peer-urls=http://{me}:{PEER_PORT}"),
            format!("--listen-client-urls=http://{me}:{CLIENT_PORT}"),
            format!("--advertise-client-urls=http://{me}:{CLIENT_PORT}"),
            format!("--initial-cluster={}", cluster.join(",")),
            "--initial-cluster-state=new".into(),
            format!(
                "--initial-cluster-token={}",
                self.underlay.trim_end_matches("-ul")
            ),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ];
        let mut cmd = self.hosts[i].command("unshare", &args);
        cmd.stdout(log.try_clone().expect("etcd log")).stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        self.members[i] = Some(cmd.spawn().expect("start etcd"));
    }

    /// SIGKILL the member of host `i` (its PID namespace goes with it).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of the process holding member `i`'s PID namespace, if running.
    pub fn member_pid(&self, i: usize) -> Option<u32> {
        self.members[i].as_ref().map(Child::id)
    }

    /// The underlay namespace's name.
    pub fn underlay_ns(&self) -> &str {
        &self.underlay
    }

    /// Host `i`'s cgroup, in the machine's hierarchy: what the host sees as the hierarchy's
    /// root (a project's processes are under `netcompose/<project>/` in it).
    pub fn cgroup(&self, i: usize) -> &Path {
        &self.cgroups[i]
    }

    /// Where the members keep their data.
    pub fn data_path(&self) -> &Path {
        self.data.path()
    }

    /// Run `f` with an etcd client connected to `endpoints`, on a thread inside host 0 (the
    /// underlay is reachable only from the hosts).
    pub fn with_client<R: Send>(
        &self,
        endpoints: Vec<String>,
        f: impl FnOnce(
                etcd_client::Client,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = R> + Send>>
            + Send,
    ) -> Result<R, etcd_client::Error> {
        self.hosts[0].enter(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let client = etcd_client::Client::connect(endpoints, Some(opts)).await?;
                Ok(f(client).await)
            })
        })
    }

    /// Member `i`'s view: (its id, the leader's id), or None if it does not answer.
    fn status(&self, i: usize) -> Option<(u64, u64)> {
        let endpoint = self.endpoints()[i].clone();
        self.with_client(vec![endpoint], |mut c| {
            Box::pin(async move {
                let s = c.status().await.ok()?;
                Some((s.header()?.member_id(), s.leader()))
            })
        })
        .ok()
        .flatten()
    }

    /// The host whose member leads, waiting for an election if there is none yet.
    pub fn leader(&self) -> usize {
        self.wait_for_leader()
    }

    fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            for i in 0..self.len() {
                if self.members[i].is_none() {
                    continue;
                }
                if let Some((me, leader)) = self.status(i) {
                    if me == leader {
                        return i;
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.len())
                    .map(|i| {
                        fs::read_to_string(self.data.path().join(format!("m{i}.log")))
                            .unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "the etcd cluster elected no leader:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every key under `prefix` (read through the running members).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_string();
        self.with_client(self.running_endpoints(), move |mut c| {
            Box::pin(async move {
                let resp = c
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
                    .expect("etcd get");
                resp.kvs()
                    .iter()
                    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                    .collect()
            })
        })
        .expect("connect to etcd")
    }

    /// The client URLs of the members that run.
    pub fn running_endpoints(&self) -> Vec<String> {
        let all = self.endpoints();
        (0..self.len())
            .filter(|i| self.members[*i].is_some())
            .map(|i| all[i].clone())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        // Each sandbox kills every process left in it and frees its namespaces.
        self.hosts.clear();
        for cgroup in &self.cgroups {
            remove_cgroup_tree(cgroup);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.underlay])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Remove a cgroup and every cgroup below it (they are empty: their processes are gone).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // A killed process leaves its cgroup a moment after the signal.
    for _ in 0..100 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Host `i`'s underlay address.
pub fn underlay_ip(i: usize) -> String {
    format!("{UNDERLAY_NET}.{}", i + 1)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Delete the underlay namespaces of clusters whose test process is gone.
fn reap_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        let ["ncc", pid, _, "ul"] = parts.as_slice() else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
