//! The `validate` stage: semantic checks across the whole project, after decoding. Each check
//! pushes every problem it finds, so one run reports all of them.

mod cycles;
mod ipam;
mod names;
mod ports;
mod refs;

use crate::diag::Diagnostics;
use crate::spec::Project;

/// Drivers netcompose builds, and what it says about the others.
pub const SUPPORTED_DRIVERS: &[&str] = &["bridge", "macvlan", "overlay"];

pub fn check(project: &Project, diags: &mut Diagnostics) {
    refs::check(project, diags);
    names::check(project, diags);
    ipam::check(project, diags);
    ports::check(project, diags);
    cycles::check(project, diags);
}
