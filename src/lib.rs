//! netcompose: builds the network a Compose file describes out of real kernel objects.
//!
//! Pipeline (docs/architecture.md): load → validate → model → ipam → graph → plan (pure),
//! then observe → apply (kernel).

pub mod apply;
pub mod check;
pub mod cli;
pub mod daemon;
pub mod diag;
pub mod firewall;
pub mod graph;
pub mod ipam;
pub mod kernel;
pub mod load;
pub mod model;
pub mod observe;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod project_name;
pub mod reconcile;
pub mod source;
pub mod spec;
pub mod state;
pub mod topology;
pub mod validate;
