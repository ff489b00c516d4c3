//! The `observe` stage: what exists on the machine. Host facts that planning needs (routes,
//! nameservers) are read here without privileges.

pub mod host;
pub mod live;
mod overlay;
mod qos;
mod table;
