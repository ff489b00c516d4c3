//! Starting one process of the runner: a fork whose child, before it execs, enters the
//! replica's namespaces, bind-mounts its /etc/netns files, joins its cgroup leaf and takes on
//! the service's identity and privileges. Between fork and exec the child only makes system
//! calls: everything it needs is prepared here, before the fork.

use crate::daemon::privileges::Privileges;
use crate::kernel::cgroup::{self, Cgroup};
use crate::kernel::NetnsDir;
use crate::model::daemon::Process;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;

fn cstring(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} holds a NUL", p.display()))
}

/// Fork and exec one process in its namespace, with its /etc/netns files, in cgroup `leaf`
/// (made here).
pub(super) fn spawn(
    def: &Process,
    dir: &NetnsDir,
    etc_netns: &Path,
    working_dir: &Path,
    leaf: Option<&Cgroup>,
) -> Result<tokio::process::Child, String> {
    let (program, args) = def.argv.split_first().ok_or("an empty command")?;
    let mut nsfd: Option<OwnedFd> = None;
    let mut binds: Vec<(CString, CString)> = Vec::new();
    if let Some(ns) = &def.netns {
        nsfd = Some(dir.open(Some(ns)).map_err(|e| e.to_string())?);
        let etc = etc_netns.join(ns);
        for entry in std::fs::read_dir(&etc).into_iter().flatten().flatten() {
            let target = Path::new("/etc").join(entry.file_name());
            if target.exists() {
                binds.push((cstring(&entry.path())?, cstring(&target)?));
            }
        }
    }
    // The service's own directory must exist; the project's may be gone (then: /).
    let wd = match &def.working_dir {
        Some(wd) => wd.as_path(),
        None if working_dir.is_dir() => working_dir,
        None => Path::new("/"),
    };
    let privileges = Privileges::new(def);
    // cgroupfs directories live in memory: making one does not wait on a disk.
    let procs = match leaf {
        Some(leaf) => Some(
            leaf.create()
                .and_then(|()| leaf.procs_for_child())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let hostname = def.hostname.clone().unwrap_or_default();
    let init = def.init;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(wd)
        .envs(&def.environment)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    // SAFETY: between fork and exec only system calls run (write, setpgid, prctl, setns,
    // unshare, mount, setgroups, setgid, setuid, capset, and the init's fork, wait and kill);
    // the paths and privileges were prepared above, so nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            child_setup(procs.as_ref(), nsfd.as_ref(), &binds, &hostname)?;
            privileges.apply()?;
            if init {
                crate::daemon::init::become_init()?;
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| e.to_string())
}

fn child_setup(
    cgroup_procs: Option<&OwnedFd>,
    nsfd: Option<&OwnedFd>,
    binds: &[(CString, CString)],
    hostname: &str,
) -> std::io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{setns, unshare, CloneFlags};
    if let Some(procs) = cgroup_procs {
        cgroup::enter(procs)?;
    }
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    let Some(fd) = nsfd else {
        return Ok(());
    };
    setns(fd, CloneFlags::CLONE_NEWNET)?;
    // Its own mount namespace (for the /etc/netns files) and host name, as a container has.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)?;
    if !hostname.is_empty() {
        nix::unistd::sethostname(hostname)?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    for (src, dst) in binds {
        mount(
            Some(src.as_c_str()),
            dst.as_c_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    Ok(())
}
