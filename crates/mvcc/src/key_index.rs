//! The in-memory key index: for every key, the revisions at which it changed, grouped into
//! generations (etcd's `treeIndex` and `keyIndex`).
//!
//! A generation runs from the put that created the key to the tombstone that deleted it; the
//! last generation is the open one (empty after a delete). Values live in the records; the index
//! only says which record holds a key's state at a given revision. A generation keeps its
//! `created` revision and `version` even after compaction trims its revisions, so later puts
//! still number versions correctly.

use std::collections::{BTreeMap, BTreeSet};

use crate::key_range::KeyRange;
use crate::Revision;

/// Where a key stood at some revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyState {
    /// The revision of the record holding the key's state.
    pub(crate) modified: Revision,
    /// The revision of the put that created the key's generation.
    pub(crate) created: Revision,
    /// The key's version at that record.
    pub(crate) version: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// Version of the last revision in `revisions`.
    version: i64,
    created: Revision,
    /// Ascending; ends with the tombstone unless this is the open generation.
    revisions: Vec<Revision>,
}

/// The history of one key (etcd's `keyIndex`). Never has zero generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyHistory {
    modified: Revision,
    generations: Vec<Generation>,
}

impl KeyHistory {
    fn new() -> Self {
        KeyHistory {
            modified: Revision::default(),
            generations: vec![Generation::default()],
        }
    }

    /// True when no revision is left: the key can leave the index.
    fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revisions.is_empty()
    }

    /// Record a put at `revision`, which must be newer than every revision already recorded
    /// (`false`, and nothing changes, when it is not).
    fn put(&mut self, revision: Revision) -> bool {
        if revision <= self.modified {
            return false;
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        let generation = &mut self.generations[last];
        if generation.revisions.is_empty() {
            generation.created = revision;
        }
        generation.revisions.push(revision);
        generation.version += 1;
        self.modified = revision;
        true
    }

    /// Record a delete at `revision` and open a new generation; `false` when the key is not live.
    fn tombstone(&mut self, revision: Revision) -> bool {
        let live = self
            .generations
            .last()
            .is_some_and(|generation| !generation.revisions.is_empty());
        if !live || !self.put(revision) {
            return false;
        }
        self.generations.push(Generation::default());
        true
    }

    /// The generation holding the key's state at main revision `at`, if the key was live then.
    fn generation_at(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (position, generation) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(end)) =
                (generation.revisions.first(), generation.revisions.last())
            else {
                continue;
            };
            // A closed generation whose tombstone is at or before `at`: the key was deleted then.
            if position != last && end.main <= at {
                return None;
            }
            if first.main <= at {
                return Some(generation);
            }
        }
        None
    }

    /// The key's state at main revision `at` (etcd's `keyIndex.get`).
    fn get(&self, at: i64) -> Option<KeyState> {
        let generation = self.generation_at(at)?;
        let position = generation.revisions.iter().rposition(|r| r.main <= at)?;
        let newer = (generation.revisions.len() - position - 1) as i64;
        Some(KeyState {
            modified: generation.revisions[position],
            created: generation.created,
            version: generation.version - newer,
        })
    }

    /// Drop every revision that no read or watch at or after `at` can need (etcd's
    /// `keyIndex.compact`): in the generation live at `at`, everything older than its newest
    /// revision `<= at`; all earlier generations; and that newest revision too when it is a
    /// tombstone older than `at` (a tombstone exactly at `at` stays for watches starting there).
    fn compact(&mut self, at: i64) {
        let last = self.generations.len() - 1;
        let mut index = 0;
        while index < last {
            let tomb = self.generations[index].revisions.last().map(|r| r.main);
            // A generation deleted exactly at `at` keeps its tombstone: a watch that starts at
            // the compaction revision must still see that delete (etcd #18089, fixed in etcd
            // by keeping the same revision; found here by the Jepsen watch checker).
            if tomb.is_some_and(|tomb| tomb >= at) {
                break;
            }
            index += 1;
        }
        let generation = &mut self.generations[index];
        if !generation.revisions.is_empty() {
            if let Some(keep) = generation.revisions.iter().rposition(|r| r.main <= at) {
                generation.revisions.drain(..keep);
            }
            // A closed generation reduced to one revision holds only its tombstone, which
            // only a watch from the compaction revision itself still needs.
            if generation.revisions.len() == 1 && index != last && generation.revisions[0].main < at
            {
                index += 1;
            }
        }
        self.generations.drain(..index);
    }

    fn revisions(&self) -> impl Iterator<Item = Revision> + '_ {
        self.generations
            .iter()
            .flat_map(|generation| generation.revisions.iter().copied())
    }
}

/// Every key's history, ordered by key (etcd's `treeIndex`).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyIndex {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
}

impl KeyIndex {
    /// The key's state at main revision `at`, if it was live then.
    pub(crate) fn get(&self, key: &[u8], at: i64) -> Option<KeyState> {
        self.keys.get(key)?.get(at)
    }

    /// The keys in `range` live at `at`, in key order, with their states.
    pub(crate) fn range<'a>(
        &'a self,
        range: &'a KeyRange,
        at: i64,
    ) -> impl Iterator<Item = (&'a [u8], KeyState)> + 'a {
        range
            .bounds()
            .into_iter()
            .flat_map(move |bounds| self.keys.range::<[u8], _>(bounds))
            .filter_map(move |(key, history)| Some((key.as_slice(), history.get(at)?)))
    }

    /// The history of one key, for saving before a write that may be undone.
    pub(crate) fn history(&self, key: &[u8]) -> Option<&KeyHistory> {
        self.keys.get(key)
    }

    /// Put back a history saved by [`KeyIndex::history`] (`None`: the key was absent).
    pub(crate) fn reset(&mut self, key: Vec<u8>, history: Option<KeyHistory>) {
        match history {
            Some(history) => self.keys.insert(key, history),
            None => self.keys.remove(&key),
        };
    }

    /// Record a put; `false` when `revision` is not newer than the key's last change.
    pub(crate) fn put(&mut self, key: &[u8], revision: Revision) -> bool {
        let history = self
            .keys
            .entry(key.to_vec())
            .or_insert_with(KeyHistory::new);
        history.put(revision)
    }

    /// Record a delete; `false` when the key is not live (nothing changes).
    pub(crate) fn tombstone(&mut self, key: &[u8], revision: Revision) -> bool {
        self.keys
            .get_mut(key)
            .is_some_and(|history| history.tombstone(revision))
    }

    /// Start a key's index from its oldest surviving record (etcd's `keyIndex.restore`): the
    /// generation's creation and version come from the record, as earlier revisions may be gone.
    pub(crate) fn restore_first(
        &mut self,
        key: &[u8],
        created: Revision,
        modified: Revision,
        version: i64,
    ) {
        let generation = Generation {
            version,
            created,
            revisions: vec![modified],
        };
        self.keys.insert(
            key.to_vec(),
            KeyHistory {
                modified,
                generations: vec![generation],
            },
        );
    }

    /// Start a key's index from a lone tombstone: the record a compaction at exactly its
    /// revision kept (see `KeyHistory::compact`); everything before it is gone.
    pub(crate) fn restore_tombstone(&mut self, key: &[u8], revision: Revision) {
        let deleted = Generation {
            version: 0,
            created: revision,
            revisions: vec![revision],
        };
        self.keys.insert(
            key.to_vec(),
            KeyHistory {
                modified: revision,
                generations: vec![deleted, Generation::default()],
            },
        );
    }

    /// Whether the key has any history.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// Compact every key at main revision `at`; returns the revisions removed, ascending (their
    /// records are no longer reachable by any allowed read).
    pub(crate) fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut removed = BTreeSet::new();
        self.keys.retain(|_, history| {
            let before: Vec<Revision> = history.revisions().filter(|r| r.main <= at).collect();
            history.compact(at);
            let after: BTreeSet<Revision> = history.revisions().collect();
            removed.extend(before.into_iter().filter(|r| !after.contains(r)));
            !history.is_empty()
        });
        removed.into_iter().collect()
    }

    /// Every revision in the index, ascending (tests compare it with the records).
    #[cfg(test)]
    pub(crate) fn all_revisions(&self) -> BTreeSet<Revision> {
        self.keys.values().flat_map(KeyHistory::revisions).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put@2 put@4 del@6 put@8 put@10: two generations.
    fn sample() -> KeyIndex {
        let mut index = KeyIndex::default();
        assert!(index.put(b"k", rev(2)));
        assert!(index.put(b"k", rev(4)));
        assert!(index.tombstone(b"k", rev(6)));
        assert!(index.put(b"k", rev(8)));
        assert!(index.put(b"k", rev(10)));
        index
    }

    #[test]
    fn get_walks_generations() {
        let index = sample();
        let state = |at| {
            index
                .get(b"k", at)
                .map(|s| (s.modified.main, s.created.main, s.version))
        };
        let expected = [
            (1, None),
            (2, Some((2, 2, 1))),
            (3, Some((2, 2, 1))),
            (4, Some((4, 2, 2))),
            (5, Some((4, 2, 2))),
            (6, None),
            (7, None),
            (8, Some((8, 8, 1))),
            (9, Some((8, 8, 1))),
            (10, Some((10, 8, 2))),
            (100, Some((10, 8, 2))),
        ];
        for (at, want) in expected {
            assert_eq!(state(at), want, "at {at}");
        }
    }

    #[test]
    fn tombstone_needs_a_live_key_and_puts_need_newer_revisions() {
        let mut index = KeyIndex::default();
        assert!(!index.tombstone(b"k", rev(2)));
        assert!(index.put(b"k", rev(3)));
        assert!(!index.put(b"k", rev(3)));
        assert!(index.tombstone(b"k", rev(4)));
        assert!(!index.tombstone(b"k", rev(5)));
        // Two changes inside one revision are ordered by sub.
        assert!(index.put(b"k", Revision::new(6, 0)));
        assert!(index.tombstone(b"k", Revision::new(6, 1)));
        assert_eq!(index.get(b"k", 6), None);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_need() {
        // (compact at, removed mains, surviving mains, key still indexed)
        let cases: &[(i64, &[i64], &[i64], bool)] = &[
            (1, &[], &[2, 4, 6, 8, 10], true),
            (2, &[], &[2, 4, 6, 8, 10], true),
            (3, &[], &[2, 4, 6, 8, 10], true),
            (4, &[2], &[4, 6, 8, 10], true),
            (5, &[2], &[4, 6, 8, 10], true),
            // The tombstone at exactly the compaction revision stays (etcd #18089).
            (6, &[2, 4], &[6, 8, 10], true),
            (7, &[2, 4, 6], &[8, 10], true),
            (9, &[2, 4, 6], &[8, 10], true),
            (10, &[2, 4, 6, 8], &[10], true),
            (11, &[2, 4, 6, 8], &[10], true),
        ];
        for (at, removed, surviving, indexed) in cases {
            let mut index = sample();
            let got: Vec<i64> = index.compact(*at).iter().map(|r| r.main).collect();
            assert_eq!(&got, removed, "removed at {at}");
            let left: Vec<i64> = index.all_revisions().iter().map(|r| r.main).collect();
            assert_eq!(&left, surviving, "surviving at {at}");
            assert_eq!(index.contains(b"k"), *indexed);
            // Reads at or after the compaction revision are unchanged.
            let original = sample();
            for read_at in *at..12 {
                assert_eq!(index.get(b"k", read_at), original.get(b"k", read_at));
            }
        }
    }

    #[test]
    fn compaction_keeps_a_tombstone_at_the_compaction_revision_etcd_18089() {
        let mut index = KeyIndex::default();
        index.put(b"k", rev(2));
        index.tombstone(b"k", rev(3));
        // Compacting at the delete keeps the tombstone (a watch from 3 must see the delete)...
        let removed: Vec<i64> = index.compact(3).iter().map(|r| r.main).collect();
        assert_eq!(removed, vec![2]);
        assert!(index.contains(b"k"));
        assert_eq!(index.get(b"k", 3), None, "deleted at 3");
        // ...and a later compaction drops it with the key.
        let removed: Vec<i64> = index.compact(4).iter().map(|r| r.main).collect();
        assert_eq!(removed, vec![3]);
        assert!(!index.contains(b"k"));

        let mut index = KeyIndex::default();
        index.put(b"k", rev(2));
        index.tombstone(b"k", rev(3));
        assert_eq!(index.compact(2), Vec::<Revision>::new());
        assert_eq!(index.get(b"k", 2).map(|s| s.version), Some(1));
    }

    #[test]
    fn version_survives_compaction() {
        let mut index = KeyIndex::default();
        for main in 2..6 {
            index.put(b"k", rev(main));
        }
        index.compact(5);
        assert_eq!(
            index.get(b"k", 5).map(|s| (s.version, s.created.main)),
            Some((4, 2))
        );
        index.put(b"k", rev(6));
        assert_eq!(index.get(b"k", 6).map(|s| s.version), Some(5));
    }

    #[test]
    fn range_lists_live_keys_in_order() {
        let mut index = KeyIndex::default();
        index.put(b"a", rev(2));
        index.put(b"b", rev(3));
        index.put(b"c", rev(4));
        index.tombstone(b"b", rev(5));
        let keys = |range: KeyRange, at| -> Vec<Vec<u8>> {
            index.range(&range, at).map(|(k, _)| k.to_vec()).collect()
        };
        assert_eq!(
            keys(KeyRange::new(b"a", b"\0"), 4),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys(KeyRange::new(b"a", b"\0"), 5),
            vec![b"a".to_vec(), b"c".to_vec()]
        );
        assert_eq!(keys(KeyRange::new(b"b", b"c"), 3), vec![b"b".to_vec()]);
        assert!(keys(KeyRange::new(b"c", b"a"), 5).is_empty());
        assert!(keys(KeyRange::new(b"a", b"\0"), 1).is_empty());
    }
}
