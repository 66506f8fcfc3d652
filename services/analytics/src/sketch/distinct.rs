//! [`Distinct`]: an exact set of hashes while small, a HyperLogLog (Flajolet et al., 2007)
//! after that.

use super::{
    FORMAT_VERSION, KIND_DISTINCT_DENSE, KIND_DISTINCT_SPARSE, Reader, SketchError, put_varint,
};

/// How decode errors name this sketch.
const SKETCH: &str = "distinct";

/// m = 2^p registers.
const REGISTERS: usize = 1 << Distinct::PRECISION;

/// The highest register value: the 64 − p hash bits left after the register index, all zero,
/// give rank 64 − p + 1.
const MAX_RANK: u8 = 64 - Distinct::PRECISION as u8 + 1;

/// In a dense encoding, a byte from here up is a run of zero registers: 64 is a run of 2,
/// 255 a run of 193. Bytes up to `MAX_RANK` are one register each; those between are invalid.
const RUN_TOKEN: u8 = 64;

/// The longest run one token holds.
const MAX_RUN: usize = (u8::MAX - RUN_TOKEN) as usize + 2;

/// A distinct-count sketch of 64-bit hashes (the caller hashes user ids with a keyed hash;
/// the hashes must look uniformly random for the estimate to hold).
///
/// **Accuracy.** While at most [`SPARSE_LIMIT`](Self::SPARSE_LIMIT) (512) distinct hashes were
/// seen, the sketch keeps them and [`estimate`](Self::estimate) is exact. Past that it becomes
/// a HyperLogLog with p = 12 (4 096 registers): standard error 1.04 / √4096 ≈ 1.6%, so
/// about 95% of estimates fall within 3.3% of the truth; linear counting takes over for small
/// cardinalities, where the raw estimator is biased.
///
/// **Merging.** [`merge`](Self::merge) gives exactly the sketch of the union: the same set
/// while the union has at most 512 members, otherwise the same registers as inserting every
/// hash into one sketch. Order and grouping of merges do not matter.
///
/// **Size.** At most 4 KiB in memory either way (512 × 8 bytes, or 4 096 one-byte registers).
/// Encoded: sparse about 8 bytes a hash (random 64-bit hashes differ by ~2^55, a varint of
/// 8 bytes), dense at most 4 098 bytes, and much less while most registers are still zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct {
    repr: Repr,
}

/// The two modes; which one a sketch is in depends only on the set of hashes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    /// Every hash seen, sorted, without duplicates; at most `SPARSE_LIMIT`.
    Sparse(Vec<u64>),
    /// HyperLogLog registers: the highest rank seen for each register index.
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for Distinct {
    fn default() -> Self {
        Self::new()
    }
}

impl Distinct {
    /// Up to this many distinct hashes the sketch stays exact. 512 hashes take about as many
    /// bytes (4 KiB) as the dense registers would, so exactness costs no extra space.
    pub const SPARSE_LIMIT: usize = 512;

    /// p: the dense sketch has 2^p = 4 096 registers, a standard error of about 1.6%.
    pub const PRECISION: u32 = 12;

    /// An empty sketch: estimate 0, exact.
    pub fn new() -> Self {
        Distinct {
            repr: Repr::Sparse(Vec::new()),
        }
    }

    /// Counts `hash`; inserting the same hash again changes nothing.
    pub fn insert(&mut self, hash: u64) {
        match &mut self.repr {
            Repr::Dense(registers) => observe(registers, hash),
            Repr::Sparse(hashes) => {
                if let Err(at) = hashes.binary_search(&hash) {
                    hashes.insert(at, hash);
                    if hashes.len() > Self::SPARSE_LIMIT {
                        self.repr = Repr::Dense(registers_of(hashes));
                    }
                }
            }
        }
    }

    /// Makes this the sketch of the union of both sketches' hashes (see the type's doc).
    pub fn merge(&mut self, other: &Distinct) {
        match (&mut self.repr, &other.repr) {
            (Repr::Dense(mine), Repr::Dense(theirs)) => {
                for (mine, theirs) in mine.iter_mut().zip(theirs.iter()) {
                    *mine = (*mine).max(*theirs);
                }
            }
            (Repr::Dense(mine), Repr::Sparse(theirs)) => {
                for &hash in theirs {
                    observe(mine, hash);
                }
            }
            (Repr::Sparse(mine), Repr::Dense(theirs)) => {
                let mut registers = theirs.clone();
                for &hash in mine.iter() {
                    observe(&mut registers, hash);
                }
                self.repr = Repr::Dense(registers);
            }
            (Repr::Sparse(mine), Repr::Sparse(theirs)) => {
                mine.extend_from_slice(theirs);
                mine.sort_unstable();
                mine.dedup();
                if mine.len() > Self::SPARSE_LIMIT {
                    self.repr = Repr::Dense(registers_of(mine));
                }
            }
        }
    }

    /// How many distinct hashes were inserted: exact while [`is_exact`](Self::is_exact),
    /// otherwise the HyperLogLog estimate (standard error ≈ 1.6%).
    pub fn estimate(&self) -> u64 {
        match &self.repr {
            Repr::Sparse(hashes) => hashes.len() as u64,
            Repr::Dense(registers) => estimate(registers),
        }
    }

    /// Whether [`estimate`](Self::estimate) is an exact count (at most 512 distinct hashes).
    pub fn is_exact(&self) -> bool {
        matches!(self.repr, Repr::Sparse(_))
    }

    /// The stored form: version, kind, then
    /// - sparse (kind 2): the number of hashes, the first hash, then each hash's distance from
    ///   the one before, all varints;
    /// - dense (kind 3): the 4 096 registers in order, one byte each, except that a run of 2 to
    ///   193 zero registers takes one byte (64 + length − 2).
    pub fn encode(&self) -> Vec<u8> {
        match &self.repr {
            Repr::Sparse(hashes) => {
                let mut out = Vec::with_capacity(12 + 9 * hashes.len());
                out.extend([FORMAT_VERSION, KIND_DISTINCT_SPARSE]);
                put_varint(&mut out, hashes.len() as u64);
                let mut previous = 0;
                for &hash in hashes {
                    put_varint(&mut out, hash - previous);
                    previous = hash;
                }
                out
            }
            Repr::Dense(registers) => {
                let mut out = Vec::with_capacity(2 + REGISTERS);
                out.extend([FORMAT_VERSION, KIND_DISTINCT_DENSE]);
                let mut at = 0;
                while at < REGISTERS {
                    let zeros = registers[at..].iter().take_while(|&&r| r == 0).count();
                    let run = zeros.min(MAX_RUN);
                    match run {
                        0 => out.push(registers[at]),
                        1 => out.push(0),
                        _ => out.push(RUN_TOKEN + (run - 2) as u8),
                    }
                    at += run.max(1);
                }
                out
            }
        }
    }

    /// Reads what [`encode`](Self::encode) wrote, giving back an equal sketch.
    ///
    /// Refuses, with the offset of the bad field, anything `encode` cannot have written:
    /// truncated or trailing bytes, another version or kind, more than 512 or unsorted
    /// hashes, a register above 53, not exactly 4 096 registers. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        let (mut reader, kind) = Reader::open(bytes, SKETCH)?;
        let repr = match kind {
            KIND_DISTINCT_SPARSE => Repr::Sparse(decode_sparse(&mut reader)?),
            KIND_DISTINCT_DENSE => Repr::Dense(decode_dense(&mut reader)?),
            found => {
                return Err(SketchError::WrongKind {
                    sketch: SKETCH,
                    found,
                });
            }
        };
        reader.finish()?;
        Ok(Distinct { repr })
    }
}

/// Records `hash` in the registers: its top p bits pick the register, which keeps the highest
/// rank (position of the first 1 bit, from 1) of the remaining bits.
fn observe(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> (64 - Distinct::PRECISION)) as usize;
    let rest = hash << Distinct::PRECISION;
    let rank = (rest.leading_zeros() + 1).min(u32::from(MAX_RANK)) as u8;
    registers[index] = registers[index].max(rank);
}

/// The registers of a set of hashes, for a sketch turning dense.
fn registers_of(hashes: &[u64]) -> Box<[u8; REGISTERS]> {
    let mut registers = Box::new([0; REGISTERS]);
    for &hash in hashes {
        observe(&mut registers, hash);
    }
    registers
}

/// The HyperLogLog estimate: α_m·m² / Σ 2^(−register), or linear counting m·ln(m / zeros)
/// when that is at most 2.5·m and some register is still zero. No large-range correction:
/// with 64-bit hashes collisions stay negligible far beyond any user count.
fn estimate(registers: &[u8; REGISTERS]) -> u64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = registers.iter().map(|&r| (-f64::from(r)).exp2()).sum();
    let zeros = registers.iter().filter(|&&r| r == 0).count();
    let raw = alpha * m * m / sum;
    let estimate = if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    estimate.round() as u64
}

fn decode_sparse(reader: &mut Reader<'_>) -> Result<Vec<u64>, SketchError> {
    let len_at = reader.position();
    let len = reader.varint()?;
    if len > Distinct::SPARSE_LIMIT as u64 {
        return Err(reader.invalid(len_at, "more hashes than a sparse sketch holds"));
    }
    let mut hashes: Vec<u64> = Vec::with_capacity(len as usize);
    for _ in 0..len {
        let at = reader.position();
        let delta = reader.varint()?;
        let hash = match hashes.last() {
            None => delta,
            Some(_) if delta == 0 => return Err(reader.invalid(at, "hashes not increasing")),
            Some(&previous) => previous
                .checked_add(delta)
                .ok_or_else(|| reader.invalid(at, "hash beyond u64"))?,
        };
        hashes.push(hash);
    }
    Ok(hashes)
}

fn decode_dense(reader: &mut Reader<'_>) -> Result<Box<[u8; REGISTERS]>, SketchError> {
    let mut registers = Box::new([0; REGISTERS]);
    let mut filled = 0;
    while filled < REGISTERS {
        let at = reader.position();
        match reader.byte()? {
            rank @ 0..=MAX_RANK => {
                registers[filled] = rank;
                filled += 1;
            }
            token if token >= RUN_TOKEN => {
                let run = usize::from(token - RUN_TOKEN) + 2;
                if filled + run > REGISTERS {
                    return Err(reader.invalid(at, "zero run past the last register"));
                }
                filled += run;
            }
            _ => return Err(reader.invalid(at, "register above 53")),
        }
    }
    Ok(registers)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Rng, splitmix64};
    use super::*;

    fn sketch_of(range: std::ops::Range<u64>) -> Distinct {
        let mut sketch = Distinct::new();
        for i in range {
            sketch.insert(splitmix64(i));
        }
        sketch
    }

    fn relative_error(sketch: &Distinct, truth: u64) -> f64 {
        (sketch.estimate() as f64 - truth as f64).abs() / truth as f64
    }

    #[test]
    fn counts_are_exact_up_to_512_with_duplicates() {
        let mut sketch = Distinct::new();
        assert_eq!(sketch.estimate(), 0);
        for i in 0..512u64 {
            sketch.insert(splitmix64(i));
            sketch.insert(splitmix64(i));
            sketch.insert(splitmix64(i / 2));
            assert_eq!(sketch.estimate(), i + 1);
            assert!(sketch.is_exact());
        }
        sketch.insert(splitmix64(511));
        assert!(sketch.is_exact(), "a duplicate does not tip it over");
        sketch.insert(splitmix64(512));
        assert!(!sketch.is_exact(), "the 513th distinct hash makes it dense");
        assert!(relative_error(&sketch, 513) < 0.02, "{}", sketch.estimate());
    }

    #[test]
    fn large_counts_are_within_5_percent() {
        for n in [1_000, 10_000, 20_000, 100_000, 1_000_000] {
            let error = relative_error(&sketch_of(0..n), n);
            println!("{n} distinct: relative error {error:.4}");
            assert!(error < 0.05, "{n}: {error}");
        }
    }

    #[test]
    fn merging_is_the_sketch_of_the_union() {
        let cases = [
            (0..300, 200..500),           // sparse + sparse, union 500: stays sparse
            (0..300, 100..600),           // sparse + sparse, union 600: dense
            (0..400, 0..60_000),          // sparse + dense
            (0..60_000, 50_000..50_400),  // dense + sparse
            (0..60_000, 40_000..100_000), // dense + dense
        ];
        for (a, b) in cases {
            let union = sketch_of(a.start.min(b.start)..a.end.max(b.end));
            let mut merged = sketch_of(a.clone());
            merged.merge(&sketch_of(b.clone()));
            assert_eq!(merged, union, "{a:?} + {b:?}");
            let mut other_way = sketch_of(b.clone());
            other_way.merge(&sketch_of(a.clone()));
            assert_eq!(other_way, union, "{b:?} + {a:?}");
        }
        assert!(sketch_of(0..500).is_exact());
        let mut with_empty = sketch_of(0..10_000);
        with_empty.merge(&Distinct::new());
        assert_eq!(with_empty, sketch_of(0..10_000));
    }

    #[test]
    fn hours_merge_to_the_day_in_any_order() {
        // 24 hours of 400 users each, half of them back from the hour before.
        let hours: Vec<Distinct> = (0..24u64)
            .map(|h| sketch_of(h * 200..h * 200 + 400))
            .collect();
        let day = sketch_of(0..23 * 200 + 400);
        let mut forward = Distinct::new();
        for hour in &hours {
            forward.merge(hour);
        }
        let mut backward = Distinct::new();
        for hour in hours.iter().rev() {
            backward.merge(hour);
        }
        assert_eq!(forward, day);
        assert_eq!(backward, day);
    }

    #[test]
    fn encodings_round_trip_in_both_modes() {
        for n in [0, 1, 2, 512, 513, 2_000, 100_000] {
            let sketch = sketch_of(0..n);
            let bytes = sketch.encode();
            println!(
                "{n} distinct: {} bytes, exact {}",
                bytes.len(),
                sketch.is_exact()
            );
            let decoded = Distinct::decode(&bytes).unwrap();
            assert_eq!(decoded, sketch);
            assert_eq!(decoded.estimate(), sketch.estimate());
            // Sparse: a varint of at most 10 bytes per hash and for the length; dense: one
            // byte per register at most.
            let bound = if sketch.is_exact() {
                12 + 10 * n as usize
            } else {
                2 + REGISTERS
            };
            assert!(bytes.len() <= bound, "{n}: {} bytes", bytes.len());
        }
        // Registers at the extremes: all zero, all at the highest rank.
        let zero = Distinct {
            repr: Repr::Dense(Box::new([0; REGISTERS])),
        };
        let full = Distinct {
            repr: Repr::Dense(Box::new([MAX_RANK; REGISTERS])),
        };
        assert_eq!(zero.encode().len(), 2 + REGISTERS.div_ceil(MAX_RUN));
        assert_eq!(full.encode().len(), 2 + REGISTERS);
        for sketch in [zero, full] {
            assert_eq!(Distinct::decode(&sketch.encode()), Ok(sketch));
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for sketch in [sketch_of(0..100), sketch_of(0..3_000)] {
            let bytes = sketch.encode();
            for len in 0..bytes.len() {
                assert!(
                    Distinct::decode(&bytes[..len]).is_err(),
                    "{len} bytes decoded"
                );
            }
            let mut longer = bytes.clone();
            longer.push(1);
            assert!(matches!(
                Distinct::decode(&longer),
                Err(SketchError::TrailingBytes { extra: 1, .. })
            ));
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let v = FORMAT_VERSION;
        let mut too_many = vec![v, 2];
        put_varint(&mut too_many, 513);
        let mut past_u64 = vec![v, 2, 2];
        put_varint(&mut past_u64, u64::MAX);
        past_u64.push(1);
        let mut high_register = vec![v, 3];
        high_register.push(54);
        let mut long_run = vec![v, 3];
        long_run.extend([255; 21]); // 21 × 193 = 4 053 zeros, 43 to go
        long_run.push(RUN_TOKEN + 42); // a run of 44
        let cases: [(&[u8], &str); 8] = [
            (&[], "distinct sketch: empty input"),
            (&[7, 2, 0], "unknown sketch version 7"),
            (&[v, 1, 0, 0], "distinct sketch: unexpected kind byte 1"),
            (
                &[v, 2, 2, 9, 0],
                "distinct sketch: hashes not increasing at byte 4",
            ),
            (
                &too_many,
                "distinct sketch: more hashes than a sparse sketch holds at byte 2",
            ),
            (&past_u64, "distinct sketch: hash beyond u64 at byte 13"),
            (
                &high_register,
                "distinct sketch: register above 53 at byte 2",
            ),
            (
                &long_run,
                "distinct sketch: zero run past the last register at byte 23",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(Distinct::decode(bytes).unwrap_err().to_string(), message);
        }
        assert_eq!(
            Distinct::decode(&[v, 3, 5]).unwrap_err().to_string(),
            "distinct sketch: truncated at byte 3"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng::new(11);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for i in 0..20_000 {
            let len = rng.below(if i % 10 == 0 { 5_000 } else { 80 });
            let mut bytes = rng.bytes(len);
            if bytes.len() >= 2 {
                bytes[0] = FORMAT_VERSION;
                bytes[1] = [KIND_DISTINCT_SPARSE, KIND_DISTINCT_DENSE][i % 2];
            }
            inputs.push(bytes);
        }
        for valid in [sketch_of(0..50).encode(), sketch_of(0..1_000).encode()] {
            for at in 0..valid.len() {
                for flip in [0x01, 0x40, 0x80, 0xff] {
                    let mut bytes = valid.clone();
                    bytes[at] ^= flip;
                    inputs.push(bytes);
                }
            }
        }
        for bytes in inputs {
            if let Ok(sketch) = Distinct::decode(&bytes) {
                // Whatever decodes is a consistent sketch.
                assert_eq!(Distinct::decode(&sketch.encode()), Ok(sketch.clone()));
                let _ = sketch.estimate();
            }
        }
    }
}
