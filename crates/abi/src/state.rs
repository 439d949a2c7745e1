//! Reading and writing exported accumulators (`export-window`, `restore-window`,
//! `merge-window`): little-endian numbers and length-prefixed strings (or bytes), nothing more.

use std::fmt;

/// Why exported state bytes could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateError(pub &'static str);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad accumulator state: {}", self.0)
    }
}

impl std::error::Error for StateError {}

/// Appends values to a state buffer.
#[derive(Debug, Default)]
pub struct StateWriter(pub Vec<u8>);

impl StateWriter {
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// A byte string, encoded as [`StateWriter::str`] encodes a string: read back with
    /// [`StateReader::bytes`], or with [`StateReader::str`] if it is UTF-8.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads values back in the order they were written.
#[derive(Debug)]
pub struct StateReader<'a>(pub &'a [u8]);

impl<'a> StateReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("slice of 8 bytes")))
    }

    pub fn f64(&mut self) -> Result<f64, StateError> {
        self.u64().map(f64::from_bits)
    }

    /// A count of items that follow, checked against the bytes left so that a corrupt count
    /// cannot make the reader allocate without bound. `min_item_bytes` is the fewest bytes one
    /// item takes in the encoding: 8 for a list of `u64`s or of strings (each string starts with
    /// its `u64` length), the sum of the fixed fields for a list of records. A count that could
    /// not fit in the bytes left is an error.
    pub fn len(&mut self, min_item_bytes: usize) -> Result<usize, StateError> {
        let n = self.u64()?;
        if n > (self.0.len() / min_item_bytes.max(1)) as u64 {
            return Err(StateError("count larger than the bytes that follow"));
        }
        Ok(n as usize)
    }

    pub fn str(&mut self) -> Result<&'a str, StateError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| StateError("string is not UTF-8"))
    }

    /// A string's bytes, not checked for UTF-8: for what is only hashed and compared (checking
    /// is a measurable share of restoring a large set of ids).
    pub fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.len(1)?;
        self.take(n)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), StateError> {
        if self.0.is_empty() { Ok(()) } else { Err(StateError("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_corruption() {
        let mut w = StateWriter::default();
        w.u64(2).str("mobile").f64(0.5).str("");
        let mut r = StateReader(&w.0);
        assert_eq!(r.u64(), Ok(2));
        assert_eq!(r.str(), Ok("mobile"));
        assert_eq!(r.f64(), Ok(0.5));
        assert_eq!(r.str(), Ok(""));
        assert_eq!(r.finish(), Ok(()));
        let mut huge = StateWriter::default();
        huge.u64(u64::MAX);
        assert!(StateReader(&huge.0).len(8).is_err());
        assert!(StateReader(&w.0[8..18]).str().is_err(), "a string cut short");
    }
}
