//! What a proxy must subscribe to by name, derived from what it was sent:
//! EDS cluster names from CDS, route config names from LDS.
//!
//! Tens of thousands of simulated proxies mostly hold the same sets, so a set
//! is stored once and shared ([`SetInterner`]): a proxy keeps two `Arc`s per
//! dependency, not its own copy of a thousand names.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

/// `(resource, name it depends on)`: a cluster and its EDS service name, or a
/// listener and a route config name.
pub type Pair = (Box<str>, Box<str>);

/// Sorted, deduplicated sets, shared among every proxy holding an equal one.
#[derive(Default)]
pub struct SetInterner<T> {
    sets: Mutex<HashMap<u64, Vec<Weak<[T]>>>>,
}

/// Sets of both kinds a proxy holds.
#[derive(Default)]
pub struct Interners {
    pub pairs: SetInterner<Pair>,
    pub names: SetInterner<Box<str>>,
}

impl<T: Hash + Eq> SetInterner<T> {
    /// Returns the shared copy of `items` (sorted and deduplicated by the
    /// caller), storing it if no proxy holds an equal set.
    pub fn share(&self, items: Vec<T>) -> Arc<[T]> {
        let key = hash_of(&items);
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = sets.entry(key).or_default();
        bucket.retain(|weak| weak.strong_count() > 0);
        if let Some(existing) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|set| set[..] == items[..])
        {
            return existing;
        }
        let set: Arc<[T]> = items.into();
        bucket.push(Arc::downgrade(&set));
        // Sets nobody holds any more leave empty buckets behind; sweep them
        // when the map has grown (amortised over many inserts).
        if sets.len() > 4096 {
            sets.retain(|_, bucket| bucket.iter().any(|weak| weak.strong_count() > 0));
        }
        set
    }

    /// How many distinct sets are held (for tests and stats).
    pub fn len(&self) -> usize {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.values()
            .flatten()
            .filter(|weak| weak.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hash_of<T: Hash>(items: &[T]) -> u64 {
    let mut hasher = DefaultHasher::new();
    items.hash(&mut hasher);
    hasher.finish()
}

/// A change of subscription: names to add and to drop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

/// One dependency (CDS -> EDS or LDS -> RDS) of one proxy.
#[derive(Debug, Clone)]
pub struct Dependents {
    /// Every known resource with each name it depends on, sorted.
    pairs: Arc<[Pair]>,
    /// The distinct dependent names: the subscription, sorted.
    names: Arc<[Box<str>]>,
}

impl Default for Dependents {
    fn default() -> Self {
        Dependents {
            pairs: Arc::from(Vec::new()),
            names: Arc::from(Vec::new()),
        }
    }
}

impl Dependents {
    /// The names to subscribe to.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// Applies a state-of-the-world response: `found` is everything now.
    /// Returns how the subscription changed, if it did.
    pub fn replace_all(
        &mut self,
        interners: &Interners,
        found: &[(&str, &str)],
    ) -> Option<SubscriptionChange> {
        self.apply(interners, |_| false, found)
    }

    /// Applies a delta response: the `dropped` resources (updated or removed)
    /// lose what they depended on, then `found` (from the updated ones) is
    /// added. Returns how the subscription changed, if it did.
    pub fn update(
        &mut self,
        interners: &Interners,
        dropped: &HashSet<&str>,
        found: &[(&str, &str)],
    ) -> Option<SubscriptionChange> {
        self.apply(interners, |resource| !dropped.contains(resource), found)
    }

    fn apply(
        &mut self,
        interners: &Interners,
        keep: impl Fn(&str) -> bool,
        found: &[(&str, &str)],
    ) -> Option<SubscriptionChange> {
        // Borrowed from a handle of its own, as `self.pairs` is replaced below.
        let old_pairs = Arc::clone(&self.pairs);
        let mut pairs: Vec<(&str, &str)> = old_pairs
            .iter()
            .filter(|(resource, _)| keep(resource))
            .map(|(resource, name)| (&**resource, &**name))
            .chain(found.iter().copied())
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        // Most pushes change versions, not names: compare before allocating.
        if pairs
            .iter()
            .copied()
            .eq(old_pairs.iter().map(|(r, n)| (&**r, &**n)))
        {
            return None;
        }
        let names: BTreeSet<&str> = pairs.iter().map(|(_, name)| *name).collect();
        let change = diff(&self.names, &names);
        self.pairs = interners.pairs.share(
            pairs
                .into_iter()
                .map(|(r, n)| (Box::from(r), Box::from(n)))
                .collect(),
        );
        if change.subscribe.is_empty() && change.unsubscribe.is_empty() {
            return None;
        }
        self.names = interners
            .names
            .share(names.iter().map(|&n| Box::from(n)).collect());
        Some(change)
    }
}

fn diff(old: &[Box<str>], new: &BTreeSet<&str>) -> SubscriptionChange {
    let old_set: BTreeSet<&str> = old.iter().map(|n| &**n).collect();
    SubscriptionChange {
        subscribe: new.difference(&old_set).map(|n| n.to_string()).collect(),
        unsubscribe: old_set.difference(new).map(|n| n.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(names: &[&'a str]) -> HashSet<&'a str> {
        names.iter().copied().collect()
    }

    #[test]
    fn a_full_response_replaces_the_subscription() {
        let interners = Interners::default();
        let mut deps = Dependents::default();
        let change = deps
            .replace_all(&interners, &[("a", "a"), ("b", "b")])
            .unwrap();
        assert_eq!(change.subscribe, ["a", "b"]);
        let change = deps
            .replace_all(&interners, &[("b", "b"), ("c", "c")])
            .unwrap();
        assert_eq!(change.subscribe, ["c"]);
        assert_eq!(change.unsubscribe, ["a"]);
        // The same set again is no change.
        assert!(
            deps.replace_all(&interners, &[("b", "b"), ("c", "c")])
                .is_none()
        );
    }

    #[test]
    fn a_delta_keeps_what_it_does_not_mention() {
        let interners = Interners::default();
        let mut deps = Dependents::default();
        deps.update(
            &interners,
            &set(&["l1", "l2"]),
            &[("l1", "r80"), ("l2", "r80"), ("l2", "r90")],
        );
        // l1 removed: r80 is still needed by l2.
        assert!(deps.update(&interners, &set(&["l1"]), &[]).is_none());
        // l2 updated to route r90 only: r80 goes.
        let change = deps
            .update(&interners, &set(&["l2"]), &[("l2", "r90")])
            .unwrap();
        assert_eq!(change.unsubscribe, ["r80"]);
        assert_eq!(&*deps.names()[0], "r90");
    }

    #[test]
    fn equal_sets_are_stored_once() {
        let interners = Interners::default();
        let mut proxies = vec![Dependents::default(); 100];
        for deps in &mut proxies {
            deps.replace_all(&interners, &[("a", "a"), ("b", "b")]);
        }
        assert_eq!(interners.names.len(), 1);
        assert_eq!(interners.pairs.len(), 1);
        assert!(Arc::ptr_eq(&proxies[0].names, &proxies[99].names));
    }
}
