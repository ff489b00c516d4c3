//! The narrow kernel-facing layer: named network namespaces, rtnetlink, `net.*` sysctls and
//! nftables.
//!
//! Everything that touches the kernel for links, addresses and routes goes through this module,
//! so that the planning logic never mixes with syscalls. It is deliberately small and mechanical:
//! no policy, no naming rules, no ownership checks — those belong to the applier. Each function
//! does one kernel operation (one syscall sequence or one netlink request) and reports failures as
//! a [`KernelError`] that names the operation, the object and the namespace.
//!
//! - [`netns`]: iproute2-compatible named network namespaces pinned under `/run/netns` (or any
//!   [`netns::NetnsDir`]), created without forking, plus `run_in` to run code inside one.
//! - [`netlink`]: [`netlink::Netlink`], an rtnetlink handle whose socket lives inside a given
//!   namespace, with typed operations on links, addresses, routes, FDB and neighbours.
//! - [`sysctl`]: read and write `net.*` sysctls inside a namespace.
//! - [`survey`]: many namespaces read in one go (links, addresses, routes) on a few threads
//!   that enter each in turn, for `observe`; or taken from a process that keeps them
//!   ([`survey::SurveySource`]).
//! - [`watch`]: change notifications of namespaces (rtnetlink, nf_tables, inotify), for a
//!   process that keeps surveys between runs.
//! - [`machine`]: those mechanisms as traits (what `observe` and `apply` use), implemented by
//!   [`system::System`] and, in memory, by [`fake::Fake`]; [`handle::Kernel`] pairs a machine
//!   with the project it works for.
//! - [`cgroup`]: cgroup v2 directories: make, enter, kill until empty, remove.
//! - [`descriptors`]: this process's descriptor table, grown before threads share it.
//! - [`nftables`]: nftables tables (inet) over nfnetlink: written in one transaction from a
//!   neutral description of chains, typed rule expressions and maps; read back (chains, rule
//!   tags, counters, map elements) and deleted.
//! - [`ctnl`]: the connection-tracking table of a namespace (ctnetlink).
//! - [`l2echo`]: raw Ethernet frames of one EtherType on one link (AF_PACKET), for the
//!   agents' VXLAN probe.
//! - [`wireguard`]: WireGuard tunnels between hosts (kernel or userspace engine) and their keys.
//!
//! It imports nothing else of the crate: callers hand it plain descriptions, and it answers
//! with errno-classified [`KernelError`]s ([`ErrorKind`]) rather than text to match.
//!
//! Threading rule: a thread's network namespace is per-thread state, so this module never calls
//! `setns` on a caller's thread (in particular never on a tokio worker). Code that must run
//! inside a namespace runs on a short-lived dedicated thread ([`netns::run_in`]), or on a thread
//! whose only work is to enter namespaces ([`survey`]); a netlink socket
//! is created on such a thread and then keeps operating in that namespace from anywhere.

pub mod cgroup;
pub mod ctnl;
pub mod descriptors;
pub mod encoded;
#[cfg(test)]
pub mod fake;
pub mod generations;
pub mod handle;
pub mod l2echo;
pub mod machine;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod survey;
pub mod sysctl;
pub mod system;
pub mod watch;
pub mod wireguard;
pub mod writer;

use std::fmt;
use std::io;

pub use handle::{owner_mac, Kernel};
pub use machine::Machine;
pub use netlink::{
    FdbEntry, Link, LinkKind, LinkStats, MacvlanMode, MacvlanSpec, Neighbour, Netlink, Route,
    VethSpec, VxlanSpec,
};
pub use netns::{NetnsDir, ETC_NETNS};
pub use system::System;

/// A broad classification of a [`KernelError`], for callers that need to branch
/// (idempotent create: `Exists` is fine; idempotent delete: `NotFound` is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (ENOENT, ENODEV, ESRCH, EADDRNOTAVAIL, ENXIO).
    NotFound,
    /// The object already exists (EEXIST).
    Exists,
    /// The kernel lacks the feature or module (EOPNOTSUPP for a link kind, EAFNOSUPPORT, ...).
    Unsupported,
    /// EPERM / EACCES: not root, or a capability is missing in this user namespace.
    PermissionDenied,
    /// EBUSY.
    Busy,
    /// EADDRINUSE: a port (a VXLAN device's UDP port) is bound by another socket.
    AddressInUse,
    /// The request was rejected as malformed (EINVAL, ERANGE) or our own input check failed.
    Invalid,
    /// Anything else, including netlink protocol failures.
    Other,
}

/// An error from the kernel layer. The message always reads
/// `<operation> <object>[ in netns <name>]: <cause>`, for example
/// `create veth vh-3f2a1b in netns demo-web-1: File exists (os error 17)`.
///
/// The subject (operation, object, namespace) is boxed so that the error stays small enough to
/// be carried around in `Result`s cheaply.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A syscall or a netlink request failed with an errno.
    #[error("{subject}: {source}{}", kernel_says(.extack))]
    Os {
        subject: Box<Ctx>,
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, when it sent one (e.g. "Nexthop has invalid
        /// gateway").
        extack: Option<Box<str>>,
    },
    /// The kernel does not know a link kind: its module is neither built in nor loadable.
    #[error(
        "{subject}: link kind `{kind}` is not supported by this kernel \
         (module `{module}` is neither built in nor loadable; try `modprobe {module}`)",
        module = module_for_kind(.kind)
    )]
    Unsupported {
        subject: Box<Ctx>,
        kind: Box<str>,
        #[source]
        source: io::Error,
    },
    /// The netlink conversation itself failed (connection closed, unexpected reply).
    #[error("{subject}: netlink: {detail}")]
    Protocol { subject: Box<Ctx>, detail: Box<str> },
    /// The request was refused before reaching the kernel (bad name, bad value).
    #[error("{subject}: {reason}")]
    Invalid { subject: Box<Ctx>, reason: Box<str> },
}

fn kernel_says(extack: &Option<Box<str>>) -> String {
    match extack {
        Some(m) if !m.is_empty() => format!(" (kernel: {m})"),
        _ => String::new(),
    }
}

impl KernelError {
    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KernelError::Unsupported { .. } => ErrorKind::Unsupported,
            KernelError::Protocol { .. } => ErrorKind::Other,
            KernelError::Invalid { .. } => ErrorKind::Invalid,
            KernelError::Os { source, .. } => classify_io(source),
        }
    }

    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Os { source, .. } | KernelError::Unsupported { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// The object already exists.
    pub fn is_exists(&self) -> bool {
        self.kind() == ErrorKind::Exists
    }

    /// The kernel does not support what was asked (missing module or feature).
    pub fn is_unsupported(&self) -> bool {
        self.kind() == ErrorKind::Unsupported
    }

    /// What was being done, to what, where.
    pub fn subject(&self) -> &Ctx {
        match self {
            KernelError::Os { subject, .. }
            | KernelError::Unsupported { subject, .. }
            | KernelError::Protocol { subject, .. }
            | KernelError::Invalid { subject, .. } => subject,
        }
    }

    /// The operation, e.g. `create veth`.
    pub fn op(&self) -> &str {
        &self.subject().op
    }

    /// The object the operation was about, e.g. `vh-3f2a1b` or `ifindex 7`.
    pub fn object(&self) -> &str {
        &self.subject().object
    }

    /// The namespace the operation ran in, when it was a named one.
    pub fn netns(&self) -> Option<&str> {
        self.subject().netns.as_deref()
    }
}

fn classify_io(e: &io::Error) -> ErrorKind {
    use nix::errno::Errno;
    if let Some(code) = e.raw_os_error() {
        return match Errno::from_raw(code) {
            Errno::ENOENT | Errno::ENODEV | Errno::ESRCH | Errno::EADDRNOTAVAIL | Errno::ENXIO => {
                ErrorKind::NotFound
            }
            Errno::EEXIST => ErrorKind::Exists,
            Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT | Errno::ENOSYS => {
                ErrorKind::Unsupported
            }
            Errno::EPERM | Errno::EACCES => ErrorKind::PermissionDenied,
            Errno::EBUSY => ErrorKind::Busy,
            Errno::EADDRINUSE => ErrorKind::AddressInUse,
            Errno::EINVAL | Errno::ERANGE => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::Exists,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::Unsupported => ErrorKind::Unsupported,
        io::ErrorKind::InvalidInput => ErrorKind::Invalid,
        io::ErrorKind::AddrInUse => ErrorKind::AddressInUse,
        _ => ErrorKind::Other,
    }
}

/// The subject of an operation: what is done (`create veth`), to what (`vh-3f2a1b`), in which
/// named namespace. Builds [`KernelError`]s tersely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub op: String,
    pub object: String,
    pub netns: Option<String>,
}

impl fmt::Display for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.object)?;
        if let Some(ns) = &self.netns {
            write!(f, " in netns {ns}")?;
        }
        Ok(())
    }
}

impl Ctx {
    pub fn new(op: impl Into<String>, object: impl fmt::Display, netns: Option<&str>) -> Self {
        Ctx {
            op: op.into(),
            object: object.to_string(),
            netns: netns.map(str::to_string),
        }
    }

    /// An errno-carrying failure of this operation.
    pub fn os(&self, source: io::Error) -> KernelError {
        KernelError::Os {
            subject: Box::new(self.clone()),
            source,
            extack: None,
        }
    }

    /// [`Ctx::os`] with the kernel's extended-ack text.
    pub fn os_with_message(&self, source: io::Error, extack: Option<String>) -> KernelError {
        KernelError::Os {
            subject: Box::new(self.clone()),
            source,
            extack: extack.map(String::into_boxed_str),
        }
    }

    pub fn errno(&self, e: nix::errno::Errno) -> KernelError {
        self.os(io::Error::from_raw_os_error(e as i32))
    }

    /// Refused before reaching the kernel.
    pub fn invalid(&self, reason: impl Into<String>) -> KernelError {
        KernelError::Invalid {
            subject: Box::new(self.clone()),
            reason: reason.into().into_boxed_str(),
        }
    }

    /// The netlink conversation failed.
    pub fn protocol(&self, detail: impl Into<String>) -> KernelError {
        KernelError::Protocol {
            subject: Box::new(self.clone()),
            detail: detail.into().into_boxed_str(),
        }
    }

    /// The kernel lacks link kind `kind`.
    pub fn unsupported_kind(&self, kind: &str, source: io::Error) -> KernelError {
        KernelError::Unsupported {
            subject: Box::new(self.clone()),
            kind: kind.into(),
            source,
        }
    }
}

/// The kernel module that provides a link kind, for "not supported" messages.
pub fn module_for_kind(kind: &str) -> &str {
    match kind {
        "vlan" => "8021q",
        "gretap" | "gre" => "ip_gre",
        "ip6gretap" | "ip6gre" => "ip6_gre",
        "ipip" => "ipip",
        "sit" => "sit",
        "ip6tnl" => "ip6_tunnel",
        "macvtap" => "macvtap",
        "ipvtap" => "ipvtap",
        "sch_netem" | "netem" => "sch_netem",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_op_object_and_netns() {
        let e = Ctx::new("create veth", "vh-3f2a1b", Some("demo-web-1"))
            .os(io::Error::from_raw_os_error(17));
        assert_eq!(
            e.to_string(),
            "create veth vh-3f2a1b in netns demo-web-1: File exists (os error 17)"
        );
        assert!(e.is_exists());
        assert_eq!(e.errno(), Some(17));
        assert_eq!(e.netns(), Some("demo-web-1"));
        assert!(std::mem::size_of::<KernelError>() <= 48, "stays small");
        let u = Ctx::new("create ipvlan", "x", None)
            .unsupported_kind("ipvlan", io::Error::from_raw_os_error(95));
        assert!(u.is_unsupported());
        assert!(u.to_string().contains("module `ipvlan`"), "{u}");
    }

    #[test]
    fn classification() {
        let c = Ctx::new("delete link", "ifindex 9", None);
        assert!(c.errno(nix::errno::Errno::ENODEV).is_not_found());
        assert_eq!(c.errno(nix::errno::Errno::EBUSY).kind(), ErrorKind::Busy);
        assert_eq!(
            c.errno(nix::errno::Errno::EADDRINUSE).kind(),
            ErrorKind::AddressInUse
        );
        assert_eq!(c.invalid("bad").kind(), ErrorKind::Invalid);
        assert_eq!(module_for_kind("vlan"), "8021q");
        assert_eq!(module_for_kind("ipvlan"), "ipvlan");
    }
}
