//! dnsload: a DNS load generator for bench/dns.sh that costs the client less than the server.
//!
//! dnsperf sends and receives one datagram per system call and keeps its own bookkeeping per
//! query; on a 2-CPU machine its one core was at its limit before either server was (bench/dns.sh,
//! 2 Dec: 0.98 of a core against netcompose and dnsmasq alike), so the rate it printed was its
//! own. This client keeps up to `-w` queries outstanding over a few UDP sockets, sends
//! and reads them `-b` at a time with `sendmmsg`/`recvmmsg`, and only patches the message
//! ID of queries encoded once (by hickory) before the run, so nearly all of its cost is the
//! kernel's and a server that does any work per query saturates first.
//!
//! It prints dnsperf's summary lines (`Queries sent:`, `Queries lost:`, `Queries per second:`,
//! `Average Latency (s):`, `Response codes:`), so the script reads either client alike.
//!
//!   dnsload -s 127.0.0.11 -p 53 -d queries -l 10 [-a SOURCE] [-c 4] [-w 256] [-b 32]
//!
//! The queries file has dnsperf's format: one `name TYPE` per line.

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A query unanswered for this long is lost, as dnsperf's default timeout has it (5 s).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply read; bigger ones are cut, which only the rcode and ID here need not mind.
const SLOT: usize = 1232;

struct Args {
    server: SocketAddr,
    /// The sockets' source address (dnsperf's `-a`).
    source: Ipv4Addr,
    queries: String,
    duration: Duration,
    sockets: usize,
    window: usize,
    batch: usize,
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dnsload: {e}\nusage: dnsload -s ADDR [-p PORT] [-a SOURCE] -d FILE [-l SECONDS] [-c SOCKETS] [-w WINDOW] [-b BATCH]");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(report) => report.print(),
        Err(e) => {
            eprintln!("dnsload: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut server, mut source) = (Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED);
    let (mut port, mut queries, mut secs) = (53u16, None, 10u64);
    let (mut sockets, mut window, mut batch) = (4usize, 256usize, 32usize);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "-s" => server = value.parse().map_err(|e| bad(&e))?,
            "-a" => source = value.parse().map_err(|e| bad(&e))?,
            "-p" => port = value.parse().map_err(|e| bad(&e))?,
            "-d" => queries = Some(value),
            "-l" => secs = value.parse().map_err(|e| bad(&e))?,
            "-c" => sockets = value.parse().map_err(|e| bad(&e))?,
            "-w" => window = value.parse().map_err(|e| bad(&e))?,
            "-b" => batch = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if sockets == 0 || window == 0 || batch == 0 || batch > 1024 {
        return Err("-c, -w and -b must be positive, -b at most 1024".into());
    }
    Ok(Args {
        server: SocketAddr::new(server.into(), port),
        source,
        queries: queries.ok_or("-d FILE is required")?,
        duration: Duration::from_secs(secs),
        sockets,
        window,
        batch,
    })
}

/// The queries of a dnsperf data file, each encoded once with ID 0.
fn encode(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let kind = words.next().unwrap_or("A");
        let at = |e: &dyn std::fmt::Display| format!("{path}:{}: {e}", n + 1);
        let name = Name::from_ascii(name).map_err(|e| at(&e))?;
        let kind = RecordType::from_str(kind).map_err(|e| at(&e))?;
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, kind));
        out.push(m.to_vec().map_err(|e| at(&e))?);
    }
    if out.is_empty() {
        return Err(format!("{path}: no queries"));
    }
    Ok(out)
}

/// One socket's queries in flight, by message ID.
struct Flight {
    sent_at: Vec<Option<Instant>>,
    next_id: u16,
    outstanding: usize,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            sent_at: vec![None; 1 << 16],
            next_id: 0,
            outstanding: 0,
        }
    }

    /// A free ID (the window is far below 65,536, so the search is short).
    fn take(&mut self, now: Instant) -> u16 {
        while self.sent_at[usize::from(self.next_id)].is_some() {
            self.next_id = self.next_id.wrapping_add(1);
        }
        let id = self.next_id;
        self.sent_at[usize::from(id)] = Some(now);
        self.next_id = id.wrapping_add(1);
        self.outstanding += 1;
        id
    }

    fn answer(&mut self, id: u16) -> Option<Instant> {
        let sent = self.sent_at[usize::from(id)].take()?;
        self.outstanding -= 1;
        Some(sent)
    }

    /// Forgets queries older than [`TIMEOUT`]; returns how many.
    fn expire(&mut self, now: Instant) -> u64 {
        let mut lost = 0;
        for slot in &mut self.sent_at {
            if slot.is_some_and(|t| now.duration_since(t) > TIMEOUT) {
                *slot = None;
                lost += 1;
            }
        }
        self.outstanding -= lost as usize;
        lost
    }
}

#[derive(Default)]
struct Report {
    sent: u64,
    completed: u64,
    lost: u64,
    latency: Duration,
    rcodes: BTreeMap<u8, u64>,
    elapsed: Duration,
}

impl Report {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        println!("  Queries sent:         {}", self.sent);
        println!("  Queries completed:    {}", self.completed);
        println!("  Queries lost:         {}", self.lost);
        let codes: Vec<String> = self
            .rcodes
            .iter()
            .map(|(code, n)| format!("{} {n}", rcode_name(*code)))
            .collect();
        println!("  Response codes:       {}", codes.join(", "));
        println!("  Run time (s):         {secs:.6}");
        println!(
            "  Queries per second:   {:.6}",
            self.completed as f64 / secs
        );
        let avg = self.latency.as_secs_f64() / (self.completed.max(1) as f64);
        println!("  Average Latency (s):  {avg:.6}");
    }
}

fn rcode_name(code: u8) -> String {
    hickory_proto::op::ResponseCode::from(0, code).to_string()
}

fn run(args: &Args) -> Result<Report, String> {
    let templates = encode(&args.queries)?;
    let sockets: Vec<UdpSocket> = (0..args.sockets)
        .map(|_| {
            let s = UdpSocket::bind((args.source, 0))?;
            s.connect(args.server)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("socket to {}: {e}", args.server))?;
    let mut flights: Vec<Flight> = sockets.iter().map(|_| Flight::new()).collect();
    let per_socket = args.window.div_ceil(args.sockets);
    let mut out = vec![vec![0u8; SLOT]; args.batch];
    let mut lens = vec![0usize; args.batch];
    let mut inbox = vec![vec![0u8; SLOT]; args.batch];
    let mut report = Report::default();
    let mut next_query = 0usize;
    let start = Instant::now();
    let end = start + args.duration;
    let mut last_expiry = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut idle = true;
        for (socket, flight) in sockets.iter().zip(&mut flights) {
            let room = per_socket
                .saturating_sub(flight.outstanding)
                .min(args.batch);
            for i in 0..room {
                let q = &templates[next_query];
                next_query = (next_query + 1) % templates.len();
                let id = flight.take(now);
                out[i][..q.len()].copy_from_slice(q);
                // The message ID is the header's first two bytes (RFC 1035, 4.1.1).
                out[i][..2].copy_from_slice(&id.to_be_bytes());
                lens[i] = q.len();
            }
            if room > 0 {
                let sent = mmsg::send(socket.as_raw_fd(), &out[..room], &lens[..room])
                    .map_err(|e| format!("sendmmsg: {e}"))?;
                report.sent += sent as u64;
                // What the kernel did not take goes back to the window.
                for unsent in &out[sent..room] {
                    flight.answer(u16::from_be_bytes([unsent[0], unsent[1]]));
                }
                idle &= sent == 0;
            }
            let got = collect(socket, flight, &mut inbox, &mut lens, &mut report)?;
            idle &= got == 0;
        }
        if idle {
            mmsg::wait(&sockets, Duration::from_millis(1));
        }
        if now.duration_since(last_expiry) > Duration::from_secs(1) {
            report.lost += flights.iter_mut().map(|f| f.expire(now)).sum::<u64>();
            last_expiry = now;
        }
    }
    report.elapsed = start.elapsed();
    // What is still in flight at the end was neither answered nor timed out: dnsperf waits
    // for it; here it counts as lost only if a short grace period does not bring it.
    let grace = Instant::now() + Duration::from_millis(200);
    while flights.iter().any(|f| f.outstanding > 0) && Instant::now() < grace {
        for (socket, flight) in sockets.iter().zip(&mut flights) {
            collect(socket, flight, &mut inbox, &mut lens, &mut report)?;
        }
        mmsg::wait(&sockets, Duration::from_millis(10));
    }
    report.lost += flights.iter().map(|f| f.outstanding as u64).sum::<u64>();
    Ok(report)
}

/// Reads the replies waiting on `socket` and counts those to queries in `flight`; returns how
/// many datagrams it read.
fn collect(
    socket: &UdpSocket,
    flight: &mut Flight,
    inbox: &mut [Vec<u8>],
    lens: &mut [usize],
    report: &mut Report,
) -> Result<usize, String> {
    let got = mmsg::recv(socket.as_raw_fd(), inbox, lens).map_err(|e| format!("recvmmsg: {e}"))?;
    let now = Instant::now();
    for (reply, &len) in inbox.iter().zip(lens.iter()).take(got) {
        // The ID is the header's first two bytes, the rcode the low half of its fourth.
        if len < 4 {
            continue;
        }
        if let Some(sent) = flight.answer(u16::from_be_bytes([reply[0], reply[1]])) {
            report.completed += 1;
            report.latency += now.duration_since(sent);
            *report.rcodes.entry(reply[3] & 0x0f).or_default() += 1;
        }
    }
    Ok(got)
}

/// `sendmmsg`, `recvmmsg` and `poll` on connected, non-blocking sockets.
mod mmsg {
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::Duration;

    fn header(iov: &mut libc::iovec) -> libc::mmsghdr {
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h
    }

    /// Sends `bufs[i][..lens[i]]`; returns how many the kernel took (0 when its buffer is full).
    pub fn send(fd: RawFd, bufs: &[Vec<u8>], lens: &[usize]) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = bufs
            .iter()
            .zip(lens)
            .map(|(b, &len)| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: len.min(b.len()),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs.iter_mut().map(header).collect();
        // SAFETY: every header points at one iovec of `iovs`, each within a live buffer of
        // `bufs`; both outlive the call, and the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            n if n >= 0 => Ok(n as usize),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                // A reply of "port unreachable" to an earlier datagram surfaces here.
                e if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(0),
                e => Err(e),
            },
        }
    }

    /// Reads up to `bufs.len()` datagrams without waiting; their lengths go to `lens`.
    pub fn recv(fd: RawFd, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs.iter_mut().map(header).collect();
        // SAFETY: as in `send`; the kernel writes at most iov_len bytes into each buffer.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for (len, h) in lens.iter_mut().zip(&hdrs).take(n) {
            *len = h.msg_len as usize;
        }
        Ok(n)
    }

    /// Waits until a socket has something to read, or `timeout`.
    pub fn wait(sockets: &[UdpSocket], timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd entries.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis() as libc::c_int,
            )
        };
    }
}
