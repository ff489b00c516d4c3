//! `netcompose stop|start|restart|top [SERVICE...]`: the `x-run` processes of a project that
//! is up, through its daemon. `stop` leaves the network in place and the processes stopped
//! (their restart policy does not bring them back, nor does a reload of the daemon) until
//! `start`, `restart` or `up`; with no service named, every service.

use super::reconcile::require_root;
use super::Global;
use crate::daemon::processes::{self, Action, Top};
use crate::daemon::{self, Status};
use crate::pipeline::checked_project;
use crate::project_name::ProjectName;
use miette::IntoDiagnostic;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo netcompose stop\n  sudo netcompose start web\n  sudo netcompose restart web db"
)]
pub struct ServicesArgs {
    /// Only these services (default: every service with an x-run process).
    pub services: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sudo netcompose top\n  sudo netcompose top web --json")]
pub struct TopArgs {
    /// Only these services.
    pub services: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The project (from the file, else `-p`), once every service named is one of its services,
/// and its daemon runs (`stats` asks it too).
pub(super) fn project(
    global: &Global,
    services: &[String],
    command: &str,
) -> miette::Result<ProjectName> {
    require_root(command)?;
    let name = match checked_project(&global.load_options()) {
        Ok(c) => {
            for s in services {
                super::service(&c.project, s)?;
            }
            c.project.name
        }
        Err(_) => match global.named_project()? {
            Some(name) => name.into(),
            None => super::checked(global)?.project.name,
        },
    };
    let name = ProjectName::new(name)?;
    if daemon::status(&name) == Status::Stopped {
        return Err(miette::miette!(
            help = "run `netcompose up` first",
            "project {name} is not up: its daemon is not running"
        ));
    }
    Ok(name)
}

pub fn control(global: &Global, action: Action, args: &ServicesArgs) -> miette::Result<ExitCode> {
    let command = match action {
        Action::Stop => "stop",
        Action::Start => "start",
        Action::Restart => "restart",
    };
    let name = project(global, &args.services, command)?;
    if global.dry_run {
        // As Compose's --dry-run: say what would be done, do nothing.
        let status = daemon::request(&name, &daemon::Request::Status, Duration::from_secs(5))
            .into_diagnostic()?;
        for p in status
            .processes
            .iter()
            .filter(|p| args.services.is_empty() || args.services.contains(&p.service))
        {
            println!("{}: would {command} ({})", p.name, p.state);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reply = processes::control(&name, action, &args.services).into_diagnostic()?;
    let shown: Vec<_> = reply
        .processes
        .iter()
        .filter(|p| args.services.is_empty() || args.services.contains(&p.service))
        .collect();
    if shown.is_empty() {
        eprintln!("No x-run process to {command} in project {name}.");
    }
    for p in shown {
        let pid = p.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
        println!("{}: {}{pid}", p.name, p.state);
    }
    for e in &reply.errors {
        eprintln!("error: {e}");
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn top(global: &Global, args: &TopArgs) -> miette::Result<ExitCode> {
    let name = project(global, &args.services, "top")?;
    let tops = processes::top(&name, &args.services).into_diagnostic()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tops).into_diagnostic()?);
    } else {
        print!("{}", render(&tops));
    }
    Ok(ExitCode::SUCCESS)
}

/// One block per replica, as `docker compose top` prints them.
fn render(tops: &[Top]) -> String {
    let mut out = String::new();
    for (i, t) in tops.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if t.processes.is_empty() {
            out.push_str(&format!("{} ({})\n", t.name, t.state));
            continue;
        }
        out.push_str(&format!("{}\n", t.name));
        let rows: Vec<[String; 4]> = t
            .processes
            .iter()
            .map(|p| {
                [
                    p.user.clone(),
                    p.pid.to_string(),
                    p.ppid.to_string(),
                    p.cmd.clone(),
                ]
            })
            .collect();
        let header = ["UID", "PID", "PPID", "CMD"].map(String::from);
        let width = |c: usize| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        for r in std::iter::once(&header).chain(&rows) {
            out.push_str(&format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::processes::TopProcess;

    #[test]
    fn top_as_compose_prints_it() {
        let tops = vec![
            Top {
                name: "web-1".into(),
                service: "web".into(),
                state: "running".into(),
                processes: vec![
                    TopProcess {
                        pid: 4242,
                        ppid: 1,
                        uid: 0,
                        user: "root".into(),
                        cmd: "sh -c x".into(),
                    },
                    TopProcess {
                        pid: 4243,
                        ppid: 4242,
                        uid: 65534,
                        user: "nobody".into(),
                        cmd: "sleep 9".into(),
                    },
                ],
            },
            Top {
                name: "db-1".into(),
                service: "db".into(),
                state: "stopped".into(),
                processes: vec![],
            },
        ];
        assert_eq!(
            render(&tops),
            "web-1\nUID     PID   PPID  CMD\nroot    4242  1     sh -c x\n\
             nobody  4243  4242  sleep 9\n\ndb-1 (stopped)\n"
        );
    }
}
