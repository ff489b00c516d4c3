//! What `plan` and `up` compute before they differ: the checked project, the baseline it is
//! compared with (a file given with --against, the state file, or nothing), and the desired
//! state built against the machine's routes and other projects' subnets.

use super::Global;
use crate::diag::{ConfigError, Diagnostics};
use crate::ipam::{Allocations, Taken};
use crate::load::LoadOptions;
use crate::model::{self, Context, Desired, Resource};
use crate::pipeline::Checked;
use crate::state::{self, State};
use miette::IntoDiagnostic;
use std::path::{Path, PathBuf};

pub struct Planning {
    pub checked: Checked,
    pub desired: Desired,
    pub baseline: Vec<Resource>,
    pub baseline_name: String,
    /// Live objects that differ from the state (live baseline only).
    pub drift: Vec<crate::plan::Change>,
}

/// The baseline a plan is computed against, with the allocations that keep addresses sticky.
pub struct Baseline {
    pub name: String,
    pub resources: Vec<Resource>,
    pub allocations: Allocations,
}

pub fn state_root() -> PathBuf {
    PathBuf::from(state::STATE_ROOT)
}

pub fn planning(global: &Global, against: Option<&Path>) -> miette::Result<Planning> {
    let checked = super::checked(global)?;
    let baseline = match against {
        Some(path) => against_file(global, &checked.project.name, path)?,
        None => from_state(&checked.project.name),
    };
    let ctx = context(&checked, &baseline.allocations)?;
    let desired = build(&checked, &ctx)?;
    if against.is_none() && super::live::is_root() {
        let live = super::live::observe_project(
            &checked.project.name,
            &baseline.resources,
            &desired.resources,
        )?;
        let mut drift = crate::plan::drift(&baseline.resources, &live);
        drift.extend(daemon_drift(&checked.project.name, &live));
        return Ok(Planning {
            checked,
            desired,
            baseline: live,
            baseline_name: "live".into(),
            drift,
        });
    }
    Ok(Planning {
        checked,
        desired,
        baseline: baseline.resources,
        baseline_name: baseline.name,
        drift: Vec::new(),
    })
}

/// A project that is up without its daemon (killed, or the machine rebooted) has no resolver
/// and no x-run processes: `up` restarts it.
fn daemon_drift(project: &str, live: &[Resource]) -> Option<crate::plan::Change> {
    let up = live
        .iter()
        .any(|r| matches!(r.spec, crate::model::Spec::Namespace(_)));
    let stopped = matches!(
        crate::daemon::status(project),
        crate::daemon::Status::Stopped
    );
    (up && stopped).then(|| crate::plan::Change {
        address: "daemon".into(),
        kind: "daemon".into(),
        actions: vec![crate::plan::Action::Create],
        before: None,
        after: None,
        reason: Some("the project daemon (resolver, x-run) is not running; up restarts it".into()),
    })
}

/// The state file's resources, or nothing (an unreadable state is a warning: plan must work
/// for users who cannot read /var/lib/netcompose).
pub fn from_state(project: &str) -> Baseline {
    match state::load(&state_root(), project) {
        Ok(Some(s)) => Baseline {
            name: "state".into(),
            resources: s.resources,
            allocations: s.allocations,
        },
        Ok(None) => empty(),
        Err(e) => {
            eprintln!("warning: {e}; planning as if nothing exists");
            empty()
        }
    }
}

fn empty() -> Baseline {
    Baseline {
        name: "empty".into(),
        resources: Vec::new(),
        allocations: Allocations::default(),
    }
}

/// `--against FILE`: a saved plan, a state file, or an older Compose file.
fn against_file(global: &Global, project: &str, path: &Path) -> miette::Result<Baseline> {
    let text = std::fs::read_to_string(path).into_diagnostic()?;
    let name = format!("file:{}", path.display());
    if text.trim_start().starts_with('{') {
        return saved_json(&text, name);
    }
    let mut opts: LoadOptions = global.load_options();
    opts.files = vec![path.to_path_buf()];
    opts.project_name = Some(project.to_string());
    let old = super::checked_with(&opts)?;
    let ctx = context(&old, &Allocations::default())?;
    let desired = build(&old, &ctx)?;
    Ok(Baseline {
        name,
        resources: desired.resources,
        allocations: desired.allocations,
    })
}

/// A saved plan (its desired state) or a state file.
fn saved_json(text: &str, name: String) -> miette::Result<Baseline> {
    if let Ok(plan) = serde_json::from_str::<crate::plan::Plan>(text) {
        return Ok(Baseline {
            name,
            resources: plan.desired.resources,
            allocations: plan.desired.allocations,
        });
    }
    match serde_json::from_str::<State>(text) {
        Ok(s) => Ok(Baseline {
            name,
            resources: s.resources,
            allocations: s.allocations,
        }),
        Err(e) => Err(miette::miette!(
            help = "--against takes a Compose file, a plan saved with --out, or a state file",
            "{name} is neither a netcompose plan nor a state file: {e}"
        )),
    }
}

/// Routes of the host (but not this project's own bridges) and other projects' subnets.
pub fn context(checked: &Checked, previous: &Allocations) -> miette::Result<Context> {
    let host = |e: crate::observe::host::HostError| miette::miette!("{e}");
    let project = &checked.project;
    let own_bridges: Vec<String> = project
        .networks
        .keys()
        .map(|k| model::endpoints_bridge_name(project, k))
        .collect();
    let mut taken = Taken::default();
    for r in crate::observe::host::routes()
        .map_err(host)?
        .into_iter()
        .filter(|r| !own_bridges.contains(&r.device))
    {
        taken.entries.push((
            r.destination,
            format!("a route of the host via {}", r.device),
        ));
    }
    for other in state::others(&state_root(), &project.name) {
        for (key, a) in &other.allocations.networks {
            for s in &a.subnets {
                taken.entries.push((
                    *s,
                    format!("network `{key}` of project `{}`", other.project),
                ));
            }
        }
    }
    Ok(Context {
        previous: previous.clone(),
        taken,
        pools: Default::default(),
        host_nameservers: crate::observe::host::nameservers().map_err(host)?,
        listening: crate::observe::host::listening().map_err(host)?,
    })
}

/// Build the desired state; IPAM failures become diagnostics at the network's key.
pub fn build(checked: &Checked, ctx: &Context) -> miette::Result<Desired> {
    let mut diags = Diagnostics::default();
    crate::validate::ports_in_use(&checked.project, &ctx.listening, &mut diags);
    let errors = match model::build(&checked.project, ctx) {
        Ok(d) if !diags.has_errors() => {
            crate::graph::build(&d.resources).map_err(|e| miette::miette!("{e}"))?;
            return Ok(d);
        }
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    };
    for e in errors {
        let network = match &e {
            crate::ipam::IpamError::PoolsExhausted { network, .. }
            | crate::ipam::IpamError::Exhausted { network, .. }
            | crate::ipam::IpamError::Conflict { network, .. } => network.clone(),
        };
        let at = checked
            .project
            .networks
            .get(&network)
            .map(|n| {
                n.ipam
                    .config
                    .first()
                    .and_then(|c| c.subnet.as_ref())
                    .map_or(n.key.span, |s| s.span)
            })
            .unwrap_or_default();
        let hint = match e {
            crate::ipam::IpamError::Conflict { .. } => {
                "choose a subnet nothing else on this machine uses".to_string()
            }
            _ => "give the network a larger subnet".to_string(),
        };
        diags.push(ConfigError::Invalid {
            message: e.to_string(),
            hint,
            at,
        });
    }
    super::fail(&diags, &checked.sources)
}
