//! What `plan` and `up` compute before they differ: the checked project, the baseline it is
//! compared with (a file given with --against, the state, or the live machine), and the
//! desired state built against the machine's routes and other projects' subnets.

use super::saved::{Changed, Saved};
use super::timing::Stages;
use super::{load, session::Session, Events, ReconcileError};
use crate::diag::{ConfigError, Diagnostics};
use crate::ipam::{Allocations, IpamError, Taken};
use crate::load::LoadOptions;
use crate::model::cluster::ClusterView;
use crate::model::daemon::DaemonConfig;
use crate::model::{self, Context, Desired, Resource, Spec};
use crate::pipeline::Checked;
use crate::plan::{Action, Change, Plan};
use crate::project_name::ProjectName;
use crate::state::Store;
use ipnetwork::IpNetwork;
use std::path::{Path, PathBuf};

/// What a plan is computed against.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// A saved plan, a state file, or an older Compose file (`--against`).
    File(PathBuf),
    /// The state as the store records it (what an unprivileged `plan` can see).
    State,
    /// The kernel's objects, with drift from the state (root).
    Live,
}

/// A baseline's resources, with the allocations that keep addresses sticky.
struct Base {
    name: String,
    resources: Resources,
    allocations: Allocations,
}

/// The resources of a baseline.
enum Resources {
    /// Read whole: a state, an older Compose file, a plan not laid out as `--out` writes it.
    Read(Vec<Resource>),
    /// A plan saved by `plan --out`, its resources left as text until the desired ones are
    /// built (see [`Saved`]).
    Saved { saved: Saved, name: String },
}

impl Resources {
    /// Every resource of the baseline.
    fn whole(self, desired: &[Resource]) -> Result<Vec<Resource>, ReconcileError> {
        match self {
            Resources::Read(resources) => Ok(resources),
            Resources::Saved { saved, name } => saved
                .whole(desired)
                .map_err(|source| ReconcileError::NotAPlanOrState { name, source }),
        }
    }

    /// The resources of the baseline and of `desired` that the diff needs: for a saved plan,
    /// not those it writes exactly as desired (unchanged, given back apart); else all of them.
    fn changed(self, desired: Vec<Resource>) -> Result<Changed, ReconcileError> {
        match self {
            Resources::Read(before) => Ok(Changed {
                before,
                after: desired,
                unchanged: Vec::new(),
            }),
            Resources::Saved { saved, name } => saved
                .changed(desired)
                .map_err(|source| ReconcileError::NotAPlanOrState { name, source }),
        }
    }
}

/// What to do about other projects whose state cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// `plan` changes nothing: say so and go on.
    Warn,
    /// `up` would allocate over subnets it cannot see: stop.
    Refuse,
}

/// A plan with the checked project it was made from (`graph` and `check` draw and probe it).
#[derive(Debug)]
pub struct Planning {
    pub checked: Checked,
    pub plan: Plan,
    /// Desired resources that a saved baseline holds as they are, which a plan only shown
    /// leaves out: kept rather than freed one by one before the plan is shown (the CLI ends
    /// without freeing a plan).
    pub unchanged: Vec<Resource>,
}

/// `netcompose plan`: the plan document, including what the daemon will serve.
pub fn plan(
    store: &dyn Store,
    opts: &LoadOptions,
    baseline: &Baseline,
    events: &dyn Events,
) -> Result<Planning, ReconcileError> {
    plan_on(store, opts, baseline, None, events)
}

/// What a plan is for. A plan document (`--json`, `--out`, `up --plan`) carries what the
/// daemon will serve; a plan only shown as text does not, and building that for a big project
/// is about a tenth of the plan's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Document,
    Shown,
}

/// [`plan`] of this host's share of a cluster project (`cluster`, as [`super::up_on`] takes
/// it); None plans every replica here.
pub fn plan_on(
    store: &dyn Store,
    opts: &LoadOptions,
    baseline: &Baseline,
    cluster: Option<&ClusterView>,
    events: &dyn Events,
) -> Result<Planning, ReconcileError> {
    plan_for(store, opts, baseline, cluster, Purpose::Document, events)
}

/// [`plan_on`], with the daemon's configuration only in a plan document (`purpose`).
pub fn plan_for(
    store: &dyn Store,
    opts: &LoadOptions,
    baseline: &Baseline,
    cluster: Option<&ClusterView>,
    purpose: Purpose,
    events: &dyn Events,
) -> Result<Planning, ReconcileError> {
    let stages = Stages::from_env("plan");
    // A saved plan is read on a second thread while the Compose file is loaded on this one
    // (tens of megabytes of a big project's plan, read and indexed in about half the time
    // of the load), and so are the host's sockets (the kernel's socket tables walked, most
    // of the host facts' time), which only a project that publishes ports needs.
    let (checked, saved, sockets) = std::thread::scope(|s| {
        let saved = match baseline {
            Baseline::File(path) => Some(s.spawn(|| read_saved(path))),
            Baseline::State | Baseline::Live => None,
        };
        let sockets = s.spawn(crate::observe::host::listening);
        let checked = load_on(opts, cluster, events);
        (checked, saved.map(|read| read.join()), sockets.join())
    });
    let checked = checked?;
    let sockets = match sockets {
        Ok(sockets) => sockets,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    stages.stage("load");
    let project = ProjectName::new(checked.project.name.clone())?;
    let others = others_taken(store, &project, Unreadable::Warn, events)?;
    let mut base = match (baseline, saved) {
        (Baseline::File(path), Some(Ok(saved))) => {
            against_file(opts, &project, path, saved, &others, events)?
        }
        (Baseline::File(path), None) => {
            against_file(opts, &project, path, read_saved(path), &others, events)?
        }
        (_, Some(Err(panic))) => std::panic::resume_unwind(panic),
        (Baseline::State | Baseline::Live, _) => from_state(store, &project, events),
    };
    stages.stage("baseline");
    // The baseline's allocations are moved into the context, not copied: a big project's
    // are tens of thousands of entries.
    let previous = match cluster {
        Some(view) => view.allocations.clone(),
        None => std::mem::take(&mut base.allocations),
    };
    let ctx = context_from(
        previous,
        &others,
        cluster,
        host_facts(&checked, Some(sockets))?,
    );
    stages.stage("host facts");
    let desired = build(&checked, &ctx)?;
    stages.stage("model");
    let daemon = match purpose {
        Purpose::Document => Some(daemon_config(&checked, &desired)?),
        Purpose::Shown => None,
    };
    stages.stage("daemon");
    // A plan only shown needs no fingerprint: nothing applies it.
    let planned = match purpose {
        Purpose::Document => Plan::new,
        Purpose::Shown => Plan::shown,
    };
    let mut unchanged = Vec::new();
    let mut plan = match (baseline, purpose) {
        (Baseline::Live, _) => {
            let resources = base.resources.whole(&desired.resources)?;
            let live = Session::open(&project)?.observe(&resources, &desired.resources)?;
            let mut drift = crate::plan::drift(&resources, &live);
            drift.extend(daemon_drift(&project, &live));
            stages.stage("observe");
            let mut plan = planned(desired, &live, "live");
            plan.drift = drift;
            plan
        }
        // A plan only shown diffs what a saved plan does not hold as it is; a document holds
        // every desired resource, and its fingerprint is of the whole baseline.
        (Baseline::File(_) | Baseline::State, Purpose::Shown) => {
            let changed = base.resources.changed(desired.resources)?;
            unchanged = changed.unchanged;
            let desired = Desired {
                resources: changed.after,
                ..desired
            };
            Plan::shown(desired, &changed.before, &base.name)
        }
        (Baseline::File(_) | Baseline::State, Purpose::Document) => {
            let before = base.resources.whole(&desired.resources)?;
            Plan::new(desired, &before, &base.name)
        }
    };
    stages.stage("diff");
    plan.daemon = daemon;
    plan.notes = match cluster {
        Some(view) => crate::model::overlay::notes(&checked.project, view),
        // One host, where placement is Compose's count (as with docker compose).
        None => {
            let mut notes = crate::placement::notes(&checked.project);
            notes.extend(crate::model::overlay::single_host_notes(&checked.project));
            notes
        }
    };
    Ok(Planning {
        checked,
        plan,
        unchanged,
    })
}

/// [`load`], with a cluster project's global services numbered as its placement runs them
/// (`cluster`: this host's share), so that the model and the daemon see those replicas.
pub(super) fn load_on(
    opts: &LoadOptions,
    cluster: Option<&ClusterView>,
    events: &dyn Events,
) -> Result<Checked, ReconcileError> {
    let mut checked = load(opts, events)?;
    if let Some(assignment) = cluster.and_then(|c| c.assignment.as_ref()) {
        crate::placement::number_global(&mut checked.project, assignment);
    }
    Ok(checked)
}

/// What the daemon serves, from the checked project: `up --plan` needs no Compose file.
pub(super) fn daemon_config(
    checked: &Checked,
    desired: &Desired,
) -> Result<DaemonConfig, ReconcileError> {
    Ok(crate::model::daemon::build(
        &checked.project,
        &ProjectName::new(checked.project.name.clone())?,
        desired,
        &crate::observe::host::nameservers()?,
        crate::model::daemon::Dirs {
            netns_dir: crate::kernel::netns::DEFAULT_DIR.into(),
            etc_netns: crate::kernel::ETC_NETNS.into(),
            working_dir: checked.working_dir.clone(),
        },
    ))
}

/// A project that is up without its daemon (killed, or the machine rebooted) has no resolver
/// and no x-run processes: `up` restarts it.
fn daemon_drift(project: &ProjectName, live: &[Resource]) -> Option<Change> {
    let up = live.iter().any(|r| matches!(r.spec, Spec::Namespace(_)));
    let stopped = match crate::daemon::status(project) {
        crate::daemon::Status::Stopped => true,
        crate::daemon::Status::Running { .. } => false,
    };
    (up && stopped).then(|| Change {
        address: crate::model::ResourceId::Daemon,
        kind: "daemon".into(),
        actions: vec![Action::Create],
        before: None,
        after: None,
        reason: Some("the project daemon (resolver, x-run) is not running; up restarts it".into()),
    })
}

/// The stored state's resources, or nothing (an unreadable state is a warning: `plan` must
/// work for users who cannot read /var/lib/netcompose).
fn from_state(store: &dyn Store, project: &ProjectName, events: &dyn Events) -> Base {
    match store.load(project) {
        Ok(Some(s)) => Base {
            name: "state".into(),
            resources: Resources::Read(s.resources),
            allocations: s.allocations,
        },
        Ok(None) => empty(),
        Err(e) => {
            events.warning(&format!("{e}; planning as if nothing exists"));
            empty()
        }
    }
}

fn empty() -> Base {
    Base {
        name: "empty".into(),
        resources: Resources::Read(Vec::new()),
        allocations: Allocations::default(),
    }
}

/// What [`read_saved`] found in a file given with `--against`: the resources and allocations
/// of a plan saved by `plan --out`, else that plan's `desired` as text to be parsed whole, else
/// nothing (another layout, or not a plan).
type SavedRead = std::io::Result<Option<Result<(Saved, Allocations), Vec<u8>>>>;

/// A plan saved by `plan --out` in `path`, read and indexed ([`Saved`]).
fn read_saved(path: &Path) -> SavedRead {
    Ok(desired_of_saved(path)?.map(Saved::read))
}

/// `--against FILE`: a saved plan (`saved`, as [`read_saved`] read it), a state file, or an
/// older Compose file.
fn against_file(
    opts: &LoadOptions,
    project: &ProjectName,
    path: &Path,
    saved: SavedRead,
    others: &Others,
    events: &dyn Events,
) -> Result<Base, ReconcileError> {
    let read = |source| ReconcileError::Read {
        path: path.display().to_string(),
        source,
    };
    let name = format!("file:{}", path.display());
    if let Some(saved) = saved.map_err(read)? {
        let desired = match saved {
            Ok((saved, allocations)) => {
                return Ok(Base {
                    name: name.clone(),
                    resources: Resources::Saved { saved, name },
                    allocations,
                })
            }
            Err(text) => std::str::from_utf8(&text).ok().and_then(desired_of_pretty),
        };
        if let Some(desired) = desired {
            return Ok(Base {
                name,
                resources: Resources::Read(desired.resources),
                allocations: desired.allocations,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    if text.trim_start().starts_with('{') {
        return saved_json(&text, name);
    }
    let mut opts = opts.clone();
    opts.files = vec![path.to_path_buf()];
    opts.project_name = Some(project.to_string());
    let old = load(&opts, events)?;
    let ctx = context(&old, &Allocations::default(), others, None)?;
    let desired = build(&old, &ctx)?;
    Ok(Base {
        name,
        resources: Resources::Read(desired.resources),
        allocations: desired.allocations,
    })
}

/// The part of a saved plan that a baseline is: its desired state. The rest (every change
/// with its attributes, the daemon's configuration) is as large again and is skipped unread.
#[derive(serde::Deserialize)]
struct SavedDesired {
    desired: Desired,
}

/// The desired state of a saved plan as `plan --out` writes it (pretty JSON), read alone.
/// There only the top-level keys start a line with exactly two spaces (a string holds no raw
/// newline), so the `desired` key is found by its line and only its value is parsed: the
/// changes before it, as large again, are not even scanned. None for any other layout, and
/// for a document cut short (it must still end its top-level object).
fn desired_of_pretty(text: &str) -> Option<Desired> {
    const KEY: &str = "\n  \"desired\": ";
    if !text.trim_end().ends_with("\n}") {
        return None;
    }
    let at = text.find(KEY)? + KEY.len();
    let mut value = serde_json::Deserializer::from_str(&text[at..]);
    serde::Deserialize::deserialize(&mut value).ok()
}

/// The desired state of a plan saved by `plan --out` as text, from the newline before its
/// key (see [`desired_of_pretty`]) to the end of the file, read without holding the changes
/// before it in memory: they are searched block by block for that key. On a big project that
/// is half of a 140 MB file never kept. None when the file is not laid out so (the caller
/// then reads it whole).
fn desired_of_saved(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    const KEY: &[u8] = b"\n  \"desired\": ";
    let mut file = std::fs::File::open(path)?;
    let size = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let finder = memchr::memmem::Finder::new(KEY);
    let mut block = vec![0; 1 << 20];
    // The end of the block before, where the key may begin.
    let mut kept = 0;
    let mut read = 0;
    loop {
        let n = file.read(&mut block[kept..])?;
        if n == 0 {
            return Ok(None);
        }
        let filled = kept + n;
        if read == 0 && !block.starts_with(b"{\n") {
            return Ok(None);
        }
        if let Some(at) = finder.find(&block[..filled]) {
            // Sized once: the desired half of a big plan is tens of megabytes.
            let mut rest = Vec::with_capacity(size.saturating_sub(read + at - kept) + 1);
            rest.extend_from_slice(&block[at..filled]);
            file.read_to_end(&mut rest)?;
            return Ok(Some(rest));
        }
        let keep = filled.min(KEY.len() - 1);
        block.copy_within(filled - keep..filled, 0);
        read += n;
        kept = keep;
    }
}

/// A saved plan (its desired state) or a state file.
fn saved_json(text: &str, name: String) -> Result<Base, ReconcileError> {
    if let Some(desired) = desired_of_pretty(text) {
        return Ok(Base {
            name,
            resources: Resources::Read(desired.resources),
            allocations: desired.allocations,
        });
    }
    if let Ok(plan) = serde_json::from_str::<SavedDesired>(text) {
        return Ok(Base {
            name,
            resources: Resources::Read(plan.desired.resources),
            allocations: plan.desired.allocations,
        });
    }
    match crate::state::decode(text.as_bytes()) {
        Ok(s) => Ok(Base {
            name,
            resources: Resources::Read(s.resources),
            allocations: s.allocations,
        }),
        Err(source) => Err(ReconcileError::NotAPlanOrState { name, source }),
    }
}

/// What other projects hold: subnets (each with who uses it) and host ports picked for their
/// target-only published ports.
#[derive(Debug, Default)]
pub(super) struct Others {
    subnets: Vec<(IpNetwork, String)>,
    ports: Vec<(crate::spec::Protocol, u16)>,
    vnis: std::collections::BTreeMap<u32, String>,
    macs: std::collections::HashSet<String>,
}

/// Other projects' subnets and ephemeral published ports.
pub(super) fn others_taken(
    store: &dyn Store,
    project: &ProjectName,
    unreadable: Unreadable,
    events: &dyn Events,
) -> Result<Others, ReconcileError> {
    taken_by(store.others(project), unreadable, events)
}

/// What `others` (other projects' states, read from the store) hold: subnets, VNIs, MACs and
/// ephemeral published ports.
pub(super) fn taken_by(
    others: crate::state::Others,
    unreadable: Unreadable,
    events: &dyn Events,
) -> Result<Others, ReconcileError> {
    if !others.unreadable.is_empty() {
        match unreadable {
            Unreadable::Refuse => {
                return Err(ReconcileError::OthersUnreadable(others.unreadable));
            }
            Unreadable::Warn => {
                for e in &others.unreadable {
                    events.warning(&format!(
                        "{e}; this plan does not know the subnets recorded there (`up` refuses to allocate until it can read them)"
                    ));
                }
            }
        }
    }
    let mut taken = Others::default();
    for other in &others.states {
        for (key, port) in &other.allocations.ports {
            // The key ends in `/tcp`, `/udp` or `/sctp` (model::ports::port_key).
            let protocol = match key.rsplit('/').next() {
                Some("tcp") => crate::spec::Protocol::Tcp,
                Some("udp") => crate::spec::Protocol::Udp,
                Some("sctp") => crate::spec::Protocol::Sctp,
                // Not a key this version writes: nothing to keep clear of.
                Some(_) | None => continue,
            };
            taken.ports.push((protocol, *port));
        }
        for (key, a) in &other.allocations.networks {
            let holder = format!("network `{key}` of project `{}`", other.project);
            for s in &a.subnets {
                taken.subnets.push((*s, holder.clone()));
            }
            if let Some(vni) = a.vni {
                taken.vnis.insert(vni, holder.clone());
            }
            taken.macs.extend(a.macs.values().cloned());
        }
    }
    Ok(taken)
}

/// Routes of the host (but not this project's own bridges) and other projects' subnets.
pub(super) fn context(
    checked: &Checked,
    previous: &Allocations,
    others: &Others,
    cluster: Option<&ClusterView>,
) -> Result<Context, ReconcileError> {
    Ok(context_with(
        previous,
        others,
        cluster,
        host_facts(checked, None)?,
    ))
}

/// [`context`], with the host's facts already read.
pub(super) fn context_with(
    previous: &Allocations,
    others: &Others,
    cluster: Option<&ClusterView>,
    facts: HostFacts,
) -> Context {
    let previous = cluster.map_or(previous, |c| &c.allocations).clone();
    context_from(previous, others, cluster, facts)
}

/// What the model needs to know of the host: none of it depends on the state, so `up` reads
/// it while it reads the state.
#[derive(Debug, Clone)]
pub(super) struct HostFacts {
    /// The host's routes, but those of this project's own bridges, as taken subnets.
    routes: Vec<(IpNetwork, String)>,
    nameservers: Vec<String>,
    listening: Vec<model::Listening>,
    port_range: (u16, u16),
}

/// The host's facts, with its sockets already read (`sockets`) or read here (None).
pub(super) fn host_facts(
    checked: &Checked,
    sockets: Option<Result<Vec<model::Listening>, crate::observe::host::HostError>>,
) -> Result<HostFacts, ReconcileError> {
    let project = &checked.project;
    let own_bridges: Vec<String> = project
        .networks
        .keys()
        .map(|k| model::endpoints_bridge_name(project, k))
        .collect();
    let routes = crate::observe::host::routes()?
        .into_iter()
        .filter(|r| !own_bridges.contains(&r.device))
        .map(|r| {
            (
                r.destination,
                format!("a route of the host via {}", r.device),
            )
        })
        .collect();
    Ok(HostFacts {
        routes,
        nameservers: crate::observe::host::nameservers()?,
        // Only published ports meet the host's sockets, and reading those walks the kernel's
        // socket tables (several ms): not for a project that publishes none.
        listening: match project.services.values().any(|s| !s.ports.is_empty()) {
            true => host_listening(project, sockets)?,
            false => Vec::new(),
        },
        port_range: crate::observe::host::local_port_range()?,
    })
}

/// The context of a model: the allocations to keep (a cluster's, else the previous ones),
/// what other projects and the host take, and the host's facts.
fn context_from(
    previous: Allocations,
    others: &Others,
    cluster: Option<&ClusterView>,
    facts: HostFacts,
) -> Context {
    let mut entries = facts.routes;
    entries.extend(others.subnets.iter().cloned());
    Context {
        previous,
        taken: Taken {
            entries,
            vnis: others.vnis.clone(),
            macs: others.macs.clone(),
        },
        pools: Default::default(),
        host_nameservers: facts.nameservers,
        listening: facts.listening,
        port_range: Some(facts.port_range),
        other_ports: others.ports.clone(),
        cluster: cluster.cloned(),
    }
}

/// Where the `ports:` entry of an allocation key was written.
fn port_span(project: &crate::spec::Project, key: &str) -> crate::source::Span {
    project
        .services
        .iter()
        .flat_map(|(name, svc)| {
            svc.ports.iter().filter_map(move |p| {
                (p.target.start..=p.target.end)
                    .any(|t| model::ports::port_key(name, p, t) == key)
                    .then_some(p.span)
            })
        })
        .next()
        .unwrap_or_default()
}

/// The host's listening sockets, without those of the project's own daemon on [::1] (its
/// relays of published ports): they would otherwise collide with the ports they relay.
fn host_listening(
    project: &crate::spec::Project,
    sockets: Option<Result<Vec<model::Listening>, crate::observe::host::HostError>>,
) -> Result<Vec<model::Listening>, ReconcileError> {
    let relays = ProjectName::new(project.name.clone())
        .map(|name| crate::daemon::relays(&name))
        .unwrap_or_default();
    Ok(sockets
        .unwrap_or_else(crate::observe::host::listening)?
        .into_iter()
        .filter(|l| !relays.iter().any(|r| r.holds(l)))
        .collect())
}

/// Build the desired state; IPAM failures become diagnostics at the network's key.
pub(super) fn build(checked: &Checked, ctx: &Context) -> Result<Desired, ReconcileError> {
    let mut diags = Diagnostics::default();
    crate::validate::ports_in_use(&checked.project, &ctx.listening, &mut diags);
    let errors = match model::build(&checked.project, ctx) {
        Ok(d) if !diags.has_errors() => {
            crate::graph::check(&d.resources)?;
            return Ok(d);
        }
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    };
    for e in errors {
        let network = match &e {
            IpamError::PoolsExhausted { network, .. }
            | IpamError::Exhausted { network, .. }
            | IpamError::Conflict { network, .. }
            | IpamError::VniTaken { network, .. }
            | IpamError::VnisExhausted { network } => Some(network.clone()),
            IpamError::PortsExhausted { .. } => None,
        };
        let at = match &e {
            IpamError::PortsExhausted { key, .. } => port_span(&checked.project, key),
            IpamError::VniTaken { .. } | IpamError::VnisExhausted { .. } => network
                .and_then(|network| checked.project.networks.get(&network))
                .map(|n| {
                    n.driver_opts
                        .get(crate::ipam::vni::VXLANID_LIST)
                        .map_or(n.key.span, |l| l.span)
                })
                .unwrap_or_default(),
            IpamError::PoolsExhausted { .. }
            | IpamError::Exhausted { .. }
            | IpamError::Conflict { .. } => network
                .and_then(|network| checked.project.networks.get(&network))
                .map(|n| {
                    n.ipam
                        .config
                        .first()
                        .and_then(|c| c.subnet.as_ref())
                        .map_or(n.key.span, |s| s.span)
                })
                .unwrap_or_default(),
        };
        let hint = match e {
            IpamError::Conflict { .. } => "choose a subnet nothing else on this machine uses",
            IpamError::PoolsExhausted { .. } | IpamError::Exhausted { .. } => {
                "give the network a larger subnet"
            }
            IpamError::PortsExhausted { .. } => {
                "give the port a host port (HOST:CONTAINER), or free some of the range"
            }
            IpamError::VniTaken { .. } => {
                "choose another vxlanid_list, or drop it to have a free VNI allocated"
            }
            IpamError::VnisExhausted { .. } => "remove overlay networks no project uses",
        };
        diags.push(ConfigError::Invalid {
            message: e.to_string(),
            hint: hint.to_string(),
            at,
        });
    }
    Err(ReconcileError::Invalid {
        diags: Box::new(diags),
        sources: Box::new(checked.sources.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Summary;
    use crate::reconcile::{Applied, DaemonEvent};
    use std::time::Duration;

    struct Quiet;

    impl Events for Quiet {
        fn warning(&self, _: &str) {}
        fn waiting_for_lock(&self, _: &ProjectName) {}
        fn drift(&self, _: &Change) {}
        fn applying(&self, _: &Summary) {}
        fn progress(&self, _: &str, _: &str, _: Duration) {}
        fn applied(&self, _: &Applied) {}
        fn daemon(&self, _: &DaemonEvent) {}
    }

    const PROJECT: &str = "name: inc
networks:
  front: {}
  back: {}
services:
  web:
    deploy: {replicas: 2}
    networks: [front, back]
  api:
    networks: [back]
  cache:
    networks: [front]
  db:
    networks: [back]
    x-policy:
      ingress:
        allow: [\"web:5432/tcp\"]
";

    /// A saved plan read back as the baseline: one service scaled changes that service's
    /// resources and what names it (its VIPs' maps, the zones, the host table, the policy that
    /// admits it), and not the tables of every replica that merely shares a network with it.
    #[test]
    fn one_service_scaled_against_a_saved_plan_changes_only_what_depends_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, PROJECT).unwrap();
        let opts = LoadOptions {
            files: vec![file.clone()],
            environment: Some(Default::default()),
            ..Default::default()
        };
        let store = crate::state::FileStore::new(dir.path().join("state"));
        let first = plan(&store, &opts, &Baseline::State, &Quiet).unwrap().plan;
        let saved = dir.path().join("base.json");
        std::fs::write(&saved, serde_json::to_vec_pretty(&first).unwrap()).unwrap();

        let unchanged = plan(&store, &opts, &Baseline::File(saved.clone()), &Quiet).unwrap();
        assert_eq!(unchanged.plan.resource_changes, []);

        std::fs::write(&file, PROJECT.replace("replicas: 2", "replicas: 3")).unwrap();
        let scaled = plan(&store, &opts, &Baseline::File(saved), &Quiet)
            .unwrap()
            .plan;
        let changed: Vec<(String, Vec<Action>)> = scaled
            .resource_changes
            .iter()
            .map(|c| (c.address.to_string(), c.actions.clone()))
            .collect();
        let create = |a: &str| (a.to_string(), vec![Action::Create]);
        let update = |a: &str| (a.to_string(), vec![Action::Update]);
        assert_eq!(
            changed,
            [
                update("dns.back"),
                update("dns.front"),
                update("firewall.host"),
                update("service.db[1].firewall"),
                update("service.web.vip.back"),
                update("service.web.vip.front"),
                create("service.web[3]"),
                create("service.web[3].files"),
                create("service.web[3].firewall"),
                create("service.web[3].link.back"),
                create("service.web[3].link.front"),
                create("service.web[3].route.default"),
            ]
        );
    }

    /// A saved plan gives the same baseline whether `plan --out` wrote it (pretty: its
    /// `desired` alone is parsed) or it was written compact (read whole); one cut short gives
    /// none.
    #[test]
    fn a_saved_plan_reads_the_same_pretty_or_compact_and_not_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, PROJECT).unwrap();
        let opts = LoadOptions {
            files: vec![file],
            environment: Some(Default::default()),
            ..Default::default()
        };
        let store = crate::state::FileStore::new(dir.path().join("state"));
        let first = plan(&store, &opts, &Baseline::State, &Quiet).unwrap().plan;
        let pretty = serde_json::to_string_pretty(&first).unwrap();
        let compact = serde_json::to_string(&first).unwrap();
        assert_eq!(desired_of_pretty(&pretty).as_ref(), Some(&first.desired));
        assert_eq!(desired_of_pretty(&compact), None);
        let saved = dir.path().join("saved.json");
        std::fs::write(&saved, &pretty).unwrap();
        let Ok((text, allocations)) = Saved::read(desired_of_saved(&saved).unwrap().unwrap())
        else {
            panic!("a plan saved pretty is read as text");
        };
        assert_eq!(text.whole(&[]).unwrap(), first.desired.resources);
        assert_eq!(allocations, first.desired.allocations);
        std::fs::write(&saved, &compact).unwrap();
        assert_eq!(desired_of_saved(&saved).unwrap(), None);
        let compact = saved_json(&compact, "compact".into()).unwrap();
        let Resources::Read(resources) = compact.resources else {
            panic!("a compact plan is read whole");
        };
        assert_eq!(resources, first.desired.resources);
        assert_eq!(compact.allocations, first.desired.allocations);
        let cut = &pretty[..pretty.len() - 3];
        assert!(matches!(
            saved_json(cut, "cut".into()),
            Err(ReconcileError::NotAPlanOrState { .. })
        ));
    }

    /// A state file as a baseline: the parts its replica tables share, written once, are read
    /// back in every table that holds them.
    #[test]
    fn a_state_file_is_read_as_a_baseline_with_its_shared_parts() {
        let dir = tempfile::tempdir().unwrap();
        let first = first_plan(dir.path());
        let state = crate::state::State {
            format_version: crate::state::FORMAT_VERSION,
            project: first.project.clone(),
            allocations: first.desired.allocations.clone(),
            resources: first.desired.resources.clone(),
            ..Default::default()
        };
        let text = crate::state::encode(&state).unwrap();
        assert!(text.len() < serde_json::to_vec(&state).unwrap().len());
        let text = String::from_utf8(text).unwrap();
        let base = saved_json(&text, "state".into()).unwrap();
        let Resources::Read(resources) = base.resources else {
            panic!("a state is read whole");
        };
        assert_eq!(resources, first.desired.resources);
        assert_eq!(base.allocations, first.desired.allocations);
    }

    /// A plan saved by `plan --out`, read back as [`Saved`].
    fn saved(dir: &Path, plan: &Plan) -> Saved {
        let path = dir.join("saved.json");
        std::fs::write(&path, serde_json::to_vec_pretty(plan).unwrap()).unwrap();
        let text = desired_of_saved(&path).unwrap().unwrap();
        Saved::read(text).ok().unwrap().0
    }

    /// The diff of `desired` against `saved` without what it holds unchanged.
    fn diffed(saved: &Saved, desired: &[Resource]) -> Vec<Change> {
        let changed = saved.changed(desired.to_vec()).unwrap();
        assert_eq!(changed.after.len() + changed.unchanged.len(), desired.len());
        crate::plan::diff(&changed.before, &changed.after)
    }

    fn first_plan(dir: &Path) -> Plan {
        let file = dir.join("compose.yaml");
        std::fs::write(&file, PROJECT).unwrap();
        let opts = LoadOptions {
            files: vec![file],
            environment: Some(Default::default()),
            ..Default::default()
        };
        let store = crate::state::FileStore::new(dir.join("state"));
        plan(&store, &opts, &Baseline::State, &Quiet).unwrap().plan
    }

    /// Against a saved plan, only what it does not write as desired is parsed and diffed: the
    /// changes are those of the whole sides, and a changed resource still shows its before.
    #[test]
    fn a_saved_plan_diffs_as_a_whole_baseline_with_only_what_differs_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let first = first_plan(dir.path());
        let saved = saved(dir.path(), &first);
        let old = &first.desired.resources;
        let mut new = old.clone();
        let changed = new
            .iter_mut()
            .find_map(|r| match &mut r.spec {
                Spec::Link(link) => {
                    link.mtu = 9000;
                    Some(r.address.clone())
                }
                _ => None,
            })
            .unwrap();
        let gone = new.remove(0).address;
        let changes = diffed(&saved, &new);
        assert_eq!(changes, crate::plan::diff(old, &new));
        let addresses: Vec<_> = changes.iter().map(|c| c.address.clone()).collect();
        assert_eq!(addresses, [gone, changed.clone()]);
        let before = old.iter().find(|r| r.address == changed).unwrap();
        assert_eq!(
            changes[1].before,
            Some(crate::plan::Attributes::Spec(Box::new(before.spec.clone())))
        );
        let whole = saved.changed(old.clone()).unwrap();
        assert_eq!((whole.before.len(), whole.after.len()), (0, 0));
        assert_eq!(saved.whole(&new).unwrap(), *old);
    }

    /// A saved resource written otherwise than this version writes it (here one character of
    /// its address escaped) is not the same text: it is parsed, and compared as a value, so
    /// that an equal one is no change; one that differs is, with the saved value as before.
    #[test]
    fn a_resource_written_otherwise_is_parsed_and_compared_as_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = first_plan(dir.path());
        let old = first.desired.resources.clone();
        let path = dir.path().join("saved.json");
        let last = old.last().unwrap().address.to_string();
        let escaped = format!("{}\\u{:04x}", &last[..1], u32::from(last.as_bytes()[1]));
        let pretty = serde_json::to_string_pretty(&first).unwrap();
        let (changes, desired) = pretty.split_once("\n  \"desired\": ").unwrap();
        let desired = desired.replacen(
            &format!("\"address\": \"{last}\""),
            &format!("\"address\": \"{escaped}{}\"", &last[2..]),
            1,
        );
        std::fs::write(&path, format!("{changes}\n  \"desired\": {desired}")).unwrap();
        let (written, _) = Saved::read(desired_of_saved(&path).unwrap().unwrap())
            .ok()
            .unwrap();
        let changed = written.changed(old.clone()).unwrap();
        assert_eq!(changed.before, [old.last().unwrap().clone()]);
        assert_eq!(crate::plan::diff(&changed.before, &changed.after), []);

        // The saved value differs: shown as it was saved.
        let Spec::Namespace(namespace) = &mut first.desired.resources[1..]
            .iter_mut()
            .find(|r| matches!(r.spec, Spec::Namespace(_)))
            .unwrap()
            .spec
        else {
            unreachable!()
        };
        namespace.name.push('x');
        let edited = first.desired.resources.clone();
        let saved = saved(dir.path(), &first);
        let changes = diffed(&saved, &old);
        assert_eq!(changes, crate::plan::diff(&edited, &old));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].actions, [Action::Delete, Action::Create]);
    }

    /// An address saved twice: the diff compares with the last of them, as with a baseline
    /// read whole, and nothing is left out as unchanged.
    #[test]
    fn an_address_saved_twice_diffs_as_a_whole_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = first_plan(dir.path());
        let new = first.desired.resources.clone();
        let mut twice = new[3].clone();
        if let Spec::Link(link) = &mut twice.spec {
            link.mtu = 9000;
        }
        first.desired.resources.insert(4, twice);
        let saved = saved(dir.path(), &first);
        let changed = saved.changed(new.clone()).unwrap();
        assert!(changed.unchanged.is_empty());
        let changes = crate::plan::diff(&changed.before, &changed.after);
        assert_eq!(changes, crate::plan::diff(&first.desired.resources, &new));
    }
}
