//! Host facts read from procfs and /etc, readable by any user: the routing table (so that no
//! automatic subnet collides with a network the host reaches), the listening sockets, the
//! ephemeral port range and the upstream nameservers. A file that does not exist holds nothing
//! (no IPv6, no resolv.conf); one that exists but cannot be read is a [`HostError`], never an
//! empty answer.

use crate::model::Listening;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A route of the host: destination and device.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRoute {
    pub destination: IpNetwork,
    pub device: String,
}

/// A host file that exists but could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct HostError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// The text of `path`; empty when there is no such file.
fn read(path: &str) -> Result<String, HostError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(HostError {
            path: path.to_string(),
            source,
        }),
    }
}

/// Every non-default route of the host's main table (IPv4 and IPv6).
pub fn routes() -> Result<Vec<HostRoute>, HostError> {
    let mut out = parse_v4(&read("/proc/net/route")?);
    out.extend(parse_v6(&read("/proc/net/ipv6_route")?));
    out.retain(|r| r.destination.prefix() > 0 && r.device != "lo");
    Ok(out)
}

/// /proc/net/route: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses in
/// little-endian hex.
pub fn parse_v4(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the address as a native-endian u32 of network-order bytes.
            let addr = Ipv4Addr::from(dst.to_ne_bytes());
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            let destination = IpNetwork::V4(Ipv4Network::new(addr, prefix).ok()?);
            Some(HostRoute {
                destination,
                device: f[0].to_string(),
            })
        })
        .collect()
}

/// /proc/net/ipv6_route: `dest prefix_len src src_len next_hop metric refcnt use flags dev`,
/// without link-local (fe80::) and multicast routes. An interface with IPv6 has one of each,
/// and a project's veth host ends are hundreds of interfaces: those lines are left out by
/// their first characters (the kernel prints a destination already cut to its prefix, in
/// lowercase hex) before anything else of them is read.
pub fn parse_v6(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter(|line| !line.starts_with("fe80") && !line.starts_with("ff"))
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let dst = u128::from_str_radix(f.next()?, 16).ok()?;
            let prefix = u8::from_str_radix(f.next()?, 16).ok()?;
            // The device is the tenth field: seven after the prefix length.
            let device = f.nth(7)?.to_string();
            let destination = IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(dst), prefix).ok()?);
            Some(HostRoute {
                destination,
                device,
            })
        })
        .collect()
}

/// The host's upstream nameservers. When resolv.conf points at a local stub (systemd-resolved
/// at 127.0.0.53), its real upstreams are in /run/systemd/resolve/resolv.conf.
pub fn nameservers() -> Result<Vec<String>, HostError> {
    let main = parse_resolv_conf(&read("/etc/resolv.conf")?);
    if main.iter().all(|n| n.starts_with("127.")) {
        let upstream = parse_resolv_conf(&read("/run/systemd/resolve/resolv.conf")?);
        if !upstream.is_empty() {
            return Ok(upstream);
        }
    }
    Ok(main)
}

pub fn parse_resolv_conf(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The kernel's range of ephemeral ports (/proc/sys/net/ipv4/ip_local_port_range), from which
/// target-only published ports are picked; Linux's default when there is no such file.
pub fn local_port_range() -> Result<(u16, u16), HostError> {
    let text = read("/proc/sys/net/ipv4/ip_local_port_range")?;
    Ok(parse_port_range(&text).unwrap_or(crate::ipam::ports::DEFAULT_RANGE))
}

/// `32768\t60999`.
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut f = text.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (f.next()?.ok()?, f.next()?.ok()?);
    (lo <= hi && lo > 0).then_some((lo, hi))
}

/// TCP sockets in LISTEN and bound UDP sockets of this namespace (/proc/net/{tcp,udp}{,6}).
pub fn listening() -> Result<Vec<Listening>, HostError> {
    use crate::spec::Protocol;
    let mut out = Vec::new();
    for (file, protocol, v6) in [
        ("tcp", Protocol::Tcp, false),
        ("tcp6", Protocol::Tcp, true),
        ("udp", Protocol::Udp, false),
        ("udp6", Protocol::Udp, true),
    ] {
        let text = read(&format!("/proc/net/{file}"))?;
        out.extend(parse_sockets(&text, protocol, v6));
    }
    Ok(out)
}

/// `sl local_address rem_address st ...`; TCP state 0A is LISTEN, UDP 07 is a bound socket.
pub fn parse_sockets(text: &str, protocol: crate::spec::Protocol, v6: bool) -> Vec<Listening> {
    let wanted = if protocol == crate::spec::Protocol::Tcp {
        "0A"
    } else {
        "07"
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&wanted) {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let addr = if v6 {
                proc_v6(addr)?
            } else {
                std::net::IpAddr::V4(Ipv4Addr::from(
                    u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
                ))
            };
            Some(Listening {
                protocol,
                addr,
                port,
            })
        })
        .collect()
}

/// /proc/net/*6 prints an IPv6 address as four native-endian 32-bit words.
fn proc_v6(hex: &str) -> Option<std::net::IpAddr> {
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(std::net::IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_routes() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_v4(v4);
        assert_eq!(r[1].destination.to_string(), "192.168.0.0/24");
        assert_eq!(r[1].device, "eth0");
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 br0\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 veth1\n\
                  ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 veth1\n\
                  fe000000000000000000000000000000 07 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 wg0\n";
        let r = parse_v6(v6);
        let shown: Vec<(String, &str)> = r
            .iter()
            .map(|r| (r.destination.to_string(), r.device.as_str()))
            .collect();
        // Link-local and multicast routes are left out; fc00::/7 is neither.
        assert_eq!(
            shown,
            [
                ("fd00::/64".to_string(), "br0"),
                ("fe00::/7".to_string(), "wg0")
            ]
        );
    }

    #[test]
    fn parses_proc_sockets() {
        let tcp = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:1F91 00000000:0000 01 0\n";
        let l = parse_sockets(tcp, crate::spec::Protocol::Tcp, false);
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].addr.to_string(), l[0].port),
            ("127.0.0.1".to_string(), 8080)
        );
        let tcp6 = "  sl  local_address rem_address   st\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_sockets(tcp6, crate::spec::Protocol::Tcp, true)[0]
                .addr
                .to_string(),
            "::"
        );
    }

    #[test]
    fn resolv_conf() {
        assert_eq!(
            parse_resolv_conf("# x\nnameserver 10.0.0.1\nsearch a\nnameserver ::1\n"),
            ["10.0.0.1", "::1"]
        );
    }
}

/// What the running kernel offers `x-qos`, read without privileges.
pub fn kernel_facts() -> crate::validate::KernelFacts {
    crate::validate::KernelFacts {
        netem: netem(&KernelFiles::system()),
    }
}

/// Where a kernel tells which modules it has.
pub struct KernelFiles {
    /// `/sys/module`: loaded modules (and built-in ones with parameters).
    pub sys_module: std::path::PathBuf,
    /// `/lib/modules/<release>`: modules.builtin and the loadable modules.
    pub modules: std::path::PathBuf,
    /// `/proc/config.gz`: the kernel's configuration, when it exposes it.
    pub config_gz: std::path::PathBuf,
}

impl KernelFiles {
    pub fn system() -> KernelFiles {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        KernelFiles {
            sys_module: "/sys/module".into(),
            modules: std::path::Path::new("/lib/modules").join(release),
            config_gz: "/proc/config.gz".into(),
        }
    }
}

/// netem is there when it is loaded, built in (modules.builtin, or `=y` in the kernel's
/// config) or loadable (a module file, or `=m`); missing when the config says it is not set,
/// or when no source knows it. Each source is read as it is found, so a kernel without
/// /lib/modules (a VM image) is judged by its config.
pub fn netem(files: &KernelFiles) -> crate::validate::Presence {
    use crate::validate::Presence;
    let module = crate::validate::NETEM_MODULE;
    if files.sys_module.join(module).exists() {
        return Presence::Present;
    }
    let builtin =
        std::fs::read_to_string(files.modules.join("modules.builtin")).unwrap_or_default();
    if builtin
        .lines()
        .any(|l| l.ends_with(&format!("/{module}.ko")))
    {
        return Presence::Present;
    }
    let loadable = files.modules.join("kernel/net/sched");
    if let Ok(entries) = std::fs::read_dir(&loadable) {
        if entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{module}.ko"))
        }) {
            return Presence::Present;
        }
    }
    match config_option(&files.config_gz, "CONFIG_NET_SCH_NETEM") {
        Some(v) if v == "y" || v == "m" => Presence::Present,
        Some(_) => Presence::Missing(format!(
            "{} has CONFIG_NET_SCH_NETEM unset",
            files.config_gz.display()
        )),
        None => Presence::Missing(format!(
            "not loaded, not in {}/modules.builtin or kernel/net/sched, not in {}",
            files.modules.display(),
            files.config_gz.display()
        )),
    }
}

/// The value of `option` in a gzipped kernel config (`n` for `# ... is not set`), read with
/// `zcat`-free inflation; None when the file is missing or unreadable.
fn config_option(path: &std::path::Path, option: &str) -> Option<String> {
    let text = inflate_gzip(&std::fs::read(path).ok()?)?;
    text.lines().find_map(|l| {
        if l == format!("# {option} is not set") {
            return Some("n".to_string());
        }
        l.strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_string)
    })
}

/// The contents of a gzip file (RFC 1952) with one member, as /proc/config.gz is.
fn inflate_gzip(data: &[u8]) -> Option<String> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    const FHCRC: u8 = 2;
    if data.len() < 18 || data[0..3] != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = data[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]));
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += data.get(at..)?.iter().position(|b| *b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec(data.get(at..)?).ok()?;
    String::from_utf8(raw).ok()
}

#[cfg(test)]
mod netem_tests {
    use super::*;
    use crate::validate::Presence;

    fn files(dir: &std::path::Path) -> KernelFiles {
        KernelFiles {
            sys_module: dir.join("sys"),
            modules: dir.join("lib"),
            config_gz: dir.join("config.gz"),
        }
    }

    #[test]
    fn netem_is_found_where_the_kernel_says_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert!(matches!(netem(&f), Presence::Missing(_)));
        std::fs::create_dir_all(f.modules.join("kernel/net/sched")).unwrap();
        std::fs::write(
            f.modules.join("modules.builtin"),
            "kernel/net/sched/sch_htb.ko\n",
        )
        .unwrap();
        assert!(matches!(netem(&f), Presence::Missing(_)));
        std::fs::write(f.modules.join("kernel/net/sched/sch_netem.ko.zst"), "").unwrap();
        assert_eq!(netem(&f), Presence::Present);
    }

    #[test]
    fn the_kernel_config_is_read_through_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let config = "CONFIG_NET_SCH_HTB=y\n# CONFIG_NET_SCH_NETEM is not set\n";
        let gz = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(config.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        std::fs::write(&f.config_gz, &gz.stdout).unwrap();
        assert!(matches!(netem(&f), Presence::Missing(why) if why.contains("unset")));
        let set = config.replace(
            "# CONFIG_NET_SCH_NETEM is not set",
            "CONFIG_NET_SCH_NETEM=m",
        );
        let gz = miniz_gzip(&set);
        std::fs::write(&f.config_gz, gz).unwrap();
        assert_eq!(netem(&f), Presence::Present);
    }

    /// A gzip member around a raw deflate stream, with a file name (as gzip writes).
    fn miniz_gzip(text: &str) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        out.extend_from_slice(b"config\0");
        out.extend(miniz_oxide::deflate::compress_to_vec(text.as_bytes(), 6));
        out.extend_from_slice(&[0; 8]);
        out
    }
}
