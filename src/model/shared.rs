//! [`Shared`]: a part of a resource that many resources hold alike (the chains, peer sets, VIP
//! maps and VIPs dropped of every replica table of a service), held once behind an `Arc`. A
//! clone is a reference count, two handles of one value compare by pointer, and a state encoded
//! inside [`writing`] spells each value out once: a later handle of the same value is written
//! as the number of the value's first appearance, which [`reading`] turns back into the same
//! `Arc`. The 200 replica tables of bench/lb.sh's project hold 21 distinct values of each
//! part: their state was 280 KB of chains and sets that every run parsed, cloned and wrote
//! twice, and 3,420 VIPs dropped.
//! Outside those scopes (a plan's JSON, the daemon's configuration) a value is written whole.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

/// A value held once by every resource that holds it alike.
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Shared<T> {
        Shared(Arc::new(value))
    }

    /// Which value this is: the same for every clone of it, and for no other value while one
    /// of them is held (a memo keyed by it must not outlive the values it keys).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }
}

impl<T: Clone> Shared<T> {
    /// The value, to change: copied first if another resource holds it too.
    pub fn make_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::new(value)
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

/// Whether a shared list is empty (for `skip_serializing_if`).
pub fn is_empty<T>(list: &Shared<Vec<T>>) -> bool {
    list.is_empty()
}

/// Hands out one [`Shared`] for a run of equal values: the model builds the replicas of a
/// service one after another, and each replica's chains come out equal to the last one's.
pub struct Runs<T>(Option<Shared<T>>);

impl<T> Default for Runs<T> {
    fn default() -> Self {
        Runs(None)
    }
}

impl<T: PartialEq> Runs<T> {
    /// `value` held once with the last value handed out if they are equal.
    pub fn share(&mut self, value: T) -> Shared<T> {
        match &self.0 {
            Some(last) if **last == value => last.clone(),
            _ => self.0.insert(Shared::new(value)).clone(),
        }
    }
}

thread_local! {
    /// The values written so far in the [`writing`] scope of this thread, by [`Shared::id`].
    static WRITTEN: RefCell<Option<HashMap<usize, u64>>> = const { RefCell::new(None) };
    /// The values read so far in the [`reading`] scope of this thread, in order.
    static READ: RefCell<Option<Vec<Arc<dyn Any + Send + Sync>>>> = const { RefCell::new(None) };
    /// The format of what the [`reading_format`] scope of this thread reads.
    static FORMAT: RefCell<Option<u32>> = const { RefCell::new(None) };
}

/// Puts a thread-local scope back as it was when dropped, panics included.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    before: Option<T>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        let before = self.before.take();
        self.key.with(|k| *k.borrow_mut() = before);
    }
}

fn scoped<T: 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    fresh: T,
    f: impl FnOnce() -> R,
) -> R {
    let before = key.with(|k| k.borrow_mut().replace(fresh));
    let _restore = Restore { key, before };
    f()
}

/// Runs `encode` with each shared value written out once, later handles of it as numbers.
pub fn writing<R>(encode: impl FnOnce() -> R) -> R {
    scoped(&WRITTEN, HashMap::new(), encode)
}

/// Runs `decode` with the numbers that [`writing`] wrote resolved to the values they name.
pub fn reading<R>(decode: impl FnOnce() -> R) -> R {
    scoped(&READ, Vec::new(), decode)
}

/// [`reading`] what was written in `format` (a state's `format_version`): a part that became
/// shared in a later format was written whole for each resource and not numbered, so it must
/// be read so too ([`format_read`]), or the numbers after it would name other values.
pub fn reading_format<R>(format: u32, decode: impl FnOnce() -> R) -> R {
    scoped(&FORMAT, format, || reading(decode))
}

/// The format that the [`reading_format`] scope of this thread reads (None outside one).
pub fn format_read() -> Option<u32> {
    FORMAT.with(|f| *f.borrow())
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at = self.id();
        if let Some(n) = WRITTEN.with(|w| w.borrow().as_ref().and_then(|w| w.get(&at).copied())) {
            return s.serialize_u64(n);
        }
        let written = self.0.serialize(s)?;
        // Numbered once written (values inside it first), as `reading` numbers them: in the
        // order their parsing ends.
        WRITTEN.with(|w| {
            if let Some(w) = w.borrow_mut().as_mut() {
                let n = w.len() as u64;
                w.insert(at, n);
            }
        });
        Ok(written)
    }
}

impl<'de, T> Deserialize<'de> for Shared<T>
where
    T: Deserialize<'de> + Send + Sync + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SharedVisitor(PhantomData))
    }
}

struct SharedVisitor<T>(PhantomData<T>);

impl<T: Send + Sync + 'static> SharedVisitor<T> {
    fn read<E: de::Error>(value: T) -> Result<Shared<T>, E> {
        let value = Arc::new(value);
        READ.with(|r| {
            if let Some(r) = r.borrow_mut().as_mut() {
                r.push(value.clone());
            }
        });
        Ok(Shared(value))
    }
}

impl<'de, T> Visitor<'de> for SharedVisitor<T>
where
    T: Deserialize<'de> + Send + Sync + 'static,
{
    type Value = Shared<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value, or the number of an equal value written before it")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Self::read(T::deserialize(SeqAccessDeserializer::new(seq))?)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Self::read(T::deserialize(MapAccessDeserializer::new(map))?)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        let found = READ.with(|r| {
            let r = r.borrow();
            let read = r
                .as_ref()
                .ok_or_else(|| E::custom("a number in place of a value outside a state"))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| read.get(n))
                .cloned()
                .ok_or_else(|| E::custom(format!("value number {n} was not written before it")))
        })?;
        found
            .downcast::<T>()
            .map(Shared)
            .map_err(|_| E::custom(format!("value number {n} is of another kind")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Holder {
        a: Shared<Vec<String>>,
        b: Shared<Vec<String>>,
        c: Shared<Vec<u8>>,
        d: Shared<Vec<String>>,
    }

    fn holder() -> Holder {
        let words = Shared::new(vec!["x".to_string(), "y".to_string()]);
        Holder {
            a: words.clone(),
            b: Shared::new(vec!["z".to_string()]),
            c: Shared::new(vec![1, 2]),
            d: words,
        }
    }

    #[test]
    fn a_repeat_is_written_as_its_number_and_read_back_as_the_same_value() {
        let h = holder();
        let text = writing(|| serde_json::to_string(&h)).unwrap();
        assert_eq!(text, r#"{"a":["x","y"],"b":["z"],"c":[1,2],"d":0}"#);
        let back: Holder = reading(|| serde_json::from_str(&text)).unwrap();
        assert_eq!(back, h);
        assert!(Arc::ptr_eq(&back.a.0, &back.d.0));
    }

    #[test]
    fn outside_a_scope_every_value_is_written_whole() {
        let text = serde_json::to_string(&holder()).unwrap();
        assert_eq!(text, r#"{"a":["x","y"],"b":["z"],"c":[1,2],"d":["x","y"]}"#);
        let back: Holder = reading(|| serde_json::from_str(&text)).unwrap();
        assert_eq!(back, holder());
    }

    #[test]
    fn a_number_that_names_nothing_of_its_kind_is_an_error() {
        let cases = [
            (
                r#"{"a":["x"],"b":5,"c":[1],"d":0}"#,
                "number 5 was not written",
            ),
            (r#"{"a":["x"],"b":["z"],"c":0,"d":0}"#, "of another kind"),
        ];
        for (text, message) in cases {
            let err = reading(|| serde_json::from_str::<Holder>(text)).unwrap_err();
            assert!(err.to_string().contains(message), "{text}: {err}");
        }
        let err = serde_json::from_str::<Holder>(r#"{"a":["x"],"b":0,"c":[1],"d":0}"#).unwrap_err();
        assert!(err.to_string().contains("outside a state"), "{err}");
    }

    #[test]
    fn scopes_end_even_on_a_panic() {
        let _ = std::panic::catch_unwind(|| writing(|| panic!("in the middle")));
        assert!(WRITTEN.with(|w| w.borrow().is_none()));
        let text = serde_json::to_string(&holder()).unwrap();
        assert!(text.ends_with(r#""d":["x","y"]}"#));
    }

    #[test]
    fn runs_share_equal_values_that_follow_each_other() {
        let mut runs = Runs::default();
        let a = runs.share(vec![1]);
        let b = runs.share(vec![1]);
        let c = runs.share(vec![2]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(!Arc::ptr_eq(&b.0, &c.0));
        let mut d = c.clone();
        d.make_mut().push(3);
        assert_eq!((*c).clone(), vec![2]);
        assert_eq!((*d).clone(), vec![2, 3]);
    }
}
