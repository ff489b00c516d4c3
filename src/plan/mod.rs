//! The `plan` stage: desired resources diffed against a baseline (the live machine, the state
//! file, or an older file given with --against). A change is create, update in place, replace
//! (with the attribute that forces it) or delete; unchanged resources are not listed.

mod attributes;
mod diff;
pub mod render;

pub use attributes::{Attributes, Side};
pub use diff::{diff, diff_to_apply};

use crate::model::daemon::DaemonConfig;
use crate::model::{Desired, Resource, ResourceId};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Version of the JSON plan document (docs/plan-format.md).
pub const FORMAT_VERSION: &str = "1.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: ResourceId,
    pub kind: String,
    /// `["create"]`, `["update"]`, `["delete"]`, or `["delete", "create"]` for a replacement.
    pub actions: Vec<Action>,
    pub before: Option<Attributes>,
    pub after: Option<Attributes>,
    /// Why a replacement is needed, or what drifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    /// The attributes before and after, as maps (empty on the side that does not exist).
    pub fn sides(&self) -> (Side<'_>, Side<'_>) {
        fn side(v: &Option<Attributes>) -> Side<'_> {
            v.as_ref()
                .map_or_else(|| Cow::Owned(Map::new()), Attributes::map)
        }
        (side(&self.before), side(&self.after))
    }

    pub fn is_replace(&self) -> bool {
        self.actions == [Action::Delete, Action::Create]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// The plan document: printed with --json, saved with --out, applied with `up --plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub project: String,
    /// What the plan was computed against: `empty`, `state`, `live` or `file:PATH`.
    pub baseline: String,
    /// A hash of the baseline's resources: `up --plan` refuses when the world no longer matches.
    pub fingerprint: String,
    pub resource_changes: Vec<Change>,
    /// Objects of the project changed or removed outside netcompose (live baseline only).
    #[serde(default)]
    pub drift: Vec<Change>,
    pub summary: Summary,
    /// Everything `up --plan` needs to apply this plan.
    pub desired: Desired,
    /// What the project daemon serves (DNS, x-run), so that `up --plan` needs no Compose file.
    /// Absent from plans of format 1.0, which leave the daemon as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonConfig>,
    /// What the plan leaves aside and why (since 1.2), e.g. placement that only a cluster
    /// honours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    pub fn new(desired: Desired, baseline: &[Resource], baseline_name: &str) -> Plan {
        let fingerprint = fingerprint(baseline);
        Plan::fingerprinted(desired, baseline, baseline_name, fingerprint)
    }

    /// [`Plan::new`] for a plan that is only shown as text, never saved: its fingerprint is
    /// left empty. Only `up --plan` reads one, and it costs every baseline resource written
    /// out as JSON into a hash (100-150 ms against a saved plan of a big project). Its desired
    /// resources end up in its changes rather than copied into them, and its `desired` keeps
    /// none: nothing reads them from a plan only shown.
    pub fn shown(desired: Desired, baseline: &[Resource], baseline_name: &str) -> Plan {
        let Desired {
            project,
            resources,
            allocations,
        } = desired;
        let changes = diff::diff_taking(baseline, resources);
        let desired = Desired {
            project,
            resources: Vec::new(),
            allocations,
        };
        Plan::with_changes(desired, changes, baseline_name, String::new())
    }

    fn fingerprinted(
        desired: Desired,
        baseline: &[Resource],
        baseline_name: &str,
        fingerprint: String,
    ) -> Plan {
        let changes = diff(baseline, &desired.resources);
        Plan::with_changes(desired, changes, baseline_name, fingerprint)
    }

    fn with_changes(
        desired: Desired,
        changes: Vec<Change>,
        baseline_name: &str,
        fingerprint: String,
    ) -> Plan {
        Plan {
            format_version: FORMAT_VERSION.into(),
            project: desired.project.clone(),
            baseline: baseline_name.into(),
            fingerprint,
            summary: summarize(&changes),
            resource_changes: changes,
            drift: Vec::new(),
            desired,
            daemon: None,
            notes: Vec::new(),
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.resource_changes.is_empty()
    }
}

pub fn summarize(changes: &[Change]) -> Summary {
    let mut s = Summary::default();
    for c in changes {
        s.add += usize::from(c.actions.contains(&Action::Create));
        s.change += usize::from(c.actions == [Action::Update]);
        s.destroy += usize::from(c.actions.contains(&Action::Delete));
    }
    s
}

/// A stable hash of a set of resources (order-independent).
pub fn fingerprint(resources: &[Resource]) -> String {
    let mut sorted: Vec<&Resource> = resources.iter().collect();
    sorted.sort_by(|a, b| a.address.cmp(&b.address));
    let mut h = Sha256::new();
    for r in sorted {
        // Straight into the hash: no text of each resource is built and thrown away.
        let _ = serde_json::to_writer(&mut h, r);
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Drift: how the live objects differ from what the state says netcompose left.
pub fn drift(state: &[Resource], observed: &[Resource]) -> Vec<Change> {
    diff(state, observed)
        .into_iter()
        .map(|mut c| {
            c.reason = Some(match c.actions.as_slice() {
                [Action::Delete] => "removed outside netcompose".to_string(),
                [Action::Create] => {
                    "appeared without being recorded (an interrupted run?)".to_string()
                }
                _ => format!(
                    "changed outside netcompose: {}",
                    changed_keys(&c).join(", ")
                ),
            });
            c
        })
        .collect()
}

fn changed_keys(c: &Change) -> Vec<String> {
    let (before, after) = c.sides();
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}
