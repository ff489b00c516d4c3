//! The command line: global options as docker compose has them, one module per command.
//! Diagnostics become miette reports here, at the edge.

mod agent;
mod check;
mod cluster_plan;
mod cluster_view;
mod config;
mod daemon;
mod down;
mod exec;
mod graph;
mod link;
mod logs;
mod ls;
mod nodes_json;
mod plan;
mod port;
mod procs;
mod progress;
mod ps;
mod reconcile;
mod stats;
mod up;
mod version;

use crate::daemon::processes::Action;
use crate::load::LoadOptions;
use crate::pipeline::{self, Checked, Failure};
use crate::project_name::ProjectName;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "netcompose",
    version,
    about = "Build the network a Compose file describes out of real kernel objects",
    after_help = "Examples:\n  netcompose -f examples/quickstart/compose.yaml plan\n  sudo netcompose -f examples/quickstart/compose.yaml up -d\n  sudo netcompose exec client -- ping -c1 web\n  netcompose validate"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Compose file(s); later files override earlier ones.
    #[arg(short = 'f', long = "file", global = true)]
    pub files: Vec<PathBuf>,
    /// Project name (default: top-level `name:`, else the directory name).
    #[arg(short = 'p', long = "project-name", global = true)]
    pub project_name: Option<String>,
    /// Directory for the project (default: the first file's directory).
    #[arg(long, global = true)]
    pub project_directory: Option<PathBuf>,
    /// Environment file(s) for interpolation (default: .env in the project directory).
    #[arg(long = "env-file", global = true)]
    pub env_files: Vec<PathBuf>,
    /// Enable services of a profile.
    #[arg(long = "profile", global = true)]
    pub profiles: Vec<String>,
    /// Show what `up` or `down` would do (the plan) and change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Where the state lives: file:[DIR] (default), etcd://[USER@]HOST:2379[,HOST:2379]...,
    /// or etcds://...?ca=FILE&cert=FILE&key=FILE (password in NETCOMPOSE_STORE_PASSWORD).
    #[arg(long, global = true, env = "NETCOMPOSE_STORE", value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the normalized model, as `docker compose config` does.
    #[command(
        after_help = "Examples:\n  netcompose config\n  netcompose -f a.yaml -f b.yaml config --format json"
    )]
    Config {
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Check the file(s) and print every problem; exit 0 if valid, 1 if not.
    #[command(
        after_help = "Examples:\n  netcompose validate\n  netcompose -f compose.yaml -f override.yaml validate"
    )]
    Validate,
    /// Show what `up` would create, change or destroy, without root and without touching anything.
    Plan(plan::PlanArgs),
    /// Draw the topology: networks, services, replicas, VIPs and published ports.
    Graph(graph::GraphArgs),
    /// Make the machine match the file: namespaces, links, addresses, routes, rules.
    Up(up::UpArgs),
    /// Remove everything of the project, and nothing else.
    #[command(
        after_help = "Examples:\n  sudo netcompose down\n  sudo netcompose -p lab down\n  netcompose --dry-run down"
    )]
    Down,
    /// List the projects on this machine with their status and Compose files.
    Ls(ls::LsArgs),
    /// Print the host address a service's port is published on.
    Port(port::PortArgs),
    /// List replicas with their namespaces, interfaces, addresses and MACs.
    Ps(ps::PsArgs),
    /// Run a command inside a replica's namespace.
    Exec(exec::ExecArgs),
    /// Probe the file's x-checks from inside the replicas; exit 1 if any fails.
    Check(check::CheckArgs),
    /// Print the output of the replicas' `x-run` processes.
    Logs(logs::LogsArgs),
    /// List the processes of each replica's `x-run` command (the pids in its cgroup).
    Top(procs::TopArgs),
    /// Stop `x-run` processes; the network stays, and they stay stopped until start or up.
    Stop(procs::ServicesArgs),
    /// Start `x-run` processes that `stop` stopped (or that exited).
    Start(procs::ServicesArgs),
    /// Stop, then start `x-run` processes.
    Restart(procs::ServicesArgs),
    /// Take one attachment of a replica down or up again, for failure drills.
    Link(link::LinkArgs),
    /// Live numbers: per replica and attachment bytes, packets, drops and rates; connections
    /// per VIP backend; packets dropped by policies; DNS queries answered and forwarded.
    Stats(stats::StatsArgs),
    /// Run this host's agent of a cluster (an etcd store): build its share of every project.
    Agent(agent::AgentArgs),
    /// List the cluster's live nodes: underlay, labels, lease time left, health.
    Nodes(agent::NodesArgs),
    /// Show the netcompose version.
    Version(version::VersionArgs),
    /// Print a shell completion script.
    Completion(version::CompletionArgs),
    /// The project daemon (DNS resolver and x-run processes); started by `up`.
    #[command(hide = true)]
    Daemon(daemon::DaemonArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

impl Global {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            files: self.files.clone(),
            project_name: self.project_name.clone(),
            project_directory: self.project_directory.clone(),
            env_files: self.env_files.clone(),
            profiles: self.profiles.clone(),
            environment: None,
            scale: Vec::new(),
        }
    }

    /// `-p`, validated: a name that could lead outside the state and run directories (`..`,
    /// `a/b`) stops every command before anything is read or touched. `-p ''` is no name, as
    /// in Compose: the default applies.
    pub fn named_project(&self) -> miette::Result<Option<ProjectName>> {
        Ok(self
            .project_name
            .clone()
            .filter(|p| !p.is_empty())
            .map(ProjectName::new)
            .transpose()?)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> miette::Result<ExitCode> {
    cli.global.named_project()?;
    reconcile::open_store(cli.global.store.as_deref())?;
    match &cli.command {
        Command::Config { format } => {
            let checked = checked(&cli.global)?;
            print!("{}", config::render(&checked.project, *format)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Up(args) => up::run(&cli.global, args),
        Command::Down => down::run(&cli.global),
        Command::Ls(args) => ls::run(args),
        Command::Port(args) => port::run(&cli.global, args),
        Command::Version(args) => Ok(version::version(args)),
        Command::Completion(args) => Ok(version::completion(args)),
        Command::Ps(args) => ps::run(&cli.global, args),
        Command::Exec(args) => exec::run(&cli.global, args),
        Command::Logs(args) => logs::run(&cli.global, args),
        Command::Top(args) => procs::top(&cli.global, args),
        Command::Stop(args) => procs::control(&cli.global, Action::Stop, args),
        Command::Start(args) => procs::control(&cli.global, Action::Start, args),
        Command::Restart(args) => procs::control(&cli.global, Action::Restart, args),
        Command::Daemon(args) => daemon::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Nodes(args) => agent::nodes(args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::Stats(args) => stats::run(&cli.global, args),
        Command::Link(args) => link::run(&cli.global, args),
        Command::Validate => {
            let checked = checked(&cli.global)?;
            eprintln!(
                "{}: valid ({} services, {} networks)",
                checked.project.name,
                checked.project.services.len(),
                checked.project.networks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Load and validate, printing warnings; on failure print every diagnostic and stop.
fn checked(global: &Global) -> miette::Result<Checked> {
    checked_with(&global.load_options())
}

fn checked_with(opts: &LoadOptions) -> miette::Result<Checked> {
    match pipeline::checked_on(opts, crate::observe::host::kernel_facts) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            Ok(c)
        }
        Err(Failure::Load(e)) => Err(e.into()),
        Err(Failure::Invalid { diags, sources }) => {
            for w in &diags.warnings {
                eprintln!("warning: {w}");
            }
            fail(&diags, &sources)
        }
    }
}

/// The checked project with the replica counts of the `up --scale` that built it, for the
/// commands that show or enter what exists (`ps`, `exec`, `port`). A state that cannot be
/// read leaves the file's counts: `ps` says so when it reads the state for its resources.
fn as_built(global: &Global) -> miette::Result<Checked> {
    let mut checked = checked(global)?;
    let name = ProjectName::new(checked.project.name.clone())?;
    let scale = crate::reconcile::recorded_scale(&reconcile::store(), &name).unwrap_or_default();
    crate::load::rescale(
        &mut checked.project,
        scale.iter().map(|(s, n)| (s.as_str(), *n)),
    );
    Ok(checked)
}

/// The service a command names, or a diagnostic with the closest name the project has.
fn service<'p>(
    project: &'p crate::spec::Project,
    name: &str,
) -> miette::Result<&'p crate::spec::Service> {
    project.services.get(name).ok_or_else(|| {
        let hint = crate::diag::suggest(
            name,
            project.services.keys().map(String::as_str),
            "services",
        );
        miette::miette!(
            help = hint,
            "no service `{name}` in project {}",
            project.name
        )
    })
}

/// Print every diagnostic and stop.
fn fail<T>(
    diags: &crate::diag::Diagnostics,
    sources: &crate::source::Sources,
) -> miette::Result<T> {
    Err(failure(diags, sources))
}

/// Print every diagnostic; the report that ends the run.
fn failure(diags: &crate::diag::Diagnostics, sources: &crate::source::Sources) -> miette::Report {
    for report in crate::diag::reports(diags, sources) {
        eprintln!("{report:?}");
    }
    let n = diags.errors.len();
    miette::miette!(
        "{n} error{} found; nothing was done",
        if n == 1 { "" } else { "s" }
    )
}
