//! Diffing two sets of resources by address.

use super::{Action, Change};
use crate::model::{Resource, ResourceId, Spec};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Changes that turn `before` into `after`, sorted by address.
pub fn diff(before: &[Resource], after: &[Resource]) -> Vec<Change> {
    let old: HashMap<&ResourceId, &Resource> = before.iter().map(|r| (&r.address, r)).collect();
    let mut changes = Vec::new();
    for new in after {
        match old.get(&new.address) {
            None => changes.push(change(
                new,
                vec![Action::Create],
                None,
                Some(&new.spec),
                None,
            )),
            Some(prev) if prev.spec == new.spec => {}
            Some(prev) => changes.push(compare(prev, new)),
        }
    }
    let current: HashSet<&ResourceId> = after.iter().map(|r| &r.address).collect();
    for prev in before.iter().filter(|r| !current.contains(&r.address)) {
        changes.push(change(
            prev,
            vec![Action::Delete],
            Some(&prev.spec),
            None,
            None,
        ));
    }
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    changes
}

fn compare(prev: &Resource, new: &Resource) -> Change {
    let (a, b) = (to_map(&prev.spec), to_map(&new.spec));
    if prev.spec.kind() != new.spec.kind() {
        let reason = format!(
            "kind changed from {} to {}",
            prev.spec.kind(),
            new.spec.kind()
        );
        return change(
            new,
            vec![Action::Delete, Action::Create],
            Some(&prev.spec),
            Some(&new.spec),
            Some(reason),
        );
    }
    let forcing: Vec<&str> = new
        .spec
        .forces_replacement()
        .iter()
        .copied()
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    if forcing.is_empty() {
        change(
            new,
            vec![Action::Update],
            Some(&prev.spec),
            Some(&new.spec),
            None,
        )
    } else {
        let reason = format!("{} changed (cannot change in place)", forcing.join(", "));
        change(
            new,
            vec![Action::Delete, Action::Create],
            Some(&prev.spec),
            Some(&new.spec),
            Some(reason),
        )
    }
}

fn to_map(spec: &Spec) -> Map<String, Value> {
    match serde_json::to_value(spec) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn change(
    r: &Resource,
    actions: Vec<Action>,
    before: Option<&Spec>,
    after: Option<&Spec>,
    reason: Option<String>,
) -> Change {
    let value = |s: Option<&Spec>| s.and_then(|s| serde_json::to_value(s).ok());
    Change {
        address: r.address.clone(),
        kind: r.spec.kind().into(),
        actions,
        before: value(before),
        after: value(after),
        reason,
    }
}
