//! A fixed-size log-linear latency histogram (HDR-style) in relaxed atomics:
//! recording is one `fetch_add` (and a `fetch_max` for a new maximum), with no
//! lock and no allocation, so it can sit on every transfer.
//!
//! Layout: values are nanoseconds. Values below 2^`SUB_BITS` (32 ns) have a
//! bucket each. Above, every power-of-two range `[2^h, 2^(h+1))` is cut into
//! 2^`SUB_BITS` (32) equal buckets, so a bucket's width is at most 1/32 of its
//! lower bound. A percentile is reported as the middle of its bucket, which
//! is within 1/64 (1.6 %) of every value in the bucket: closer than the
//! run-to-run spread of any latency measured here, so the percentiles are
//! exact enough to compare links and runs. The exact maximum is kept apart.
//! Values from 2^`MAX_BITS` ns (68.7 s, beyond any sane transfer timeout)
//! are counted in the top bucket. 1024 buckets: 8 KiB per histogram.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two, as bits (32 buckets: ≤ 1/32 relative width).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^MAX_BITS - 1 ns get their own bucket range.
const MAX_BITS: u32 = 36;
/// Number of buckets: one linear group, then one group per power of two.
const BUCKETS: usize = ((MAX_BITS - SUB_BITS + 1) as usize) << SUB_BITS;

/// The bucket of value `v` (ns).
fn bucket(v: u64) -> usize {
    let v = v.min((1u64 << MAX_BITS) - 1);
    if v < SUB {
        return v as usize;
    }
    let h = 63 - v.leading_zeros(); // highest set bit, >= SUB_BITS
    let shift = h - SUB_BITS;
    let mantissa = (v >> shift) - SUB; // 0..SUB
    (((shift + 1) as u64) << SUB_BITS | mantissa) as usize
}

/// The lowest value of bucket `i` and its width.
fn bounds(i: usize) -> (u64, u64) {
    let group = (i as u64) >> SUB_BITS;
    let sub = (i as u64) & (SUB - 1);
    if group == 0 {
        return (sub, 1);
    }
    let shift = group - 1;
    ((SUB + sub) << shift, 1 << shift)
}

/// Latency histogram (nanoseconds).
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
}

/// Percentiles read from a [`Histogram`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median: the middle of the bucket holding the 50th percentile (within 1.6 %).
    pub p50: u64,
    /// The middle of the bucket holding the 99th percentile (within 1.6 %).
    pub p99: u64,
    /// The exact largest value.
    pub max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one value (ns).
    pub fn record(&self, ns: u64) {
        self.counts[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        // A plain load first: a new maximum is rare, a read-modify-write is not free.
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Zeroes every bucket (values recorded meanwhile may survive).
    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
    }

    /// p50, p99 and max of what was recorded (all zero when empty). Read
    /// bucket by bucket while others may record: a value recorded during the
    /// read may or may not be included.
    pub fn percentiles(&self) -> Percentiles {
        Histogram::percentiles_of(&[self])
    }

    /// The percentiles of the values recorded in all of `hs` together.
    pub fn percentiles_of(hs: &[&Histogram]) -> Percentiles {
        let mut counts = vec![0u64; BUCKETS];
        let mut max = 0;
        for h in hs {
            for (n, c) in counts.iter_mut().zip(h.counts.iter()) {
                *n += c.load(Ordering::Relaxed);
            }
            max = max.max(h.max.load(Ordering::Relaxed));
        }
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Percentiles::default();
        }
        let at = |q_per_mille: u64| -> u64 {
            // The smallest value with at least q of the values at or below it.
            let rank = (count * q_per_mille).div_ceil(1000).max(1);
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    let (lo, width) = bounds(i);
                    // The middle of the bucket, never above the true maximum.
                    return (lo + width / 2).min(max);
                }
            }
            max
        };
        Percentiles {
            count,
            p50: at(500),
            p99: at(990),
            max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_the_range() {
        let mut expect_lo = 0;
        for i in 0..BUCKETS {
            let (lo, w) = bounds(i);
            assert_eq!(lo, expect_lo, "bucket {i}");
            assert_eq!(bucket(lo), i);
            assert_eq!(bucket(lo + w - 1), i);
            expect_lo = lo + w;
        }
        assert_eq!(expect_lo, 1 << MAX_BITS);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(BUCKETS, 1024);
    }

    #[test]
    fn relative_width_is_at_most_one_in_32() {
        for i in SUB as usize..BUCKETS {
            let (lo, w) = bounds(i);
            assert!(w * SUB <= lo, "bucket {i}: [{lo}, +{w})");
        }
        // Every value is within 1/64 of its bucket's middle.
        for v in [33u64, 100, 999, 4_096, 16_383, 123_456, 9_999_999, 1 << 35] {
            let (lo, w) = bounds(bucket(v));
            let mid = lo + w / 2;
            assert!(mid.abs_diff(v) * 64 <= v, "{v} → {mid}");
        }
    }

    #[test]
    fn small_values_are_exact() {
        let h = Histogram::default();
        for v in [3, 3, 3, 7, 31] {
            h.record(v);
        }
        let p = h.percentiles();
        assert_eq!(
            p,
            Percentiles {
                count: 5,
                p50: 3,
                p99: 31,
                max: 31
            }
        );
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let h = Histogram::default();
        // 1..=10_000 µs in ns: p50 = 5 ms, p99 = 9.9 ms.
        for us in 1..=10_000u64 {
            h.record(us * 1000);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 10_000);
        assert_eq!(p.max, 10_000_000);
        let close = |got: u64, want: u64| got.abs_diff(want) * 32 <= want;
        assert!(close(p.p50, 5_000_000), "p50 {}", p.p50);
        assert!(close(p.p99, 9_900_000), "p99 {}", p.p99);
    }

    #[test]
    fn one_slow_outlier_sets_max_not_p99() {
        let h = Histogram::default();
        for _ in 0..999 {
            h.record(10_000);
        }
        h.record(5_000_000_000);
        let p = h.percentiles();
        assert!(p.p99.abs_diff(10_000) * 64 <= 10_000);
        assert_eq!(p.max, 5_000_000_000);
    }

    #[test]
    fn huge_values_clamp_into_the_top_bucket() {
        let h = Histogram::default();
        h.record(u64::MAX);
        let p = h.percentiles();
        assert_eq!(
            (p.count, p.max, p.p50),
            (
                1,
                u64::MAX,
                bounds(BUCKETS - 1).0 + bounds(BUCKETS - 1).1 / 2
            )
        );
    }

    #[test]
    fn merged_histograms_count_both() {
        let (a, b) = (Histogram::default(), Histogram::default());
        for _ in 0..90 {
            a.record(1_000);
        }
        for _ in 0..10 {
            b.record(1_000_000);
        }
        let p = Histogram::percentiles_of(&[&a, &b]);
        assert_eq!((p.count, p.max), (100, 1_000_000));
        assert!(p.p50.abs_diff(1_000) * 64 <= 1_000);
        assert!(p.p99.abs_diff(1_000_000) * 64 <= 1_000_000);
    }

    #[test]
    fn empty_and_reset() {
        let h = Histogram::default();
        assert_eq!(h.percentiles(), Percentiles::default());
        h.record(42);
        h.reset();
        assert_eq!(h.percentiles(), Percentiles::default());
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = Histogram::default();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(t * 1000 + i);
                    }
                });
            }
        });
        let p = h.percentiles();
        assert_eq!(p.count, 40_000);
        assert_eq!(p.max, 3000 + 9_999);
    }
}
