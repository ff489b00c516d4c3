//! The hidden `netcompose daemon` subcommand (the project daemon itself, started by `up`), and
//! the daemon as `ps` shows it.

use crate::daemon::{self, Status};
use crate::project_name::ProjectName;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The project whose daemon this is (its configuration is /run/netcompose/<project>/).
    #[arg(long)]
    pub project: String,
}

pub fn run(args: &DaemonArgs) -> miette::Result<ExitCode> {
    super::reconcile::require_root("daemon")?;
    let project = ProjectName::new(args.project.clone())?;
    daemon::run(&project).map_err(|e| miette::miette!("daemon of {project}: {e}"))?;
    Ok(ExitCode::SUCCESS)
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

pub fn view(project: &ProjectName) -> DaemonView {
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
        let health = p
            .health
            .as_ref()
            .map(|h| format!(" ({})", h.status.as_str()))
            .unwrap_or_default();
        out.push_str(&format!(
            "  x-run {}: {}{health}{pid}{detail}, {} restarts\n",
            p.name, p.state, p.restarts
        ));
    }
    out
}
