//! `netcompose exec SVC -- CMD`: run a command inside a replica's namespace, seeing its
//! /etc/netns files over /etc and a /sys of that namespace, as `ip netns exec` does. The
//! process becomes CMD (exec), so its exit code is CMD's.

use super::Global;
use crate::kernel::ETC_NETNS;
use crate::model::endpoints::{replicas, Stack};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::ffi::CString;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo netcompose exec client -- ping -c1 web\n  sudo netcompose exec web --index 2 -- ip addr"
)]
pub struct ExecArgs {
    /// The service.
    pub service: String,
    /// Which replica (from 1).
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(global: &Global, args: &ExecArgs) -> miette::Result<ExitCode> {
    super::reconcile::require_root("exec")?;
    let checked = super::as_built(global)?;
    let project = &checked.project;
    super::service(project, &args.service)?;
    let rep = replicas(project)
        .into_iter()
        .find(|r| r.service == args.service && r.index == args.index);
    let Some(rep) = rep else {
        return Err(miette::miette!(
            "service `{}` has no replica {}",
            args.service,
            args.index
        ));
    };
    let argv: Vec<CString> = args
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| miette::miette!("a command argument holds a NUL byte"))?;
    if rep.stack != Stack::Host {
        let ns = rep.netns.clone().unwrap_or_default();
        let svc = &project.services[&args.service];
        let hostname = svc.hostname.as_ref().map_or_else(
            || crate::model::names::netns_name(&project.name, &rep.service, rep.index),
            |h| h.value.clone(),
        );
        enter(&ns, &hostname).map_err(|e| {
            miette::miette!(
                help = "is the project up? run `netcompose up`",
                "cannot enter namespace {ns}: {e}"
            )
        })?;
    }
    let err = nix::unistd::execvp(&argv[0], &argv)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    Err(miette::miette!("cannot run {}: {err}", args.command[0]))
}

/// Join the namespace and lay its files over /etc in a private mount namespace (the same steps
/// as iproute2's netns_switch), under the replica's host name. Called on the main thread before anything else runs.
fn enter(ns: &str, hostname: &str) -> Result<(), String> {
    let file = std::fs::File::open(Path::new("/run/netns").join(ns)).map_err(|e| e.to_string())?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
    // The replica's own host name too, as a container has (its /etc/hosts resolves it).
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS).map_err(|e| e.to_string())?;
    nix::unistd::sethostname(hostname).map_err(|e| e.to_string())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    // /sys shows the namespace that mounted it: mount a fresh one for this namespace.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(
            Some(ns),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    let etc = Path::new(ETC_NETNS).join(ns);
    for entry in std::fs::read_dir(&etc).into_iter().flatten().flatten() {
        let target = Path::new("/etc").join(entry.file_name());
        if target.exists() {
            mount(
                Some(&entry.path()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind {}: {e}", target.display()))?;
        }
    }
    Ok(())
}
