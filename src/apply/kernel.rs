//! The applier's handle on the machine: one netlink socket per namespace (opened once, on a
//! thread inside it, then reused), the namespace directory, and the project's ownership mark.

use crate::kernel::netlink::Netlink;
use crate::kernel::netns::NetnsDir;
use crate::kernel::KernelError;
use crate::model::names::ownership_mark;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where replica files for `ip netns exec` live.
pub const ETC_NETNS: &str = "/etc/netns";

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

    /// The ifalias that marks an object as this project's.
    pub fn mark(&self, address: &str) -> String {
        ownership_mark(&self.project, address)
    }

    pub fn etc_dir(&self, ns: &str) -> PathBuf {
        PathBuf::from(ETC_NETNS).join(ns)
    }
}
