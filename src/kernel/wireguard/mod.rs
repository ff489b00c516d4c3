//! WireGuard tunnels between hosts, for encrypted overlays: VXLAN runs over the tunnel
//! addresses, so every byte between hosts is inside WireGuard. One device per host, one peer
//! per remote node. Two engines do it: the kernel's WireGuard (configured over generic netlink)
//! where the kernel has it, otherwise userspace WireGuard on a TUN device inside the agent
//! process. [`Engine`] says which one a host uses; it is detected, never assumed.
//!
//! Keys: [`KeyPair::generate`] makes a node's pair; the private key never leaves the host (the
//! agent keeps it in a root-only file), the public one goes into the node's record.

pub mod kernel;
pub mod userspace;

use super::KernelError;
use base64::Engine as _;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A Curve25519 key, public or private. Shown and stored as base64, as `wg` does; the Debug
/// form never prints the bytes, so a private key cannot end up in a log.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WireGuard key: expected 32 bytes in base64 (44 characters)")]
pub struct BadKey;

impl FromStr for Key {
    type Err = BadKey;

    fn from_str(s: &str) -> Result<Key, BadKey> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| BadKey)?;
        bytes.try_into().map(Key).map_err(|_| BadKey)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub private: Key,
    pub public: Key,
}

impl KeyPair {
    /// A fresh pair from the operating system's random source.
    pub fn generate() -> KeyPair {
        KeyPair::from_private(x25519_dalek::StaticSecret::random().to_bytes())
    }

    /// The pair of a stored private key.
    pub fn from_private(private: [u8; 32]) -> KeyPair {
        let secret = x25519_dalek::StaticSecret::from(private);
        let public = x25519_dalek::PublicKey::from(&secret);
        KeyPair {
            private: Key(secret.to_bytes()),
            public: Key(public.to_bytes()),
        }
    }
}

/// Which WireGuard a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The kernel's (`CONFIG_WIREGUARD`), configured over generic netlink.
    Kernel,
    /// Userspace WireGuard on a TUN device, inside the agent process.
    Userspace,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Kernel => "kernel",
            Engine::Userspace => "userspace",
        })
    }
}

/// What a host's tunnel device should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The device's name (a validated link name).
    pub name: String,
    pub private_key: Key,
    /// The UDP port it listens on, on every address of the host namespace.
    pub listen_port: u16,
    /// The host's tunnel address, with the prefix that covers every node's.
    pub address: IpNetwork,
    /// The device's MTU: the underlay's minus WireGuard's overhead.
    pub mtu: u32,
    /// One per remote node.
    pub peers: Vec<Peer>,
}

/// A remote node, as this host's tunnel sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub public_key: Key,
    /// Its underlay address and WireGuard port.
    pub endpoint: SocketAddr,
    /// Its tunnel address (a /32 or /128).
    pub allowed_ips: Vec<IpNetwork>,
}

/// A host's WireGuard device. `apply` makes the device match the spec (creating it, changing
/// its key, port, address or MTU, and adding, changing or removing peers), touching nothing
/// that already matches; a peer whose key changed is replaced, so a node that came back with a
/// new key is reachable again without restarting anyone.
pub trait Tunnel: Send {
    fn engine(&self) -> Engine;
    fn apply(&mut self, spec: &TunnelSpec) -> Result<(), KernelError>;
    /// The peers the device has now.
    fn peers(&self) -> Result<Vec<Peer>, KernelError>;
    /// Remove the device and its peers.
    fn remove(&mut self) -> Result<(), KernelError>;
}

/// Which engine this host can run, asked of the kernel in the calling thread's namespace:
/// the kernel's when the generic-netlink family `wireguard` resolves (the kernel loads the
/// module for that request when it can), else userspace when `/dev/net/tun` opens, else an
/// error that names both missing pieces.
pub fn detect() -> Result<Engine, KernelError> {
    let ctx = super::Ctx::new(
        "find a WireGuard engine",
        "(the kernel's: generic-netlink family `wireguard`, CONFIG_WIREGUARD; userspace: \
         /dev/net/tun, CONFIG_TUN)",
        None,
    );
    let genl = kernel::Genl::open().map_err(|e| ctx.os(e))?;
    if genl.resolve("wireguard").map_err(|e| ctx.os(e))?.is_some() {
        return Ok(Engine::Kernel);
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Ok(Engine::Userspace),
        // No device node, or a node without a driver behind it: the kernel lacks TUN.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO)
            ) =>
        {
            Err(ctx.unsupported_kind("tun", e))
        }
        Err(e) => Err(ctx.os(e)),
    }
}

/// A tunnel of `engine` in the calling thread's network namespace, where its device will be
/// made by the first `apply`. Its threads and sockets stay in that namespace whichever thread
/// drives it later; dropping it removes the device.
pub fn open(engine: Engine) -> Result<Box<dyn Tunnel>, KernelError> {
    Ok(match engine {
        Engine::Kernel => Box::new(kernel::KernelTunnel::open()?),
        Engine::Userspace => Box::new(userspace::UserspaceTunnel::open()?),
    })
}

/// An IPv6 link-local address, which the kernel gives a link itself: `apply` leaves it.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// The device's MTU, the spec's address (the only one: an IPv6 link-local address the kernel
/// added stays) and up, through rtnetlink, for either engine.
pub(super) async fn link_settings(
    netlink: &super::netlink::Netlink,
    index: u32,
    spec: &TunnelSpec,
) -> Result<(), KernelError> {
    let link = netlink.link_by_index(index).await?.ok_or_else(|| {
        super::Ctx::new("configure WireGuard", &spec.name, None)
            .invalid("the WireGuard link is gone")
    })?;
    if link.mtu != Some(spec.mtu) {
        netlink.set_mtu(index, spec.mtu).await?;
    }
    let mut has = false;
    for (_, addr) in netlink
        .addresses()
        .await?
        .into_iter()
        .filter(|(i, _)| *i == index)
    {
        if addr == spec.address {
            has = true;
        } else if !is_link_local(addr.ip()) {
            netlink.delete_address(index, addr).await?;
        }
    }
    if !has {
        netlink.add_address(index, spec.address).await?;
    }
    if !link.up {
        netlink.set_up(index).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_base64_and_hides_itself_in_debug() {
        let pair = KeyPair::generate();
        let text = pair.private.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<Key>(), Ok(pair.private.clone()));
        assert_eq!(format!("{:?}", pair.private), "Key(..)");
        assert_eq!("short".parse::<Key>(), Err(BadKey));
    }

    #[test]
    fn the_public_key_follows_from_the_private_one() {
        let pair = KeyPair::generate();
        assert_eq!(KeyPair::from_private(pair.private.0).public, pair.public);
        assert_ne!(KeyPair::generate().public, pair.public);
    }
}
