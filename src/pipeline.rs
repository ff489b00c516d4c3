//! The pure stages run in order: load and validate, stopping with every diagnostic found.
//! Commands call [`checked_project`] and never see a project that failed validation.

use crate::diag::Diagnostics;
use crate::load::{self, LoadError, LoadOptions};
use crate::source::Sources;
use crate::spec::Project;
use crate::validate;
use std::path::PathBuf;

/// A project that loaded and validated cleanly.
#[derive(Debug)]
pub struct Checked {
    pub project: Project,
    pub sources: Sources,
    pub warnings: Vec<String>,
    pub working_dir: PathBuf,
    /// The Compose files read, as absolute paths (`ls` shows them).
    pub files: Vec<PathBuf>,
}

/// Why the pure stages stopped.
#[derive(Debug)]
pub enum Failure {
    Load(LoadError),
    Invalid {
        diags: Diagnostics,
        sources: Sources,
    },
}

pub fn checked_project(opts: &LoadOptions) -> Result<Checked, Failure> {
    checked_on(opts, validate::KernelFacts::default)
}

/// [`checked_project`], also refusing what the running kernel lacks (`facts`, called only
/// when the project needs one of them: `observe::host::kernel_facts`).
pub fn checked_on(
    opts: &LoadOptions,
    facts: impl FnOnce() -> validate::KernelFacts,
) -> Result<Checked, Failure> {
    let loaded = load::load(opts).map_err(Failure::Load)?;
    let mut diags = loaded.diags;
    validate::check(&loaded.project, &mut diags);
    validate::check_kernel(&loaded.project, facts, &mut diags);
    if diags.has_errors() {
        return Err(Failure::Invalid {
            diags,
            sources: loaded.sources,
        });
    }
    Ok(Checked {
        project: loaded.project,
        sources: loaded.sources,
        warnings: diags.warnings,
        working_dir: loaded.working_dir,
        files: loaded.files,
    })
}

/// Render diagnostics as miette does on a terminal, without colour (for files and tests).
pub fn render_plain(diags: &Diagnostics, sources: &Sources) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100);
    let mut out = String::new();
    for report in crate::diag::reports(diags, sources) {
        let _ = handler.render_report(&mut out, report.as_ref());
    }
    out
}

/// The model of examples/quickstart, for unit tests that need a realistic list of resources.
#[cfg(test)]
pub(crate) fn quickstart_resources() -> Vec<crate::model::resource::Resource> {
    let opts = LoadOptions {
        files: vec![concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/quickstart/compose.yaml"
        )
        .into()],
        environment: Some(Default::default()),
        ..Default::default()
    };
    let checked = checked_project(&opts).expect("the quickstart example is valid");
    crate::model::build(&checked.project, &Default::default())
        .expect("the quickstart example builds")
        .resources
}
