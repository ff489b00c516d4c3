//! `netcompose up`: make the machine match the file (or a saved plan), then record the state.

use super::reconcile::{planning_on, report, require_root, store, Terminal};
use super::Global;
use crate::daemon::ready::{self, WaitError};
use crate::project_name::ProjectName;
use crate::reconcile;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "`up` always returns once the network is built: the project daemon (DNS, x-run processes) runs in the background whether or not -d is given.\n\nExamples:\n  sudo netcompose up -d\n  sudo netcompose up -d --scale web=3\n  netcompose --dry-run up\n  netcompose plan --out demo.plan && sudo netcompose up --plan demo.plan"
)]
pub struct UpArgs {
    /// Apply a plan saved with `plan --out`; refused if the machine changed since.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Accepted as Compose has it; `up` returns once the network is built in any case.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Run N replicas of SERVICE for this run, whatever the file says (repeatable).
    #[arg(long, value_name = "SERVICE=N", conflicts_with = "plan")]
    pub scale: Vec<String>,
    /// Then wait until every x-run process is healthy (running, for those without a
    /// healthcheck); fail when one becomes unhealthy or cannot start.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: fail after this many seconds, naming the replicas not ready.
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub wait_timeout: Option<u64>,
    /// Build only this host's share of a cluster project, as a ClusterView in JSON says
    /// (the agent does this in-process; for tests and debugging).
    #[arg(long, value_name = "FILE", hide = true, conflicts_with = "plan")]
    pub cluster_view: Option<PathBuf>,
    /// With an etcd store: how long to wait for every node to converge, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

pub fn run(global: &Global, args: &UpArgs) -> miette::Result<ExitCode> {
    let mut opts = global.load_options();
    opts.scale = parse_scale(&args.scale)?;
    let view = args
        .cluster_view
        .as_deref()
        .map(super::cluster_view::read)
        .transpose()?;
    let cluster = super::reconcile::cluster().filter(|_| view.is_none());
    if let (Some(_), Some(_)) = (cluster, &args.plan) {
        return Err(miette::miette!(
            help = "run `up` with the Compose file: the agents build from it",
            "`up --plan` applies a plan to this host only; a cluster's project is built by its agents"
        ));
    }
    if let (true, Some((store, _))) = (global.dry_run, cluster) {
        // What `plan` with the store prints: each node's share, not this host's plan.
        let plan = super::plan::cluster_plan(&opts, store)?;
        print!("{}", super::cluster_plan::render(&plan));
        eprintln!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    }
    if global.dry_run {
        let plan = match &args.plan {
            Some(path) => reconcile::read_plan(path).map_err(report)?,
            None => planning_on(&opts, None, view.as_ref(), reconcile::Purpose::Shown)?.plan,
        };
        super::plan::print(&plan);
        eprintln!("Dry run: nothing was changed.");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some((store, _)) = cluster {
        let environment = std::env::vars().collect();
        let events = Terminal::new();
        let written = reconcile::agent::up_cluster(
            store,
            &opts,
            &environment,
            Duration::from_secs(args.timeout),
            &events,
            &super::reconcile::NodeLines,
        );
        drop(events);
        let written = written.map_err(report)?;
        println!("Every node converged to revision {written}.");
        return Ok(ExitCode::SUCCESS);
    }
    require_root("up")?;
    let events = Terminal::new();
    // The project's name, when a saved plan gave it (a Compose file is read again for it
    // only when --wait needs it).
    let outcome = match &args.plan {
        Some(path) => {
            let saved = reconcile::read_plan(path).map_err(report)?;
            let project = saved.project.clone();
            reconcile::up_plan(&store(), saved, &events).map(|_| Some(project))
        }
        None => reconcile::up_on(&store(), &opts, view.as_ref(), &events).map(|_| None),
    };
    // The live status line is erased before an error is printed.
    drop(events);
    let planned = outcome.map_err(report)?;
    if args.wait {
        let project = match planned {
            Some(name) => name,
            None => project_name(&opts)?,
        };
        wait(&ProjectName::new(project)?, args.wait_timeout)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The name of the project `up` just built (loaded again without printing its warnings twice).
fn project_name(opts: &crate::load::LoadOptions) -> miette::Result<String> {
    match crate::pipeline::checked_project(opts) {
        Ok(c) => Ok(c.project.name),
        Err(crate::pipeline::Failure::Load(e)) => Err(e.into()),
        Err(crate::pipeline::Failure::Invalid { .. }) => Err(miette::miette!(
            "the Compose file changed while `up` ran: cannot tell which project to wait for"
        )),
    }
}

/// `--wait`: until the daemon says every process is ready (a project without a daemon has
/// nothing to wait for).
fn wait(project: &ProjectName, timeout: Option<u64>) -> miette::Result<()> {
    if crate::daemon::status(project) == crate::daemon::Status::Stopped {
        return Ok(());
    }
    eprintln!("Waiting for the x-run processes to be healthy or running...");
    ready::wait(project, timeout.map(Duration::from_secs)).map_err(|e| {
        let help = match &e {
            WaitError::Daemon(_) => "see /run/netcompose/<project>/daemon.log",
            WaitError::Failed(_) | WaitError::TimedOut { .. } => {
                "`netcompose ps` shows each process's health, `netcompose logs` its probes' verdicts"
            }
        };
        miette::miette!(help = help, "{e}")
    })?;
    eprintln!("Every x-run process is ready.");
    Ok(())
}

/// `--scale SERVICE=N` values; which services exist is checked when the file is loaded.
fn parse_scale(values: &[String]) -> miette::Result<Vec<(String, u32)>> {
    values
        .iter()
        .map(|v| {
            let bad = |why: &str| {
                miette::miette!(
                    help = "write it as SERVICE=N, e.g. --scale web=3",
                    "invalid --scale `{v}`: {why}"
                )
            };
            let (service, n) = v.split_once('=').ok_or_else(|| bad("no `=`"))?;
            if service.is_empty() {
                return Err(bad("no service named"));
            }
            let n = n
                .parse::<u32>()
                .map_err(|_| bad("N must be a whole number of replicas"))?;
            Ok((service.to_string(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> miette::Result<Vec<(String, u32)>> {
        parse_scale(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn scale_values() {
        assert_eq!(
            parse(&["web=3", "db=0"]).unwrap(),
            [("web".to_string(), 3), ("db".to_string(), 0)]
        );
        for bad in ["web", "web=", "web=-1", "web=x", "=2", "web=1.5"] {
            assert!(parse(&[bad]).is_err(), "{bad} was accepted");
        }
    }
}
