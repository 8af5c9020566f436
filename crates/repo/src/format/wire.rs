//! Bounds-checked little-endian decoding for the binary formats.
//!
//! Every decoder of repository objects reads through [`Reader`], so a short or
//! malicious input yields a [`WireError`] instead of a panic or a huge
//! allocation: counts are checked against the bytes that remain before any
//! vector is reserved.

use crate::format::id::Id;

/// A structural decoding failure (the caller adds which object it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a field.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the field started.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Bytes remain after the last field.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
}

pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> WireError {
    WireError::Invalid { field, detail: detail.into() }
}

/// A cursor over a byte slice.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated { offset: self.pos, needed: n - self.remaining() });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A u32 length followed by that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn id(&mut self) -> Result<Id, WireError> {
        Ok(Id(self.array()?))
    }

    /// Reads a u32 element count and checks that `count * min_element_size`
    /// bytes can still follow, so a forged count cannot force a huge allocation.
    pub fn count(&mut self, field: &'static str, min_element_size: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_element_size) > self.remaining() {
            return Err(invalid(field, format!("count {n} exceeds the remaining {} bytes", self.remaining())));
        }
        Ok(n)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// Appends `bytes` with a u32 length prefix (the inverse of [`Reader::bytes`]).
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_checks_bounds() {
        let mut r = Reader::new(&[1, 0, 0, 0, 9]);
        assert_eq!(r.u32().unwrap(), 1);
        assert!(matches!(r.u32(), Err(WireError::Truncated { .. })));
        assert_eq!(r.u8().unwrap(), 9);
        r.finish().unwrap();
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(r.count("things", 1).is_err());
    }
}
