//! What a member name means to the rules — its key rule, the header it is named like,
//! the roles it gives its object — decided once per name and remembered: per pass, in a
//! map a lookup costs a few instructions in, and per scrubber, for every later pass.

use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use super::action::Action;
use super::policy::{self, Compiled};
use super::{detect, lowercase_ascii, names};

/// Names one pass remembers, and names the scrubber remembers: bounded, so a stream of
/// bodies with ever new names (ids as keys) cannot grow them without end; past the bound,
/// a name is worked out again each time.
pub(crate) const PASS_CAPACITY: usize = 4096;
const SHARED_CAPACITY: usize = 16_384;

/// What a member name means.
#[derive(Clone, Debug)]
pub(crate) struct KeyInfo {
    /// The key rule: its action and label.
    pub rule: Option<(Action, Arc<str>)>,
    /// The header it is named like, lower case.
    pub header: Option<Arc<str>>,
    /// `name`, `full_name` …: a person's name in a person's object.
    pub person_name: bool,
    /// `value`, `data` …: the value of a name/value pair.
    pub pair_value: bool,
    /// `email`, `phone`, `address` …: its object describes a person.
    pub person_sibling: bool,
    /// Some JSON path rule may end at a member of this name.
    pub path_name: bool,
    /// No detector can find anything in the name itself ([`detect::inert`]).
    pub inert: bool,
}

/// Works out what `key` means under `policy`.
pub(crate) fn meaning(policy: &Compiled, key: &str) -> KeyInfo {
    let leaf = names::leaf_name(key);
    let mut buf = [0u8; 64];
    let owned;
    let norm = match policy::normalize_key_ascii(leaf, &mut buf) {
        Some(n) => n,
        None => {
            owned = policy::normalize_key(leaf);
            &owned
        }
    };
    let mut lower_buf = [0u8; 64];
    let header = lowercase_ascii(key.as_bytes(), &mut lower_buf).filter(|lower| policy.is_header_name(lower));
    KeyInfo {
        rule: policy.key_action(norm).map(|(a, label)| (a, label.into())),
        header: header.map(Arc::from),
        person_name: names::is_person_name_key(norm),
        pair_value: names::is_pair_value_key(norm),
        person_sibling: names::is_person_sibling(norm),
        path_name: policy.json_path_names.as_ref().is_none_or(|names| names.contains(key)),
        inert: detect::inert(key) && policy.detectors.built_in_only(),
    }
}

/// The scrubber's memory of names, shared by the threads that scrub with it. Each pass
/// asks it once per name it has not met yet, so the lock is taken a few times per
/// exchange, not per member.
#[derive(Default)]
pub(crate) struct KeyCache(RwLock<FxHashMap<Box<str>, KeyInfo>>);

impl KeyCache {
    /// What `key` means: remembered, or worked out by `work_out` and remembered.
    pub(crate) fn get_or_insert(&self, key: &str, work_out: impl FnOnce(&str) -> KeyInfo) -> KeyInfo {
        // A poisoned lock only means another thread panicked mid-insert: the map is
        // still a valid map.
        if let Some(info) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return info.clone();
        }
        let info = work_out(key);
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() < SHARED_CAPACITY {
            map.insert(key.into(), info.clone());
        }
        info
    }
}

/// A copy starts empty: what it remembers is worked out again from the same policy.
impl Clone for KeyCache {
    fn clone(&self) -> Self {
        KeyCache::default()
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.0.read().map_or(0, |m| m.len());
        f.debug_struct("KeyCache").field("names", &names).finish()
    }
}

/// A member name of up to 23 bytes and its length, in three words.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ShortKey(u64, u64, u64);

impl ShortKey {
    // Inlined, the words stay in registers (built on the stack and copied out, they
    // stalled store forwarding: ~10% of JSON scrub time).
    #[inline(always)]
    pub(crate) fn new(key: &str) -> Option<ShortKey> {
        let b = key.as_bytes();
        if b.len() > 23 {
            return None;
        }
        // A whole word is one load; a partial one is folded in by shifts.
        let word = |i: usize| -> u64 {
            let chunk = b.get(i * 8..).unwrap_or_default();
            match chunk.first_chunk::<8>() {
                Some(full) => u64::from_le_bytes(*full),
                None => chunk.iter().rev().fold(0, |w, c| w << 8 | u64::from(*c)),
            }
        };
        Some(ShortKey(word(0), word(1), word(2) | (b.len() as u64) << 56))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_differ_when_names_differ() {
        let names = ["", "a", "a\0", "\0", "abcdefgh", "abcdefgh\0", "abcdefghijklmnop", "abcdefghijklmnopqrstuvw"];
        for (i, x) in names.iter().enumerate() {
            for (j, y) in names.iter().enumerate() {
                assert_eq!(ShortKey::new(x) == ShortKey::new(y), i == j, "{x:?} vs {y:?}");
            }
        }
        assert!(ShortKey::new("abcdefghijklmnopqrstuvwx").is_none());
    }

    #[test]
    fn the_scrubbers_memory_is_bounded() {
        let cache = KeyCache::default();
        let policy = Compiled::new(&policy::Policy::defaults());
        for i in 0..SHARED_CAPACITY + 100 {
            cache.get_or_insert(&format!("k{i}"), |k| meaning(&policy, k));
        }
        assert_eq!(cache.0.read().unwrap().len(), SHARED_CAPACITY);
        let info = cache.get_or_insert("password", |k| meaning(&policy, k));
        assert!(info.rule.is_some(), "a name past the bound is still worked out");
    }
}
