//! A disposable "host" for integration tests of netcompose.
//!
//! A [`Sandbox`] is three things:
//!
//! 1. a network namespace `nct-<pid>-<n>-host` that plays the machine netcompose runs on
//!    (created with `ip netns add`; the harness may use `ip`, netcompose itself must not);
//! 2. a private mount namespace, held by a long-lived `sleep` (the *holder*), in which tmpfs
//!    hides `/run` (so `/run/netns` and `/run/netcompose` start empty), and `/etc/netns` and
//!    `/var/lib/netcompose` are private tmpfs too (when their parent directory lacks them, the
//!    parent gets a tmpfs-backed overlay so that nothing is created on the real disk);
//! 3. an "outside" namespace `nct-<pid>-<n>-out`, linked to the sandbox host by a veth pair named
//!    `uplink` at both ends: 198.18.0.1/30 outside, 198.18.0.2/30 in the host (RFC 2544
//!    benchmark range), with the host's default route via the outside end, so masquerade and
//!    published ports can be tested with real packets that never leave the machine.
//!
//! Inside, `/etc/resolv.conf` is private too and names the outside end (198.18.0.1) as the only
//! nameserver, so "the host's upstream DNS" is something a test can run in the outside
//! namespace, and no query reaches the real resolver. Other paths (`/tmp`, the build tree, the
//! rest of `/etc` when `/etc/netns` exists on the machine) are the real ones: write test inputs
//! to a temporary directory, and sandbox-only files with [`Sandbox::write_file`] under the
//! private directories.
//!
//! Commands run inside with `nsenter --mount=/proc/<holder>/ns/mnt --net=/run/netns/<host>`;
//! nsenter opens both namespace files before entering either, so the host netns path resolves
//! in the caller's mount namespace, where `ip netns add` pinned it.
//!
//! Why cleanup is guaranteed: every namespace netcompose creates inside the sandbox is pinned by
//! a bind mount under the sandbox's `/run/netns`, and bind mounts exist only in the mount
//! namespace they were made in. A mount namespace lives as long as a process (or thread) is in
//! it. When [`Drop`] kills the holder and every other process in the sandbox's namespaces, the
//! mount namespace dies, its mounts are released, and each pinned network namespace — with its
//! veths, routes and nftables tables — is freed by the kernel. No list of objects to delete is
//! kept, so nothing can be forgotten; and the real `/run/netns` never sees netcompose's
//! namespaces at all. The holder also has `PR_SET_PDEATHSIG=SIGKILL`, so it dies with the thread
//! that created the sandbox even if Drop never runs; the two `ip netns` pins that remain after a
//! SIGKILLed test run are reaped by the next [`Sandbox::new`] (their pid is dead).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The sandbox host's end of the uplink.
pub const UPLINK_HOST_IP: &str = "198.18.0.2";
/// The outside end of the uplink (the sandbox host's default gateway).
pub const UPLINK_OUTSIDE_IP: &str = "198.18.0.1";
/// Prefix length of the uplink subnet.
pub const UPLINK_PREFIX: u8 = 30;
/// Name of the uplink veth at both ends.
pub const UPLINK_IF: &str = "uplink";
const UPLINK_NODAD: &str = "net.ipv6.conf.uplink.accept_dad=0";

static SEQ: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` makes /run/netns a shared mount point the first time; two concurrent first
/// times would stack two mounts. Serialize sandbox setup and teardown within the process.
static SETUP: Mutex<()> = Mutex::new(());

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `require_root("name");` at the top of a test that builds namespaces: without root it fails,
/// saying so, rather than passing without having run.
pub fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root (it builds network and mount namespaces): run the integration tests \
         as root, e.g. `sudo -E env PATH=$PATH cargo test --test {file}`; `cargo test --lib` needs \
         no root",
        file = test_file(),
    );
}

/// The name of the integration test binary running (`apply` for tests/apply.rs).
fn test_file() -> String {
    std::env::args()
        .next()
        .as_deref()
        .and_then(|exe| Path::new(exe).file_name()?.to_str().map(str::to_string))
        .map(|name| {
            name.rsplit_once('-')
                .map_or(name.clone(), |(base, _)| base.to_string())
        })
        .unwrap_or_else(|| "NAME".to_string())
}

/// Shell script run by the holder inside its fresh private mount namespace.
const HOLDER_SCRIPT: &str = r#"
set -e
mount -t tmpfs -o mode=0755 nct-run /run
mkdir -p /run/netns /run/netcompose /run/.nct
for d in /etc/netns /var/lib/netcompose; do
  if [ -d "$d" ]; then
    mount -t tmpfs -o mode=0755 nct "$d"
    continue
  fi
  p=$(dirname "$d"); t=/run/.nct/$(echo "$p" | tr / _)
  mkdir -p "$t/up" "$t/work" "$t/stash"
  # Submounts of $p would be hidden by the overlay: stash them and put them back on top.
  subs=$(awk -v p="$p/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo)
  i=0
  for m in $subs; do
    i=$((i+1))
    if [ -d "$m" ]; then mkdir -p "$t/stash/$i"; else : > "$t/stash/$i"; fi
    mount --bind "$m" "$t/stash/$i"
  done
  mount -t overlay nct -o "lowerdir=$p,upperdir=$t/up,workdir=$t/work" "$p"
  i=0
  for m in $subs; do
    i=$((i+1))
    mount --bind "$t/stash/$i" "$m" 2>/dev/null || true
  done
  mkdir -p "$d"
done
# A private resolv.conf whose upstream is the outside namespace: nothing resolves through the
# real host's resolver, so no DNS query leaves the machine.
printf 'nameserver %s\n' "$NCT_DNS" > /run/.nct/resolv.conf
r=$(readlink -f /etc/resolv.conf || true)
case "$r" in
  /run/*) mkdir -p "$(dirname "$r")"; cp /run/.nct/resolv.conf "$r" ;;
  ?*) if [ -e "$r" ]; then mount --bind /run/.nct/resolv.conf "$r"; fi ;;
esac
echo ready
exec sleep infinity
"#;

/// A disposable sandbox host; see the module documentation. Dropping it removes everything.
pub struct Sandbox {
    id: String,
    host_ns: String,
    outside_ns: String,
    holder: Option<Child>,
    holder_pid: u32,
}

impl Sandbox {
    /// Build a sandbox, panicking with the reason if that fails (whatever was made is removed).
    pub fn new() -> Sandbox {
        match Sandbox::try_new() {
            Ok(sb) => sb,
            Err(e) => panic!("cannot build the test sandbox: {e}"),
        }
    }

    /// Build a sandbox.
    pub fn try_new() -> Result<Sandbox, String> {
        let _serial = SETUP.lock().unwrap_or_else(|p| p.into_inner());
        reap_stale();
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("nct-{pid}-{n}");
        let mut sb = Sandbox {
            host_ns: format!("{id}-host"),
            outside_ns: format!("{id}-out"),
            id,
            holder: None,
            holder_pid: 0,
        };
        // From here on, Drop cleans up whatever part exists.
        let host = sb.host_ns.clone();
        let out = sb.outside_ns.clone();
        let uplink_host = format!("{UPLINK_HOST_IP}/{UPLINK_PREFIX}");
        let uplink_out = format!("{UPLINK_OUTSIDE_IP}/{UPLINK_PREFIX}");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &host],
            vec!["netns", "add", &out],
            vec!["-n", &host, "link", "set", "lo", "up"],
            vec!["-n", &out, "link", "set", "lo", "up"],
            vec![
                "-n", &host, "link", "add", UPLINK_IF, "type", "veth", "peer", "name", UPLINK_IF,
                "netns", &out,
            ],
            vec!["-n", &host, "addr", "add", &uplink_host, "dev", UPLINK_IF],
            vec!["-n", &out, "addr", "add", &uplink_out, "dev", UPLINK_IF],
            // The uplink's link-local addresses skip DAD, so that the stand-in for another
            // machine is reachable over IPv6 at once: while they are tentative, neighbour
            // discovery across the uplink can stall a first packet for a second or two.
            vec!["netns", "exec", &host, "sysctl", "-qw", UPLINK_NODAD],
            vec!["netns", "exec", &out, "sysctl", "-qw", UPLINK_NODAD],
            vec!["-n", &host, "link", "set", UPLINK_IF, "up"],
            vec!["-n", &out, "link", "set", UPLINK_IF, "up"],
            vec![
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                UPLINK_OUTSIDE_IP,
            ],
        ];
        for step in steps {
            let out = Command::new("ip")
                .args(&step)
                .output()
                .map_err(|e| format!("ip {}: {e}", step.join(" ")))?;
            if !out.status.success() {
                return Err(format!(
                    "ip {}: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }

        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            HOLDER_SCRIPT,
        ])
        .env("NCT_DNS", UPLINK_OUTSIDE_IP)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("unshare: {e}"))?;
        sb.holder_pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        sb.holder = Some(child);
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            return Err(format!("the mount-namespace holder failed: {}", err.trim()));
        }
        Ok(sb)
    }

    /// `nct-<pid>-<n>`, unique among concurrently running sandboxes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Name of the host namespace (pinned in the real /run/netns).
    pub fn host_ns(&self) -> &str {
        &self.host_ns
    }

    /// Name of the outside namespace (pinned in the real /run/netns).
    pub fn outside_ns(&self) -> &str {
        &self.outside_ns
    }

    /// Path of the host namespace's pin, valid in the caller's mount namespace.
    pub fn host_netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.host_ns)
    }

    /// Path of the outside namespace's pin, valid in the caller's mount namespace.
    pub fn outside_netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.outside_ns)
    }

    /// The process holding the sandbox's mount namespace.
    pub fn holder_pid(&self) -> u32 {
        self.holder_pid
    }

    /// `/proc/<holder>/ns/mnt`.
    pub fn mount_ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder_pid))
    }

    /// A command that will run `program args...` inside the sandbox host (its mount namespace
    /// and the host network namespace), for callers that want to set env, stdin, etc.
    pub fn command<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Command {
        self.command_in_ns(&self.host_netns_path(), None, program, args)
    }

    /// A command that will run in `dir` (a path valid in the sandbox) inside the sandbox host.
    pub fn command_in_dir<S: AsRef<OsStr>>(
        &self,
        dir: &Path,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Command {
        self.command_in_ns(&self.host_netns_path(), Some(dir), program, args)
    }

    fn command_in_ns<S: AsRef<OsStr>>(
        &self,
        netns: &Path,
        dir: Option<&Path>,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Command {
        let mut cmd = Command::new("nsenter");
        let mut mnt = OsString::from("--mount=");
        mnt.push(self.mount_ns_path());
        let mut net = OsString::from("--net=");
        net.push(netns);
        cmd.arg(mnt).arg(net).arg("--");
        // Entering a mount namespace resets the working directory to its root.
        if let Some(dir) = dir {
            cmd.arg("env").arg("-C").arg(dir);
        }
        cmd.arg(program).args(args).stdin(Stdio::null());
        cmd
    }

    /// Run `args[0] args[1..]` inside the sandbox host and collect its output.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        output_of(self.command(program, rest))
    }

    /// [`Sandbox::run`], panicking with stderr unless it succeeds; returns stdout.
    pub fn run_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        check_ok(args, &out)
    }

    /// Run a command with working directory `dir` inside the sandbox host.
    pub fn run_in_dir<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        output_of(self.command_in_dir(dir, program, rest))
    }

    /// Run a command in the outside namespace (with the sandbox's mount namespace).
    pub fn run_in_outside<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        output_of(self.command_in_ns(&self.outside_netns_path(), None, program, rest))
    }

    /// Start a long-running command inside the sandbox host (killed by Drop at the latest).
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Child {
        let (program, rest) = args.split_first().expect("a program to run");
        self.command(program, rest)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter")
    }

    /// Write a file as seen from inside the sandbox (e.g. `/etc/resolv.conf`, a state file under
    /// `/var/lib/netcompose`). Only the private paths listed in the module docs are safe.
    pub fn write_file(&self, path: &str, contents: &str) {
        use std::io::Write;
        let mut child = self
            .command("sh", &["-c", "cat > \"$1\"", "sh", path])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        let _ = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(contents.as_bytes());
        let out = child.wait_with_output().expect("wait for sh");
        assert!(
            out.status.success(),
            "write {path} in the sandbox: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run the netcompose binary built for this test run inside the sandbox host.
    pub fn netcompose<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        output_of(self.command(env!("CARGO_BIN_EXE_netcompose"), args))
    }

    /// Run netcompose with working directory `dir` (a path valid in the sandbox).
    pub fn netcompose_in<S: AsRef<OsStr>>(&self, dir: &Path, args: &[S]) -> Output {
        output_of(self.command_in_dir(dir, env!("CARGO_BIN_EXE_netcompose"), args))
    }

    /// Run `f` on a thread that entered the sandbox: its mount namespace (so `/run/netns` is the
    /// sandbox's) and the host network namespace. Commands spawned from that thread inherit
    /// both. The calling thread is untouched. Namespace files that live outside the sandbox
    /// (e.g. the outside namespace) must be opened before entering and passed in.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let mnt = open_ns(&self.mount_ns_path());
        let net = open_ns(&self.host_netns_path());
        let outcome = std::thread::scope(|s| {
            s.spawn(move || {
                use nix::sched::{setns, unshare, CloneFlags};
                // Joining a mount namespace needs a private fs_struct (cwd/root), which
                // threads otherwise share with the whole process.
                unshare(CloneFlags::CLONE_FS).expect("unshare(CLONE_FS)");
                setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS).expect("setns(sandbox mount ns)");
                setns(net.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns(sandbox host netns)");
                f()
            })
            .join()
        });
        match outcome {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Open the outside namespace (valid from any thread, also inside [`Sandbox::enter`]).
    pub fn open_outside_ns(&self) -> OwnedFd {
        open_ns(&self.outside_netns_path())
    }

    /// Open the host namespace.
    pub fn open_host_ns(&self) -> OwnedFd {
        open_ns(&self.host_netns_path())
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _serial = SETUP.lock().unwrap_or_else(|p| p.into_inner());
        if self.holder_pid != 0 {
            let projects = projects_run(self.holder_pid);
            kill_sandbox_processes(
                self.holder_pid,
                &[&self.host_netns_path(), &self.outside_netns_path()],
            );
            remove_empty_cgroups(&projects);
        }
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        for ns in [&self.outside_ns, &self.host_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn output_of(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check_ok<S: AsRef<OsStr>>(args: &[S], out: &Output) -> String {
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}{}",
        shown.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn open_ns(path: &Path) -> OwnedFd {
    fs::File::open(path)
        .map(OwnedFd::from)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn ns_inode(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Kill every process in the sandbox: those in its mount namespace, and those in any of its
/// network namespaces (including processes of `ip netns exec`, which live in a child mount
/// namespace). Never this process, never anything else.
fn kill_sandbox_processes(holder: u32, extra_netns: &[&Path]) {
    let Some(mnt) = ns_inode(Path::new(&format!("/proc/{holder}/ns/mnt"))) else {
        return;
    };
    let mut nets: Vec<u64> = extra_netns.iter().filter_map(|p| ns_inode(p)).collect();
    // Namespaces pinned inside the sandbox, seen through the holder's root.
    if let Ok(entries) = fs::read_dir(format!("/proc/{holder}/root/run/netns")) {
        for e in entries.flatten() {
            if let Some(ino) = ns_inode(&e.path()) {
                nets.push(ino);
            }
        }
    }
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut victims = Vec::new();
        if let Ok(procs) = fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me || pid == holder {
                    continue;
                }
                let in_mnt = ns_inode(&p.path().join("ns/mnt")) == Some(mnt);
                let in_net = ns_inode(&p.path().join("ns/net")).is_some_and(|i| nets.contains(&i));
                if in_mnt || in_net {
                    victims.push(pid);
                }
            }
        }
        if victims.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The projects netcompose ran in the sandbox (its `/run/netcompose`).
fn projects_run(holder: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{holder}/root/run/netcompose"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

/// The projects' cgroups live in the machine's hierarchy, not in the sandbox: remove those a
/// test left without `down`. Only empty ones go (rmdir refuses the others), so a project of
/// the same name in another sandbox keeps its processes.
fn remove_empty_cgroups(projects: &[String]) {
    for project in projects {
        let Ok(name) = netcompose::project_name::ProjectName::new(project.as_str()) else {
            continue;
        };
        if let Ok(cg) = netcompose::daemon::contain::Cgroups::find(&name) {
            // A process just killed leaves its namespaces, where the kill above looked for it,
            // before the kernel takes it out of its cgroup (do_exit calls
            // exit_task_namespaces before cgroup_exit, kernel/exit.c): an rmdir in between is
            // refused (EBUSY), which left an empty project cgroup after two tests of a CI run.
            let _ = cg.project().wait_empty(CGROUP_EXIT_WAIT);
            let _ = cg.project().remove();
        }
    }
}

/// How long the guard waits for the killed processes to leave a project's cgroup.
const CGROUP_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Remove the `ip netns` pins of sandboxes whose test process is gone (a SIGKILLed run).
fn reap_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-');
        let (Some("nct"), Some(pid), Some(_), Some(role), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if role != "host" && role != "out" {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
