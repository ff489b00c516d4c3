//! `up --cluster-view FILE`: a host's share of a cluster project read from JSON, so that the
//! overlay data plane can be driven without etcd. A file that is not a ClusterView is a
//! diagnostic pointing at the line and column serde stopped at.

use crate::model::cluster::ClusterView;
use miette::{LabeledSpan, NamedSource};
use std::path::Path;

pub fn read(path: &Path) -> miette::Result<ClusterView> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette::miette!("cannot read the cluster view {name}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| {
        let offset = offset_of(&text, e.line(), e.column());
        miette::miette!(
            labels = vec![LabeledSpan::at_offset(offset, "here")],
            help = "a ClusterView: {\"node\": \"h1\", \"underlay\": \"10.0.0.1\", \
                    \"underlay_mtu\": 1500, \"local\": [[\"web\", 1]], \"remote\": [...], \
                    \"allocations\": {...}}",
            "{name}:{}:{}: not a cluster view: {e}",
            e.line(),
            e.column()
        )
        .with_source_code(NamedSource::new(name.clone(), text.clone()))
    })
}

/// The byte offset of 1-based `line` and `column` (serde_json's), within the text.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (start + column.saturating_sub(1)).min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_names_the_place() {
        let dir = std::env::temp_dir().join(format!("nc-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("view.json");
        std::fs::write(&path, "{\n  \"node\": 3\n}\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("view.json:2:"), "{err}");
        assert!(err.contains("not a cluster view"), "{err}");
        assert_eq!(offset_of("ab\ncd", 2, 2), 4);
    }

    #[test]
    fn a_view_reads() {
        let view: ClusterView = serde_json::from_str(
            r#"{"node": "h1", "underlay": "10.0.0.1", "underlay_mtu": 1500,
                "local": [["web", 1]], "remote": [], "allocations": {"networks": {}}}"#,
        )
        .unwrap();
        assert!(view.is_local("web", 1));
    }
}
