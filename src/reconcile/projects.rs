//! `ls`: the projects the store knows on this machine, each with how many of its namespaces
//! exist and the Compose files it was brought up from.

use super::session;
use crate::model::Spec;
use crate::state::{StateError, Store};

/// One project as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectStatus {
    pub name: String,
    /// The namespaces the state records for the project.
    pub namespaces: usize,
    /// Of those, the ones that exist on the machine now.
    pub running: usize,
    pub files: Vec<String>,
}

/// Every project with a state, by name; states that cannot be read come back apart.
pub fn projects(store: &dyn Store) -> (Vec<ProjectStatus>, Vec<StateError>) {
    let all = store.all();
    let mut out: Vec<ProjectStatus> = all
        .states
        .into_iter()
        .map(|s| {
            let names: Vec<&str> = s
                .resources
                .iter()
                .filter_map(|r| match &r.spec {
                    Spec::Namespace(n) => Some(n.name.as_str()),
                    _ => None,
                })
                .collect();
            ProjectStatus {
                running: names
                    .iter()
                    .filter(|n| session::namespace_exists(n))
                    .count(),
                namespaces: names.len(),
                name: s.project,
                files: s.files,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, all.unreadable)
}
