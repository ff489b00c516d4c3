//! A plan saved by `plan --out` as a baseline whose resources stay text until the desired
//! state is built. A saved resource that reads exactly as the desired one at its address
//! writes out is unchanged, and is never parsed: parsing the hundred thousand resources of a
//! big project's saved plan took longer than a whole plan from scratch, while writing the
//! desired ones out and comparing bytes takes a fraction of it. Only the saved resources that
//! differ or are gone are parsed, and diffed as a whole baseline would be.

use crate::ipam::Allocations;
use crate::model::{Desired, Resource};
use memchr::memmem;
use serde_json::ser::Formatter;
use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How deep `plan --out` writes a resource: in the top-level object, `desired`, `resources`.
const DEPTH: usize = 3;

/// How many desired resources a thread writes out at a time ([`Saved::compare`]).
const RUN: usize = 512;

/// A newline and a resource's own indentation, as `plan --out` writes it.
const NESTED: &[u8] = b"\n      ";

/// The resources of a saved plan's `desired`, as its text.
pub(super) struct Saved {
    /// From the newline before the `desired` key to the end of the file.
    text: Vec<u8>,
    /// Each resource's JSON value in `text`, from its `{` to its `}`, in the file's order.
    resources: Vec<Range<usize>>,
}

/// The sides of a diff against a saved plan ([`Saved::changed`]).
pub(super) struct Changed {
    pub before: Vec<Resource>,
    pub after: Vec<Resource>,
    /// The desired resources that the saved plan holds as they are, in no useful order.
    pub unchanged: Vec<Resource>,
}

/// How a saved resource compares with the desired one at its address.
enum Seen {
    /// No desired resource has its address (yet).
    Not,
    /// Written exactly as desired resource `j`.
    Same(usize),
    /// The desired resource at its address is written otherwise: the saved one, parsed.
    Differs(Box<Parsed>),
}

/// A saved resource read from its text.
type Parsed = Result<Resource, serde_json::Error>;

/// A desired resource whose address is saved: the saved one's number, its own, and the saved
/// one parsed unless it is written exactly as the desired one is ([`Saved::written_as`]).
type Found = (usize, usize, Option<Box<Parsed>>);

impl Saved {
    /// The resources and the allocations of `text`, a pretty plan's `desired` to the end of
    /// the file (`\n  "desired": {...`). The text back when it is not laid out as `plan --out`
    /// writes it, or has no resources: the caller parses it whole.
    pub(super) fn read(text: Vec<u8>) -> Result<(Saved, Allocations), Vec<u8>> {
        match Saved::index(&text) {
            Some((resources, allocations)) => Ok((Saved { text, resources }, allocations)),
            None => Err(text),
        }
    }

    /// Where each resource of `text` is, and the allocations ([`Saved::read`]).
    fn index(text: &[u8]) -> Option<(Vec<Range<usize>>, Allocations)> {
        const KEY: &[u8] = b"\n  \"desired\": ";
        const RESOURCES: &[u8] = b"\n    \"resources\": [";
        const END: &[u8] = b"\n      }";
        if !text.trim_ascii_end().ends_with(b"\n}") || !text.starts_with(KEY) {
            return None;
        }
        let open = memmem::find(text, RESOURCES)? + RESOURCES.len();
        // Lines inside a resource are indented further: the first line at four spaces that
        // closes an array closes this one, and each at six spaces opens or closes a resource.
        let close = open + memmem::find(&text[open..], b"\n    ]")?;
        let mut resources = Vec::new();
        let mut at = open;
        for end in memmem::find_iter(&text[open..close], END) {
            let end = open + end + END.len();
            if !text[at..].starts_with(NESTED) || text[at + NESTED.len()] != b'{' {
                return None;
            }
            resources.push(at + NESTED.len()..end);
            at = match &text[end..] {
                rest if rest.starts_with(b",\n") => end + 1,
                _ if end == close => close,
                _ => return None,
            };
        }
        if at != close || resources.is_empty() {
            return None;
        }
        // The rest of `desired` (its project and allocations) with an empty array in place;
        // the first line at two spaces after the array closes `desired`.
        let end = close + memmem::find(&text[close..], b"\n  }")? + "\n  }".len();
        let rest = [&text[KEY.len()..open], &text[close..end]].concat();
        let desired: Desired = serde_json::from_slice(&rest).ok()?;
        Some((resources, desired.allocations))
    }

    /// What the diff of `desired` against these resources needs: the saved resources that
    /// `desired` does not hold as they are written (changed or gone), parsed, and the desired
    /// resources not written so (changed or new). Their diff is the diff of the whole sides;
    /// what is left out of both is unchanged, and the desired resources left out are given
    /// back apart.
    pub(super) fn changed(&self, desired: Vec<Resource>) -> Result<Changed, serde_json::Error> {
        let Some(seen) = self.compare(&desired) else {
            return Ok(Changed {
                before: self.parse_all()?,
                after: desired,
                unchanged: Vec::new(),
            });
        };
        let mut same = vec![false; desired.len()];
        let mut before = Vec::new();
        for (range, seen) in self.resources.iter().zip(seen) {
            match seen {
                Seen::Same(j) => same[j] = true,
                Seen::Not => before.push(self.parse(range)?),
                Seen::Differs(parsed) => before.push((*parsed)?),
            }
        }
        // The few that differ are taken out, the last first; the unchanged stay in place,
        // not copied into a vector of their own (their order is of no use).
        let mut unchanged = desired;
        let mut after: Vec<Resource> = (0..unchanged.len())
            .rev()
            .filter(|&j| !same[j])
            .map(|j| unchanged.swap_remove(j))
            .collect();
        after.reverse();
        Ok(Changed {
            before,
            after,
            unchanged,
        })
    }

    /// Every saved resource, in the file's order: those written as a desired one is, copied
    /// from it, the others parsed.
    pub(super) fn whole(&self, desired: &[Resource]) -> Result<Vec<Resource>, serde_json::Error> {
        let Some(seen) = self.compare(desired) else {
            return self.parse_all();
        };
        self.resources
            .iter()
            .zip(seen)
            .map(|(range, seen)| match seen {
                Seen::Same(j) => Ok(desired[j].clone()),
                Seen::Not => self.parse(range),
                Seen::Differs(parsed) => *parsed,
            })
            .collect()
    }

    /// How each saved resource compares with `desired`; None when an address is on either
    /// side twice, where leaving out a pair that is the same could change how the others
    /// diff (the diff compares with the last of an address given twice), or when a resource
    /// is not written with its address first.
    fn compare(&self, desired: &[Resource]) -> Option<Vec<Seen>> {
        let mut at = ahash::AHashMap::with_capacity(self.resources.len());
        for (k, range) in self.resources.iter().enumerate() {
            let written = &self.text[range.clone()];
            if at.insert(address(written, b"{\n        ")?, k).is_some() {
                return None;
            }
        }
        // Writing the desired resources out is most of the time, and each is written alone:
        // two threads take runs of them in turn, as each is done with the one before (halves
        // were uneven: the host table and the zones, a sixth of the text, come first).
        let taken = AtomicUsize::new(0);
        let runs = || {
            let mut found = Vec::new();
            loop {
                let start = taken.fetch_add(RUN, Ordering::Relaxed).min(desired.len());
                let end = (start + RUN).min(desired.len());
                if start == end {
                    return Some(found);
                }
                found.extend(self.written_as(&at, &desired[start..end], start)?);
            }
        };
        let (first, second) = std::thread::scope(|s| {
            let second = s.spawn(runs);
            (runs(), second.join())
        });
        let second = match second {
            Ok(second) => second,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let mut seen: Vec<Seen> = std::iter::repeat_with(|| Seen::Not)
            .take(self.resources.len())
            .collect();
        for (k, j, differs) in first?.into_iter().chain(second?) {
            if !matches!(seen[k], Seen::Not) {
                return None;
            }
            seen[k] = match differs {
                None => Seen::Same(j),
                Some(parsed) => Seen::Differs(parsed),
            };
        }
        Some(seen)
    }

    /// For each of `desired` (numbered from `first`) that has an address saved at `at`: that
    /// saved resource, its own number, and the saved one parsed unless it is written exactly
    /// so. Equal text is an equal value; other text (a different value, or the same one as
    /// another version wrote it) is compared as a value by the diff. It is parsed here, on
    /// the thread that found it: the host table, megabytes of text that a scale changes, is
    /// parsed while the other thread goes on writing.
    fn written_as(
        &self,
        at: &ahash::AHashMap<&[u8], usize>,
        desired: &[Resource],
        first: usize,
    ) -> Option<Vec<Found>> {
        let mut found = Vec::with_capacity(desired.len());
        let mut written = Vec::new();
        // Both sides are in address order, most often with the same addresses: the saved
        // resource after the one found last is the likely one, checked before the map (whose
        // lookups, each a miss in the cache, were a fifth of the comparison's time). An
        // address is saved once (see `compare`), so either finds the same.
        let mut next = None;
        for (j, r) in desired.iter().enumerate() {
            written.clear();
            let mut writer = serde_json::Serializer::with_formatter(&mut written, Nested::new());
            serde::Serialize::serialize(r, &mut writer).ok()?;
            let wanted = address(&written, b"{\n        ")?;
            let likely = next.filter(|&k: &usize| {
                self.resources
                    .get(k)
                    .and_then(|range| address(&self.text[range.clone()], b"{\n        "))
                    == Some(wanted)
            });
            if let Some(k) = likely.or_else(|| at.get(wanted).copied()) {
                let saved = &self.resources[k];
                let differs =
                    (written != self.text[saved.clone()]).then(|| Box::new(self.parse(saved)));
                found.push((k, first + j, differs));
                next = Some(k + 1);
            }
        }
        Some(found)
    }

    fn parse(&self, range: &Range<usize>) -> Result<Resource, serde_json::Error> {
        serde_json::from_slice(&self.text[range.clone()])
    }

    fn parse_all(&self) -> Result<Vec<Resource>, serde_json::Error> {
        self.resources.iter().map(|r| self.parse(r)).collect()
    }
}

/// The address of a resource written pretty (`{`, then `"address": "...",` on a line that
/// starts with `indent`), as its JSON string.
fn address<'a>(written: &'a [u8], indent: &[u8]) -> Option<&'a [u8]> {
    let line = written
        .strip_prefix(indent)?
        .strip_prefix(b"\"address\": ")?;
    line[..memchr::memchr(b'\n', line)?].strip_suffix(b",")
}

/// serde_json's pretty layout (a value's lines two spaces in from its parent's), begun
/// [`DEPTH`] levels deep: a resource written so is byte for byte what `plan --out` writes.
/// A string holds no raw newline, so that layout is all the newlines there are. Each
/// indentation is written at once, not two spaces at a time.
struct Nested {
    depth: usize,
    /// Whether the array or object being written has a value yet.
    any: bool,
}

impl Nested {
    fn new() -> Nested {
        Nested {
            depth: DEPTH,
            any: false,
        }
    }

    fn line<W: ?Sized + Write>(&self, w: &mut W) -> std::io::Result<()> {
        let indent = 2 * self.depth;
        match SPACES.get(..indent) {
            Some(spaces) => w.write_all(spaces),
            None => w.write_all(&vec![b' '; indent]),
        }
    }

    fn open<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.depth += 1;
        self.any = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.depth -= 1;
        if self.any {
            w.write_all(b"\n")?;
            self.line(w)?;
        }
        w.write_all(bracket)
    }

    fn item<W: ?Sized + Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        self.line(w)
    }
}

/// Enough indentation for what a resource nests.
const SPACES: &[u8; 64] = &[b' '; 64];

impl Formatter for Nested {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.any = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.any = true;
        Ok(())
    }
}
