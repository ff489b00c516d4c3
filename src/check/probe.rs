//! Sending one probe from inside a namespace: a TCP connect, a UDP datagram that expects an
//! answer, or an ICMP echo (ping). Each runs on a thread that entered the namespace.

use super::Probe;
use crate::kernel::netns::NetnsDir;
use crate::spec::CheckProtocol;
use serde::Serialize;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A connection completed, a datagram or an echo came back.
    Open,
    /// The peer answered that nothing listens (TCP reset, ICMP port unreachable).
    Refused,
    /// Nothing came back, or a local rule refused to send: dropped on the way.
    Filtered,
    /// No route to the target.
    Unreachable,
    /// No address, or the probe could not run.
    Error,
}

impl Outcome {
    /// What counts as reaching the target: an answer from the service itself.
    pub fn reached(self) -> bool {
        self == Outcome::Open
    }
}

pub fn run(dir: &NetnsDir, p: &Probe) -> (Outcome, String) {
    let Some(addr) = p.address else {
        return (Outcome::Error, format!("no address for `{}`", p.to));
    };
    let (protocol, port) = (p.protocol, p.port.unwrap_or(0));
    let result = dir.run_in(p.netns.as_deref(), move || match protocol {
        CheckProtocol::Tcp => tcp(SocketAddr::new(addr, port)),
        CheckProtocol::Udp => udp(SocketAddr::new(addr, port)),
        CheckProtocol::Icmp => icmp(addr),
    });
    match result {
        Ok(r) => r,
        Err(e) => (Outcome::Error, e.to_string()),
    }
}

fn tcp(to: SocketAddr) -> (Outcome, String) {
    match TcpStream::connect_timeout(&to, TIMEOUT) {
        Ok(_) => (Outcome::Open, format!("connected to {to}")),
        Err(e) => classify(e, to),
    }
}

fn udp(to: SocketAddr) -> (Outcome, String) {
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .unwrap_or(to);
    let attempt = || -> std::io::Result<()> {
        let s = UdpSocket::bind(bind)?;
        s.connect(to)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send(b"netcompose check\n")?;
        let mut buf = [0u8; 512];
        s.recv(&mut buf).map(|_| ())
    };
    match attempt() {
        Ok(()) => (Outcome::Open, format!("answer from {to}")),
        Err(e) => classify(e, to),
    }
}

/// What an error says about reachability: refused (the target answered), filtered (a timeout,
/// or EPERM from a local rule), unreachable (no route).
fn classify(e: std::io::Error, to: SocketAddr) -> (Outcome, String) {
    match e.kind() {
        ErrorKind::ConnectionRefused => (Outcome::Refused, format!("{to}: refused")),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            (Outcome::Filtered, format!("no answer from {to}"))
        }
        ErrorKind::PermissionDenied => {
            (Outcome::Filtered, format!("{to}: dropped by a local rule"))
        }
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => {
            (Outcome::Unreachable, format!("{to}: {e}"))
        }
        _ => (Outcome::Error, e.to_string()),
    }
}

/// `ping` is setuid-free on Debian (it uses ICMP datagram sockets or the capability): run it
/// from the namespace thread, and the child inherits the namespace.
fn icmp(to: std::net::IpAddr) -> (Outcome, String) {
    let out = std::process::Command::new("ping")
        .args(["-c", "1", "-W", "1", "-n", &to.to_string()])
        .output();
    match out {
        Ok(o) if o.status.success() => (Outcome::Open, format!("echo reply from {to}")),
        Ok(_) => (Outcome::Filtered, format!("no echo reply from {to}")),
        Err(e) => (Outcome::Error, format!("cannot run ping: {e}")),
    }
}
