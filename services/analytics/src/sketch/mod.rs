//! Mergeable sketches kept in rollup rows: [`Quantiles`] for latency percentiles and
//! [`Distinct`] for unique users.
//!
//! A rollup row stores each sketch as a BLOB/bytea. A day is answered by merging its 24 hour
//! rows and a 30-day overview by merging 30 day rows, never by scanning raw events, so both
//! sketches promise two things:
//! - merging is exact: the merge of the sketches of some sets of values is the sketch of their
//!   union, equal field for field, whatever the order or grouping of the merges;
//! - size is bounded whatever the traffic (about 4 KiB for either sketch, in memory and stored).
//!
//! Layout: `quantiles.rs` and `distinct.rs` hold one sketch each; this file holds the error
//! type and the byte-level reader and writer both binary formats share.
//!
//! # Binary formats
//! Every encoding begins with two bytes: [`FORMAT_VERSION`], then a kind byte (1 quantiles,
//! 2 sparse distinct, 3 dense distinct). A blob from a newer writer or from the wrong column is
//! then refused with an error that says so instead of being misread. Integers after the
//! header are LEB128 varints (7 bits a byte, low bits first, high bit set on all but the last
//! byte), which keep small counts and index deltas to one or two bytes.

mod distinct;
mod quantiles;

pub use distinct::Distinct;
pub use quantiles::Quantiles;

/// The format version every encoding starts with; decoding refuses any other.
///
/// Bump it (and keep a reader for the old value) when a format changes: rows written years
/// ago are still merged into overviews.
pub const FORMAT_VERSION: u8 = 1;

/// Kind byte of a [`Quantiles`] encoding.
const KIND_QUANTILES: u8 = 1;
/// Kind byte of a [`Distinct`] encoding still holding its exact set of hashes.
const KIND_DISTINCT_SPARSE: u8 = 2;
/// Kind byte of a [`Distinct`] encoding holding HyperLogLog registers.
const KIND_DISTINCT_DENSE: u8 = 3;

/// Why stored bytes could not be decoded into a sketch.
///
/// Messages name the sketch and the byte offset (from 0) where decoding stopped, so a corrupt
/// row can be found and inspected. Decoding never panics, whatever the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    /// There were no bytes at all.
    #[error("{sketch} sketch: empty input")]
    Empty {
        /// Which sketch was being decoded: "quantile" or "distinct".
        sketch: &'static str,
    },
    /// The bytes ended inside a field: byte `at` was needed but the input has `at` bytes.
    #[error("{sketch} sketch: truncated at byte {at}")]
    Truncated {
        /// Which sketch was being decoded.
        sketch: &'static str,
        /// The offset of the first missing byte (the input's length).
        at: usize,
    },
    /// The first byte is not [`FORMAT_VERSION`]: a newer writer, or not a sketch at all.
    #[error("unknown sketch version {0}")]
    UnknownVersion(u8),
    /// The kind byte (byte 1) belongs to another sketch, or to none.
    #[error("{sketch} sketch: unexpected kind byte {found}")]
    WrongKind {
        /// Which sketch was being decoded.
        sketch: &'static str,
        /// The kind byte found.
        found: u8,
    },
    /// A varint starting at byte `at` does not fit in 64 bits.
    #[error("{sketch} sketch: varint longer than 64 bits at byte {at}")]
    VarintOverflow {
        /// Which sketch was being decoded.
        sketch: &'static str,
        /// The offset of the varint's first byte.
        at: usize,
    },
    /// A well-formed field holds a value the sketch cannot have (`reason` says which).
    #[error("{sketch} sketch: {reason} at byte {at}")]
    Invalid {
        /// Which sketch was being decoded.
        sketch: &'static str,
        /// The offset of the field's first byte.
        at: usize,
        /// What is wrong, e.g. "bucket index out of range".
        reason: &'static str,
    },
    /// The sketch ended at byte `at` but the input goes on for `extra` more bytes.
    #[error("{sketch} sketch: {extra} unexpected trailing bytes from byte {at}")]
    TrailingBytes {
        /// Which sketch was being decoded.
        sketch: &'static str,
        /// The offset where the sketch ended.
        at: usize,
        /// How many bytes follow it.
        extra: usize,
    },
}

/// Appends `value` as a LEB128 varint (1 byte below 128, 2 below 16 384, at most 10).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an encoding front to back; every read checks bounds and reports where it failed.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    sketch: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks the version byte and returns the reader with the kind byte.
    fn open(bytes: &'a [u8], sketch: &'static str) -> Result<(Self, u8), SketchError> {
        let mut reader = Reader {
            bytes,
            pos: 0,
            sketch,
        };
        if bytes.is_empty() {
            return Err(SketchError::Empty { sketch });
        }
        let version = reader.byte()?;
        if version != FORMAT_VERSION {
            return Err(SketchError::UnknownVersion(version));
        }
        let kind = reader.byte()?;
        Ok((reader, kind))
    }

    /// The offset of the next byte to read.
    fn position(&self) -> usize {
        self.pos
    }

    fn byte(&mut self) -> Result<u8, SketchError> {
        let byte = self
            .bytes
            .get(self.pos)
            .copied()
            .ok_or(SketchError::Truncated {
                sketch: self.sketch,
                at: self.bytes.len(),
            })?;
        self.pos += 1;
        Ok(byte)
    }

    /// Reads a LEB128 varint, refusing one longer than 64 bits.
    fn varint(&mut self) -> Result<u64, SketchError> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let low = u64::from(byte & 0x7f);
            // The tenth byte carries only bit 63.
            if shift == 63 && low > 1 {
                break;
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(SketchError::VarintOverflow {
            sketch: self.sketch,
            at: start,
        })
    }

    /// An [`SketchError::Invalid`] for the field that started at `at`.
    fn invalid(&self, at: usize, reason: &'static str) -> SketchError {
        SketchError::Invalid {
            sketch: self.sketch,
            at,
            reason,
        }
    }

    /// The end: any byte left over means the input is not what the header said.
    fn finish(self) -> Result<(), SketchError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(SketchError::TrailingBytes {
                sketch: self.sketch,
                at: self.pos,
                extra: self.bytes.len() - self.pos,
            })
        }
    }
}

/// Seeded randomness for the tests of both sketches.
#[cfg(test)]
mod test_support {
    /// splitmix64's finaliser: a strong 64-bit mix. Used as a PRNG step and, on 0..n, as a
    /// stand-in for the keyed hash of user ids.
    pub fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A fixed-seed generator, so every run of a test sees the same numbers.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(1);
            splitmix64(self.0)
        }

        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in 0..n (n > 0), slightly biased, which no test here minds.
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }

        /// `len` random bytes.
        pub fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next_u64() as u8).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(bytes: &[u8]) -> Result<u64, SketchError> {
        let (mut reader, _) = Reader::open(bytes, "test")?;
        let value = reader.varint()?;
        reader.finish()?;
        Ok(value)
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        let mut values = vec![0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX];
        values.extend((0..64).map(|bit| 1u64 << bit));
        for value in values {
            let mut bytes = vec![FORMAT_VERSION, 0];
            put_varint(&mut bytes, value);
            assert!(bytes.len() <= 12, "{value} took {} bytes", bytes.len() - 2);
            assert_eq!(decode_one(&bytes), Ok(value));
        }
    }

    #[test]
    fn varints_longer_than_64_bits_are_refused() {
        let mut eleven = vec![FORMAT_VERSION, 0];
        eleven.extend([0xff; 10]);
        eleven.push(0x01);
        let err = decode_one(&eleven).unwrap_err();
        assert_eq!(
            err,
            SketchError::VarintOverflow {
                sketch: "test",
                at: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "test sketch: varint longer than 64 bits at byte 2"
        );

        let mut bit_64 = vec![FORMAT_VERSION, 0];
        bit_64.extend([0xff; 9]);
        bit_64.push(0x02);
        assert!(matches!(
            decode_one(&bit_64),
            Err(SketchError::VarintOverflow { .. })
        ));
    }

    #[test]
    fn errors_say_where_and_what() {
        assert_eq!(
            decode_one(&[]).unwrap_err().to_string(),
            "test sketch: empty input"
        );
        assert_eq!(
            decode_one(&[9, 0, 0]).unwrap_err().to_string(),
            "unknown sketch version 9"
        );
        assert_eq!(
            decode_one(&[FORMAT_VERSION, 0, 0x80])
                .unwrap_err()
                .to_string(),
            "test sketch: truncated at byte 3"
        );
        assert_eq!(
            decode_one(&[FORMAT_VERSION, 0, 5, 6, 7])
                .unwrap_err()
                .to_string(),
            "test sketch: 2 unexpected trailing bytes from byte 3"
        );
    }
}
