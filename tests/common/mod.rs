//! Shared helpers for integration tests. Each test crate includes this with `mod common;` and
//! uses what it needs (hence the `dead_code` allowance).
#![allow(dead_code)]

pub mod agents;
pub mod cluster;
pub mod project;
pub mod sandbox;

#[allow(unused_imports)]
pub use sandbox::{require_root, Sandbox};
