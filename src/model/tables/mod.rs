//! The project's nftables tables as resources: the host table ([`host`]), each replica's own
//! table ([`replica`]) and the VIP dispatch both hold ([`vip`]). They are built from the
//! model's bridges, endpoints and VIPs with the rule builder of [`crate::firewall`], which
//! knows nothing of the model.

pub mod host;
pub mod reach;
pub mod replica;
pub mod vip;
