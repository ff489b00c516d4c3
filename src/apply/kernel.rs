//! The applier's handle on the machine: one netlink socket per namespace (opened once, on a
//! thread inside it, then reused), the namespace directory, and the project's ownership mark.

use crate::kernel::netlink::Netlink;
use crate::kernel::netns::NetnsDir;
use crate::kernel::KernelError;
use crate::model::names::ownership_mark;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

pub use crate::kernel::ETC_NETNS;

pub struct Kernel {
    pub project: String,
    pub dir: NetnsDir,
    pub rt: tokio::runtime::Handle,
    pub host: Netlink,
    sockets: Mutex<HashMap<String, Netlink>>,
}

impl Kernel {
    pub fn open(project: &str, rt: tokio::runtime::Handle) -> Result<Kernel, KernelError> {
        let host = Netlink::open(None, &rt)?;
        Ok(Kernel {
            project: project.to_string(),
            dir: NetnsDir::system(),
            rt,
            host,
            sockets: Mutex::new(HashMap::new()),
        })
    }

    /// The socket of a namespace, opened on first use.
    pub fn netlink(&self, ns: &str) -> Result<Netlink, KernelError> {
        if let Some(s) = self.sockets.lock().ok().and_then(|m| m.get(ns).cloned()) {
            return Ok(s);
        }
        let socket = Netlink::open_in(&self.dir, Some(ns), &self.rt)?;
        if let Ok(mut m) = self.sockets.lock() {
            m.insert(ns.to_string(), socket.clone());
        }
        Ok(socket)
    }

    /// Drop the cached socket of a namespace that is going away.
    pub fn forget(&self, ns: &str) {
        if let Ok(mut m) = self.sockets.lock() {
            m.remove(ns);
        }
    }

    /// Keep a socket opened elsewhere (on the thread that created the namespace).
    pub fn remember(&self, ns: &str, socket: Netlink) {
        if let Ok(mut m) = self.sockets.lock() {
            m.insert(ns.to_string(), socket);
        }
    }

    /// The ifalias that marks an object as this project's.
    pub fn mark(&self, address: &str) -> String {
        ownership_mark(&self.project, address)
    }

    /// The MAC address a host-side link of this project named `ifname` is created with.
    ///
    /// The ifalias mark takes a second request after the creation (the kernel ignores
    /// `IFLA_IFALIAS` in RTM_NEWLINK), so a run killed between the two leaves a link of ours
    /// without its mark. The MAC, set in the creating request itself, proves it ours then: it is
    /// a hash of the project and the name, so nobody else's link has it by chance.
    pub fn owner_mac(&self, ifname: &str) -> [u8; 6] {
        owner_mac(&self.project, ifname)
    }

    pub fn etc_dir(&self, ns: &str) -> PathBuf {
        PathBuf::from(ETC_NETNS).join(ns)
    }
}

/// See [`Kernel::owner_mac`]: locally administered, unicast.
pub fn owner_mac(project: &str, ifname: &str) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("netcompose-owner:{project}:{ifname}").as_bytes());
    [(d[0] & 0xfc) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}
