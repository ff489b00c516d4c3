//! `netcompose ls`: the projects on this machine, as `docker compose ls` prints them: name,
//! status (`running(N)` counts the replica namespaces that exist) and Compose files.

use super::reconcile::store;
use crate::reconcile::ProjectStatus;
use miette::IntoDiagnostic;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sudo netcompose ls\n  sudo netcompose ls --json")]
pub struct LsArgs {
    /// Print JSON (the keys of `docker compose ls --format json`).
    #[arg(long)]
    pub json: bool,
}

/// One row, named as Compose names its JSON keys.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct Row {
    name: String,
    status: String,
    config_files: String,
}

pub fn run(args: &LsArgs) -> miette::Result<ExitCode> {
    let (projects, unreadable) = crate::reconcile::projects(&store());
    for e in &unreadable {
        eprintln!("warning: {e}");
    }
    let rows: Vec<Row> = projects.iter().map(row).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).into_diagnostic()?);
    } else {
        print!("{}", table(&rows));
    }
    // Nothing listed because nothing could be read (not root, a broken store) is a failure.
    if rows.is_empty() && !unreadable.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn row(p: &ProjectStatus) -> Row {
    let gone = p.namespaces.saturating_sub(p.running);
    let status = match (p.running, gone) {
        (0, 0) => "running".to_string(),
        (0, _) => format!("stopped({gone})"),
        (n, 0) => format!("running({n})"),
        (n, _) => format!("running({n}), stopped({gone})"),
    };
    Row {
        name: p.name.clone(),
        status,
        config_files: p.files.join(","),
    }
}

fn table(rows: &[Row]) -> String {
    let width = |head: &str, f: &dyn Fn(&Row) -> usize| {
        rows.iter().map(f).chain([head.len()]).max().unwrap_or(0)
    };
    let name = width("NAME", &|r| r.name.len());
    let status = width("STATUS", &|r| r.status.len());
    let mut out = format!("{:<name$}  {:<status$}  CONFIG FILES\n", "NAME", "STATUS");
    for r in rows {
        let line = format!(
            "{:<name$}  {:<status$}  {}",
            r.name, r.status, r.config_files
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(namespaces: usize, running: usize) -> String {
        row(&ProjectStatus {
            name: "p".into(),
            namespaces,
            running,
            files: vec![],
        })
        .status
    }

    #[test]
    fn statuses_count_namespaces() {
        assert_eq!(status(3, 3), "running(3)");
        assert_eq!(status(3, 0), "stopped(3)");
        assert_eq!(status(3, 2), "running(2), stopped(1)");
        assert_eq!(status(0, 0), "running");
    }

    #[test]
    fn table_and_json_as_compose_prints_them() {
        let rows = vec![
            row(&ProjectStatus {
                name: "lab".into(),
                namespaces: 2,
                running: 2,
                files: vec!["/srv/lab/compose.yaml".into(), "/srv/lab/dev.yaml".into()],
            }),
            row(&ProjectStatus {
                name: "quickstart-long".into(),
                namespaces: 1,
                running: 0,
                files: vec![],
            }),
        ];
        assert_eq!(
            table(&rows),
            "NAME             STATUS      CONFIG FILES\n\
             lab              running(2)  /srv/lab/compose.yaml,/srv/lab/dev.yaml\n\
             quickstart-long  stopped(1)\n"
        );
        assert_eq!(
            serde_json::to_value(&rows[0]).unwrap(),
            serde_json::json!({"Name": "lab", "Status": "running(2)", "ConfigFiles": "/srv/lab/compose.yaml,/srv/lab/dev.yaml"})
        );
    }
}
