//! `netcompose logs [SERVICE...] [--follow]`: the output of the replicas' `x-run` processes, with a
//! `<service>-<n> |` prefix per line (lifecycle events use `#`).

use super::Global;
use crate::pipeline::checked_project;
use crate::project_name::ProjectName;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  netcompose logs\n  netcompose logs web --follow\n  netcompose -p demo logs db"
)]
pub struct LogsArgs {
    /// Only these services.
    pub services: Vec<String>,
    /// Keep printing new lines (`-f` is the global --file option, so there is no short form).
    #[arg(long)]
    pub follow: bool,
}

pub fn run(global: &Global, args: &LogsArgs) -> miette::Result<ExitCode> {
    let project = match checked_project(&global.load_options()) {
        Ok(c) => {
            for s in &args.services {
                if !c.project.services.contains_key(s) {
                    let hint = crate::diag::suggest(
                        s,
                        c.project.services.keys().map(String::as_str),
                        "services",
                    );
                    return Err(miette::miette!(
                        help = hint,
                        "no service `{s}` in project {}",
                        c.project.name
                    ));
                }
            }
            c.project.name
        }
        Err(_) => match global.named_project()? {
            Some(name) => name.into(),
            None => super::checked(global)?.project.name,
        },
    };
    let project = ProjectName::new(project)?;
    let path = crate::daemon::run_log_path(&project);
    let mut out = std::io::stdout().lock();
    match crate::daemon::logs::print(&path, &args.services, args.follow, &mut out) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => {
            eprintln!("No logs for project {project} (no x-run process ran since the last `up`).");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(miette::miette!("{}: {e}", path.display())),
    }
}
