//! A log-linear latency histogram: fixed memory, bounded relative error.
//!
//! Values (nanoseconds) fall into power-of-two ranges, each split into 2^SUB_BITS equal sub-buckets, so every
//! bucket's width is at most 1/2^SUB_BITS of its lower bound: with SUB_BITS = 7 a reported percentile is within
//! 0.8 % of the true value. Values below 2^SUB_BITS ns are exact. The counter array is fixed (about 37 KiB),
//! histograms from several jobs merge by adding counters, and min, max and sum are tracked exactly.

use serde::Serialize;

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Largest exponent tracked: 2^42 ns ≈ 73 minutes; larger values land in the last bucket.
const MAX_EXP: u32 = 42;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

/// Latencies in nanoseconds, log-linear buckets (128 per power of two: < 0.8 % error), mergeable.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // v in [2^exp, 2^(exp+1))
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) - SUB; // 0..SUB
    ((exp - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
}

/// Lower bound and width of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let group = i / SUB; // >= 1
    let sub = i % SUB;
    let shift = group - 1;
    ((SUB + sub) << shift, 1 << shift)
}

/// Latency summary in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Latencies recorded.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Mean.
    pub mean_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p99_9_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += ns as u128;
    }

    /// Adds another histogram's counts (a job's into the run's).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding it, clamped to [min, max].
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bounds(i);
                return (lo + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Count, min, mean, percentiles and max.
    pub fn summary(&self) -> Summary {
        if self.total == 0 {
            return Summary::default();
        }
        Summary {
            count: self.total,
            min_ns: self.min,
            mean_ns: (self.sum / self.total as u128) as u64,
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            p99_9_ns: self.quantile(0.999),
            max_ns: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut expect = 0u64;
        for i in 0..BUCKETS - 1 {
            let (lo, w) = bounds(i);
            assert_eq!(lo, expect, "bucket {i}");
            assert_eq!(index(lo), i);
            assert_eq!(index(lo + w - 1), i);
            expect = lo + w;
        }
    }

    #[test]
    fn relative_error_is_bounded() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        for _ in 0..100_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let v = (rng >> (64 - MAX_EXP)) >> (rng % 40); // within the tracked range (< 2^MAX_EXP)
            let (lo, w) = bounds(index(v));
            assert!(v >= lo && v < lo + w, "{v} not in its bucket");
            assert!(
                w as f64 <= (lo.max(1) as f64) / SUB as f64 * 2.0 || lo < SUB,
                "bucket too wide at {v}"
            );
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000); // 1 µs .. 100 ms, uniform
        }
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        assert_eq!(s.min_ns, 1000);
        assert_eq!(s.max_ns, 100_000_000);
        for (got, want) in [
            (s.p50_ns, 50_000_000.0),
            (s.p90_ns, 90_000_000.0),
            (s.p99_ns, 99_000_000.0),
            (s.p99_9_ns, 99_900_000.0),
        ] {
            let err = (got as f64 - want).abs() / want;
            assert!(err < 0.01, "got {got}, want {want}, error {err}");
        }
        assert_eq!(s.mean_ns, 50_000_500);
    }

    #[test]
    fn merging_equals_recording_together() {
        let (mut a, mut b, mut both) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 0..5000u64 {
            let x = v * v % 77_777;
            if v % 2 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            both.record(x);
        }
        a.merge(&b);
        assert_eq!(a.summary(), both.summary());
    }

    #[test]
    fn empty_and_huge_values() {
        assert_eq!(Histogram::default().summary(), Summary::default());
        let mut h = Histogram::default();
        h.record(u64::MAX);
        assert_eq!(h.summary().max_ns, u64::MAX);
        assert_eq!(h.quantile(0.5), u64::MAX);
    }
}
