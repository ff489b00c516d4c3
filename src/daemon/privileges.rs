//! Who an `x-run` process runs as and what it may do (`user`, `cap_add`/`cap_drop`,
//! `security_opt: [no-new-privileges]`). Applied in the child between fork and exec, after the
//! namespaces are entered, which needs the daemon's full privileges.

use crate::model::daemon::Process;
use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// One process's identity and capabilities, prepared before the fork so that the child only
/// makes system calls.
#[derive(Debug, Clone)]
pub struct Privileges {
    ids: Option<(u32, u32)>,
    /// The capabilities kept, limited to those the running kernel knows.
    caps: Option<u64>,
    last_cap: u32,
    no_new_privileges: bool,
}

impl Privileges {
    pub fn new(def: &Process) -> Privileges {
        // The kernel refuses to drop a capability it does not know; older kernels know fewer.
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40u32)
            .min(63);
        let known = if last_cap == 63 {
            u64::MAX
        } else {
            (1u64 << (last_cap + 1)) - 1
        };
        Privileges {
            ids: def.user.map(|i| (i.uid, i.gid)),
            caps: def.capabilities.map(|c| c & known),
            last_cap,
            no_new_privileges: def.no_new_privileges,
        }
    }

    /// In the child. Order matters: the bounding set is cut while the process may still do
    /// so; groups, gid, then uid (each needs the capability the next one gives up), keeping
    /// the permitted set across the uid change; then the sets, and ambient ones so that they
    /// survive the exec of a program run by a user other than root.
    pub fn apply(&self) -> io::Result<()> {
        if let Some(keep) = self.caps {
            for cap in 0..=self.last_cap {
                if keep & (1 << cap) == 0 {
                    prctl(libc::PR_CAPBSET_DROP, cap.into())?;
                }
            }
            if self.ids.is_some() {
                nix::sys::prctl::set_keepcaps(true)?;
            }
        }
        if let Some((uid, gid)) = self.ids {
            setgroups(&[Gid::from_raw(gid)])?;
            setgid(Gid::from_raw(gid))?;
            setuid(Uid::from_raw(uid))?;
        }
        if let Some(keep) = self.caps {
            capset(keep)?;
            for cap in 0..=self.last_cap {
                if keep & (1 << cap) != 0 {
                    prctl2(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap.into(),
                    )?;
                }
            }
        }
        if self.no_new_privileges {
            nix::sys::prctl::set_no_new_privs()?;
        }
        Ok(())
    }
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    prctl2(option, arg, 0)
}

fn prctl2(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set the effective, permitted and inheritable sets of this thread to `keep`.
/// By hand rather than through the `caps` crate: its calls build hash sets, and this runs
/// between fork and exec of a multi-threaded daemon, where only system calls are safe
/// (allocating could deadlock on a lock another thread held at the fork).
fn capset(keep: u64) -> io::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |w: u32| CapData {
        effective: w,
        permitted: w,
        inheritable: w,
    };
    let data = [word(keep as u32), word((keep >> 32) as u32)];
    // SAFETY: the header and the two words are the layout capset(2) reads for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
