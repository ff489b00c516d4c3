//! `--store URL` (or NETCOMPOSE_STORE), parsed without touching anything: which store holds
//! the state, and how to reach it.
//!
//! - absent, `file:` or `file:/DIR`: the file store (default /var/lib/netcompose);
//! - `etcd://[USER@]HOST[:PORT][,HOST[:PORT]]...`: etcd in plain text (port 2379 by default);
//! - `etcds://...?ca=FILE&cert=FILE&key=FILE`: etcd over TLS. `ca` verifies the members'
//!   certificates (else the system's roots); `cert` and `key` together give a client
//!   certificate.
//!
//! TLS files are URL query parameters rather than flags so that one variable
//! (NETCOMPOSE_STORE) carries the whole store for every command and agent. The user of etcd
//! auth comes from the URL; the password only from NETCOMPOSE_STORE_PASSWORD, never from the
//! command line, where every user of the machine can read it in /proc.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::path::PathBuf;
use thiserror::Error;

pub const PASSWORD_ENV: &str = "NETCOMPOSE_STORE_PASSWORD";
pub const DEFAULT_ETCD_PORT: u16 = 2379;

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File { root: PathBuf },
    Etcd(EtcdUrl),
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port` of each member given (IPv6 hosts in brackets).
    pub endpoints: Vec<String>,
    pub tls: Option<Tls>,
    pub user: Option<String>,
}

/// TLS settings of `etcds://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    /// Client certificate and its key, always both.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdUrl {
    /// The endpoints as gRPC URLs (`http://h:p` or `https://h:p`).
    pub fn grpc_endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }
}

/// What is wrong with a store URL, and where in it.
#[derive(Debug, Error, Diagnostic)]
#[error("invalid store URL: {problem}")]
#[diagnostic(code(netcompose::store_url))]
pub struct StoreUrlError {
    pub problem: Problem,
    #[source_code]
    pub url: NamedSource<String>,
    #[label("here")]
    pub at: SourceSpan,
    #[help]
    pub hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("unknown scheme `{0}`")]
    Scheme(String),
    #[error("no etcd endpoint")]
    NoEndpoint,
    #[error("an empty host")]
    EmptyHost,
    #[error("port `{0}` is not a number from 1 to 65535")]
    Port(String),
    #[error("a password in the URL")]
    Password,
    #[error("unknown parameter `{0}`")]
    Parameter(String),
    #[error("parameter `{0}` needs a value")]
    EmptyValue(String),
    #[error("TLS parameters with a plain-text etcd:// URL")]
    TlsWithoutEtcds,
    #[error("a client certificate without its key, or a key without its certificate")]
    HalfIdentity,
    #[error("a path in a store URL")]
    Path,
    #[error("a relative directory `{0}`")]
    RelativeDir(String),
}

/// Parse a store URL; None (no `--store`, no NETCOMPOSE_STORE) is the default file store.
pub fn parse(url: Option<&str>) -> Result<StoreUrl, Box<StoreUrlError>> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Ok(StoreUrl::File {
            root: super::STATE_ROOT.into(),
        });
    };
    let fail = |problem: Problem, start: usize, len: usize, hint: &str| {
        Box::new(StoreUrlError {
            problem,
            url: NamedSource::new("--store", url.to_string()),
            at: (start, len.max(1)).into(),
            hint: hint.to_string(),
        })
    };
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(fail(
            Problem::Scheme(url.into()),
            0,
            url.len(),
            "write file:, etcd://HOST:2379[,HOST:2379] or etcds://HOST:2379?ca=FILE",
        ));
    };
    let tls = match scheme {
        "file" => return file(url, rest, fail),
        "etcd" => false,
        "etcds" => true,
        other => {
            return Err(fail(
                Problem::Scheme(other.into()),
                0,
                other.len(),
                "the store is file:, etcd:// or etcds://",
            ))
        }
    };
    let body_at = scheme.len() + 3;
    let Some(body) = rest.strip_prefix("//") else {
        return Err(fail(
            Problem::NoEndpoint,
            scheme.len() + 1,
            rest.len(),
            "write etcd://HOST:2379[,HOST:2379]",
        ));
    };
    let (authority, query) = match body.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (body, None),
    };
    let (user, hosts, hosts_at) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            if userinfo.contains(':') {
                return Err(fail(
                    Problem::Password,
                    body_at,
                    userinfo.len(),
                    &format!(
                        "give only the user in the URL (etcd://USER@HOST) and the password in {PASSWORD_ENV}"
                    ),
                ));
            }
            (
                Some(userinfo.to_string()),
                hosts,
                body_at + userinfo.len() + 1,
            )
        }
        None => (None, authority, body_at),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains('/') {
        return Err(fail(
            Problem::Path,
            hosts_at + hosts.find('/').unwrap_or(0),
            1,
            "an etcd URL names members only: etcd://HOST:2379,HOST:2379",
        ));
    }
    if hosts.is_empty() {
        return Err(fail(
            Problem::NoEndpoint,
            hosts_at,
            0,
            "name at least one member: etcd://HOST:2379",
        ));
    }
    let mut endpoints = Vec::new();
    let mut at = hosts_at;
    for host in hosts.split(',') {
        endpoints.push(endpoint(host).map_err(|(problem, off, len)| {
            fail(
                problem,
                at + off,
                len,
                "each member is HOST or HOST:PORT (IPv6 as [ADDR]:PORT), separated by commas",
            )
        })?);
        at += host.len() + 1;
    }
    let tls = match query {
        Some(q) => Some(tls_params(q, hosts_at + hosts.len() + 1, &fail)?),
        None => None,
    }
    .or(tls.then(Tls::default));
    if tls.is_some() && !url.starts_with("etcds:") {
        return Err(fail(
            Problem::TlsWithoutEtcds,
            0,
            scheme.len(),
            "use etcds:// to talk TLS to etcd",
        ));
    }
    Ok(StoreUrl::Etcd(EtcdUrl {
        endpoints,
        tls,
        user: user.filter(|u| !u.is_empty()),
    }))
}

fn file(
    url: &str,
    rest: &str,
    fail: impl Fn(Problem, usize, usize, &str) -> Box<StoreUrlError>,
) -> Result<StoreUrl, Box<StoreUrlError>> {
    let dir = rest.strip_prefix("//").unwrap_or(rest);
    if dir.is_empty() {
        return Ok(StoreUrl::File {
            root: super::STATE_ROOT.into(),
        });
    }
    if !dir.starts_with('/') {
        return Err(fail(
            Problem::RelativeDir(dir.into()),
            url.len() - dir.len(),
            dir.len(),
            "give an absolute directory: file:/var/lib/netcompose",
        ));
    }
    Ok(StoreUrl::File { root: dir.into() })
}

/// One `host[:port]`, as `host:port`; on error, the problem and its offset and length.
fn endpoint(host: &str) -> Result<String, (Problem, usize, usize)> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, "")) => (format!("[{addr}]"), None),
            Some((addr, rest)) => match rest.strip_prefix(':') {
                Some(p) => (format!("[{addr}]"), Some((p, addr.len() + 3))),
                None => return Err((Problem::Port(rest.into()), addr.len() + 2, rest.len())),
            },
            None => return Err((Problem::EmptyHost, 0, host.len())),
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h.to_string(), Some((p, h.len() + 1))),
            None => (host.to_string(), None),
        }
    };
    if name.is_empty() || name == "[]" {
        return Err((Problem::EmptyHost, 0, host.len()));
    }
    let port = match port {
        None => DEFAULT_ETCD_PORT,
        Some((p, off)) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err((Problem::Port(p.into()), off, p.len())),
        },
    };
    Ok(format!("{name}:{port}"))
}

/// `ca=FILE&cert=FILE&key=FILE`, starting at offset `at` of the URL.
fn tls_params(
    query: &str,
    mut at: usize,
    fail: &impl Fn(Problem, usize, usize, &str) -> Box<StoreUrlError>,
) -> Result<Tls, Box<StoreUrlError>> {
    let (mut ca, mut cert, mut key) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "ca" => &mut ca,
            "cert" => &mut cert,
            "key" => &mut key,
            other => {
                return Err(fail(
                    Problem::Parameter(other.into()),
                    at,
                    other.len(),
                    "the parameters of etcds:// are ca, cert and key",
                ))
            }
        };
        if value.is_empty() {
            return Err(fail(
                Problem::EmptyValue(name.into()),
                at,
                pair.len(),
                "give a file: ca=/etc/netcompose/ca.pem",
            ));
        }
        *slot = Some(PathBuf::from(value));
        at += pair.len() + 1;
    }
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(fail(
                Problem::HalfIdentity,
                0,
                0,
                "give both cert=FILE and key=FILE, or neither",
            ))
        }
    };
    Ok(Tls { ca, identity })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(url: &str) -> EtcdUrl {
        match parse(Some(url)).unwrap() {
            StoreUrl::Etcd(e) => e,
            StoreUrl::File { .. } => panic!("{url} is not etcd"),
        }
    }

    fn problem(url: &str) -> (Problem, usize) {
        let e = parse(Some(url)).unwrap_err();
        (e.problem, e.at.offset())
    }

    #[test]
    fn absent_and_file_urls_are_the_file_store() {
        let default = StoreUrl::File {
            root: "/var/lib/netcompose".into(),
        };
        assert_eq!(parse(None).unwrap(), default);
        assert_eq!(parse(Some("")).unwrap(), default);
        assert_eq!(parse(Some("file:")).unwrap(), default);
        assert_eq!(
            parse(Some("file:/srv/nc")).unwrap(),
            StoreUrl::File {
                root: "/srv/nc".into()
            }
        );
        assert_eq!(
            parse(Some("file:///srv/nc")).unwrap(),
            StoreUrl::File {
                root: "/srv/nc".into()
            }
        );
        assert_eq!(
            problem("file:rel/dir"),
            (Problem::RelativeDir("rel/dir".into()), 5)
        );
    }

    #[test]
    fn etcd_members_with_default_ports() {
        let e = etcd("etcd://h1:2379,h2,[fd00::1]:12379,[::1]/");
        assert_eq!(
            e.endpoints,
            ["h1:2379", "h2:2379", "[fd00::1]:12379", "[::1]:2379"]
        );
        assert_eq!(e.tls, None);
        assert_eq!(e.user, None);
        assert_eq!(
            e.grpc_endpoints(),
            [
                "http://h1:2379",
                "http://h2:2379",
                "http://[fd00::1]:12379",
                "http://[::1]:2379"
            ]
        );
    }

    #[test]
    fn etcds_with_files_and_a_user() {
        let e = etcd("etcds://ops@h1:2379?ca=/etc/nc/ca.pem&cert=/etc/nc/c.pem&key=/etc/nc/k.pem");
        assert_eq!(e.user.as_deref(), Some("ops"));
        assert_eq!(
            e.tls,
            Some(Tls {
                ca: Some("/etc/nc/ca.pem".into()),
                identity: Some(("/etc/nc/c.pem".into(), "/etc/nc/k.pem".into())),
            })
        );
        assert_eq!(e.grpc_endpoints(), ["https://h1:2379"]);
        assert_eq!(etcd("etcds://h1").tls, Some(Tls::default()));
    }

    #[test]
    fn malformed_urls_point_at_the_fault() {
        assert_eq!(
            problem("consul://h:1"),
            (Problem::Scheme("consul".into()), 0)
        );
        assert_eq!(problem("h1:2379"), (Problem::Scheme("h1".into()), 0));
        assert_eq!(problem("etcd://"), (Problem::NoEndpoint, 7));
        assert_eq!(problem("etcd:h1"), (Problem::NoEndpoint, 5));
        assert_eq!(problem("etcd://h1:2379,:2379"), (Problem::EmptyHost, 15));
        assert_eq!(
            problem("etcd://h1:23x9"),
            (Problem::Port("23x9".into()), 10)
        );
        assert_eq!(problem("etcd://h1:0"), (Problem::Port("0".into()), 10));
        assert_eq!(
            problem("etcd://h1,h2:99999"),
            (Problem::Port("99999".into()), 13)
        );
        assert_eq!(problem("etcd://u:secret@h1"), (Problem::Password, 7));
        assert_eq!(problem("etcd://h1/v3/kv"), (Problem::Path, 9));
        assert_eq!(
            problem("etcds://h1?ca=/a&bogus=1"),
            (Problem::Parameter("bogus".into()), 17)
        );
        assert_eq!(
            problem("etcds://h1?ca="),
            (Problem::EmptyValue("ca".into()), 11)
        );
        assert_eq!(problem("etcds://h1?cert=/c"), (Problem::HalfIdentity, 0));
        assert_eq!(problem("etcd://h1?ca=/a"), (Problem::TlsWithoutEtcds, 0));
    }

    #[test]
    fn every_error_has_a_hint() {
        let e = parse(Some("etcd://u:pw@h")).unwrap_err();
        assert!(e.hint.contains(PASSWORD_ENV), "{}", e.hint);
    }
}
