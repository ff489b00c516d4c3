//! Batched datagram I/O for the resolver's listening sockets: `recvmmsg` reads up to [`BATCH`]
//! queries in one system call and `sendmmsg` sends their replies in one, so that a busy
//! namespace costs two system calls per batch instead of two per query (dnsperf showed those
//! calls to be most of a query's cost once answering is cheap).
//!
//! A [`Batch`] owns every buffer the kernel reads or writes; the `mmsghdr` and `iovec` arrays
//! that point into it are built on the stack for the length of one call, so a batch holds no
//! pointers. Batches are big (a full-size slot per query): each UDP worker thread keeps one,
//! so memory does not grow with the number of namespaces served.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;

/// Datagrams read or sent per system call.
pub const BATCH: usize = 32;

/// One batch of queries in and replies out, addressed to the peers that sent them.
pub struct Batch {
    /// `BATCH` slots of `slot` bytes each.
    queries: Vec<u8>,
    slot: usize,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_in; BATCH],
    /// How many slots the last [`Batch::recv`] filled.
    filled: usize,
    /// The reply to query `i`; empty: nothing to send.
    pub replies: Vec<Vec<u8>>,
}

impl Batch {
    /// A batch whose slots hold queries of up to `slot` bytes (longer ones are cut, as a
    /// plain `recv` into a buffer of that size would cut them).
    pub fn new(slot: usize) -> Batch {
        Batch {
            queries: vec![0u8; BATCH * slot],
            slot,
            lens: [0; BATCH],
            peers: [unspecified(); BATCH],
            filled: 0,
            replies: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
        }
    }

    /// Number of queries the last [`Batch::recv`] read.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Query `i` of the last [`Batch::recv`], and the buffer for its reply.
    pub fn query(&mut self, i: usize) -> (&[u8], &mut Vec<u8>) {
        let start = i * self.slot;
        let len = self.lens[i].min(self.slot);
        (&self.queries[start..start + len], &mut self.replies[i])
    }

    /// The address query `i` came from.
    pub fn peer(&self, i: usize) -> SocketAddr {
        let p = &self.peers[i];
        let ip = Ipv4Addr::from(u32::from_be(p.sin_addr.s_addr));
        SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(p.sin_port)))
    }

    /// Read what is queued on `fd` (non-blocking) into the batch: the number of queries read,
    /// or the error (`WouldBlock` when nothing is queued). Replies are emptied.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        for r in &mut self.replies {
            r.clear();
        }
        let mut iov = [empty_iovec(); BATCH];
        for (i, v) in iov.iter_mut().enumerate() {
            v.iov_base = self.queries[i * self.slot..].as_mut_ptr().cast();
            v.iov_len = self.slot;
        }
        let mut hdrs = [empty_mmsghdr(); BATCH];
        for ((h, v), peer) in hdrs
            .iter_mut()
            .zip(iov.iter_mut())
            .zip(self.peers.iter_mut())
        {
            h.msg_hdr.msg_name = (peer as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = SOCKADDR_IN_LEN;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at an iovec of `iov` and a sockaddr_in of `self.peers`,
        // and every iovec at its own `slot`-byte part of `self.queries`; all of them outlive
        // the call, and the kernel writes at most `slot` bytes and one sockaddr_in per header.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (len, h) in self.lens.iter_mut().zip(&hdrs[..n]) {
            *len = h.msg_len as usize;
        }
        self.filled = n;
        Ok(n)
    }

    /// Send the non-empty replies of the batch, starting with the one of query `*next`, each
    /// to the peer of its query; `*next` moves past what was sent. `WouldBlock` when the
    /// socket cannot take more now (call again once it is writable); a reply the kernel
    /// refuses for any other reason is skipped, as a failed `send_to` would be.
    pub fn send(&mut self, fd: RawFd, next: &mut usize) -> io::Result<()> {
        loop {
            let mut idx = [0usize; BATCH];
            let mut iov = [empty_iovec(); BATCH];
            let mut count = 0;
            for i in *next..self.filled {
                let r = &self.replies[i];
                if r.is_empty() {
                    continue;
                }
                iov[count].iov_base = r.as_ptr().cast_mut().cast();
                iov[count].iov_len = r.len();
                idx[count] = i;
                count += 1;
            }
            if count == 0 {
                *next = self.filled;
                return Ok(());
            }
            let mut hdrs = [empty_mmsghdr(); BATCH];
            for ((h, v), &i) in hdrs.iter_mut().zip(iov.iter_mut()).zip(&idx).take(count) {
                h.msg_hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_in).cast();
                h.msg_hdr.msg_namelen = SOCKADDR_IN_LEN;
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the first `count` headers point at iovecs of `iov` over replies of
            // `self.replies` and at sockaddr_ins of `self.peers`, all alive and unchanged for
            // the call; the kernel only reads them.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match usize::try_from(sent) {
                Ok(sent) if sent >= count => {
                    *next = self.filled;
                    return Ok(());
                }
                Ok(sent) => *next = idx[sent],
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Err(e),
                        io::ErrorKind::Interrupted => {}
                        _ => *next = idx[0] + 1,
                    }
                }
            }
        }
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn unspecified() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value (null
    // pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Receive into `b` until something comes (loopback queues a datagram during `send_to`,
    /// but nothing promises it).
    fn recv_some(b: &mut Batch, fd: RawFd) -> usize {
        loop {
            match b.recv(fd) {
                Ok(n) if n > 0 => return n,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_batch_reads_queued_datagrams_and_answers_each_sender() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let to = server.local_addr().unwrap();
        let clients: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[b'q', i as u8], to).unwrap();
        }
        let mut b = Batch::new(16);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let n = recv_some(&mut b, server.as_raw_fd());
            assert_eq!(b.len(), n);
            for i in 0..n {
                let from = b.peer(i);
                let (q, r) = b.query(i);
                assert_eq!(from, clients[usize::from(q[1])].local_addr().unwrap());
                assert_eq!(q.len(), 2);
                seen.push(q[1]);
                // Query 1 gets no reply: an empty reply is not sent.
                if q[1] != 1 {
                    r.extend_from_slice(&[b'r', q[1]]);
                }
            }
            let mut next = 0;
            b.send(server.as_raw_fd(), &mut next).unwrap();
            assert_eq!(next, n);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 8];
            if i == 1 {
                c.set_nonblocking(true).unwrap();
                let e = c.recv(&mut buf).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "no reply to query 1");
            } else {
                // A bound on a hang, not a measurement.
                c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                let n = c.recv(&mut buf).unwrap();
                assert_eq!(buf[..n], [b'r', i as u8]);
            }
        }
        let e = b.recv(server.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_long_datagram_is_cut_to_the_slot() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&[7u8; 40], server.local_addr().unwrap())
            .unwrap();
        let mut b = Batch::new(16);
        assert_eq!(recv_some(&mut b, server.as_raw_fd()), 1);
        assert_eq!(b.query(0).0, [7u8; 16]);
    }
}
