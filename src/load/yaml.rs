//! YAML text → [`Node`] tree with a span on every node. Anchors and aliases are expanded, and
//! merge keys (`<<`, YAML 1.1's merge type, which Compose files use widely) are applied here so
//! that later stages never see them.

use super::node::{Node, Tag, Value};
use crate::source::{FileId, Span};
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag as YamlTag};
use std::collections::{HashMap, HashSet};

/// Deepest nesting of collections accepted. Compose files need about ten levels; without a
/// bound, a small file such as `- - - - ...` (two bytes a level) overflows the stack of every
/// recursive walk over the tree.
pub const MAX_DEPTH: usize = 128;

/// Most values that aliases may add to a document. Without a bound, a few lines of nested
/// aliases (a "billion laughs" document) expand to billions of values and exhaust memory.
pub const MAX_ALIAS_VALUES: usize = 100_000;

/// A YAML syntax problem, located in its file.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
}

/// Texts at least this long are parsed on two threads ([`parse_on`]).
const TWO_THREADS: usize = 256 * 1024;

/// How many of the parser's events are handed from one thread to the other at a time.
const BATCH: usize = 1024;

/// One of the parser's events with where it was read, or the error that ends the parse.
type Item<'t> = Result<(Event<'t>, saphyr_parser::Span), ScanError>;

/// Parse one YAML document. An empty file gives an empty mapping.
pub fn parse(text: &str, file: FileId) -> Result<Node, SyntaxError> {
    parse_on(text, file, text.len() >= TWO_THREADS)
}

/// [`parse`], the parser's events read on a second thread while this one builds the tree
/// (`two_threads`) or on this one: a big project's file is parsed in about two thirds of
/// the time, the tree built in the other third. The events are taken in the order they come
/// either way, so the tree and the first error are the same.
fn parse_on(text: &str, file: FileId, two_threads: bool) -> Result<Node, SyntaxError> {
    let offsets = CharOffsets::new(text);
    let mut builder = Builder {
        file,
        offsets: &offsets,
        anchors: HashMap::new(),
        alias_values: 0,
        stack: Vec::new(),
        root: None,
    };
    if two_threads {
        std::thread::scope(|s| {
            let (send, batches) = std::sync::mpsc::sync_channel::<Vec<Item>>(8);
            s.spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                for item in Parser::new_from_str(text) {
                    let failed = item.is_err();
                    batch.push(item);
                    if failed || batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // The builder stopped (an error): nothing more to read.
                        if send.send(full).is_err() || failed {
                            return;
                        }
                    }
                }
                let _ = send.send(batch);
            });
            batches
                .into_iter()
                .flatten()
                .try_for_each(|item| builder.take(item, text))
        })?;
    } else {
        for item in Parser::new_from_str(text) {
            builder.take(item, text)?;
        }
    }
    Ok(builder
        .root
        .unwrap_or_else(|| Node::new(Value::Map(Vec::new()), Span::new(file, 0, 0))))
}

/// Converts the parser's character indices to byte offsets (miette wants bytes).
struct CharOffsets {
    /// Byte offset of each char, present only when the text is not pure ASCII.
    table: Option<Vec<usize>>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let table = (!text.is_ascii()).then(|| text.char_indices().map(|(b, _)| b).collect());
        CharOffsets {
            table,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.table {
            None => char_index.min(self.len),
            Some(t) => t.get(char_index).copied().unwrap_or(self.len),
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        tag: Option<Tag>,
        start: Span,
    },
    Map {
        entries: Vec<(Node, Node)>,
        /// The hashes of the keys of `entries`, so that finding a duplicate is not a scan of
        /// the mapping (which made a file of thousands of services quadratic to parse), nor a
        /// copy of every key: a hash seen before is a duplicate only if the key is there.
        keys: HashSet<u64, ahash::RandomState>,
        pending_key: Option<Node>,
        anchor: usize,
        tag: Option<Tag>,
        start: Span,
    },
}

struct Builder<'a> {
    file: FileId,
    offsets: &'a CharOffsets,
    /// Anchored nodes, with their number of values and depth.
    anchors: HashMap<usize, (Node, usize, usize)>,
    /// Values added so far by expanding aliases.
    alias_values: usize,
    stack: Vec<Frame>,
    root: Option<Node>,
}

impl Builder<'_> {
    fn span(&self, start: usize, end: usize) -> Span {
        let (s, e) = (self.offsets.byte(start), self.offsets.byte(end));
        Span::new(self.file, s, e.saturating_sub(s))
    }

    /// One item from the parser: its event added to the tree, or its error reported.
    fn take(&mut self, item: Item<'_>, text: &str) -> Result<(), SyntaxError> {
        let (event, span) = item.map_err(|e| self.scan_error(&e, text))?;
        let span = self.span(span.start.index(), span.end.index());
        self.event(event, span)
    }

    fn scan_error(&self, e: &ScanError, text: &str) -> SyntaxError {
        let at = e.marker().index();
        let mut span = self.span(at, at + 1);
        let mut message = e.info().to_string();
        // The scanner reports a tab in indentation at the character after it: point at the
        // tab(s) themselves.
        if message.contains("tab") {
            let start = span.offset as usize;
            let before = text.get(..start).unwrap_or_default();
            let tabs = before.len() - before.trim_end_matches('\t').len();
            if tabs > 0 {
                span = Span::new(self.file, start - tabs, tabs);
            }
        }
        // An unclosed `[` or `{` is noticed where the parser gives up, often lines later and
        // reported as an indentation problem: name the bracket that is still open.
        if let Some((bracket, line, col)) = self.open_flow(text, span) {
            message = format!(
                "{message} (inside the `{bracket}` opened at line {line}, column {col}, which is not closed)"
            );
        }
        SyntaxError { message, span }
    }

    /// The innermost flow collection still open at `at`, if it was opened on an earlier line.
    fn open_flow(&self, text: &str, at: Span) -> Option<(char, usize, usize)> {
        let start = self.stack.iter().rev().find_map(|f| {
            let (Frame::Seq { start, .. } | Frame::Map { start, .. }) = f;
            let c = text.get(start.offset as usize..)?.chars().next()?;
            matches!(c, '[' | '{').then_some((c, start.offset as usize))
        })?;
        let (bracket, offset) = start;
        let before = text.get(..offset)?;
        let line = before.matches('\n').count() + 1;
        let error_line = text.get(..at.offset as usize)?.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (error_line > line).then_some((bracket, line, col))
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let mut node = scalar(text.into_owned(), style, span);
                node.tag = compose_tag(tag.as_deref());
                self.remember(anchor, &node);
                self.push(node)?;
            }
            Event::Alias(id) => {
                let Some((node, values, depth)) = self.anchors.get(&id).cloned() else {
                    return Err(SyntaxError {
                        message: "alias to an unknown anchor".into(),
                        span,
                    });
                };
                self.alias_values += values;
                if self.alias_values > MAX_ALIAS_VALUES {
                    return Err(SyntaxError {
                        message: format!(
                            "aliases expand this document to more than {MAX_ALIAS_VALUES} values"
                        ),
                        span,
                    });
                }
                if self.stack.len() + depth > MAX_DEPTH {
                    return Err(too_deep(span));
                }
                self.push(Node { span, ..node })?;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                return Err(too_deep(span))
            }
            Event::SequenceStart(anchor, tag) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                anchor,
                tag: compose_tag(tag.as_deref()),
                start: span,
            }),
            Event::MappingStart(anchor, tag) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                keys: HashSet::default(),
                pending_key: None,
                anchor,
                tag: compose_tag(tag.as_deref()),
                start: span,
            }),
            Event::SequenceEnd | Event::MappingEnd => self.close(span)?,
            Event::DocumentStart(_) if self.root.is_some() => {
                return Err(SyntaxError {
                    message: "a Compose file holds one YAML document; found a second one".into(),
                    span,
                })
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, end: Span) -> Result<(), SyntaxError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        // A block collection's end event sits at the next token, possibly lines later: end the
        // span at its last child instead (or at the closing bracket of a flow collection).
        let (mut node, anchor, tag) = match frame {
            Frame::Seq {
                items,
                anchor,
                tag,
                start,
            } => {
                let last = items.last().map_or(end, |n| n.span);
                (
                    Node::new(Value::Seq(items), cover(start, flow_end(start, end, last))),
                    anchor,
                    tag,
                )
            }
            Frame::Map {
                entries,
                anchor,
                tag,
                start,
                ..
            } => {
                let last = entries.last().map_or(end, |(_, v)| v.span);
                let span = cover(start, flow_end(start, end, last));
                (
                    Node::new(Value::Map(apply_merge_keys(entries)?), span),
                    anchor,
                    tag,
                )
            }
        };
        node.tag = tag;
        self.remember(anchor, &node);
        self.push(node)
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            let (values, depth) = measure(node);
            self.anchors.insert(anchor, (node.clone(), values, depth));
        }
    }

    fn push(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                keys,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. } | Value::Null) {
                        return Err(SyntaxError {
                            message: "mapping keys must be plain strings".into(),
                            span: node.span,
                        });
                    }
                    *pending_key = Some(node)
                }
                Some(key) => {
                    let duplicate = !is_merge_key(&key)
                        && !keys.insert(keys.hasher().hash_one(key.as_str()))
                        && entries
                            .iter()
                            .any(|(k, _)| !is_merge_key(k) && k.as_str() == key.as_str());
                    if duplicate {
                        return Err(SyntaxError {
                            message: format!(
                                "duplicate key `{}` in a mapping",
                                key.as_str().unwrap_or_default()
                            ),
                            span: key.span,
                        });
                    }
                    entries.push((key, node))
                }
            },
        }
        Ok(())
    }
}

fn too_deep(span: Span) -> SyntaxError {
    SyntaxError {
        message: format!("collections are nested more than {MAX_DEPTH} levels deep"),
        span,
    }
}

/// The number of values in a node and its depth (a scalar has depth 0, `[x]` depth 1).
fn measure(node: &Node) -> (usize, usize) {
    let children: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Map(entries) => entries.iter().map(|(_, v)| v).collect(),
        _ => return (1, 0),
    };
    children.iter().fold((1, 1), |(n, d), c| {
        let (cn, cd) = measure(c);
        (n + cn, d.max(cd + 1))
    })
}

/// `!reset` and `!override`, the local tags Compose reads; other tags change nothing.
fn compose_tag(tag: Option<&YamlTag>) -> Option<Tag> {
    let tag = tag.filter(|t| t.handle == "!")?;
    match tag.suffix.as_str() {
        "reset" => Some(Tag::Reset),
        "override" => Some(Tag::Override),
        _ => None,
    }
}

fn scalar(text: String, style: ScalarStyle, span: Span) -> Node {
    let plain = style == ScalarStyle::Plain;
    if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
        return Node::new(Value::Null, span);
    }
    Node::new(Value::Scalar { text, plain }, span)
}

/// Where a collection ends: at its closing bracket for flow style (`[...]`, `{...}`, whose end
/// event has a width), else at its last child.
fn flow_end(start: Span, end: Span, last: Span) -> Span {
    if end.len > 0 && start.len > 0 {
        end
    } else {
        last
    }
}

/// A span from the start of `a` to the end of `b` (same file).
fn cover(a: Span, b: Span) -> Span {
    let end = (b.offset + b.len).max(a.offset + a.len);
    Span {
        file: a.file,
        offset: a.offset,
        len: end - a.offset,
    }
}

/// Apply `<<` entries: keys written in the mapping win over merged ones, and among several
/// merged mappings the first that has a key wins (YAML 1.1 merge semantics).
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, SyntaxError> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let (merges, mut own): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|(k, _)| is_merge_key(k));
    for (_, value) in merges {
        let sources: Vec<Node> = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => items,
            _ => {
                return Err(SyntaxError {
                    message: "a merge key `<<` takes a mapping or a list of mappings".into(),
                    span: value.span,
                })
            }
        };
        for source in sources {
            let Value::Map(pairs) = source.value else {
                return Err(SyntaxError {
                    message: "a merge key `<<` takes a mapping or a list of mappings".into(),
                    span: source.span,
                });
            };
            for (k, v) in pairs {
                if !own.iter().any(|(ok, _)| ok.as_str() == k.as_str()) {
                    own.push((k, v));
                }
            }
        }
    }
    Ok(own)
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(s: &str) -> serde_json::Value {
        parse(s, 0)
            .map(|n| n.to_json())
            .unwrap_or_else(|e| panic!("{}", e.message))
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v = load("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\n");
        assert_eq!(v["x"], serde_json::json!({"b": 3, "a": 1}));
    }

    #[test]
    fn merge_list_first_wins() {
        let v = load("a: &a {k: 1}\nb: &b {k: 2, j: 2}\nc:\n  <<: [*a, *b]\n");
        assert_eq!(v["c"], serde_json::json!({"k": 1, "j": 2}));
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let e = parse("a: 1\na: 2\n", 0).unwrap_err();
        assert!(e.message.contains("duplicate key"));
        assert_eq!(e.span.offset, 5);
    }

    #[test]
    fn spans_are_byte_offsets_with_unicode() {
        let n = parse("é: ü\nk: v\n", 0).unwrap();
        let v = n.get("k").unwrap();
        assert_eq!(v.span.offset as usize, "é: ü\nk: ".len());
    }

    #[test]
    fn syntax_error_is_located() {
        let e = parse("a: [1, 2\nb: 3\n", 0).unwrap_err();
        assert!(e.span.offset > 0);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let e = parse(&format!("x:\n  {}1\n", "- ".repeat(10_000)), 0).unwrap_err();
        assert!(e.message.contains("nested"), "{}", e.message);
        assert!(parse(&format!("x:\n  {}1\n", "- ".repeat(20)), 0).is_ok());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc += &format!("a{i}: &a{i} [{refs}]\n");
        }
        let e = parse(&doc, 0).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{}", e.message);
    }

    #[test]
    fn compose_tags_are_kept_and_others_ignored() {
        let n = parse(
            "a: !reset\nb: !override {x: 1}\nc: !reset [1]\nd: !custom 2\n",
            0,
        )
        .unwrap();
        let tag = |k: &str| n.get(k).unwrap().tag;
        assert_eq!(
            (tag("a"), tag("b"), tag("c"), tag("d")),
            (
                Some(Tag::Reset),
                Some(Tag::Override),
                Some(Tag::Reset),
                None
            )
        );
        assert!(n.get("a").unwrap().is_null());
    }

    /// A big file, valid or broken near its end in several ways, reads the same on two
    /// threads as on one: the same tree, or the same first error at the same place.
    #[test]
    fn two_threads_read_what_one_reads() {
        let mut big = String::from("name: big\nx-base: &base {a: 1}\nservices:\n");
        for k in 0..3000 {
            big += &format!("  s{k}:\n    <<: *base\n    networks: [n{}]\n", k % 7);
        }
        assert!(big.len() > 2 * BATCH);
        let broken = [
            String::new(),
            "  s1:\n    image: again\n".to_string(),
            "  t:\n    networks: [a, b\n  u: {}\n".to_string(),
            "  t:\n\timage: x\n".to_string(),
            "  t: *nowhere\n".to_string(),
            "---\nsecond: 1\n".to_string(),
        ];
        for tail in broken {
            let text = format!("{big}{tail}");
            match (parse_on(&text, 0, true), parse_on(&text, 0, false)) {
                (Ok(two), Ok(one)) => assert_eq!(two, one),
                (Err(two), Err(one)) => {
                    assert_eq!((two.message, two.span), (one.message, one.span))
                }
                (two, one) => panic!("{tail:?}: {:?} / {:?}", two.is_ok(), one.is_ok()),
            }
        }
    }

    #[test]
    fn empty_file_is_empty_map() {
        assert_eq!(load(""), serde_json::json!({}));
    }
}
