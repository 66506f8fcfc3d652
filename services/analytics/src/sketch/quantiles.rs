//! [`Quantiles`]: a DDSketch (Masson, Rim, Lee, VLDB 2019) over latencies in milliseconds.

use std::collections::BTreeMap;

use super::{FORMAT_VERSION, KIND_QUANTILES, Reader, SketchError, put_varint};

/// How decode errors name this sketch.
const SKETCH: &str = "quantile";

/// The bucket of [`Quantiles::MAX_VALUE_MS`], the highest there is: ceil(ln(1e12) / ln(γ)).
const MAX_INDEX: u16 = 1382;

/// A relative-error quantile sketch of durations in milliseconds, taken as `f64`.
///
/// **Accuracy.** For any q in [0, 1], [`quantile`](Self::quantile) names the value of rank
/// max(1, ceil(q·n)) among the n values added (the q = 0.5 of 1..=100 is 50, q = 0 is the
/// minimum, q = 1 the maximum) and returns it within [`RELATIVE_ACCURACY`](Self::RELATIVE_ACCURACY)
/// (1%) of its true value, when that value lies in [1, [`MAX_VALUE_MS`](Self::MAX_VALUE_MS)].
/// Values below 1 ms (0, fractions, and also negatives and NaN) count in a zero bucket and
/// read back as exactly 0; values above `MAX_VALUE_MS` (and +∞) are recorded as `MAX_VALUE_MS`.
/// The guarantee survives any number of merges.
///
/// **How.** Value v ≥ 1 goes to bucket i = ceil(ln v / ln γ) with γ = (1 + α) / (1 − α), the
/// bucket of the range (γ^(i−1), γ^i]; a bucket reads back as 2γ^i / (γ + 1), which is within α
/// of every value in that range.
///
/// **Size.** [1, 1e12] ms spans buckets 0..=1382, so a sketch never holds more than 1 383
/// buckets (about 1 384 counts in memory) and no bucket ever has to be collapsed, which keeps
/// merges exact. An encoding takes about 2–3 bytes per non-empty bucket: 10 000 latencies
/// spread over 50 ms – 5 s fill at most 231 buckets and encode in under 700 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quantiles {
    /// How many values were below 1 ms; they read back as 0.
    zero_count: u64,
    /// Count per bucket index, only for buckets that hold something (no zero counts), so two
    /// sketches of the same values are equal field for field.
    buckets: BTreeMap<u16, u64>,
    /// `zero_count` plus every bucket's count, so `count()` needs no sum.
    count: u64,
}

impl Quantiles {
    /// α: every quantile is within this fraction (1%) of the true value of its rank.
    pub const RELATIVE_ACCURACY: f64 = 0.01;

    /// The largest duration told apart: 1e12 ms, about 31.7 years. Larger values (bugs, or
    /// +∞) are recorded as this one; in exchange the number of buckets is bounded.
    pub const MAX_VALUE_MS: f64 = 1e12;

    /// An empty sketch: [`count`](Self::count) 0, every quantile `None`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one duration in milliseconds (see the type's doc for values outside [1, 1e12]).
    pub fn add(&mut self, value_ms: f64) {
        self.add_n(value_ms, 1);
    }

    /// Adds `n` equal durations at once: the same sketch as `n` calls to [`add`](Self::add).
    /// Counts saturate at `u64::MAX` rather than wrap.
    pub fn add_n(&mut self, value_ms: f64, n: u64) {
        if n == 0 {
            return;
        }
        match bucket_index(value_ms) {
            None => self.zero_count = self.zero_count.saturating_add(n),
            Some(index) => {
                let count = self.buckets.entry(index).or_insert(0);
                *count = count.saturating_add(n);
            }
        }
        self.count = self.count.saturating_add(n);
    }

    /// Adds every value `other` holds. The result is the sketch that adding all those values
    /// here would have made, so merges may happen in any order and grouping.
    pub fn merge(&mut self, other: &Quantiles) {
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        for (&index, &n) in &other.buckets {
            let count = self.buckets.entry(index).or_insert(0);
            *count = count.saturating_add(n);
        }
        self.count = self.count.saturating_add(other.count);
    }

    /// How many values were added, including those merged in.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no value was ever added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The value of rank max(1, ceil(q·count)), within 1% (see the type's doc).
    ///
    /// `None` when the sketch is empty or q is outside [0, 1] (or NaN).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.is_empty() || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = rank(q, self.count);
        if rank <= self.zero_count {
            return Some(0.0);
        }
        let mut seen = self.zero_count;
        for (&index, &n) in &self.buckets {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return Some(bucket_value(index));
            }
        }
        // Not reached: `count` is the (saturating) sum of the counts walked above.
        self.buckets
            .last_key_value()
            .map(|(&index, _)| bucket_value(index))
    }

    /// The stored form: version, kind, zero count, bucket count, then per bucket (in index
    /// order) the index's distance from the previous one and the bucket's count, all varints.
    ///
    /// Indexes only grow, so their deltas are small and positive (no zigzag needed): a bucket
    /// costs 2–3 bytes, and the whole encoding at most 14 + 1 383 × 12 bytes, in practice a
    /// few hundred.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 3 * self.buckets.len());
        out.push(FORMAT_VERSION);
        out.push(KIND_QUANTILES);
        put_varint(&mut out, self.zero_count);
        put_varint(&mut out, self.buckets.len() as u64);
        let mut previous = 0;
        for (&index, &n) in &self.buckets {
            put_varint(&mut out, u64::from(index - previous));
            put_varint(&mut out, n);
            previous = index;
        }
        out
    }

    /// Reads what [`encode`](Self::encode) wrote, giving back an equal sketch.
    ///
    /// Refuses, with the offset of the bad field, anything `encode` cannot have written:
    /// truncated or trailing bytes, another version or kind, an index out of range or not
    /// increasing, an empty bucket, a total count beyond `u64::MAX`. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        let (mut reader, kind) = Reader::open(bytes, SKETCH)?;
        if kind != KIND_QUANTILES {
            return Err(SketchError::WrongKind {
                sketch: SKETCH,
                found: kind,
            });
        }
        let zero_count = reader.varint()?;
        let len_at = reader.position();
        let len = reader.varint()?;
        if len > u64::from(MAX_INDEX) + 1 {
            return Err(reader.invalid(len_at, "more buckets than there are indexes"));
        }
        let mut sketch = Quantiles {
            zero_count,
            buckets: BTreeMap::new(),
            count: zero_count,
        };
        let mut previous: Option<u64> = None;
        for _ in 0..len {
            let at = reader.position();
            let delta = reader.varint()?;
            let index = match previous {
                None => delta,
                Some(_) if delta == 0 => {
                    return Err(reader.invalid(at, "bucket indexes not increasing"));
                }
                Some(previous) => previous.saturating_add(delta),
            };
            let index = u16::try_from(index)
                .ok()
                .filter(|&index| index <= MAX_INDEX)
                .ok_or_else(|| reader.invalid(at, "bucket index out of range"))?;
            let at = reader.position();
            let n = reader.varint()?;
            if n == 0 {
                return Err(reader.invalid(at, "empty bucket"));
            }
            sketch.count = sketch
                .count
                .checked_add(n)
                .ok_or_else(|| reader.invalid(at, "total count beyond u64"))?;
            sketch.buckets.insert(index, n);
            previous = Some(u64::from(index));
        }
        reader.finish()?;
        Ok(sketch)
    }
}

/// ln γ, the width of a bucket on a log scale (≈ 0.0200007 for α = 1%).
fn ln_gamma() -> f64 {
    let alpha = Quantiles::RELATIVE_ACCURACY;
    ((1.0 + alpha) / (1.0 - alpha)).ln()
}

/// The bucket of a value, `None` for the zero bucket (below 1 ms, negative or NaN).
fn bucket_index(value_ms: f64) -> Option<u16> {
    if value_ms.is_nan() || value_ms < 1.0 {
        return None;
    }
    let value = value_ms.min(Quantiles::MAX_VALUE_MS);
    // In 0..=MAX_INDEX: ln(1) = 0 and ln(MAX_VALUE_MS) / ln γ ≈ 1381.5.
    let index = (value.ln() / ln_gamma()).ceil() as u16;
    Some(index.min(MAX_INDEX))
}

/// What bucket `index` reads back as: 2γ^i / (γ + 1), within α of all of (γ^(i−1), γ^i].
fn bucket_value(index: u16) -> f64 {
    let alpha = Quantiles::RELATIVE_ACCURACY;
    let gamma = (1.0 + alpha) / (1.0 - alpha);
    (f64::from(index) * ln_gamma()).exp() * 2.0 / (gamma + 1.0)
}

/// The 1-based rank `quantile(q)` names among `n` values: ceil(q·n), at least 1.
fn rank(q: f64, n: u64) -> u64 {
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Rng;
    use super::*;

    const QS: [f64; 7] = [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0];

    fn sketch_of(values: &[f64]) -> Quantiles {
        let mut sketch = Quantiles::new();
        for &v in values {
            sketch.add(v);
        }
        sketch
    }

    /// The exact answer `quantile(q)` estimates: the value of the same rank, sorted.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[rank(q, sorted.len() as u64) as usize - 1]
    }

    /// The largest relative error over `QS` and every 0.1%, after checking that values below
    /// 1 ms read back as 0.
    fn worst_error(values: &[f64]) -> f64 {
        let sketch = sketch_of(values);
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut worst: f64 = 0.0;
        let permilles = (0..=1_000u32).map(|p| f64::from(p) / 1_000.0);
        for q in QS.into_iter().chain(permilles) {
            let (estimate, truth) = (sketch.quantile(q).unwrap(), exact(&sorted, q));
            if truth < 1.0 {
                assert_eq!(estimate, 0.0, "q {q}: {truth} is below 1 ms");
            } else {
                worst = worst.max((estimate - truth).abs() / truth);
            }
        }
        worst
    }

    /// Roughly log-normal latencies around 200 ms from a fixed seed: the exponential of a sum
    /// of 12 uniforms (Irwin–Hall, close to a normal). One in 200 is below 1 ms instead, so
    /// the zero bucket is in play (q = 0 reads from it, q = 0.01 just past it).
    fn log_normal(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                if rng.below(200) == 0 {
                    return rng.unit();
                }
                let z: f64 = (0..12).map(|_| rng.unit()).sum::<f64>() - 6.0;
                (200f64.ln() + 1.2 * z).exp()
            })
            .collect()
    }

    /// Within α, allowing for the last bits of floating-point rounding.
    const TOLERANCE: f64 = Quantiles::RELATIVE_ACCURACY * (1.0 + 1e-9);

    #[test]
    fn uniform_quantiles_are_within_one_percent() {
        let values: Vec<f64> = (1..=10_000u32).map(f64::from).collect();
        let worst = worst_error(&values);
        assert!(worst <= TOLERANCE, "worst relative error {worst}");
    }

    #[test]
    fn log_normal_quantiles_are_within_one_percent() {
        let values = log_normal(50_000, 7);
        assert!(
            values.iter().any(|&v| v < 1.0),
            "the zero bucket is exercised"
        );
        let worst = worst_error(&values);
        assert!(worst <= TOLERANCE, "worst relative error {worst}");
    }

    #[test]
    fn a_constant_reads_back_within_one_percent() {
        for constant in [1.0, 1.5, 250.0, 86_400_000.0, Quantiles::MAX_VALUE_MS] {
            let worst = worst_error(&[constant; 1_000]);
            assert!(
                worst <= TOLERANCE,
                "{constant}: worst relative error {worst}"
            );
        }
    }

    #[test]
    fn every_integer_millisecond_up_to_100_000_reads_back_within_one_percent() {
        for v in 1..=100_000u32 {
            let index = bucket_index(f64::from(v)).unwrap();
            let error = (bucket_value(index) - f64::from(v)).abs() / f64::from(v);
            assert!(error <= TOLERANCE, "{v}: {error}");
        }
    }

    #[test]
    fn the_median_of_1_to_100_is_50() {
        let values: Vec<f64> = (1..=100u32).map(f64::from).collect();
        let median = sketch_of(&values).quantile(0.5).unwrap();
        assert!((median - 50.0).abs() <= 0.5, "{median}");
    }

    #[test]
    fn empty_and_out_of_range_questions_have_no_answer() {
        let empty = Quantiles::new();
        assert!(empty.is_empty());
        assert_eq!(empty.quantile(0.5), None);
        let one = sketch_of(&[10.0]);
        assert!(!one.is_empty());
        for q in [-0.1, 1.1, f64::NAN] {
            assert_eq!(one.quantile(q), None, "{q}");
        }
    }

    #[test]
    fn values_below_1_ms_read_as_zero_and_huge_ones_as_the_maximum() {
        let sketch = sketch_of(&[0.0, 0.5, -3.0, f64::NAN, 10.0, 1e15, f64::INFINITY]);
        assert_eq!(sketch.count(), 7);
        // Ranks 1..=4 are the zero bucket (0.5 names rank 4), rank 5 is 10 (0.6 names it).
        assert_eq!(sketch.quantile(0.0), Some(0.0));
        assert_eq!(sketch.quantile(0.5), Some(0.0));
        let ten = sketch.quantile(0.6).unwrap();
        assert!((ten - 10.0).abs() <= 0.1, "{ten}");
        let top = sketch.quantile(1.0).unwrap();
        let error = (top - Quantiles::MAX_VALUE_MS).abs() / Quantiles::MAX_VALUE_MS;
        assert!(error <= TOLERANCE, "{top}");
    }

    #[test]
    fn the_bucket_range_is_what_max_index_says() {
        assert_eq!(bucket_index(1.0), Some(0));
        assert_eq!(bucket_index(Quantiles::MAX_VALUE_MS), Some(MAX_INDEX));
        assert!(bucket_index(Quantiles::MAX_VALUE_MS * (1.0 - 1e-12)).unwrap() <= MAX_INDEX);
        let raw = (Quantiles::MAX_VALUE_MS.ln() / ln_gamma()).ceil();
        assert_eq!(
            raw,
            f64::from(MAX_INDEX),
            "the clamp in bucket_index never bites"
        );
    }

    #[test]
    fn add_n_is_n_adds() {
        let mut many = Quantiles::new();
        many.add_n(42.0, 5);
        many.add_n(0.0, 2);
        many.add_n(7.0, 0);
        assert_eq!(many, sketch_of(&[42.0, 42.0, 0.0, 42.0, 42.0, 0.0, 42.0]));
    }

    #[test]
    fn merging_two_sketches_is_the_sketch_of_the_union() {
        let (a, b) = (log_normal(3_000, 1), log_normal(5_000, 2));
        let mut merged = sketch_of(&a);
        merged.merge(&sketch_of(&b));
        let union = sketch_of(&[a, b].concat());
        assert_eq!(merged, union);
        for q in QS {
            assert_eq!(merged.quantile(q), union.quantile(q));
        }
        let mut with_empty = union.clone();
        with_empty.merge(&Quantiles::new());
        assert_eq!(with_empty, union);
    }

    #[test]
    fn twenty_four_hours_merge_to_the_day_in_any_order() {
        let values = log_normal(24_000, 3);
        let day = sketch_of(&values);
        let hours: Vec<Quantiles> = values.chunks(1_000).map(sketch_of).collect();

        let fold = |order: &[usize]| {
            let mut merged = Quantiles::new();
            for &h in order {
                merged.merge(&hours[h]);
            }
            merged
        };
        let forward: Vec<usize> = (0..24).collect();
        let backward: Vec<usize> = (0..24).rev().collect();
        let mut shuffled = forward.clone();
        let mut rng = Rng::new(4);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i + 1));
        }
        // Pairwise, as a tree: ((h0 h1) (h2 h3)) ...
        let mut level = hours.clone();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| {
                    let mut merged = pair[0].clone();
                    if let Some(right) = pair.get(1) {
                        merged.merge(right);
                    }
                    merged
                })
                .collect();
        }

        for merged in [
            fold(&forward),
            fold(&backward),
            fold(&shuffled),
            level.remove(0),
        ] {
            assert_eq!(merged, day);
            for q in QS {
                assert_eq!(merged.quantile(q), day.quantile(q));
            }
        }
    }

    #[test]
    fn encodings_round_trip_exactly() {
        let sketches = [
            Quantiles::new(),
            sketch_of(&[0.0, 0.25]),
            sketch_of(&[1.0, Quantiles::MAX_VALUE_MS]),
            sketch_of(&(1..=10_000u32).map(f64::from).collect::<Vec<_>>()),
            sketch_of(&log_normal(20_000, 5)),
        ];
        for sketch in sketches {
            let decoded = Quantiles::decode(&sketch.encode()).unwrap();
            assert_eq!(decoded, sketch);
            for q in QS {
                assert_eq!(decoded.quantile(q), sketch.quantile(q));
            }
        }
    }

    #[test]
    fn ten_thousand_latencies_encode_in_under_700_bytes() {
        let mut rng = Rng::new(6);
        let sketch = sketch_of(
            &(0..10_000)
                .map(|_| 50.0 + 4_950.0 * rng.unit())
                .collect::<Vec<_>>(),
        );
        let (low, high) = (bucket_index(50.0).unwrap(), bucket_index(5_000.0).unwrap());
        assert_eq!((low, high), (196, 426));
        let buckets = sketch.buckets.len();
        assert!(buckets <= 231);
        // Header: 2 bytes, zero count 1, bucket count 2. Index deltas: the first ≤ 2 bytes,
        // the others 1 byte each, but one (they sum to ≤ 230) may need 2. Counts ≤ 10 000 <
        // 16 384: ≤ 2 bytes each. So at most 5 + 2 + buckets + 2 × buckets ≤ 700.
        let bound = 7 + 3 * buckets;
        let size = sketch.encode().len();
        println!("10 000 latencies in 50 ms..5 s: {buckets} buckets, {size} bytes");
        assert!(
            size <= bound && bound <= 700,
            "{size} bytes (bound {bound})"
        );
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let bytes = sketch_of(&log_normal(2_000, 8)).encode();
        for len in 0..bytes.len() {
            assert!(
                Quantiles::decode(&bytes[..len]).is_err(),
                "{len} bytes decoded"
            );
        }
        assert_eq!(
            Quantiles::decode(&bytes[..bytes.len() - 1]),
            Err(SketchError::Truncated {
                sketch: "quantile",
                at: bytes.len() - 1
            })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Quantiles::decode(&longer),
            Err(SketchError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn bad_fields_are_named() {
        let v = FORMAT_VERSION;
        let cases: [(&[u8], &str); 8] = [
            (&[], "quantile sketch: empty input"),
            (&[9, 1, 0, 0], "unknown sketch version 9"),
            (&[v, 3, 0, 0], "quantile sketch: unexpected kind byte 3"),
            (&[v, 1, 0, 1, 0x80], "quantile sketch: truncated at byte 5"),
            (
                &[v, 1, 0, 1, 0xe7, 0x0a, 1],
                "quantile sketch: bucket index out of range at byte 4",
            ),
            (
                &[v, 1, 0, 2, 5, 1, 0, 1],
                "quantile sketch: bucket indexes not increasing at byte 6",
            ),
            (
                &[v, 1, 0, 1, 5, 0],
                "quantile sketch: empty bucket at byte 5",
            ),
            (
                &[v, 1, 0, 0xe8, 0x0a],
                "quantile sketch: more buckets than there are indexes at byte 3",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(Quantiles::decode(bytes).unwrap_err().to_string(), message);
        }
        let mut overflow = vec![v, 1];
        put_varint(&mut overflow, u64::MAX);
        overflow.extend([1, 0, 1]);
        assert_eq!(
            Quantiles::decode(&overflow).unwrap_err().to_string(),
            "quantile sketch: total count beyond u64 at byte 14"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng::new(9);
        let valid = sketch_of(&log_normal(500, 10)).encode();
        let mut inputs: Vec<Vec<u8>> = (0..20_000)
            .map(|i| {
                let len = rng.below(64);
                let mut bytes = rng.bytes(len);
                if i % 2 == 0 && bytes.len() >= 2 {
                    bytes[0] = FORMAT_VERSION;
                    bytes[1] = KIND_QUANTILES;
                }
                bytes
            })
            .collect();
        for at in 0..valid.len() {
            for flip in [0x01, 0x40, 0x80, 0xff] {
                let mut bytes = valid.clone();
                bytes[at] ^= flip;
                inputs.push(bytes);
            }
        }
        for bytes in inputs {
            if let Ok(sketch) = Quantiles::decode(&bytes) {
                // Whatever decodes is a consistent sketch.
                assert_eq!(Quantiles::decode(&sketch.encode()), Ok(sketch.clone()));
                for q in QS {
                    assert_eq!(sketch.quantile(q).is_some(), !sketch.is_empty());
                }
            }
        }
    }
}
