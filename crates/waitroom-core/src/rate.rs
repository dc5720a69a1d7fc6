//! Integer-only rate keeping: the admission token bucket and the recent-event windows behind
//! ETAs and `admissionsPerMinute`. No floating point, so every replica computes the same values.

use crate::limits::{RATE_BUCKET_MS, RATE_BUCKETS};

/// Token-bucket units per token: refilling `admit_per_minute` tokens per minute is exactly
/// `admit_per_minute` units per millisecond, so refills are exact integers.
const UNITS_PER_TOKEN: u64 = 60_000;

/// The `admitPerMinute` limit as a token bucket.
///
/// Burst: the bucket holds one second's worth of admissions, `ceil(admitPerMinute / 60)`, at
/// least one token, and starts full. So a room limited to 600/min admits at most 10 at once and
/// then one every 100 ms; a room limited to 1/min admits one, then one per minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    admit_per_minute: u64,
    units: u64,
    last_refill_ms: u64,
}

impl TokenBucket {
    pub(crate) fn new(admit_per_minute: u32, now_ms: u64) -> Self {
        let mut bucket = Self {
            admit_per_minute: admit_per_minute.into(),
            units: 0,
            last_refill_ms: now_ms,
        };
        bucket.units = bucket.capacity_units();
        bucket
    }

    /// A bucket as a snapshot recorded it, or `None` if it holds more than its burst (which no
    /// real bucket does: every change clamps to the burst).
    pub(crate) fn restore(admit_per_minute: u32, units: u64, last_refill_ms: u64) -> Option<Self> {
        let bucket = Self {
            admit_per_minute: admit_per_minute.into(),
            units,
            last_refill_ms,
        };
        (units <= bucket.capacity_units()).then_some(bucket)
    }

    /// Token units held (`UNITS_PER_TOKEN` per token), for snapshots.
    pub(crate) fn units(&self) -> u64 {
        self.units
    }

    pub(crate) fn last_refill_ms(&self) -> u64 {
        self.last_refill_ms
    }

    pub(crate) fn burst_tokens(&self) -> u64 {
        self.admit_per_minute.div_ceil(60).max(1)
    }

    fn capacity_units(&self) -> u64 {
        self.burst_tokens() * UNITS_PER_TOKEN
    }

    pub(crate) fn admit_per_minute(&self) -> u64 {
        self.admit_per_minute
    }

    /// Keeps the tokens already earned (clamped to the new burst) under a new rate.
    pub(crate) fn set_rate(&mut self, admit_per_minute: u32) {
        self.admit_per_minute = admit_per_minute.into();
        self.units = self.units.min(self.capacity_units());
    }

    pub(crate) fn refill(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.last_refill_ms);
        self.units = self
            .units
            .saturating_add(elapsed_ms.saturating_mul(self.admit_per_minute))
            .min(self.capacity_units());
        self.last_refill_ms = self.last_refill_ms.max(now_ms);
    }

    pub(crate) fn has_token(&self) -> bool {
        self.units >= UNITS_PER_TOKEN
    }

    pub(crate) fn take(&mut self) {
        debug_assert!(self.has_token());
        self.units -= UNITS_PER_TOKEN;
    }

    pub(crate) fn digest_words(&self) -> [u64; 3] {
        [self.admit_per_minute, self.units, self.last_refill_ms]
    }
}

/// Counts of events in the last `RATE_BUCKETS` buckets of `RATE_BUCKET_MS` each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RateWindow {
    /// `(bucket number, count)`; bucket number = time / RATE_BUCKET_MS.
    buckets: [(u64, u32); RATE_BUCKETS],
}

impl Default for RateWindow {
    fn default() -> Self {
        Self {
            buckets: [(u64::MAX, 0); RATE_BUCKETS],
        }
    }
}

impl RateWindow {
    pub(crate) fn record(&mut self, now_ms: u64) {
        let number = now_ms / RATE_BUCKET_MS;
        let bucket = &mut self.buckets[(number % RATE_BUCKETS as u64) as usize];
        if bucket.0 != number {
            *bucket = (number, 0);
        }
        bucket.1 = bucket.1.saturating_add(1);
    }

    /// The ring of `(bucket number, count)` in slot order, for snapshots; an empty slot is
    /// `(u64::MAX, 0)`.
    pub(crate) fn buckets(&self) -> &[(u64, u32); RATE_BUCKETS] {
        &self.buckets
    }

    /// A window as a snapshot recorded it, or `None` if a bucket sits in another bucket's slot
    /// (`record` puts bucket `n` in slot `n % RATE_BUCKETS`).
    pub(crate) fn from_buckets(buckets: [(u64, u32); RATE_BUCKETS]) -> Option<Self> {
        let in_place = buckets.iter().enumerate().all(|(slot, &(number, _))| {
            number == u64::MAX || number % RATE_BUCKETS as u64 == slot as u64
        });
        in_place.then_some(Self { buckets })
    }

    /// Events in the buckets that overlap `(now_ms - window_ms, now_ms]`, and the time those
    /// buckets span up to now (from the start of the oldest one, but not before `since_ms`).
    pub(crate) fn recent(&self, now_ms: u64, window_ms: u64, since_ms: u64) -> (u64, u64) {
        let newest = now_ms / RATE_BUCKET_MS;
        let span_buckets = window_ms
            .div_ceil(RATE_BUCKET_MS)
            .clamp(1, RATE_BUCKETS as u64);
        let oldest = (newest + 1).saturating_sub(span_buckets);
        let count = self
            .buckets
            .iter()
            .filter(|(number, _)| (oldest..=newest).contains(number))
            .map(|&(_, count)| u64::from(count))
            .sum();
        let start_ms = (oldest * RATE_BUCKET_MS).max(since_ms);
        (count, now_ms.saturating_sub(start_ms))
    }

    /// Events in bucket `number` (0 if the ring no longer, or never, held it).
    pub(crate) fn in_bucket(&self, number: u64) -> u64 {
        let (held, count) = self.buckets[(number % RATE_BUCKETS as u64) as usize];
        if held == number { u64::from(count) } else { 0 }
    }

    pub(crate) fn digest_words(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().flat_map(|&(n, c)| [n, u64::from(c)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_burst_then_rate() {
        // 600/min: burst of 10, then one every 100 ms.
        let mut bucket = TokenBucket::new(600, 0);
        assert_eq!(bucket.burst_tokens(), 10);
        for _ in 0..10 {
            assert!(bucket.has_token());
            bucket.take();
        }
        assert!(!bucket.has_token());
        bucket.refill(99);
        assert!(!bucket.has_token());
        bucket.refill(100);
        assert!(bucket.has_token());
        bucket.take();
        // A long pause refills only up to the burst.
        bucket.refill(1_000_000);
        let mut taken = 0;
        while bucket.has_token() {
            bucket.take();
            taken += 1;
        }
        assert_eq!(taken, 10);
    }

    #[test]
    fn restore_checks_the_invariants() {
        let bucket = TokenBucket::new(600, 5);
        let restored = TokenBucket::restore(600, bucket.units(), bucket.last_refill_ms());
        assert_eq!(restored, Some(bucket));
        assert_eq!(TokenBucket::restore(600, 10 * UNITS_PER_TOKEN + 1, 5), None);
        let mut window = RateWindow::default();
        window.record(12_345_678);
        assert_eq!(RateWindow::from_buckets(*window.buckets()), Some(window));
        let mut buckets = [(u64::MAX, 0); RATE_BUCKETS];
        buckets[0] = (1, 1);
        assert_eq!(RateWindow::from_buckets(buckets), None);
    }

    #[test]
    fn slow_bucket() {
        let mut bucket = TokenBucket::new(1, 0);
        assert_eq!(bucket.burst_tokens(), 1);
        bucket.take();
        bucket.refill(59_999);
        assert!(!bucket.has_token());
        bucket.refill(60_000);
        assert!(bucket.has_token());
    }

    #[test]
    fn window_counts_recent_buckets_only() {
        let mut window = RateWindow::default();
        window.record(1_000);
        window.record(4_999);
        window.record(5_000);
        assert_eq!(window.recent(5_000, 60_000, 0), (3, 5_000));
        assert_eq!(window.recent(9_999, 5_000, 0), (1, 4_999));
        // A minute later the first bucket fell out of a one-minute window, then the second.
        assert_eq!(window.recent(60_000, 60_000, 0).0, 1);
        assert_eq!(window.recent(65_000, 60_000, 0).0, 0);
        // A bucket number reused after a full turn of the ring is not counted twice.
        window.record(5_000 + RATE_BUCKET_MS * RATE_BUCKETS as u64);
        assert_eq!(
            window
                .recent(5_000 + RATE_BUCKET_MS * RATE_BUCKETS as u64, 300_000, 0)
                .0,
            1
        );
    }
}
