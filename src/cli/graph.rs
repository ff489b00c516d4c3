//! `netcompose graph`: the topology for documentation and reviews, as Mermaid or dot text, or
//! drawn by graphviz's `dot` (a child process) as SVG or PNG. For a project that is up, the
//! picture says so and shows its x-run processes.

use super::reconcile::{is_root, planning, store, Terminal};
use super::Global;
use crate::project_name::ProjectName;
use crate::topology::{render, GraphFormat, Process, Running};
use miette::IntoDiagnostic;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "svg and png are drawn by graphviz's `dot`, which must be installed.\n\nExamples:\n  netcompose graph > topology.mmd\n  netcompose graph --format svg > topology.svg\n  netcompose graph --format dot | dot -Tpdf > topology.pdf"
)]
pub struct GraphArgs {
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    pub format: Format,
}

/// The `--format` values: the library's [`GraphFormat`] knows nothing of argument parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
    Svg,
    Png,
}

impl From<Format> for GraphFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Mermaid => GraphFormat::Mermaid,
            Format::Dot | Format::Svg | Format::Png => GraphFormat::Dot,
        }
    }
}

pub fn run(global: &Global, args: &GraphArgs) -> miette::Result<ExitCode> {
    // Check for graphviz first: a missing `dot` is known before any planning.
    let dot = match args.format {
        Format::Mermaid | Format::Dot => None,
        Format::Svg => Some((find_dot()?, "svg")),
        Format::Png => {
            if std::io::stdout().is_terminal() {
                return Err(miette::miette!(
                    help = "redirect it to a file: netcompose graph --format png > topology.png",
                    "a PNG is binary; it is not written to a terminal"
                ));
            }
            Some((find_dot()?, "png"))
        }
    };
    let p = planning(global, None)?;
    let name = ProjectName::new(p.checked.project.name.clone())?;
    let text = render(
        &p.checked.project,
        &p.plan.desired,
        running(&name).as_ref(),
        args.format.into(),
    );
    match dot {
        None => print!("{text}"),
        Some((dot, format)) => {
            let picture = draw(&dot, format, &text)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&picture).into_diagnostic()?;
            out.flush().into_diagnostic()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What runs of the project, if it is up: its replicas read back from the kernel as root (with
/// the daemon's x-run processes), else from the state file. None when nothing of it exists.
fn running(name: &ProjectName) -> Option<Running> {
    let live = is_root();
    let resources = crate::reconcile::resources(&store(), name, live, &Terminal::new()).ok()?;
    if resources.is_empty() {
        return None;
    }
    let processes = if live {
        super::daemon::view(name)
            .processes
            .into_iter()
            .map(|p| Process {
                service: p.service,
                state: p.state,
                health: p.health.map(|h| h.status.as_str().to_string()),
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(Running {
        source: if live { "live" } else { "state file" }.to_string(),
        processes,
    })
}

/// graphviz's `dot` on PATH, or a diagnostic that says how to get it.
fn find_dot() -> miette::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("dot"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            miette::miette!(
                help = "install graphviz (e.g. `apt-get install graphviz`), or print the dot text with `--format dot` and draw it elsewhere",
                "drawing the graph needs graphviz's `dot`, which is not on PATH"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `dot -T<format>` over `text`: its output, or its complaint.
fn draw(dot: &Path, format: &str, text: &str) -> miette::Result<Vec<u8>> {
    let mut child = Command::new(dot)
        .arg(format!("-T{format}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| miette::miette!("cannot run {}: {e}", dot.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| miette::miette!("no stdin for {}", dot.display()))?;
    // Written from a thread of its own: dot may fill its output pipe before it has read all.
    let (output, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(text.as_bytes()));
        (child.wait_with_output(), writer.join())
    });
    let output = output.map_err(|e| miette::miette!("{} failed: {e}", dot.display()))?;
    if !output.status.success() || !matches!(written, Ok(Ok(()))) {
        return Err(miette::miette!(
            help = "`netcompose graph --format dot` prints the text it was given",
            "{} -T{format} failed ({}): {}",
            dot.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}
