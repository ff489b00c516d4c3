//! Inputs made by editing real files at random, and YAML-flavoured random text.

use proptest::prelude::*;
use std::sync::OnceLock;

/// Fragments that mean something to YAML, to Compose interpolation or to span arithmetic
/// (multi-byte characters, CRLF, a byte-order mark).
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "<<",
    "<<: *a",
    "$",
    "${",
    "}",
    "${PORT}",
    "${NOPE:?gone}",
    "${EMPTY:-x}",
    "$$",
    "\t",
    "\n",
    "\r\n",
    " ",
    "  ",
    "#",
    "'",
    "\"",
    "? ",
    "|",
    ">",
    "!!str ",
    "~",
    "null",
    "---\n",
    "...\n",
    "%",
    "@",
    "`",
    "é",
    "😀",
    "\u{feff}",
    "0",
    "65536",
    "/33",
    "::",
    "service:",
    "container:",
    "x-policy:",
    "x-checks:",
    "networks:",
];

/// The files the mutations start from: the real-world corpus and the invalid fixtures.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut files = Vec::new();
        for dir in ["fixtures/corpus/awesome-compose", "fixtures/invalid"] {
            let mut paths: Vec<_> = std::fs::read_dir(dir)
                .expect("fixture directory")
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            paths.sort();
            files.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
        }
        assert!(!files.is_empty());
        files
    })
}

#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace a byte (positions are taken modulo the length at the time of the edit).
    Set {
        at: usize,
        byte: u8,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        token: &'static str,
    },
    InsertChar {
        at: usize,
        c: char,
    },
    /// Copy a stretch of the file to another place (repeats keys, nests blocks oddly).
    Duplicate {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let yaml_byte = prop::sample::select(b":-[]{}&*<>$!|#'\", \t\n?%@`".to_vec());
    prop_oneof![
        2 => (any::<usize>(), yaml_byte).prop_map(|(at, byte)| Edit::Set { at, byte }),
        // Any ASCII byte, control characters included. (Bytes that break UTF-8 only reach
        // the "cannot read" path, which the arbitrary-bytes test covers.)
        1 => (any::<usize>(), 0u8..0x80).prop_map(|(at, byte)| Edit::Set { at, byte }),
        1 => (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::InsertChar { at, c }),
        2 => (any::<usize>(), 1usize..12).prop_map(|(at, len)| Edit::Delete { at, len }),
        4 => (any::<usize>(), prop::sample::select(TOKENS))
            .prop_map(|(at, token)| Edit::Insert { at, token }),
        1 => (any::<usize>(), 1usize..80, any::<usize>())
            .prop_map(|(from, len, to)| Edit::Duplicate { from, len, to }),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let pos = |at: usize, len: usize| at % (len + 1);
    match *edit {
        Edit::Set { at, byte } if !bytes.is_empty() => {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        Edit::Set { .. } => {}
        Edit::Delete { at, len } => {
            let start = pos(at, bytes.len());
            let end = (start + len).min(bytes.len());
            bytes.drain(start..end);
        }
        Edit::Insert { at, token } => {
            let i = pos(at, bytes.len());
            bytes.splice(i..i, token.bytes());
        }
        Edit::InsertChar { at, c } => {
            let i = pos(at, bytes.len());
            bytes.splice(i..i, c.to_string().into_bytes());
        }
        Edit::Duplicate { from, len, to } => {
            let start = pos(from, bytes.len());
            let end = (start + len).min(bytes.len());
            let chunk = bytes[start..end].to_vec();
            let i = pos(to, bytes.len());
            bytes.splice(i..i, chunk);
        }
    }
}

/// One mutated file, or a pristine file followed by a mutated override (`-f a -f b`).
#[derive(Clone)]
pub struct Case {
    pub files: Vec<Vec<u8>>,
    seed: usize,
    edits: Vec<Edit>,
}

/// Shows the seed and the edits (the files themselves would drown the report).
impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = self
            .files
            .last()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        f.debug_struct("Case")
            .field("seed", &self.seed)
            .field("edits", &self.edits)
            .field("files", &self.files.len())
            .field("mutated", &last)
            .finish()
    }
}

pub fn mutated_files() -> impl Strategy<Value = Case> {
    let n = seeds().len();
    (
        0..n,
        prop::collection::vec(edit(), 1..10),
        prop::option::weighted(0.2, 0..n),
    )
        .prop_map(|(seed, edits, base)| {
            let mut bytes = seeds()[seed].clone();
            edits.iter().for_each(|e| apply(&mut bytes, e));
            let mut files: Vec<Vec<u8>> = base.map(|b| seeds()[b].clone()).into_iter().collect();
            files.push(bytes);
            Case { files, seed, edits }
        })
}

/// Random text over an alphabet of Compose words and YAML punctuation, so that most inputs
/// get past the first character of the YAML scanner.
pub fn yamlish_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(TOKENS).prop_map(str::to_string),
            prop::sample::select(vec![
                "services",
                "networks",
                "ports",
                "ipam",
                "config",
                "subnet",
                "web",
                "db",
                "network_mode",
                "depends_on",
                "x-policy",
                "ingress",
                "allow",
                "10.0.0.0/8",
                "80:80",
                "true",
                "1",
            ])
            .prop_map(str::to_string),
            "[a-z0-9 ]{1,6}",
        ],
        0..80,
    )
    .prop_map(|parts| parts.concat())
}

/// `.env` files: KEY=value lines with quotes, comments, exports, escapes, CRLF and non-ASCII.
pub fn env_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        "(export )?[A-Za-z_][A-Za-z0-9_]{0,6}[ =]{0,2}[-a-z0-9 '\"#$\\{\\}\\\\é:?]{0,20}(\r)?",
        0..8,
    )
    .prop_map(|lines| lines.join("\n"))
}
