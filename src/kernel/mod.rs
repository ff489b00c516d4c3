//! The narrow kernel-facing layer: named network namespaces, rtnetlink and `net.*` sysctls.
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
//!
//! Threading rule: a thread's network namespace is per-thread state, so this module never calls
//! `setns` on a caller's thread (in particular never on a tokio worker). Code that must run
//! inside a namespace runs on a short-lived dedicated thread ([`netns::run_in`]); a netlink socket
//! is created on such a thread and then keeps operating in that namespace from anywhere.

pub mod netlink;
pub mod netns;
pub mod nft;
pub mod sysctl;

use std::fmt;
use std::io;

pub use netlink::{Link, LinkKind, MacvlanMode, MacvlanSpec, Netlink, Route, VethSpec, VxlanSpec};
pub use netns::NetnsDir;

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
    /// The request was rejected as malformed (EINVAL, ERANGE) or our own input check failed.
    Invalid,
    /// Anything else, including netlink protocol failures.
    Other,
}

/// An error from the kernel layer. The message always reads
/// `<operation> <object>[ in netns <name>]: <cause>`, for example
/// `create veth vh-3f2a1b in netns demo-web-1: File exists (os error 17)`.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A syscall or a netlink request failed with an errno.
    #[error("{op} {object}{}: {source}{}", in_ns(.netns), kernel_says(.extack))]
    Os {
        op: String,
        object: String,
        netns: Option<String>,
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, when it sent one (e.g. "Unknown device type").
        extack: Option<String>,
    },
    /// The kernel does not know a link kind: its module is neither built in nor loadable.
    #[error(
        "{op} {object}{}: link kind `{kind}` is not supported by this kernel \
         (module `{module}` is neither built in nor loadable; try `modprobe {module}`)",
        in_ns(.netns)
    )]
    Unsupported {
        op: String,
        object: String,
        netns: Option<String>,
        kind: String,
        module: String,
        #[source]
        source: io::Error,
    },
    /// The netlink conversation itself failed (connection closed, unexpected reply).
    #[error("{op} {object}{}: netlink: {detail}", in_ns(.netns))]
    Protocol {
        op: String,
        object: String,
        netns: Option<String>,
        detail: String,
    },
    /// The request was refused before reaching the kernel (bad name, bad value).
    #[error("{op} {object}: {reason}")]
    Invalid {
        op: String,
        object: String,
        reason: String,
    },
}

fn in_ns(ns: &Option<String>) -> String {
    match ns {
        Some(ns) => format!(" in netns {ns}"),
        None => String::new(),
    }
}

fn kernel_says(extack: &Option<String>) -> String {
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

    /// The operation, e.g. `create veth`.
    pub fn op(&self) -> &str {
        match self {
            KernelError::Os { op, .. }
            | KernelError::Unsupported { op, .. }
            | KernelError::Protocol { op, .. }
            | KernelError::Invalid { op, .. } => op,
        }
    }

    /// The object the operation was about, e.g. `vh-3f2a1b` or `ifindex 7`.
    pub fn object(&self) -> &str {
        match self {
            KernelError::Os { object, .. }
            | KernelError::Unsupported { object, .. }
            | KernelError::Protocol { object, .. }
            | KernelError::Invalid { object, .. } => object,
        }
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
        _ => ErrorKind::Other,
    }
}

/// Describes an operation while it is in flight, to build [`KernelError`]s tersely.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub op: String,
    pub object: String,
    pub netns: Option<String>,
}

impl Ctx {
    pub fn new(op: impl Into<String>, object: impl fmt::Display, netns: Option<&str>) -> Self {
        Ctx {
            op: op.into(),
            object: object.to_string(),
            netns: netns.map(str::to_string),
        }
    }

    pub fn os(&self, source: io::Error) -> KernelError {
        KernelError::Os {
            op: self.op.clone(),
            object: self.object.clone(),
            netns: self.netns.clone(),
            source,
            extack: None,
        }
    }

    pub fn errno(&self, e: nix::errno::Errno) -> KernelError {
        self.os(io::Error::from_raw_os_error(e as i32))
    }

    pub fn invalid(&self, reason: impl Into<String>) -> KernelError {
        KernelError::Invalid {
            op: self.op.clone(),
            object: self.object.clone(),
            reason: reason.into(),
        }
    }

    pub fn protocol(&self, detail: impl Into<String>) -> KernelError {
        KernelError::Protocol {
            op: self.op.clone(),
            object: self.object.clone(),
            netns: self.netns.clone(),
            detail: detail.into(),
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
    }

    #[test]
    fn classification() {
        let c = Ctx::new("delete link", "ifindex 9", None);
        assert!(c.errno(nix::errno::Errno::ENODEV).is_not_found());
        assert_eq!(c.errno(nix::errno::Errno::EBUSY).kind(), ErrorKind::Busy);
        assert_eq!(c.invalid("bad").kind(), ErrorKind::Invalid);
        assert_eq!(module_for_kind("vlan"), "8021q");
        assert_eq!(module_for_kind("ipvlan"), "ipvlan");
    }
}
