//! netcompose: builds the network a Compose file describes out of real kernel objects.
//!
//! Pipeline (docs/architecture.md): load → validate → model → ipam → graph → plan (pure),
//! then observe → apply (kernel).

pub mod cli;
pub mod diag;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod source;
pub mod spec;
pub mod validate;
