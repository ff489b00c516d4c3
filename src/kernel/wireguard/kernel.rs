//! Kernel WireGuard (`CONFIG_WIREGUARD`): the engine of hosts whose kernel has it. The link
//! (kind `wireguard`) is made through rtnetlink ([`Netlink`]); keys, port and peers go over
//! generic netlink, family `wireguard`, in messages of netlink-packet-wireguard (MIT). No `wg`
//! process.
//!
//! The kernel this was written on has no WireGuard, so nothing here ran against a kernel: the
//! messages it sends are unit-tested byte for byte against what the kernel's
//! `wireguard/netlink.c` (and `wg`) expect, and the userspace engine, which runs here, has the
//! root tests.
//!
//! The family is resolved by name ("wireguard") through the generic-netlink controller; the
//! kernel loads the module on that request when it can. [`family`] answering `None` is how
//! [`super::detect`] knows the kernel has no WireGuard.

use super::{Engine, Key, KeyPair, Peer, Tunnel, TunnelSpec};
use crate::kernel::netlink::Netlink;
use crate::kernel::{Ctx, KernelError};
use ipnetwork::IpNetwork;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use rtnetlink::packet_core::{
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

/// The generic-netlink family's name, as the kernel registers it.
const FAMILY: &str = "wireguard";

/// A kernel WireGuard device (or none yet).
pub struct KernelTunnel {
    /// Drives the rtnetlink connection; `None` only while the value is being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    netlink: Netlink,
    genl: Genl,
    /// The device this value made: its name and ifindex.
    device: Option<(String, u32)>,
}

impl KernelTunnel {
    /// An engine in the calling thread's network namespace (both sockets are made here and stay
    /// bound to it). Fails with `NotFound` when the kernel has no WireGuard family.
    pub fn open() -> Result<KernelTunnel, KernelError> {
        let ctx = Ctx::new("start kernel WireGuard", "generic netlink", None);
        let genl = Genl::open().map_err(|e| ctx.os(e))?;
        let family = genl
            .resolve(FAMILY)
            .map_err(|e| ctx.os(e))?
            .ok_or_else(|| ctx.os(io::Error::from_raw_os_error(libc::ENOENT)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ctx.os(e))?;
        let netlink = Netlink::open_current(None, runtime.handle())?;
        Ok(KernelTunnel {
            runtime: Some(runtime),
            netlink,
            genl: Genl { family, ..genl },
            device: None,
        })
    }

    fn block_on<R>(&self, work: impl std::future::Future<Output = R>) -> R {
        match &self.runtime {
            Some(runtime) => runtime.block_on(work),
            None => unreachable!("the runtime lives until drop"),
        }
    }

    fn read_device(&self, name: &str) -> Result<Device, KernelError> {
        let ctx = Ctx::new("read WireGuard device", name, None);
        let replies = self
            .genl
            .request(get_device(name), NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP)
            .map_err(|e| ctx.os(e))?;
        Ok(Device::from_replies(&replies))
    }
}

impl Tunnel for KernelTunnel {
    fn engine(&self) -> Engine {
        Engine::Kernel
    }

    fn apply(&mut self, spec: &TunnelSpec) -> Result<(), KernelError> {
        if self
            .device
            .as_ref()
            .is_some_and(|(name, _)| *name != spec.name)
        {
            self.remove()?;
        }
        let index = match &self.device {
            Some((_, index)) => *index,
            None => {
                let msg = rtnetlink::LinkWireguard::new(&spec.name)
                    .mtu(spec.mtu)
                    .build();
                let netlink = self.netlink.clone();
                let index = self.block_on(async move {
                    netlink
                        .create_link_message("wireguard", &spec.name, msg)
                        .await
                })?;
                self.device = Some((spec.name.clone(), index));
                index
            }
        };
        let netlink = self.netlink.clone();
        self.block_on(super::link_settings(&netlink, index, spec))?;
        let have = self.read_device(&spec.name)?;
        if let Some(set) = set_device(&have, spec) {
            let ctx = Ctx::new("configure WireGuard", &spec.name, None);
            self.genl
                .request(set, NLM_F_REQUEST | NLM_F_ACK)
                .map_err(|e| ctx.os(e))?;
        }
        Ok(())
    }

    fn peers(&self) -> Result<Vec<Peer>, KernelError> {
        match &self.device {
            Some((name, _)) => Ok(self.read_device(name)?.peers.into_values().collect()),
            None => Ok(Vec::new()),
        }
    }

    fn remove(&mut self) -> Result<(), KernelError> {
        if let Some((_, index)) = self.device.take() {
            let netlink = self.netlink.clone();
            self.block_on(async move { netlink.delete_link(index).await })?;
        }
        Ok(())
    }
}

impl Drop for KernelTunnel {
    fn drop(&mut self) {
        let _ = self.remove();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the kernel says a device has.
#[derive(Debug, Default, PartialEq)]
struct Device {
    public_key: Option<Key>,
    listen_port: Option<u16>,
    peers: BTreeMap<Key, Peer>,
}

impl Device {
    /// A dump's replies: the kernel splits a device with many peers over several messages,
    /// the peer list continuing from one to the next.
    fn from_replies(replies: &[WireguardMessage]) -> Device {
        let mut device = Device::default();
        for attr in replies.iter().flat_map(|m| &m.attributes) {
            match attr {
                WireguardAttribute::PublicKey(k) => device.public_key = Some(Key(*k)),
                WireguardAttribute::ListenPort(p) => device.listen_port = Some(*p),
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        device.add_peer_attributes(&peer.0);
                    }
                }
                WireguardAttribute::IfIndex(_)
                | WireguardAttribute::IfName(_)
                | WireguardAttribute::PrivateKey(_)
                | WireguardAttribute::Fwmark(_)
                | WireguardAttribute::Flags(_)
                | WireguardAttribute::Other(_) => {}
                // The enum is non-exhaustive: attributes of later kernels say nothing we need.
                _ => {}
            }
        }
        device
    }

    fn add_peer_attributes(&mut self, attrs: &[WireguardPeerAttribute]) {
        let Some(key) = attrs.iter().find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(k) => Some(Key(*k)),
            _ => None,
        }) else {
            return;
        };
        let peer = self.peers.entry(key.clone()).or_insert(Peer {
            public_key: key,
            endpoint: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            allowed_ips: Vec::new(),
        });
        for attr in attrs {
            match attr {
                WireguardPeerAttribute::Endpoint(e) => peer.endpoint = *e,
                WireguardPeerAttribute::AllowedIps(ips) => {
                    peer.allowed_ips.extend(ips.iter().filter_map(allowed_ip));
                    peer.allowed_ips.sort();
                }
                // Keys, keepalive, handshake time and counters are not part of a Peer; the
                // enum is non-exhaustive, so later kernels' attributes land here too.
                _ => {}
            }
        }
    }
}

fn allowed_ip(ip: &WireguardAllowedIp) -> Option<IpNetwork> {
    let addr = ip.0.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::IpAddr(addr) => Some(*addr),
        _ => None,
    })?;
    let cidr = ip.0.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::Cidr(c) => Some(*c),
        _ => None,
    })?;
    IpNetwork::new(addr, cidr).ok()
}

/// `WG_CMD_GET_DEVICE` for a device by name (sent as a dump).
fn get_device(name: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(name.to_string())],
    }
}

/// The one `WG_CMD_SET_DEVICE` that turns `have` into `spec`, or `None` when they match:
/// the private key and port only when they differ, peers that went removed, new or changed
/// peers sent whole (their allowed IPs replaced), matching peers not mentioned (their sessions
/// go on). A node back with a new key is a removal and an addition.
fn set_device(have: &Device, spec: &TunnelSpec) -> Option<WireguardMessage> {
    let mut attributes = vec![WireguardAttribute::IfName(spec.name.clone())];
    let public = KeyPair::from_private(spec.private_key.0).public;
    if have.public_key.as_ref() != Some(&public) {
        attributes.push(WireguardAttribute::PrivateKey(spec.private_key.0));
    }
    if have.listen_port != Some(spec.listen_port) {
        attributes.push(WireguardAttribute::ListenPort(spec.listen_port));
    }
    let wanted: BTreeMap<&Key, &Peer> = spec.peers.iter().map(|p| (&p.public_key, p)).collect();
    let mut peers: Vec<WireguardPeer> = have
        .peers
        .keys()
        .filter(|k| !wanted.contains_key(k))
        .map(|k| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(k.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])
        })
        .collect();
    for (key, want) in &wanted {
        let mut sorted = want.allowed_ips.clone();
        sorted.sort();
        let same = have
            .peers
            .get(*key)
            .is_some_and(|p| p.endpoint == want.endpoint && p.allowed_ips == sorted);
        if !same {
            peers.push(WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(key.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::Endpoint(want.endpoint),
                WireguardPeerAttribute::AllowedIps(sorted.iter().map(to_allowed_ip).collect()),
            ]));
        }
    }
    if !peers.is_empty() {
        attributes.push(WireguardAttribute::Peers(peers));
    }
    (attributes.len() > 1).then_some(WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes,
    })
}

fn to_allowed_ip(net: &IpNetwork) -> WireguardAllowedIp {
    let family = match net.ip() {
        IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
        IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.network()),
        WireguardAllowedIpAttr::Cidr(net.prefix()),
    ])
}

/// `CTRL_CMD_GETFAMILY` for a family by name.
fn resolve_family(name: &str) -> GenlMessage<GenlCtrl> {
    GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    })
}

/// A generic-netlink socket, blocking, in the namespace it was opened in.
pub(super) struct Genl {
    socket: Socket,
    /// The `wireguard` family's id, once resolved.
    family: u16,
    seq: AtomicU32,
}

impl Genl {
    pub(super) fn open() -> io::Result<Genl> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // The kernel's own error text in acks; failing to ask for it changes nothing else.
        let _ = socket.set_ext_ack(true);
        Ok(Genl {
            socket,
            family: 0,
            seq: AtomicU32::new(0),
        })
    }

    /// The id of family `name`, `None` when the kernel has no such family.
    pub(super) fn resolve(&self, name: &str) -> io::Result<Option<u16>> {
        match self.exchange(resolve_family(name), NLM_F_REQUEST | NLM_F_ACK) {
            Ok(replies) => Ok(replies
                .iter()
                .flat_map(|m| &m.payload.nlas)
                .find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                })),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn request(&self, msg: WireguardMessage, flags: u16) -> io::Result<Vec<WireguardMessage>> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family);
        Ok(self
            .exchange(genl, flags)?
            .into_iter()
            .map(|m| m.payload)
            .collect())
    }

    /// Send one request and collect its replies up to the ack or the end of the dump.
    fn exchange<F: std::fmt::Debug>(
        &self,
        payload: GenlMessage<F>,
        flags: u16,
    ) -> io::Result<Vec<GenlMessage<F>>>
    where
        GenlMessage<F>: NetlinkSerializable + NetlinkDeserializable,
    {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let buf = encode(payload, flags, seq);
        self.socket.send(&buf, 0)?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let msg = NetlinkMessage::<GenlMessage<F>>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a netlink message of length 0",
                    ));
                }
                offset += len;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }
}

/// A request's bytes.
fn encode<F: std::fmt::Debug>(payload: GenlMessage<F>, flags: u16, seq: u32) -> Vec<u8>
where
    GenlMessage<F>: NetlinkSerializable,
{
    let mut msg = NetlinkMessage::from(payload);
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(peers: Vec<Peer>) -> TunnelSpec {
        TunnelSpec {
            name: "wg0".to_string(),
            private_key: Key([7; 32]),
            listen_port: 51820,
            address: "10.232.0.1/24".parse().unwrap(),
            mtu: 1420,
            peers,
        }
    }

    fn peer(key: u8, host: u8) -> Peer {
        Peer {
            public_key: Key([key; 32]),
            endpoint: format!("10.231.0.{host}:51820").parse().unwrap(),
            allowed_ips: vec![format!("10.232.0.{host}/32").parse().unwrap()],
        }
    }

    /// The device the kernel would report after `spec` was applied.
    fn applied(spec: &TunnelSpec) -> Device {
        Device {
            public_key: Some(KeyPair::from_private(spec.private_key.0).public),
            listen_port: Some(spec.listen_port),
            peers: spec
                .peers
                .iter()
                .map(|p| (p.public_key.clone(), p.clone()))
                .collect(),
        }
    }

    /// The top-level attributes of a generic-netlink request: (type, payload).
    fn attributes(buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 16 + 4; // nlmsghdr, genlmsghdr
        while at + 4 <= buf.len() {
            let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
            let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & 0x3fff;
            out.push((kind, buf[at + 4..at + len].to_vec()));
            at += (len + 3) & !3;
        }
        out
    }

    #[test]
    fn the_family_request_is_ctrl_getfamily_by_name() {
        let buf = encode(resolve_family("wireguard"), NLM_F_REQUEST | NLM_F_ACK, 9);
        assert_eq!(buf.len(), 36);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x10, "GENL_ID_CTRL");
        assert_eq!(u16::from_ne_bytes([buf[6], buf[7]]), 0x5, "REQUEST | ACK");
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 9);
        assert_eq!(buf[16], 3, "CTRL_CMD_GETFAMILY");
        assert_eq!(attributes(&buf), vec![(2, b"wireguard\0".to_vec())]);
    }

    #[test]
    fn a_new_device_gets_key_port_and_every_peer_in_one_set_device() {
        let spec = spec(vec![peer(1, 2), peer(2, 3)]);
        let msg = set_device(&Device::default(), &spec).unwrap();
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(0x1b);
        let buf = encode(genl, NLM_F_REQUEST | NLM_F_ACK, 1);
        assert_eq!(
            u16::from_ne_bytes([buf[4], buf[5]]),
            0x1b,
            "the resolved family"
        );
        assert_eq!((buf[16], buf[17]), (1, 1), "WG_CMD_SET_DEVICE, version 1");
        let attrs = attributes(&buf);
        let kinds: Vec<u16> = attrs.iter().map(|(k, _)| *k).collect();
        // WGDEVICE_A_IFNAME, _PRIVATE_KEY, _LISTEN_PORT, _PEERS
        assert_eq!(kinds, vec![2, 3, 6, 8]);
        assert_eq!(attrs[0].1, b"wg0\0");
        assert_eq!(attrs[1].1, [7; 32]);
        assert_eq!(attrs[2].1, 51820u16.to_ne_bytes());
        // Each peer: public key, REPLACE_ALLOWEDIPS, endpoint, allowed IPs.
        let WireguardAttribute::Peers(peers) =
            &set_device(&Device::default(), &spec).unwrap().attributes[3]
        else {
            panic!("peers last");
        };
        assert_eq!(peers.len(), 2);
        assert!(peers[0].0.contains(&WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps
        )));
    }

    #[test]
    fn an_applied_spec_needs_no_message_and_a_new_peer_key_replaces_the_peer() {
        let old = spec(vec![peer(1, 2), peer(2, 3)]);
        assert_eq!(set_device(&applied(&old), &old), None);

        let new = spec(vec![peer(1, 2), peer(9, 3)]);
        let msg = set_device(&applied(&old), &new).unwrap();
        assert_eq!(msg.attributes.len(), 2, "no key, no port: {msg:?}");
        let WireguardAttribute::Peers(peers) = &msg.attributes[1] else {
            panic!("peers");
        };
        assert_eq!(
            peers[0].0,
            vec![
                WireguardPeerAttribute::PublicKey([2; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]
        );
        assert_eq!(peers.len(), 2, "the unchanged peer is not sent: {peers:?}");
        assert_eq!(peers[1].0[0], WireguardPeerAttribute::PublicKey([9; 32]));
    }

    #[test]
    fn a_dump_split_over_messages_is_one_device() {
        let first = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::PublicKey([5; 32]),
                WireguardAttribute::ListenPort(51820),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey([1; 32]),
                    WireguardPeerAttribute::Endpoint("10.231.0.2:51820".parse().unwrap()),
                    WireguardPeerAttribute::AllowedIps(vec![to_allowed_ip(
                        &"10.232.0.2/32".parse().unwrap(),
                    )]),
                ])]),
            ],
        };
        // The kernel continues a peer's allowed IPs in the next message.
        let second = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey([1; 32]),
                WireguardPeerAttribute::AllowedIps(vec![to_allowed_ip(
                    &"fd00::2/128".parse().unwrap(),
                )]),
            ])])],
        };
        let device = Device::from_replies(&[first, second]);
        assert_eq!(device.public_key, Some(Key([5; 32])));
        assert_eq!(device.listen_port, Some(51820));
        let peer = &device.peers[&Key([1; 32])];
        assert_eq!(peer.endpoint, "10.231.0.2:51820".parse().unwrap());
        assert_eq!(
            peer.allowed_ips,
            vec![
                "10.232.0.2/32".parse::<IpNetwork>().unwrap(),
                "fd00::2/128".parse().unwrap()
            ]
        );
    }
}
