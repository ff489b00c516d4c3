//! The `load` stage: Compose files (+ overrides, .env) → [`Project`]. YAML with spans,
//! interpolation, merging of several files, schema key checks and typed decoding.

pub mod decode;
pub mod env;
pub mod interpolate;
pub mod merge;
pub mod node;
pub mod schema;
pub mod yaml;

use crate::diag::{ConfigError, Diagnostics};
use crate::project_name::{NameError, MAX_LEN};
use crate::source::{Sources, Span};
use crate::spec::Project;
use interpolate::Vars;
use node::Node;
use std::path::{Path, PathBuf};
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

/// `--project-directory`, else the first file's directory, else the current directory.
fn project_dir(opts: &LoadOptions, files: &[PathBuf], cwd: &Path) -> PathBuf {
    opts.project_directory
        .clone()
        .or_else(|| {
            files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
        })
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| cwd.to_path_buf())
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

/// `-f`, else COMPOSE_FILE (split on COMPOSE_PATH_SEPARATOR, `:` by default; relative to the
/// current directory, as Compose reads it), else the first default file found and its
/// override file, if any.
fn resolve_files(opts: &LoadOptions, vars: &Vars, cwd: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if !opts.files.is_empty() {
        return Ok(opts.files.clone());
    }
    if let Some(list) = vars.get("COMPOSE_FILE").filter(|l| !l.is_empty()) {
        let sep = vars
            .get("COMPOSE_PATH_SEPARATOR")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(":");
        return Ok(list
            .split(sep)
            .filter(|f| !f.is_empty())
            .map(|f| cwd.join(f))
            .collect());
    }
    let dir = opts
        .project_directory
        .clone()
        .unwrap_or_else(|| cwd.to_path_buf());
    let first = |names: &[&str]| names.iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let main = first(DEFAULT_FILES).ok_or_else(|| LoadError::NoFile {
        dir: dir.display().to_string(),
    })?;
    Ok(std::iter::once(main)
        .chain(first(DEFAULT_OVERRIDE_FILES))
        .collect())
}

fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Add the `--env-file`s (or `dir`/.env when none is given) to `vars`, skipping files already
/// in `read`. A variable already set (by the shell or a file read before) keeps its value;
/// among the files of one reading, a later file wins.
fn read_env_files(
    opts: &LoadOptions,
    dir: &Path,
    vars: &mut Vars,
    read: &mut Vec<PathBuf>,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) -> Result<(), LoadError> {
    let env_files: Vec<PathBuf> = if opts.env_files.is_empty() {
        Some(dir.join(".env"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect()
    } else {
        opts.env_files.clone()
    };
    let mut found = Vars::new();
    for path in env_files {
        if read.contains(&path) {
            continue;
        }
        read.push(path.clone());
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut scope = found.clone();
        scope.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        match env::parse(&text, &scope) {
            Ok(v) => found.extend(v),
            Err(e) => {
                let file = sources.add(display_path(&path), text.as_str());
                // Sum the lines with their own terminators: `lines()` drops a `\r` too, and
                // counting one byte per line ends mid-line (even mid-character) in CRLF files.
                let offset: usize = text
                    .split_inclusive('\n')
                    .take(e.line - 1)
                    .map(str::len)
                    .sum();
                diags.push(ConfigError::EnvFile {
                    line: e.line,
                    at: Span::new(file, offset, e.text.len()),
                });
            }
        }
    }
    for (k, v) in found {
        vars.entry(k).or_insert(v);
    }
    Ok(())
}

/// As compose-go chooses it: `-p`, else COMPOSE_PROJECT_NAME (both must already be valid
/// names; an empty one counts as unset), else the last `name:` of the files, interpolated and
/// normalized, else the directory's name, normalized.
fn project_name(
    opts: &LoadOptions,
    vars: &Vars,
    trees: &[Node],
    dir: &Path,
    diags: &mut Diagnostics,
) -> Result<String, LoadError> {
    if let Some(p) = opts.project_name.as_ref().filter(|p| !p.is_empty()) {
        return check_project_name(p);
    }
    if let Some(p) = vars.get("COMPOSE_PROJECT_NAME").filter(|p| !p.is_empty()) {
        return check_project_name(p);
    }
    let written = trees
        .iter()
        .rev()
        .filter_map(|t| t.get("name"))
        .find(|n| n.as_str().is_some_and(|s| !s.is_empty()));
    if let Some(node) = written {
        let raw = node.as_str().unwrap_or_default();
        // Errors and unset variables are reported when the whole file is interpolated.
        let interpolated = interpolate::expand(raw, vars, &mut Default::default())
            .unwrap_or_else(|_| raw.to_string());
        let normalized = normalize_project_name(&interpolated);
        let problem = if interpolated.is_empty() {
            None
        } else if normalized.is_empty() {
            Some("nothing is left once normalized to lowercase letters, digits, `_` and `-`".into())
        } else if normalized.len() > MAX_LEN {
            Some(format!("it is longer than {MAX_LEN} characters"))
        } else {
            return check_project_name(&normalized);
        };
        // Reported at the key; loading goes on under the directory's name so that every
        // other problem is found too.
        if let Some(reason) = problem {
            diags.push(ConfigError::InvalidValue {
                what: "name".into(),
                value: interpolated,
                reason,
                hint: "write a project name of lowercase letters, digits, `_` and `-`, or pass -p NAME".into(),
                at: node.span,
            });
        }
    }
    let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let raw = base
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let normalized = normalize_project_name(&raw);
    if normalized.is_empty() {
        return Err(LoadError::ProjectName {
            name: raw,
            reason: "nothing is left after normalizing; pass -p NAME".into(),
        });
    }
    check_project_name(&normalized)
}

fn check_project_name(name: &str) -> Result<String, LoadError> {
    crate::project_name::ProjectName::new(name)
        .map(String::from)
        .map_err(|e| LoadError::ProjectName {
            name: name.into(),
            reason: match e {
                NameError::Empty => "it is empty".into(),
                NameError::TooLong { .. } => format!("it is longer than {MAX_LEN} characters"),
                NameError::Characters { .. } => {
                    "it must be lowercase letters, digits, `_` and `-`".into()
                }
            },
        })
}

/// Compose's normalization of a `name:` or a directory name (compose-go's
/// NormalizeProjectName): lowercase, keep `[a-z0-9_-]`, drop leading `_` and `-`.
pub fn normalize_project_name(raw: &str) -> String {
    let kept: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
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
