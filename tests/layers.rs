//! The layers of the crate point one way (docs/architecture.md draws them): every `crate::X`
//! reference in src/ is checked against the rank table below, so that an import that points
//! up, sideways (between two modules of the same layer) or from the pure side into the
//! machine side fails here, naming the file and the import. Library modules do not depend on
//! clap: only the command line (src/cli/, src/main.rs) parses arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which half of the crate a module is in. Pure modules never touch the machine, so they are
/// tested without root; machine modules read or change the kernel, files or processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Pure,
    Machine,
}

/// (top-level module, rank, side): a module may import only modules of a strictly lower rank,
/// and a pure module nothing of the machine side. Same rank means siblings, which must not
/// import each other.
const LAYERS: &[(&str, u32, Side)] = &[
    // The edge: parses arguments and renders.
    ("cli", 10, Side::Machine),
    // One sequence (load → plan → observe → diff → apply → daemon update) for every caller.
    ("reconcile", 9, Side::Machine),
    // Talk to the machine, each through kernel/ (or files for the state and the daemon).
    ("observe", 8, Side::Machine),
    ("apply", 8, Side::Machine),
    ("daemon", 8, Side::Machine),
    ("check", 8, Side::Machine),
    // What the kernel cannot tell: allocations and the last applied resources.
    ("state", 7, Side::Machine),
    // The pure pipeline, top to bottom.
    ("pipeline", 6, Side::Pure),
    ("load", 5, Side::Pure),
    ("validate", 5, Side::Pure),
    ("graph", 5, Side::Pure),
    ("plan", 5, Side::Pure),
    ("topology", 5, Side::Pure),
    ("model", 4, Side::Pure),
    ("ipam", 3, Side::Pure),
    ("firewall", 3, Side::Pure),
    ("placement", 3, Side::Pure),
    ("spec", 2, Side::Pure),
    ("diag", 2, Side::Pure),
    ("project_name", 1, Side::Pure),
    ("source", 1, Side::Pure),
    // One module per kernel mechanism; imports nothing of the crate.
    ("kernel", 0, Side::Machine),
];

/// Pure modules that may name items of a machine module: the firewall turns its rules into
/// the neutral description that kernel::nft loads (data only, no calls into the kernel).
const PURE_USES_OF_MACHINE: &[(&str, &str)] = &[("firewall", "kernel::nftables")];

/// One `crate::` reference: where it is and what it names.
#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    line: usize,
    /// The path after `crate::`, e.g. `firewall::rule::Chain`.
    path: String,
}

impl Import {
    fn target(&self) -> &str {
        self.path.split("::").next().unwrap_or_default()
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to; None for the crate roots.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first),
    }
}

/// The text without comments (line comments, doc comments and block comments), keeping line
/// breaks so that positions still name the right line. String literals are kept as they are.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' && i + 1 < b.len() {
                out.push_str(&text[i..i + 2]);
                i += 2;
                continue;
            }
            in_str = c != b'"';
        } else if c == b'"' {
            in_str = true;
        } else if let Some(len) = char_literal(&text[i..]) {
            out.push_str(&text[i..i + len]);
            i += len;
            continue;
        } else if text[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.extend(text[i..end].chars().filter(|c| *c == '\n'));
            i = end;
            continue;
        }
        let ch = text[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The length of a char literal at the start of `s` (`'"'`, `'\''`), so that its quote does
/// not open a string; None for anything else, lifetimes included.
fn char_literal(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('\'')?;
    let body = if rest.starts_with('\\') {
        2 + rest.get(2..)?.find('\'')?
    } else {
        rest.chars().next()?.len_utf8()
    };
    (rest[body..].starts_with('\'') && body > 0).then_some(body + 2)
}

/// The paths a `use` tree names, with groups expanded: `a::{b, c::{d}}` gives `a::b`, `a::c::d`.
fn expand_tree(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let leaf = tree.split_whitespace().next().unwrap_or_default();
        out.push(format!("{prefix}{leaf}"));
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_tree(&format!("{prefix}{head}"), &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand_tree(&format!("{prefix}{head}"), &inner[start..], out);
    }
}

/// Every `crate::` reference of a file (`use` trees and paths in code), `$crate` excluded.
fn imports(file: &Path) -> Vec<Import> {
    let text = strip_comments(&std::fs::read_to_string(file).unwrap());
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c == '$' || c == '_' || c.is_alphanumeric()) {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        let head = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let end = if rest[head..].starts_with('{') {
            let mut depth = 0;
            rest[head..]
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| head + i + 1)
        } else {
            head
        };
        let mut paths = Vec::new();
        expand_tree("", &rest[..end], &mut paths);
        let line = text[..at].matches('\n').count() + 1;
        out.extend(paths.into_iter().map(|path| Import {
            file: file.to_path_buf(),
            line,
            path,
        }));
    }
    out
}

fn all_imports() -> Vec<(String, Import)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .iter()
        .filter_map(|f| Some((module_of(f)?, f)))
        .flat_map(|(m, f)| imports(f).into_iter().map(move |i| (m.clone(), i)))
        .filter(|(m, i)| i.target() != m && i.target() != "self")
        .collect()
}

fn layer(module: &str) -> Option<(u32, Side)> {
    LAYERS
        .iter()
        .find(|(m, _, _)| *m == module)
        .map(|(_, r, s)| (*r, *s))
}

fn show(i: &Import) -> String {
    let rel = i.file.strip_prefix(src().parent().unwrap()).unwrap();
    format!("{}:{}: crate::{}", rel.display(), i.line, i.path)
}

/// Why an import from `from` breaks the layering, if it does.
fn violation(from: &str, i: &Import) -> Option<String> {
    let to = i.target();
    let Some((from_rank, from_side)) = layer(from) else {
        return Some(format!("module `{from}` has no layer: add it to LAYERS"));
    };
    let Some((to_rank, to_side)) = layer(to) else {
        return Some(format!("module `{to}` has no layer: add it to LAYERS"));
    };
    if from_rank <= to_rank {
        let how = if from_rank == to_rank {
            "sideways"
        } else {
            "up"
        };
        return Some(format!(
            "{from} (rank {from_rank}) imports {to} (rank {to_rank}): points {how}"
        ));
    }
    let allowed = PURE_USES_OF_MACHINE
        .iter()
        .any(|(f, p)| *f == from && (i.path == *p || i.path.starts_with(&format!("{p}::"))));
    if from_side == Side::Pure && to_side == Side::Machine && !allowed {
        return Some(format!(
            "pure module {from} imports machine module {to}: pass what it needs in as data"
        ));
    }
    None
}

#[test]
fn imports_point_down() {
    let bad: Vec<String> = all_imports()
        .iter()
        .filter_map(|(from, i)| Some(format!("{}\n    {}", show(i), violation(from, i)?)))
        .collect();
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_cycles_between_modules() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, i) in all_imports() {
        edges
            .entry(from)
            .or_default()
            .insert(i.target().to_string());
    }
    // Depth-first search; a node met again on the current path closes a cycle.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if !done.insert(n.to_string()) {
            return None;
        }
        path.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut Vec::new(), &mut done) {
            panic!(
                "the modules import each other in a cycle: {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn only_the_command_line_uses_clap() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let cli = src().join("cli");
    let bad: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&cli) && **f != src().join("main.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("clap"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(bad.is_empty(), "clap outside the command line: {bad:?}");
}

#[test]
fn the_scanner_reads_groups_and_skips_comments() {
    let mut paths = Vec::new();
    expand_tree("", "{a::{b, c::D}, e}", &mut paths);
    assert_eq!(paths, ["a::b", "a::c::D", "e"]);
    let text = strip_comments(
        "use x; // crate::up\n/* crate::y */ let s = \"//\"; let q = '\"'; crate::z",
    );
    assert!(!text.contains("crate::up") && !text.contains("crate::y"));
    assert!(text.contains("\"//\"") && text.contains("crate::z"));
}
