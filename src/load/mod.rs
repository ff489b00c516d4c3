//! The `load` stage: Compose files (+ overrides, .env) → [`Project`]. YAML with spans,
//! interpolation, merging of several files, schema key checks and typed decoding.

pub mod decode;
mod discover;
pub mod env;
pub mod env_file;
pub mod interpolate;
pub mod merge;
pub mod node;
pub mod schema;
pub mod yaml;

use crate::diag::{ConfigError, Diagnostics};
use crate::source::{Sources, Span};
use crate::spec::Project;
pub use discover::normalize_project_name;
use discover::{display_path, project_dir, project_name, read_env_files, resolve_files};
use interpolate::Vars;
use node::Node;
use std::path::PathBuf;
use thiserror::Error;

/// File names tried, in order, when no `-f` is given.
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Override files loaded after the default file found in the same directory, as Compose
/// does when neither -f nor COMPOSE_FILE names the files (the first one found).
pub const DEFAULT_OVERRIDE_FILES: &[&str] = &[
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// What to load, as the CLI's global options say.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub files: Vec<PathBuf>,
    pub project_name: Option<String>,
    pub project_directory: Option<PathBuf>,
    pub env_files: Vec<PathBuf>,
    pub profiles: Vec<String>,
    /// The environment to interpolate from; the process environment when None.
    pub environment: Option<Vars>,
    /// Replica counts that override the file's for this run (`up --scale SERVICE=N`).
    pub scale: Vec<(String, u32)>,
}

/// Problems that stop loading before any file could be read.
#[derive(Debug, Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("no Compose file found in {dir}")]
    #[diagnostic(
        code(netcompose::no_file),
        help("create compose.yaml there, or name a file with -f")
    )]
    NoFile { dir: String },
    #[error("cannot read {path}: {source}")]
    #[diagnostic(code(netcompose::io))]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("project name `{name}` is invalid: {reason}")]
    #[diagnostic(code(netcompose::project_name), help("a project name is lowercase letters, digits, `_` and `-`, starting with a letter or digit"))]
    ProjectName { name: String, reason: String },
    #[error("--scale names `{service}`, which is not a service of this project")]
    #[diagnostic(code(netcompose::scale))]
    ScaleUnknown {
        service: String,
        #[help]
        hint: String,
    },
}

/// The outcome of loading: the project (possibly partial), every file read, every problem.
#[derive(Debug)]
pub struct Loaded {
    pub project: Project,
    pub sources: Sources,
    pub diags: Diagnostics,
    pub working_dir: PathBuf,
    /// The Compose files read, in order, as absolute paths.
    pub files: Vec<PathBuf>,
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut sources = Sources::default();
    let mut diags = Diagnostics::default();
    // As docker compose does: the shell's variables win over every .env file. The .env of the
    // project directory is read before the files are known (COMPOSE_FILE may name them), and
    // once more from the first file's directory if that is another one.
    let mut vars: Vars = opts
        .environment
        .clone()
        .unwrap_or_else(|| std::env::vars().collect());
    let first_dir = project_dir(opts, &opts.files, &cwd);
    let mut env_read = Vec::new();
    read_env_files(
        opts,
        &first_dir,
        &mut vars,
        &mut env_read,
        &mut sources,
        &mut diags,
    )?;
    let files = resolve_files(opts, &vars, &cwd)?;
    let working_dir = project_dir(opts, &files, &cwd);
    read_env_files(
        opts,
        &working_dir,
        &mut vars,
        &mut env_read,
        &mut sources,
        &mut diags,
    )?;
    let absolute = files.iter().map(|f| cwd.join(f)).collect();
    let mut texts = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        texts.push((display_path(path), text));
    }
    let trees = parse_files(texts, &mut sources, &mut diags);
    let name = project_name(opts, &vars, &trees, &working_dir, &mut diags)?;
    // Whatever chose the name (-p, the environment, `name:`, the directory), the files see it
    // as COMPOSE_PROJECT_NAME.
    vars.insert("COMPOSE_PROJECT_NAME".into(), name.clone());
    let merged = interpolate_and_merge(trees, &vars, &mut diags);
    let profiles = if opts.profiles.is_empty() {
        vars.get("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        opts.profiles.clone()
    };
    let mut project = decode::project(&merged, &name, &profiles, &mut diags);
    env_file::read(&mut project, &vars, &working_dir, &mut sources, &mut diags);
    if project.services.values().any(|s| s.exec.user.is_some()) {
        // Read only when needed: a missing file resolves nothing but numeric ids.
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        decode::resolve_exec(&mut project, &vars, &passwd, &group, &mut diags);
    } else {
        decode::resolve_exec(&mut project, &vars, "", "", &mut diags);
    }
    scale(&mut project, &opts.scale)?;
    Ok(Loaded {
        project,
        sources,
        diags,
        working_dir,
        files: absolute,
    })
}

/// `--scale SERVICE=N`, as Compose has it: N replicas for this run whatever `deploy.replicas`
/// or `scale` say, so that validation, IPAM and the plan see the count actually built.
fn scale(project: &mut Project, overrides: &[(String, u32)]) -> Result<(), LoadError> {
    for (service, _) in overrides {
        if !project.services.contains_key(service) {
            let hint = if project.inactive.contains_key(service) {
                format!("`{service}` is in a profile that is not enabled (--profile)")
            } else {
                crate::diag::suggest(
                    service,
                    project.services.keys().map(String::as_str),
                    "services",
                )
            };
            return Err(LoadError::ScaleUnknown {
                service: service.clone(),
                hint,
            });
        }
    }
    rescale(project, overrides.iter().map(|(s, n)| (s.as_str(), *n)));
    Ok(())
}

/// Set the replica counts of the services named (others are ignored: a count recorded for a
/// service the file no longer has). Each override keeps the span of the count it replaces, so
/// diagnostics still point into the file.
pub fn rescale<'a>(project: &mut Project, counts: impl IntoIterator<Item = (&'a str, u32)>) {
    for (service, n) in counts {
        let Some(svc) = project.services.get_mut(service) else {
            continue;
        };
        let span = svc
            .deploy
            .replicas
            .as_ref()
            .or(svc.scale.as_ref())
            .map_or(svc.key.span, |r| r.span);
        svc.deploy.replicas = Some(crate::spec::Spanned::new(n, span));
    }
}

/// Parse, check keys and interpolate each file, then merge them in order.
pub fn parse_and_merge(
    texts: Vec<(String, String)>,
    vars: &Vars,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) -> Node {
    let trees = parse_files(texts, sources, diags);
    interpolate_and_merge(trees, vars, diags)
}

/// Parse each file and check its keys against the schema; a file that is not a mapping is
/// reported and left out.
fn parse_files(
    texts: Vec<(String, String)>,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) -> Vec<Node> {
    let mut trees = Vec::new();
    for (name, text) in texts {
        let file = sources.add(name, text.as_str());
        let tree = match yaml::parse(&text, file) {
            Ok(t) => t,
            Err(e) => {
                diags.push(ConfigError::Yaml {
                    message: e.message,
                    at: e.span,
                });
                continue;
            }
        };
        if tree.as_map().is_none() {
            diags.push(ConfigError::WrongType {
                key: "the file".into(),
                expected: "a mapping".into(),
                found: tree.kind().into(),
                at: tree.span,
            });
            continue;
        }
        schema::check_keys(&tree, diags);
        trees.push(tree);
    }
    trees
}

/// Interpolate each file, then merge them in order (Compose interpolates before merging).
fn interpolate_and_merge(trees: Vec<Node>, vars: &Vars, diags: &mut Diagnostics) -> Node {
    let mut merged: Option<Node> = None;
    let mut unset = std::collections::BTreeSet::new();
    for mut tree in trees {
        let mut outcome = interpolate::Outcome::default();
        interpolate::interpolate_tree(&mut tree, vars, &mut outcome);
        unset.extend(outcome.unset);
        for e in outcome.errors {
            diags.push(match e {
                interpolate::InterpolationError::Required { var, message, span } => {
                    ConfigError::RequiredVariable {
                        var,
                        message,
                        at: span,
                    }
                }
                interpolate::InterpolationError::Syntax { message, span } => {
                    ConfigError::Interpolation { message, at: span }
                }
            });
        }
        match &mut merged {
            None => {
                merge::strip_resets(&mut tree);
                merged = Some(tree);
            }
            Some(base) => merge::merge(base, tree),
        }
    }
    for var in unset {
        diags.warn(format!(
            "the variable `{var}` is not set; using an empty string"
        ));
    }
    merged.unwrap_or_else(|| Node::new(node::Value::Map(Vec::new()), Span::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_name_normalization() {
        assert_eq!(normalize_project_name("My.App_1"), "myapp_1");
        assert_eq!(normalize_project_name("__x-Y"), "x-y");
    }

    fn load_with(yaml: &str, scale: &[(&str, u32)]) -> Result<Loaded, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, yaml).unwrap();
        load(&LoadOptions {
            files: vec![file],
            environment: Some(Default::default()),
            scale: scale.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            ..Default::default()
        })
    }

    const SCALED: &str = "name: s\nservices:\n  web: {deploy: {replicas: 2}}\n  db: {scale: 2}\n  \
                          api: {}\n  debug: {profiles: [debug]}\n";

    #[test]
    fn scale_overrides_every_count_for_the_run() {
        let loaded = load_with(SCALED, &[("web", 5), ("db", 0), ("api", 3), ("web", 4)]).unwrap();
        let count = |s: &str| loaded.project.services[s].replicas();
        assert_eq!((count("web"), count("db"), count("api")), (4, 0, 3));
        assert!(loaded.files[0].is_absolute());
    }

    #[test]
    fn scale_of_an_unknown_service_is_refused() {
        match load_with(SCALED, &[("webb", 2)]) {
            Err(LoadError::ScaleUnknown { service, hint }) => {
                assert_eq!(service, "webb");
                assert_eq!(hint, "did you mean `web`?");
            }
            other => panic!("{other:?}"),
        }
        match load_with(SCALED, &[("debug", 2)]) {
            Err(LoadError::ScaleUnknown { hint, .. }) => {
                assert!(hint.contains("profile"), "{hint}")
            }
            other => panic!("{other:?}"),
        }
    }
}
