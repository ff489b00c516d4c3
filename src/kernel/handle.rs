//! What `observe` and `apply` work with: a [`Machine`] (the real one, or the fake in tests)
//! and the project whose objects they look for, create and delete.

use super::machine::Machine;
use super::system::System;
use super::KernelError;
use std::ops::Deref;

pub struct Kernel<M = System> {
    pub project: String,
    pub machine: M,
}

impl Kernel<System> {
    /// The real machine, its host socket's connection running on `rt`.
    pub fn open(project: &str, rt: tokio::runtime::Handle) -> Result<Kernel, KernelError> {
        Ok(Kernel::new(project, System::open(rt)?))
    }
}

impl<M: Machine> Kernel<M> {
    pub fn new(project: &str, machine: M) -> Kernel<M> {
        Kernel {
            project: project.to_string(),
            machine,
        }
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
}

impl<M> Deref for Kernel<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.machine
    }
}

/// See [`Kernel::owner_mac`]: locally administered, unicast.
pub fn owner_mac(project: &str, ifname: &str) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("netcompose-owner:{project}:{ifname}").as_bytes());
    [(d[0] & 0xfc) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}
