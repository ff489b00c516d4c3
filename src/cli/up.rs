//! `netcompose up`: make the machine match the file (or a saved plan), then record the state.

use super::reconcile::{report, require_root, store, Terminal};
use super::Global;
use crate::reconcile;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo netcompose up\n  netcompose plan --out demo.plan && sudo netcompose up --plan demo.plan"
)]
pub struct UpArgs {
    /// Apply a plan saved with `plan --out`; refused if the machine changed since.
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

pub fn run(global: &Global, args: &UpArgs) -> miette::Result<ExitCode> {
    require_root("up")?;
    let events = Terminal::new();
    match &args.plan {
        Some(path) => {
            let saved = reconcile::read_plan(path).map_err(report)?;
            reconcile::up_plan(&store(), saved, &events)
        }
        None => reconcile::up(&store(), &global.load_options(), &events),
    }
    .map_err(report)?;
    Ok(ExitCode::SUCCESS)
}
