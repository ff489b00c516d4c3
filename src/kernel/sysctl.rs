//! `net.*` sysctls inside a network namespace.
//!
//! `/proc/sys/net/...` resolves to the network namespace of the thread that opens the file, so a
//! read or write for a named namespace happens on a [`NetnsDir::run_in`] thread. Keys are given
//! either dotted (`net.ipv4.ip_forward`) or as a slash path (`net/ipv4/conf/eth0.1/forwarding`,
//! needed when an interface name contains a dot). Only `net.*` keys are accepted: everything else
//! is global to the machine and none of our business.

use std::fs;
use std::path::PathBuf;

use super::netns::NetnsDir;
use super::{Ctx, KernelError};

/// Write `value` to sysctl `key` in namespace `ns` of `/run/netns` (`None`: the caller's).
pub fn write(ns: Option<&str>, key: &str, value: &str) -> Result<(), KernelError> {
    write_in(&NetnsDir::system(), ns, key, value)
}

/// Read sysctl `key` in namespace `ns` of `/run/netns` (trailing newline removed).
pub fn read(ns: Option<&str>, key: &str) -> Result<String, KernelError> {
    read_in(&NetnsDir::system(), ns, key)
}

/// [`write`] for a namespace of another directory.
pub fn write_in(
    dir: &NetnsDir,
    ns: Option<&str>,
    key: &str,
    value: &str,
) -> Result<(), KernelError> {
    let ctx = Ctx::new("write sysctl", format!("{key}={value}"), ns);
    let path = sysctl_path(&ctx, key)?;
    dir.run_in(ns, || fs::write(&path, value.as_bytes()))?
        .map_err(|e| ctx.os(e))
}

/// [`read`] for a namespace of another directory.
pub fn read_in(dir: &NetnsDir, ns: Option<&str>, key: &str) -> Result<String, KernelError> {
    let ctx = Ctx::new("read sysctl", key, ns);
    let path = sysctl_path(&ctx, key)?;
    let text = dir
        .run_in(ns, || fs::read_to_string(&path))?
        .map_err(|e| ctx.os(e))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// `/proc/sys/<key>` for a `net.*` key, dotted or slashed.
pub fn path(key: &str) -> Result<PathBuf, KernelError> {
    sysctl_path(&Ctx::new("resolve sysctl", key, None), key)
}

fn sysctl_path(ctx: &Ctx, key: &str) -> Result<PathBuf, KernelError> {
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.first() != Some(&"net") || parts.len() < 2 {
        return Err(ctx.invalid("only net.* sysctls can be set per namespace"));
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(ctx.invalid("malformed sysctl key"));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_paths() {
        let ctx = Ctx::new("read sysctl", "k", None);
        assert_eq!(
            sysctl_path(&ctx, "net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path(&ctx, "net/ipv4/conf/eth0.1/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
        assert!(sysctl_path(&ctx, "kernel.hostname").is_err());
        assert!(sysctl_path(&ctx, "net/../kernel/x").is_err());
    }
}
