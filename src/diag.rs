//! Every problem a Compose file can have, as one typed enum. Stages push these into
//! [`Diagnostics`] so that all problems of a run are reported together; the CLI turns them into
//! miette reports pointing at file, line and column.

use crate::source::{Sources, Span};
use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum ConfigError {
    #[error("YAML syntax error: {message}")]
    #[diagnostic(
        code(netcompose::yaml),
        help("check indentation, quotes and brackets around this point")
    )]
    Yaml {
        message: String,
        #[label("here")]
        at: Span,
    },

    #[error("required variable `{var}` is not set: {message}")]
    #[diagnostic(
        code(netcompose::interpolation::required),
        help("set {var} in the environment or in the project's .env file")
    )]
    RequiredVariable {
        var: String,
        message: String,
        #[label("needs ${var}")]
        at: Span,
    },

    #[error("bad interpolation: {message}")]
    #[diagnostic(
        code(netcompose::interpolation::syntax),
        help("write `$$` for a literal dollar sign")
    )]
    Interpolation {
        message: String,
        #[label("in this value")]
        at: Span,
    },

    #[error("line {line} of the env file is not KEY=value")]
    #[diagnostic(
        code(netcompose::env_file),
        help("each line is KEY=value, `export KEY=value` or a # comment")
    )]
    EnvFile {
        line: usize,
        #[label("here")]
        at: Span,
    },

    #[error("unknown key `{key}` in {place}")]
    #[diagnostic(code(netcompose::unknown_key), help("{hint}"))]
    UnknownKey {
        key: String,
        place: String,
        hint: String,
        #[label("not a Compose key")]
        at: Span,
    },

    #[error("`{key}` must be {expected}, found {found}")]
    #[diagnostic(code(netcompose::wrong_type))]
    WrongType {
        key: String,
        expected: String,
        found: String,
        #[label("expected {expected}")]
        at: Span,
    },

    #[error("invalid {what} `{value}`: {reason}")]
    #[diagnostic(code(netcompose::invalid_value), help("{hint}"))]
    InvalidValue {
        what: String,
        value: String,
        reason: String,
        hint: String,
        #[label("{reason}")]
        at: Span,
    },

    #[error("service `{service}` uses network `{network}`, which is not defined")]
    #[diagnostic(code(netcompose::unknown_network), help("{hint}"))]
    UnknownNetwork {
        service: String,
        network: String,
        hint: String,
        #[label("undefined network")]
        at: Span,
    },

    #[error("{what} {addr} is outside the subnet {subnet}")]
    #[diagnostic(
        code(netcompose::outside_subnet),
        help("pick an address inside {subnet}, or widen the subnet")
    )]
    OutsideSubnet {
        what: String,
        addr: String,
        subnet: String,
        #[label("outside {subnet}")]
        at: Span,
        #[label("subnet declared here")]
        subnet_at: Option<Span>,
    },

    #[error("address {addr} is assigned twice on network `{network}`")]
    #[diagnostic(
        code(netcompose::duplicate_address),
        help("every static address on a network must be unique")
    )]
    DuplicateAddress {
        addr: String,
        network: String,
        #[label("second use")]
        at: Span,
        #[label("first use")]
        first_at: Option<Span>,
    },

    #[error("subnet {subnet} of network `{network}` overlaps {other_subnet} of network `{other}`")]
    #[diagnostic(
        code(netcompose::overlapping_subnets),
        help("networks of a project need disjoint subnets")
    )]
    OverlappingSubnets {
        network: String,
        subnet: String,
        other: String,
        other_subnet: String,
        #[label("overlaps")]
        at: Span,
        #[label("this one")]
        other_at: Option<Span>,
    },

    #[error("network `{network}` needs {needed} addresses but {subnet} holds only {capacity}")]
    #[diagnostic(
        code(netcompose::subnet_too_small),
        help("use a larger subnet (or ip_range), or fewer replicas")
    )]
    SubnetTooSmall {
        network: String,
        subnet: String,
        needed: u64,
        capacity: u64,
        #[label("too small")]
        at: Span,
    },

    #[error("ipv6_address on network `{network}`, which does not enable IPv6")]
    #[diagnostic(
        code(netcompose::ipv6_disabled),
        help("set `enable_ipv6: true` on network `{network}` and give it an IPv6 subnet")
    )]
    Ipv6Disabled {
        network: String,
        #[label("needs enable_ipv6")]
        at: Span,
    },

    #[error("`network_mode` cannot be combined with `{key}`")]
    #[diagnostic(code(netcompose::network_mode_conflict), help("a service either has its own networks or shares another's namespace, not both; remove one"))]
    NetworkModeConflict {
        key: String,
        #[label("conflicts with network_mode")]
        at: Span,
        #[label("network_mode set here")]
        mode_at: Option<Span>,
    },

    #[error("{context} names service `{name}`, which is not defined")]
    #[diagnostic(code(netcompose::unknown_service), help("{hint}"))]
    UnknownService {
        context: String,
        name: String,
        hint: String,
        #[label("undefined service")]
        at: Span,
    },

    #[error("dependency cycle: {cycle}")]
    #[diagnostic(
        code(netcompose::cycle),
        help("depends_on and network_mode must not loop back to a service")
    )]
    Cycle {
        cycle: String,
        #[label("part of the cycle")]
        at: Span,
    },

    #[error("host port {port} is published twice")]
    #[diagnostic(
        code(netcompose::port_conflict),
        help("two services cannot bind the same host address, port and protocol")
    )]
    PortConflict {
        port: String,
        #[label("second")]
        at: Span,
        #[label("first")]
        first_at: Option<Span>,
    },

    #[error("`{name}` cannot be used as {what}: {reason}")]
    #[diagnostic(code(netcompose::bad_name), help("{hint}"))]
    BadName {
        name: String,
        what: String,
        reason: String,
        hint: String,
        #[label("{reason}")]
        at: Span,
    },

    #[error("external network `{network}` cannot set `{key}`")]
    #[diagnostic(
        code(netcompose::external_settings),
        help("an external network is used as it exists; only `name` may be given")
    )]
    ExternalWithSettings {
        network: String,
        key: String,
        #[label("not allowed with external")]
        at: Span,
    },

    #[error("macvlan network `{network}` has no parent interface")]
    #[diagnostic(
        code(netcompose::macvlan_parent),
        help("set driver_opts.parent to the host interface to attach to, e.g. `parent: enp1s0`")
    )]
    MacvlanWithoutParent {
        network: String,
        #[label("macvlan needs driver_opts.parent")]
        at: Span,
    },

    #[error("network driver `{driver}` is not supported")]
    #[diagnostic(code(netcompose::driver), help("{hint}"))]
    UnsupportedDriver {
        driver: String,
        hint: String,
        #[label("unsupported")]
        at: Span,
    },

    #[error(
        "service `{service}` depends on `{dependency}`, whose profiles ({profiles}) are not active"
    )]
    #[diagnostic(
        code(netcompose::inactive_profile),
        help("activate one with --profile or COMPOSE_PROFILES")
    )]
    InactiveDependency {
        service: String,
        dependency: String,
        profiles: String,
        #[label("inactive")]
        at: Span,
    },

    #[error("{what} needs the kernel's `{module}`, which this machine lacks ({evidence})")]
    #[diagnostic(code(netcompose::kernel_module), help("{hint}"))]
    MissingModule {
        what: String,
        module: String,
        evidence: String,
        hint: String,
        #[label("needs {module}")]
        at: Span,
    },

    #[error("{message}")]
    #[diagnostic(code(netcompose::invalid))]
    Invalid {
        message: String,
        hint: String,
        #[label("{hint}")]
        at: Span,
    },
}

impl ConfigError {
    /// The primary span: its file is the source the report is rendered against.
    pub fn at(&self) -> Span {
        use ConfigError::*;
        match self {
            Yaml { at, .. }
            | RequiredVariable { at, .. }
            | Interpolation { at, .. }
            | EnvFile { at, .. }
            | UnknownKey { at, .. }
            | MissingModule { at, .. }
            | WrongType { at, .. }
            | InvalidValue { at, .. }
            | UnknownNetwork { at, .. }
            | OutsideSubnet { at, .. }
            | DuplicateAddress { at, .. }
            | OverlappingSubnets { at, .. }
            | SubnetTooSmall { at, .. }
            | Ipv6Disabled { at, .. }
            | NetworkModeConflict { at, .. }
            | UnknownService { at, .. }
            | Cycle { at, .. }
            | PortConflict { at, .. }
            | BadName { at, .. }
            | ExternalWithSettings { at, .. }
            | MacvlanWithoutParent { at, .. }
            | UnsupportedDriver { at, .. }
            | InactiveDependency { at, .. }
            | Invalid { at, .. } => *at,
        }
    }

    /// The stable code of this kind of problem (as shown by miette).
    pub fn code_str(&self) -> String {
        self.code().map(|c| c.to_string()).unwrap_or_default()
    }
}

/// Keep a secondary span only when it is in the same file as the primary one: a miette report
/// renders against a single source.
pub fn same_file(primary: Span, other: Span) -> Option<Span> {
    (primary.file == other.file).then_some(other)
}

/// Problems collected over a run.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl Diagnostics {
    pub fn push(&mut self, e: ConfigError) {
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Errors in the order of the files and positions they point at.
    pub fn sorted(&self) -> Vec<&ConfigError> {
        let mut v: Vec<_> = self.errors.iter().collect();
        v.sort_by_key(|e| (e.at().file, e.at().offset));
        v
    }
}

/// Render every error as a miette report against its source file.
pub fn reports(diags: &Diagnostics, sources: &Sources) -> Vec<miette::Report> {
    diags
        .sorted()
        .into_iter()
        .map(|e| miette::Report::new(e.clone()).with_source_code(sources.named(e.at().file)))
        .collect()
}

/// "did you mean `x`?" for the closest candidate, if any is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A hint that suggests the closest name or lists the valid ones.
pub fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
    kind: &str,
) -> String {
    match did_you_mean(word, candidates.clone()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => {
            let all: Vec<_> = candidates.into_iter().map(|c| format!("`{c}`")).collect();
            if all.is_empty() {
                format!("no {kind} is defined")
            } else {
                format!("defined {kind}: {}", all.join(", "))
            }
        }
    }
}
