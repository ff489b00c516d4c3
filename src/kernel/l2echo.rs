//! A raw Ethernet socket (AF_PACKET) on one link for one EtherType: whole frames out, whole
//! frames in with a timeout. The agents' VXLAN probe sends its frames through it, so that a
//! probe needs no address, route or neighbour entry on the host, only the link and its FDB.

use super::{Ctx, KernelError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// IEEE 802 local experimental EtherType 1: never a protocol the host speaks.
pub const ETHERTYPE: u16 = 0x88b5;

/// A socket that sends and receives [`ETHERTYPE`] frames on one link.
pub struct FrameSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl FrameSocket {
    /// A socket on link `ifindex` (`name` labels errors), in the calling thread's namespace.
    pub fn open(ifindex: u32, name: &str) -> Result<FrameSocket, KernelError> {
        let ctx = Ctx::new("open packet socket", name, None);
        let proto = i32::from(ETHERTYPE.to_be());
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(ctx.os(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let index = i32::try_from(ifindex).map_err(|_| ctx.invalid("ifindex out of range"))?;
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid before the fields are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETHERTYPE.to_be();
        addr.sll_ifindex = index;
        // SAFETY: addr is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(ctx.os(std::io::Error::last_os_error()));
        }
        Ok(FrameSocket { fd, ifindex })
    }

    /// Send one whole frame (Ethernet header included). A frame longer than the link's MTU
    /// allows fails with EMSGSIZE.
    pub fn send(&self, frame: &[u8]) -> Result<(), KernelError> {
        let ctx = Ctx::new("send frame", format!("ifindex {}", self.ifindex), None);
        // SAFETY: frame is a valid buffer of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(ctx.os(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The next frame received within `timeout` into `buf` (its length), or None.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, KernelError> {
        let ctx = Ctx::new("receive frame", format!("ifindex {}", self.ifindex), None);
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(ctx.os(e)),
            };
        }
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(ctx.os(e)),
            };
        }
        Ok(Some(n as usize))
    }
}

/// A VXLAN device that carries frames to other hosts as they are, refused rather than
/// fragmented: the outer packets carry DF, learning is off (the FDB is static).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeVxlan {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: std::net::IpAddr,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// Create `spec`'s device, up; its ifindex.
pub async fn create_probe_vxlan(
    nl: &super::netlink::Netlink,
    spec: &ProbeVxlan,
) -> Result<u32, KernelError> {
    use netlink_packet_route::link::VxlanDf;
    let mut b = rtnetlink::LinkVxlan::new(&spec.name, spec.vni)
        .port(spec.port)
        .learning(false)
        .df(VxlanDf::Set);
    b = match spec.local {
        std::net::IpAddr::V4(ip) => b.local(ip),
        std::net::IpAddr::V6(ip) => b.local6(ip),
    };
    let msg = b.mtu(spec.mtu).address(spec.mac.to_vec()).up().build();
    nl.create_link_message("vxlan", &spec.name, msg).await
}
