//! `netcompose link SERVICE[:N] NETWORK down|up`: a failure drill on one attachment (see
//! `reconcile::set_link` for which end goes down and why). `plan` then shows the link as
//! drift, and `link ... up` or `up` repairs it.

use super::reconcile::{report, require_root, store};
use super::Global;
use crate::model::resource::ReplicaId;
use crate::project_name::ProjectName;
use crate::reconcile::DrillEnd;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum State {
    Down,
    Up,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo netcompose link web front down\n  sudo netcompose link web:2 back down\n  sudo netcompose link web:2 back up"
)]
pub struct LinkArgs {
    /// The replica: a service, and its replica number after a colon (default 1).
    #[arg(value_name = "SERVICE[:N]")]
    pub replica: String,
    /// The network whose attachment goes down or up.
    pub network: String,
    pub state: State,
}

pub fn run(global: &Global, args: &LinkArgs) -> miette::Result<ExitCode> {
    let (service, index) = match args.replica.split_once(':') {
        None => (args.replica.as_str(), 1),
        Some((s, n)) => match n.parse::<u32>() {
            Ok(n) if n > 0 => (s, n),
            _ => {
                return Err(miette::miette!(
                    help = "SERVICE or SERVICE:N, N from 1: web, web:2",
                    "`{}` does not name a replica",
                    args.replica
                ))
            }
        },
    };
    let checked = super::as_built(global)?;
    let project = &checked.project;
    let svc = super::service(project, service)?;
    if index > svc.replicas() {
        return Err(miette::miette!(
            help = format!("it has {} replica(s)", svc.replicas()),
            "service `{service}` has no replica {index}"
        ));
    }
    if !svc.networks.contains_key(&args.network) {
        let hint = crate::diag::suggest(
            &args.network,
            svc.networks.keys().map(String::as_str),
            "networks of the service",
        );
        return Err(miette::miette!(
            help = hint,
            "service `{service}` is not attached to network `{}`",
            args.network
        ));
    }
    require_root("link")?;
    let name = ProjectName::new(project.name.clone())?;
    let up = args.state == State::Up;
    let end = crate::reconcile::set_link(
        &store(),
        &name,
        &ReplicaId::new(service, index),
        &args.network,
        up,
    )
    .map_err(report)?;
    let word = if up { "up" } else { "down" };
    match end {
        DrillEnd::HostVeth(host) => {
            println!(
                "{service}-{index} {}: {word} (host end {host})",
                args.network
            )
        }
        DrillEnd::Macvlan { ifname, .. } => {
            println!("{service}-{index} {}: {word} ({ifname})", args.network);
            if up {
                println!("its routes went with it: `netcompose up` makes them again");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
