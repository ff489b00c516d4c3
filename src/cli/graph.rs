//! `netcompose graph`: the topology for documentation and reviews.

use super::reconcile::planning;
use super::Global;
use crate::topology::{render, GraphFormat};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  netcompose graph > topology.mmd\n  netcompose graph --format dot | dot -Tsvg > topology.svg"
)]
pub struct GraphArgs {
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    pub format: Format,
}

/// The `--format` values: the library's [`GraphFormat`] knows nothing of argument parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
}

impl From<Format> for GraphFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Mermaid => GraphFormat::Mermaid,
            Format::Dot => GraphFormat::Dot,
        }
    }
}

pub fn run(global: &Global, args: &GraphArgs) -> miette::Result<ExitCode> {
    let p = planning(global, None)?;
    print!(
        "{}",
        render(&p.checked.project, &p.plan.desired, args.format.into())
    );
    Ok(ExitCode::SUCCESS)
}
