//! The loops that answer UDP queries on 127.0.0.11:53 in every namespace: [`UDP_WORKERS`]
//! dedicated OS threads, each with an epoll set of its own that holds one socket of every
//! namespace (a namespace's sockets are joined with SO_REUSEPORT, so its clients are split
//! between the workers by address and port).
//!
//! A worker sleeps in `epoll_wait`, reads a ready socket's queued queries in one batch
//! ([`mmsg`]), answers each from the records it holds ([`Reader`]: an atomic load per batch,
//! no lock) into the batch's reply buffers, and sends all replies with one system call: three
//! system calls for a batch and nothing else, where async tasks added a reactor wake-up, a
//! task switch and often a futex between threads per batch (bench/dns.sh measured the
//! difference, docs/architecture.md gives the figures). Only a query for a name the project
//! does not know leaves the worker: it becomes a task on the daemon's runtime, which waits on
//! an upstream and sends the reply itself.
//!
//! Sockets come and go with namespaces on reload: [`Workers::add`] gives a worker its new
//! socket, and dropping the [`Registration`] takes it away again; either way the worker itself
//! changes its epoll set (woken through an eventfd), so a socket is never closed while its
//! worker may still read it.

use super::answer::{self, Action, Transport};
use super::forward;
use super::mmsg::Batch;
use super::server::{routes, Current, Reader, Space};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Worker threads answering UDP, and so UDP sockets per namespace.
pub const UDP_WORKERS: usize = 2;
/// Bytes read of one query: our advertised EDNS buffer size.
const SLOT: usize = answer::EDNS_PAYLOAD as usize;
/// Ready sockets taken from one `epoll_wait`.
const EVENTS: usize = 64;
/// The epoll key of a worker's eventfd; sockets get keys from 1.
const WAKE: u64 = 0;
/// How long a worker waits for a full socket buffer to take its replies before it drops them
/// (as a full buffer would drop a datagram).
const SEND_PATIENCE: libc::c_int = 50;

/// One namespace's socket, as a worker serves it.
pub(super) struct Served {
    pub(super) sock: Arc<UdpSocket>,
    pub(super) space: Arc<Space>,
}

enum Command {
    Add(u64, Served),
    Remove(u64),
    Stop,
}

/// What the daemon and one worker share.
struct Inbox {
    epoll: OwnedFd,
    wake: OwnedFd,
    commands: Mutex<Vec<Command>>,
}

impl Inbox {
    fn send(&self, c: Command) {
        match self.commands.lock() {
            Ok(mut q) => q.push(c),
            Err(p) => p.into_inner().push(c),
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to the eventfd this inbox owns. A full
        // counter (EAGAIN) means the worker has a wake-up pending anyway.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn take(&self) -> Vec<Command> {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from the eventfd (non-blocking).
        unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match self.commands.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

/// The UDP workers of one resolver. Dropping it stops them.
pub(super) struct Workers {
    inboxes: Vec<Arc<Inbox>>,
    next_key: AtomicU64,
}

/// A socket served by a worker, until this is dropped.
pub(super) struct Registration {
    inbox: Arc<Inbox>,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inbox.send(Command::Remove(self.key));
    }
}

impl Workers {
    /// Start the workers; forwarded queries become tasks on `runtime`.
    pub(super) fn start(cur: Arc<Current>, runtime: tokio::runtime::Handle) -> io::Result<Workers> {
        let mut inboxes = Vec::with_capacity(UDP_WORKERS);
        for i in 0..UDP_WORKERS {
            let inbox = Arc::new(Inbox {
                epoll: cvt_fd(
                    // SAFETY: plain system call; the descriptor is owned from here on.
                    unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
                )?,
                wake: cvt_fd(
                    // SAFETY: plain system call; the descriptor is owned from here on.
                    unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) },
                )?,
                commands: Mutex::new(Vec::new()),
            });
            watch(&inbox.epoll, inbox.wake.as_raw_fd(), WAKE)?;
            let worker = Worker {
                inbox: inbox.clone(),
                records: cur.reader(),
                runtime: runtime.clone(),
                served: HashMap::new(),
                batch: Batch::new(SLOT),
            };
            std::thread::Builder::new()
                .name(format!("resolver-udp-{i}"))
                .spawn(move || worker.run())?;
            inboxes.push(inbox);
        }
        Ok(Workers {
            inboxes,
            next_key: AtomicU64::new(WAKE + 1),
        })
    }

    /// Serve `sock` (one of `space`'s sockets) on worker `i` (modulo the workers).
    pub(super) fn add(&self, i: usize, sock: UdpSocket, space: Arc<Space>) -> Registration {
        let inbox = self.inboxes[i % self.inboxes.len()].clone();
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let served = Served {
            sock: Arc::new(sock),
            space,
        };
        inbox.send(Command::Add(key, served));
        Registration { inbox, key }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for inbox in &self.inboxes {
            inbox.send(Command::Stop);
        }
    }
}

struct Worker {
    inbox: Arc<Inbox>,
    records: Reader,
    runtime: tokio::runtime::Handle,
    served: HashMap<u64, Served>,
    batch: Batch,
}

impl Worker {
    fn run(mut self) {
        let epfd = self.inbox.epoll.as_raw_fd();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: the kernel writes at most EVENTS entries into `events`.
            let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS as i32, -1) };
            let Ok(n) = usize::try_from(n) else {
                // EINTR; anything else cannot happen on a valid epoll descriptor.
                continue;
            };
            for ev in &events[..n] {
                let key = ev.u64;
                if key == WAKE {
                    if !self.commands() {
                        return;
                    }
                } else if let Some(s) = self.served.get(&key) {
                    serve(s, &mut self.records, &mut self.batch, &self.runtime);
                }
            }
        }
    }

    /// Apply the daemon's commands; false once told to stop.
    fn commands(&mut self) -> bool {
        for c in self.inbox.take() {
            match c {
                Command::Add(key, served) => {
                    // A socket that cannot be watched is closed: its clients time out and
                    // retry on the namespace's other sockets.
                    if watch(&self.inbox.epoll, served.sock.as_raw_fd(), key).is_ok() {
                        self.served.insert(key, served);
                    }
                }
                Command::Remove(key) => {
                    if let Some(s) = self.served.remove(&key) {
                        // SAFETY: removes a descriptor this worker watches and still holds.
                        unsafe {
                            libc::epoll_ctl(
                                self.inbox.epoll.as_raw_fd(),
                                libc::EPOLL_CTL_DEL,
                                s.sock.as_raw_fd(),
                                std::ptr::null_mut(),
                            )
                        };
                    }
                }
                Command::Stop => return false,
            }
        }
        true
    }
}

/// Answer one batch of the socket's queued queries. The socket stays in the epoll set (level
/// triggered): if more are queued, the next `epoll_wait` returns at once, after the other
/// namespaces' ready sockets had their turn.
fn serve(s: &Served, records: &mut Reader, batch: &mut Batch, runtime: &tokio::runtime::Handle) {
    let fd = s.sock.as_raw_fd();
    let Ok(n) = batch.recv(fd) else {
        return;
    };
    answer_all(s, records, batch, runtime);
    let mut next = 0;
    while next < n {
        match batch.send(fd, &mut next) {
            Ok(()) => break,
            Err(_) => {
                if !writable(fd) {
                    break;
                }
            }
        }
    }
}

/// Wait (a little) until `fd` can take a datagram again.
fn writable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, SEND_PATIENCE) > 0 }
}

/// Answer every query of the batch into its reply buffer; forwarded queries get a task that
/// sends their reply itself.
fn answer_all(s: &Served, records: &mut Reader, batch: &mut Batch, rt: &tokio::runtime::Handle) {
    let space = &s.space;
    let snap = records.get();
    let view = snap.namespaces.get(&space.name);
    let mut answered = 0;
    for i in 0..batch.len() {
        let peer = batch.peer(i);
        let (query, reply) = batch.query(i);
        match answer::respond(snap, view, query, Transport::Udp, reply) {
            Action::Reply => answered += 1,
            Action::Drop => {}
            Action::Forward => {
                let Ok(permit) = space.forwards.clone().try_acquire_owned() else {
                    *reply = answer::servfail(query);
                    space.counters.add_forwarded(None);
                    continue;
                };
                let ups = view
                    .map(|v| routes(space, &v.upstreams))
                    .unwrap_or_default();
                let query = query.to_vec();
                let sock = s.sock.clone();
                let counters = space.counters.clone();
                rt.spawn(async move {
                    let r = forward::forward(&query, &ups, false).await;
                    counters.add_forwarded(Some(&r));
                    send_later(&sock, &r, peer).await;
                    drop(permit);
                });
            }
        }
    }
    space.counters.add_answered(answered);
}

/// Send a forwarded query's reply from a task: the socket is non-blocking and belongs to a
/// worker's epoll set, so a full buffer is waited out with short sleeps, not registered.
async fn send_later(sock: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    for _ in 0..10 {
        match sock.send_to(reply, peer) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return,
        }
    }
}

/// Watch `fd` for input (level triggered) under `key`.
fn watch(epoll: &OwnedFd, fd: RawFd, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: key,
    };
    // SAFETY: one live epoll_event; the kernel copies it.
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor returned by a system call, owned; or the call's error.
fn cvt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
