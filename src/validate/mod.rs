//! The `validate` stage: semantic checks across the whole project, after decoding. Each check
//! pushes every problem it finds, so one run reports all of them.

mod cycles;
mod health;
mod ipam;
mod names;
mod ports;
mod qos;
mod refs;

use crate::diag::{ConfigError, Diagnostics};
use crate::spec::Project;

pub use ipam::is_reserved;
pub use ports::in_use as ports_in_use;
pub use qos::{check_kernel, KernelFacts, Presence, NETEM_MODULE};

/// Drivers netcompose builds, and what it says about the others.
pub const SUPPORTED_DRIVERS: &[&str] = &["bridge", "macvlan", "overlay"];

pub fn check(project: &Project, diags: &mut Diagnostics) {
    refs::check(project, diags);
    names::check(project, diags);
    ipam::check(project, diags);
    ports::check(project, diags);
    cycles::check(project, diags);
    health::check(project, diags);
    qos::check(project, diags);
    drop_follow_on_errors(diags);
}

/// A value whose interpolation failed is kept as written, so decoding and the checks above see
/// `${...}` and report it again as a bad port, CIDR, host name...: those reports only repeat
/// the interpolation error at the same place, and would send the user after the wrong problem.
fn drop_follow_on_errors(diags: &mut Diagnostics) {
    let is_root = |e: &ConfigError| {
        matches!(
            e,
            ConfigError::Interpolation { .. } | ConfigError::RequiredVariable { .. }
        )
    };
    let failed: Vec<_> = diags
        .errors
        .iter()
        .filter(|e| is_root(e))
        .map(ConfigError::at)
        .collect();
    diags
        .errors
        .retain(|e| is_root(e) || !failed.contains(&e.at()));
}
