//! The `apply` stage: walk the changes in dependency order, deletes first (the reverse of the
//! old graph), then creates and updates (the new graph), every wave's independent resources
//! in parallel. Each operation is idempotent enough that an interrupted run, run again,
//! converges: the next `observe` sees what the last one left, by its ownership marks.

mod kernel;
mod ops;

pub use kernel::{Kernel, ETC_NETNS};

use crate::graph;
use crate::kernel::KernelError;
use crate::model::{Resource, Spec};
use crate::plan::{Action, Change};
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How many operations of a wave run at once.
const PARALLEL: usize = 32;

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("{address}: {source}")]
    Kernel {
        address: String,
        source: KernelError,
    },
    #[error("{address}: {object} exists and is not this project's; netcompose never touches it")]
    NotOurs { address: String, object: String },
    #[error("{address}: {object} does not exist")]
    Missing { address: String, object: String },
    #[error("{address}: {message}")]
    Internal { address: String, message: String },
    #[error(transparent)]
    Graph(#[from] graph::CycleError),
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub elapsed: Duration,
}

/// Called after each resource: (symbol, address, time taken).
pub type Progress<'a> = &'a (dyn Fn(&str, &str, Duration) + Sync);

/// Apply `changes` (computed from `observed` to `desired`).
pub async fn apply(
    k: &Kernel,
    observed: &[Resource],
    desired: &[Resource],
    changes: &[Change],
    progress: Progress<'_>,
) -> Result<Outcome, Vec<ApplyError>> {
    let start = Instant::now();
    let mut out = Outcome::default();
    let by_action = |a: Action| -> HashSet<&str> {
        changes
            .iter()
            .filter(|c| c.actions.contains(&a))
            .map(|c| c.address.as_str())
            .collect()
    };
    let (deletes, creates, updates) = (
        by_action(Action::Delete),
        by_action(Action::Create),
        by_action(Action::Update),
    );
    let gone = deleted_namespaces(observed, &deletes);
    let old: HashMap<&str, &Resource> = observed.iter().map(|r| (r.address.as_str(), r)).collect();

    for wave in graph::build(observed)
        .map_err(|e| vec![e.into()])?
        .destroy_waves()
    {
        let todo: Vec<&Resource> = wave
            .into_iter()
            .map(|i| &observed[i])
            .filter(|r| deletes.contains(r.address.as_str()) && !inside_gone(r, &gone))
            .collect();
        out.deleted += run(todo, |r| async move {
            timed("-", r, progress, ops::delete(k, r)).await
        })
        .await?;
    }
    for wave in graph::build(desired).map_err(|e| vec![e.into()])?.waves() {
        let todo: Vec<&Resource> = wave
            .into_iter()
            .map(|i| &desired[i])
            .filter(|r| {
                creates.contains(r.address.as_str()) || updates.contains(r.address.as_str())
            })
            .collect();
        let n = run(todo.clone(), |r| {
            let prev = old
                .get(r.address.as_str())
                .copied()
                .filter(|_| updates.contains(r.address.as_str()));
            async move {
                match prev {
                    Some(p) => timed("~", r, progress, ops::update(k, p, r)).await,
                    None => timed("+", r, progress, ops::create(k, r)).await,
                }
            }
        })
        .await?;
        let upd = todo
            .iter()
            .filter(|r| updates.contains(r.address.as_str()))
            .count();
        out.updated += upd;
        out.created += n - upd;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

async fn timed(
    symbol: &str,
    r: &Resource,
    progress: Progress<'_>,
    op: impl std::future::Future<Output = Result<(), ApplyError>>,
) -> Result<(), ApplyError> {
    let t = Instant::now();
    let result = op.await;
    if result.is_ok() {
        progress(symbol, &r.address, t.elapsed());
    }
    result
}

/// Run one wave, `PARALLEL` at a time; every failure of the wave is reported.
async fn run<'r, F, Fut>(todo: Vec<&'r Resource>, op: F) -> Result<usize, Vec<ApplyError>>
where
    F: Fn(&'r Resource) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApplyError>>,
{
    let n = todo.len();
    let errors: Vec<ApplyError> = stream::iter(todo)
        .map(op)
        .buffer_unordered(PARALLEL)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if errors.is_empty() {
        Ok(n)
    } else {
        Err(errors)
    }
}

/// Namespaces being deleted: what lives inside them goes with them.
fn deleted_namespaces<'a>(observed: &'a [Resource], deletes: &HashSet<&str>) -> HashSet<&'a str> {
    observed
        .iter()
        .filter(|r| deletes.contains(r.address.as_str()))
        .filter_map(|r| match &r.spec {
            Spec::Namespace(n) => Some(n.name.as_str()),
            _ => None,
        })
        .collect()
}

/// Routes and macvlan links inside a namespace that is deleted need no work of their own
/// (veth host ends are deleted explicitly: the kernel frees a namespace asynchronously).
fn inside_gone(r: &Resource, gone: &HashSet<&str>) -> bool {
    match &r.spec {
        Spec::Route(rt) => gone.contains(rt.namespace.as_str()),
        Spec::Link(l) if l.host_ifname.is_none() => gone.contains(l.namespace.as_str()),
        Spec::Files(f) => gone.contains(f.namespace.as_str()),
        _ => false,
    }
}
