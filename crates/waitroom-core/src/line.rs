//! The line: waiting sessions in admission order, with O(log n) positions.
//!
//! Every session that enters the line gets the next sequence number. The line keeps, for each
//! sequence number from its head on, the session's slot (or a tombstone once it left), a bitmap
//! of "still waiting" flags (one bit per sequence number), and a Fenwick tree (binary indexed
//! tree) of the bitmap's per-word counts. "How many live sessions are ahead of sequence number
//! s" is then a Fenwick prefix sum over whole words plus one popcount: O(log n) time, and the
//! tree (4 bytes per 64 sessions) and bitmap (1 bit per session) stay small enough to live in
//! the CPU caches at a million waiting, which is what keeps a status poll well under a
//! microsecond. Admission pops from the head; when the admitted prefix grows past half the
//! bitmap, the bitmap is cut and the tree rebuilt from the head (O(n / 64), amortised O(1)).

use std::collections::VecDeque;

/// Marks a sequence number whose session left the line.
const TOMBSTONE: u32 = u32::MAX;
/// The bitmap is not cut for fewer dead words than this (4096 sessions), so short lines don't
/// rebuild their tree often.
const REBASE_DEAD_WORDS_MIN: usize = 64;

/// A Fenwick tree of counts that can grow at the end.
#[derive(Debug, Default)]
pub(crate) struct Fenwick {
    /// `tree[i - 1]` holds the sum of values in `(i - lowbit(i), i]` (1-based `i`).
    tree: Vec<u32>,
}

/// Written out so that `clone_from` reuses the target's buffer (a derived one allocates anew):
/// a node copies rooms into a spare prepared beforehand (see `crate::spare`).
impl Clone for Fenwick {
    fn clone(&self) -> Self {
        Self {
            tree: self.tree.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.tree.clone_from(&source.tree);
    }
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl Fenwick {
    /// Appends `value` as the new last element. O(log n).
    pub(crate) fn push(&mut self, value: u32) {
        let i = self.tree.len() + 1;
        let stop = i - lowbit(i);
        let mut sum = value;
        let mut j = i - 1;
        while j > stop {
            sum += self.tree[j - 1];
            j -= lowbit(j);
        }
        self.tree.push(sum);
    }

    /// Adds one to element `index` (0-based). O(log n).
    pub(crate) fn increment(&mut self, index: usize) {
        let mut i = index + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] += 1;
            i += lowbit(i);
        }
    }

    /// Subtracts one from element `index` (0-based). O(log n).
    pub(crate) fn decrement(&mut self, index: usize) {
        let mut i = index + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] -= 1;
            i += lowbit(i);
        }
    }

    /// Sum of the elements before `index` (0-based, exclusive). O(log n).
    pub(crate) fn prefix(&self, index: usize) -> u32 {
        let mut sum = 0;
        let mut i = index.min(self.tree.len());
        while i > 0 {
            sum += self.tree[i - 1];
            i -= lowbit(i);
        }
        sum
    }

    /// The element holding the `rank`-th unit (0-based) of the running sum, and the rank within
    /// it: the `i` with `prefix(i) <= rank < prefix(i + 1)`, and `rank - prefix(i)`. `rank` must
    /// be below the total. O(log n).
    pub(crate) fn find(&self, rank: u32) -> (usize, u32) {
        let n = self.tree.len();
        let mut pos = 0;
        let mut rest = rank;
        let mut step = if n == 0 { 0 } else { 1 << n.ilog2() };
        while step > 0 {
            if pos + step <= n && self.tree[pos + step - 1] <= rest {
                pos += step;
                rest -= self.tree[pos - 1];
            }
            step >>= 1;
        }
        (pos, rest)
    }

    /// Replaces the content with `values`. O(n).
    pub(crate) fn rebuild(&mut self, values: impl Iterator<Item = u32>) {
        self.tree.clear();
        self.tree.extend(values);
        let n = self.tree.len();
        for i in 1..=n {
            let parent = i + lowbit(i);
            if parent <= n {
                self.tree[parent - 1] += self.tree[i - 1];
            }
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.tree.capacity() * size_of::<u32>()
    }
}

/// Waiting sessions (by slot number) in admission order.
#[derive(Debug, Default)]
pub(crate) struct Line {
    /// Slot of the session with sequence number `head_seq + i`, or `TOMBSTONE`. Invariant: the
    /// front entry, if any, is live.
    entries: VecDeque<u32>,
    head_seq: u64,
    /// Bit `s - base_seq` is set while sequence number `s` waits. `base_seq` is a multiple of 64
    /// and at most `head_seq`.
    bits: Vec<u64>,
    /// `counts[w]` = live bits in `bits[w]`.
    counts: Fenwick,
    base_seq: u64,
    live: u32,
}

/// Written out so that `clone_from` copies into the target's buffers (see `Fenwick`'s); the
/// exhaustive pattern makes a new field a compile error here until it is copied.
impl Clone for Line {
    fn clone(&self) -> Self {
        let Line {
            entries,
            head_seq,
            bits,
            counts,
            base_seq,
            live,
        } = self;
        Line {
            entries: entries.clone(),
            head_seq: *head_seq,
            bits: bits.clone(),
            counts: counts.clone(),
            base_seq: *base_seq,
            live: *live,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let Line {
            entries,
            head_seq,
            bits,
            counts,
            base_seq,
            live,
        } = source;
        self.entries.clone_from(entries);
        self.head_seq = *head_seq;
        self.bits.clone_from(bits);
        self.counts.clone_from(counts);
        self.base_seq = *base_seq;
        self.live = *live;
    }
}

impl Line {
    pub(crate) fn len(&self) -> u32 {
        self.live
    }

    fn next_seq(&self) -> u64 {
        self.head_seq + self.entries.len() as u64
    }

    /// Adds `slot` at the end; returns its sequence number.
    pub(crate) fn push(&mut self, slot: u32) -> u64 {
        debug_assert_ne!(slot, TOMBSTONE);
        let seq = self.next_seq();
        let offset = seq - self.base_seq;
        let word = (offset / 64) as usize;
        if word == self.bits.len() {
            self.bits.push(0);
            self.counts.push(0);
        }
        self.bits[word] |= 1 << (offset % 64);
        self.counts.increment(word);
        self.entries.push_back(slot);
        self.live += 1;
        seq
    }

    /// The slot at the head of the line.
    pub(crate) fn front(&self) -> Option<u32> {
        self.entries.front().copied()
    }

    /// The sequence number of the head of the line (the line must not be empty).
    pub(crate) fn front_seq(&self) -> u64 {
        debug_assert!(self.live > 0);
        self.head_seq
    }

    /// The slot of live sequence number `seq`.
    pub(crate) fn slot_of(&self, seq: u64) -> u32 {
        self.entries[(seq - self.head_seq) as usize]
    }

    /// The `k`-th live session (0-based, in line order) as (sequence number, slot); `k` must be
    /// below `len()`. O(log n): the Fenwick tree finds the bitmap word, a popcount walk the bit.
    pub(crate) fn nth(&self, k: u32) -> (u64, u32) {
        debug_assert!(k < self.live);
        let (word, mut rest) = self.counts.find(k);
        let mut bits = self.bits[word];
        while rest > 0 {
            bits &= bits - 1;
            rest -= 1;
        }
        let seq = self.base_seq + word as u64 * 64 + u64::from(bits.trailing_zeros());
        (seq, self.slot_of(seq))
    }

    /// Removes and returns the head of the line.
    #[cfg(test)]
    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let slot = self.entries.front().copied()?;
        self.remove(self.head_seq);
        Some(slot)
    }

    /// Takes the session with sequence number `seq` out of the line.
    pub(crate) fn remove(&mut self, seq: u64) {
        let entry = &mut self.entries[(seq - self.head_seq) as usize];
        debug_assert_ne!(*entry, TOMBSTONE, "removed twice");
        *entry = TOMBSTONE;
        let offset = seq - self.base_seq;
        let word = (offset / 64) as usize;
        self.bits[word] &= !(1 << (offset % 64));
        self.counts.decrement(word);
        self.live -= 1;
        while self.entries.front() == Some(&TOMBSTONE) {
            self.entries.pop_front();
            self.head_seq += 1;
        }
        self.maybe_rebase();
    }

    /// Live sessions ahead of sequence number `seq`.
    pub(crate) fn ahead_of(&self, seq: u64) -> u32 {
        let offset = seq - self.base_seq;
        let word = (offset / 64) as usize;
        let below = (1u64 << (offset % 64)) - 1;
        self.counts.prefix(word) + (self.bits[word] & below).count_ones()
    }

    /// Live slots in line order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        (self.head_seq..)
            .zip(self.entries.iter().copied())
            .filter(|&(_, slot)| slot != TOMBSTONE)
    }

    /// Drops the words wholly before the head once they are at least half of the bitmap.
    fn maybe_rebase(&mut self) {
        let dead_words = ((self.head_seq - self.base_seq) / 64) as usize;
        if dead_words == 0 {
            return;
        }
        if self.entries.is_empty()
            || (dead_words >= REBASE_DEAD_WORDS_MIN && dead_words * 2 >= self.bits.len())
        {
            self.bits.drain(..dead_words);
            self.base_seq += dead_words as u64 * 64;
            self.counts
                .rebuild(self.bits.iter().map(|word| word.count_ones()));
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<u32>()
            + self.bits.capacity() * size_of::<u64>()
            + self.counts.heap_bytes()
    }

    /// Lengths of the buffers a copy of this line fills: entries, and bitmap words (the Fenwick
    /// tree has one count per word).
    pub(crate) fn buffer_lens(&self) -> (usize, usize) {
        (self.entries.len(), self.bits.len())
    }

    /// Empties the line and gives its buffers room for `entries` entries and `words` bitmap
    /// words, with every page of them written (see `crate::spare`).
    pub(crate) fn prepare_buffers(&mut self, entries: usize, words: usize) {
        *self = Line {
            entries: std::mem::take(&mut self.entries),
            bits: std::mem::take(&mut self.bits),
            counts: Fenwick {
                tree: std::mem::take(&mut self.counts.tree),
            },
            ..Line::default()
        };
        crate::spare::prepare_deque(&mut self.entries, entries, TOMBSTONE);
        crate::spare::prepare_vec(&mut self.bits, words, 0);
        crate::spare::prepare_vec(&mut self.counts.tree, words, 0);
    }

    /// `clone_from(source)` would fit in this line's buffers without allocating.
    pub(crate) fn holds_copy_of(&self, source: &Line) -> bool {
        self.entries.capacity() >= source.entries.len()
            && self.bits.capacity() >= source.bits.len()
            && self.counts.tree.capacity() >= source.counts.tree.len()
    }
}

/// The pre-queue: sessions that joined before the room opened, in join order (a place for each
/// is drawn at opening). Removal leaves a tombstone; the front is always live.
#[derive(Debug, Default)]
pub(crate) struct Prequeue {
    entries: VecDeque<u32>,
    head_index: u64,
    live: u32,
}

/// Written out so that `clone_from` copies into the target's buffer (see `Line`'s).
impl Clone for Prequeue {
    fn clone(&self) -> Self {
        let Prequeue {
            entries,
            head_index,
            live,
        } = self;
        Prequeue {
            entries: entries.clone(),
            head_index: *head_index,
            live: *live,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let Prequeue {
            entries,
            head_index,
            live,
        } = source;
        self.entries.clone_from(entries);
        self.head_index = *head_index;
        self.live = *live;
    }
}

impl Prequeue {
    pub(crate) fn len(&self) -> u32 {
        self.live
    }

    /// Adds `slot`; returns its index (for `remove`).
    pub(crate) fn push(&mut self, slot: u32) -> u64 {
        self.entries.push_back(slot);
        self.live += 1;
        self.head_index + self.entries.len() as u64 - 1
    }

    pub(crate) fn remove(&mut self, index: u64) {
        let offset = (index - self.head_index) as usize;
        debug_assert_ne!(self.entries[offset], TOMBSTONE, "removed twice");
        self.entries[offset] = TOMBSTONE;
        self.live -= 1;
        while self.entries.front() == Some(&TOMBSTONE) {
            self.entries.pop_front();
            self.head_index += 1;
        }
    }

    /// The earliest joiner still in the pre-queue.
    pub(crate) fn front(&self) -> Option<u32> {
        self.entries.front().copied()
    }

    /// Live slots in join order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .copied()
            .filter(|&slot| slot != TOMBSTONE)
    }

    /// Empties the pre-queue, returning its live slots in join order.
    pub(crate) fn drain(&mut self) -> Vec<u32> {
        let live = self.iter().collect();
        self.head_index += self.entries.len() as u64;
        self.entries.clear();
        self.live = 0;
        live
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<u32>()
    }

    /// Length of the buffer a copy of this pre-queue fills.
    pub(crate) fn buffer_len(&self) -> usize {
        self.entries.len()
    }

    /// Empties the pre-queue and gives its buffer room for `entries`, every page written.
    pub(crate) fn prepare_buffer(&mut self, entries: usize) {
        *self = Prequeue {
            entries: std::mem::take(&mut self.entries),
            ..Prequeue::default()
        };
        crate::spare::prepare_deque(&mut self.entries, entries, TOMBSTONE);
    }

    /// `clone_from(source)` would fit in this pre-queue's buffer without allocating.
    pub(crate) fn holds_copy_of(&self, source: &Prequeue) -> bool {
        self.entries.capacity() >= source.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fenwick_push_matches_rebuild() {
        let values: Vec<u32> = (0..1000).map(|i| (i * 7 % 3) as u32).collect();
        let mut pushed = Fenwick::default();
        values.iter().for_each(|&v| pushed.push(v));
        let mut built = Fenwick::default();
        built.rebuild(values.iter().copied());
        assert_eq!(pushed.tree, built.tree);
        for i in 0..=values.len() {
            assert_eq!(pushed.prefix(i), values[..i].iter().sum::<u32>());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
        Remove(usize),
    }

    proptest! {
        /// The line against a plain Vec: same order, same positions, through rebases.
        #[test]
        fn line_matches_a_vec(ops in proptest::collection::vec(
            prop_oneof![3 => Just(Op::Push), 1 => Just(Op::Pop), 2 => (0usize..10_000).prop_map(Op::Remove)],
            0..12_000,
        )) {
            let mut line = Line::default();
            let mut model: Vec<(u64, u32)> = Vec::new();
            let mut next_slot = 0u32;
            for op in ops {
                match op {
                    Op::Push => {
                        let seq = line.push(next_slot);
                        model.push((seq, next_slot));
                        next_slot += 1;
                    }
                    Op::Pop => {
                        let expected = (!model.is_empty()).then(|| model.remove(0).1);
                        prop_assert_eq!(line.pop_front(), expected);
                    }
                    Op::Remove(i) if !model.is_empty() => {
                        let (seq, _) = model.remove(i % model.len());
                        line.remove(seq);
                    }
                    Op::Remove(_) => {}
                }
                prop_assert_eq!(line.len() as usize, model.len());
                prop_assert_eq!(line.front(), model.first().map(|e| e.1));
                if let Some(&(seq, _)) = model.get(model.len() / 2) {
                    prop_assert_eq!(line.ahead_of(seq) as usize, model.len() / 2);
                }
                for k in [0, model.len() / 3, model.len() / 2, model.len().saturating_sub(1)] {
                    if let Some(&entry) = model.get(k) {
                        prop_assert_eq!(line.nth(k as u32), entry);
                    }
                }
            }
            prop_assert_eq!(line.iter().collect::<Vec<_>>(), model);
        }
    }
}
