//! nftables: rules described with a small builder ([`rule`]), grouped into one table per
//! project on the host ([`host`]). Rendering to nft text (plans) and JSON (the kernel) lives
//! with the builder; talking to nft lives in the kernel layer.

pub mod host;
pub mod replica;
pub mod rule;
pub mod vip;

/// The project's table on the host (family inet).
pub fn host_table(project: &str) -> String {
    format!("netcompose-{project}")
}
