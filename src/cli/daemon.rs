//! The hidden `netcompose daemon` subcommand (the project daemon itself, started by `up`), and
//! the hooks through which `up`, `down` and `ps` drive it.

use super::Global;
use crate::daemon::{self, DaemonConfig, Status};
use crate::model::Desired;
use crate::pipeline::Checked;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The project whose daemon this is (its configuration is /run/netcompose/<project>/).
    #[arg(long)]
    pub project: String,
}

pub fn run(args: &DaemonArgs) -> miette::Result<ExitCode> {
    super::live::require_root("daemon")?;
    daemon::run(&args.project).map_err(|e| miette::miette!("daemon of {}: {e}", args.project))?;
    Ok(ExitCode::SUCCESS)
}

/// After a successful `up` (or "No changes."): hand the new configuration to the daemon, or
/// start it (again). With a saved plan the project is loaded from the files to learn its
/// `x-run` commands and `dns:` servers; if that fails the daemon is left as it is.
pub fn after_up(
    global: &Global,
    checked: Option<&Checked>,
    desired: &Desired,
) -> miette::Result<()> {
    let loaded;
    let checked = match checked {
        Some(c) => c,
        None => match crate::pipeline::checked_project(&global.load_options()) {
            Ok(c) if c.project.name == desired.project => {
                loaded = c;
                &loaded
            }
            _ => {
                eprintln!(
                    "warning: the Compose file of {} could not be read; the daemon (DNS, x-run) was not updated",
                    desired.project
                );
                return Ok(());
            }
        },
    };
    let cfg = daemon::config::build(
        &checked.project,
        desired,
        &crate::observe::host::nameservers().map_err(|e| miette::miette!("{e}"))?,
        checked.working_dir.clone(),
    );
    sync(&cfg)
}

/// Serve `cfg` (or stop the daemon when there is nothing to serve).
pub fn sync(cfg: &DaemonConfig) -> miette::Result<()> {
    if cfg.is_empty() {
        if let Some(pid) = daemon::stop(&cfg.project).map_err(|e| miette::miette!("{e}"))? {
            eprintln!("Daemon: stopped (pid {pid}): nothing to serve.");
        }
        return Ok(());
    }
    let done = daemon::ensure(cfg).map_err(|e| {
        miette::miette!(
            help = "see /run/netcompose/<project>/daemon.log; run `netcompose up` again",
            "{e}"
        )
    })?;
    let errors = &done.reply.errors;
    eprintln!(
        "Daemon: {} (pid {}): DNS in {} namespaces, {} processes.",
        done.action,
        done.pid,
        done.reply.serving,
        done.reply.processes.len()
    );
    for e in errors {
        eprintln!("warning: daemon: {e}");
    }
    Ok(())
}

/// Before `down` deletes the namespaces: stop the daemon and its processes.
pub fn before_down(project: &str) -> miette::Result<()> {
    if let Some(pid) = daemon::stop(project).map_err(|e| miette::miette!("{e}"))? {
        eprintln!("Daemon: stopped (pid {pid}).");
    }
    Ok(())
}

/// The daemon as `ps` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DaemonView {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<daemon::runner::ProcStatus>,
}

pub fn view(project: &str) -> DaemonView {
    match daemon::status(project) {
        Status::Stopped => DaemonView {
            state: "stopped",
            pid: None,
            serving: None,
            processes: Vec::new(),
        },
        Status::Running { pid } => {
            match daemon::request(
                project,
                &daemon::Request::Status,
                std::time::Duration::from_secs(2),
            ) {
                Ok(r) => DaemonView {
                    state: "running",
                    pid: Some(pid),
                    serving: Some(r.serving),
                    processes: r.processes,
                },
                Err(_) => DaemonView {
                    state: "unresponsive",
                    pid: Some(pid),
                    serving: None,
                    processes: Vec::new(),
                },
            }
        }
    }
}

/// The lines `ps` prints under its table.
pub fn render(v: &DaemonView) -> String {
    let mut out = match (v.state, v.pid, v.serving) {
        ("running", Some(pid), Some(n)) => {
            format!("Daemon: running (pid {pid}), DNS in {n} namespaces\n")
        }
        (state, Some(pid), _) => format!("Daemon: {state} (pid {pid})\n"),
        (state, None, _) => format!("Daemon: {state}\n"),
    };
    for p in &v.processes {
        let pid = p.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
        let detail = if p.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.detail)
        };
        out.push_str(&format!(
            "  x-run {}: {}{pid}{detail}, {} restarts\n",
            p.name, p.state, p.restarts
        ));
    }
    out
}
