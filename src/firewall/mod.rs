//! nftables rules described with a small builder ([`rule`]): they read as nft rules in plans
//! (`Display`) and become nf_tables expressions for the kernel ([`compile`]), from one
//! description. Which tables the project has and what they hold is the model's
//! ([`crate::model::tables`]); talking to the kernel is the kernel layer's.

pub mod compile;
pub mod rule;

/// The project's table on the host (family inet).
pub fn host_table(project: &str) -> String {
    format!("netcompose-{project}")
}
