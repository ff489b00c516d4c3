//! `netcompose plan`: the diff, for people (text) and for CI (--json, --detailed-exitcode).

use super::reconcile::planning_on;
use super::Global;
use crate::plan::{render, Plan};
use crate::reconcile::Purpose;
use miette::IntoDiagnostic;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  netcompose plan\n  netcompose plan --json > plan.json\n  netcompose plan --against <(git show main:compose.yaml) --detailed-exitcode\n  netcompose plan --out demo.plan && sudo netcompose up --plan demo.plan"
)]
pub struct PlanArgs {
    /// Print the plan as a JSON document (docs/plan-format.md).
    #[arg(long)]
    pub json: bool,
    /// Save the plan for `up --plan`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 0 with no changes, 2 with changes (1 is an error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan against an older Compose file, a saved plan or a state file instead of the machine.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Plan only this host's share of a cluster project, as a ClusterView in JSON says (for
    /// tests and debugging; see `up --cluster-view`).
    #[arg(long, value_name = "FILE", hide = true)]
    pub cluster_view: Option<PathBuf>,
}

pub fn run(global: &Global, args: &PlanArgs) -> miette::Result<ExitCode> {
    if let Some((store, _)) = super::reconcile::cluster() {
        if args.cluster_view.is_none() && args.against.is_none() {
            return cluster(global, args, store);
        }
    }
    let view = args
        .cluster_view
        .as_deref()
        .map(super::cluster_view::read)
        .transpose()?;
    let purpose = match (args.json, &args.out) {
        (false, None) => Purpose::Shown,
        (true, _) | (false, Some(_)) => Purpose::Document,
    };
    let planning = planning_on(
        &global.load_options(),
        args.against.as_deref(),
        view.as_ref(),
        purpose,
    )?;
    let plan = &planning.plan;
    if args.json {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut w, plan).into_diagnostic()?;
        writeln!(w).into_diagnostic()?;
        w.flush().into_diagnostic()?;
    } else {
        print(plan);
    }
    if let Some(out) = &args.out {
        let mut w = std::io::BufWriter::new(std::fs::File::create(out).into_diagnostic()?);
        serde_json::to_writer_pretty(&mut w, plan).into_diagnostic()?;
        w.flush().into_diagnostic()?;
        eprintln!(
            "Saved the plan to {}; apply it with: netcompose up --plan {}",
            out.display(),
            out.display()
        );
    }
    let code = match (args.detailed_exitcode, plan.has_changes()) {
        (true, true) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    };
    // The process ends here: freeing a large plan piece by piece (every resource, change and
    // attribute) takes longer than printing it, and the kernel takes the memory back at once.
    std::mem::forget(planning);
    Ok(code)
}

/// The plan as text on stdout, coloured on a terminal unless NO_COLOR is set.
pub fn print(plan: &Plan) {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    if let Err(e) = render::write(&mut w, plan, color).and_then(|()| w.flush()) {
        eprintln!("netcompose: cannot print the plan: {e}");
    }
}

/// `plan` with an etcd store: what each live node would get, read without writing.
fn cluster(
    global: &Global,
    args: &PlanArgs,
    store: &crate::state::EtcdStore,
) -> miette::Result<ExitCode> {
    if args.out.is_some() {
        return Err(miette::miette!(
            help = "run `netcompose up`: on a cluster the agents build from the Compose file",
            "`plan --out` saves a plan for this host only"
        ));
    }
    let plan = cluster_plan(&global.load_options(), store)?;
    if args.json {
        let text = serde_json::to_string_pretty(&plan).into_diagnostic()?;
        println!("{text}");
    } else {
        print!("{}", super::cluster_plan::render(&plan));
    }
    Ok(match (args.detailed_exitcode, plan.changes) {
        (true, true) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

/// What each live node would get from an `up` of `opts` now (`plan`, and `up --dry-run`,
/// with an etcd store).
pub fn cluster_plan(
    opts: &crate::load::LoadOptions,
    store: &crate::state::EtcdStore,
) -> miette::Result<crate::reconcile::agent::ClusterPlan> {
    let environment = std::env::vars().collect();
    crate::reconcile::agent::plan_cluster(
        store,
        opts,
        &environment,
        &super::reconcile::Terminal::new(),
    )
    .map_err(super::reconcile::report)
}
