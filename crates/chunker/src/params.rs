//! Chunk size parameters and their validation.

use std::fmt;

/// Smallest accepted [`ChunkerParams::min_size`] (64 bytes, as in the `fastcdc` crate).
pub const MIN_SIZE_LOWER: u32 = 64;
/// Largest accepted [`ChunkerParams::min_size`] (1 MiB).
pub const MIN_SIZE_UPPER: u32 = 1024 * 1024;
/// Smallest accepted [`ChunkerParams::avg_size`] (256 bytes).
pub const AVG_SIZE_LOWER: u32 = 256;
/// Largest accepted [`ChunkerParams::avg_size`] (4 MiB).
pub const AVG_SIZE_UPPER: u32 = 4 * 1024 * 1024;
/// Smallest accepted [`ChunkerParams::max_size`] (1 KiB).
pub const MAX_SIZE_LOWER: u32 = 1024;
/// Largest accepted [`ChunkerParams::max_size`] (16 MiB).
pub const MAX_SIZE_UPPER: u32 = 16 * 1024 * 1024;

/// Chunk size bounds, in bytes.
///
/// Every chunk but the last of a stream is at least `min_size` and at most
/// `max_size` bytes long; with normalized chunking most chunks fall close to
/// `avg_size`. The last chunk of a stream can be anything from 1 byte to
/// `max_size`.
///
/// All three must be even (the 2020 FastCDC scan works on byte pairs, and the
/// `fastcdc` crate rejects odd sizes for the same reason), must satisfy
/// `min_size < avg_size < max_size`, and must lie in these ranges:
///
/// | field      | range              |
/// |------------|--------------------|
/// | `min_size` | 64 B ..= 1 MiB     |
/// | `avg_size` | 256 B ..= 4 MiB    |
/// | `max_size` | 1 KiB ..= 16 MiB   |
///
/// The [`Default`] is 512 KiB / 1 MiB / 8 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkerParams {
    /// Minimum chunk size: no cut point is searched for in the first
    /// `min_size` bytes of a chunk.
    pub min_size: u32,
    /// Target average chunk size; also where the cut-point mask switches from
    /// the strict to the relaxed one (normalized chunking).
    pub avg_size: u32,
    /// Maximum chunk size: a chunk is cut here if no content-defined cut point
    /// was found before.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams { min_size: 512 * 1024, avg_size: 1024 * 1024, max_size: 8 * 1024 * 1024 }
    }
}

impl ChunkerParams {
    /// Checks the sizes against the ranges documented on [`ChunkerParams`].
    ///
    /// Each field is checked for its range, then for evenness, then the three
    /// are checked for ordering; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let fields = [
            (SizeField::Min, self.min_size, MIN_SIZE_LOWER, MIN_SIZE_UPPER),
            (SizeField::Avg, self.avg_size, AVG_SIZE_LOWER, AVG_SIZE_UPPER),
            (SizeField::Max, self.max_size, MAX_SIZE_LOWER, MAX_SIZE_UPPER),
        ];
        for (field, value, min, max) in fields {
            if !(min..=max).contains(&value) {
                return Err(ParamsError::OutOfRange { field, value, min, max });
            }
        }
        for (field, value, _, _) in fields {
            if value % 2 != 0 {
                return Err(ParamsError::Odd { field, value });
            }
        }
        if self.min_size >= self.avg_size || self.avg_size >= self.max_size {
            return Err(ParamsError::Order {
                min_size: self.min_size,
                avg_size: self.avg_size,
                max_size: self.max_size,
            });
        }
        Ok(())
    }
}

/// Names one of the three fields of [`ChunkerParams`] in a [`ParamsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeField {
    /// [`ChunkerParams::min_size`].
    Min,
    /// [`ChunkerParams::avg_size`].
    Avg,
    /// [`ChunkerParams::max_size`].
    Max,
}

impl SizeField {
    /// The field's name as written in [`ChunkerParams`] (`"min_size"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SizeField::Min => "min_size",
            SizeField::Avg => "avg_size",
            SizeField::Max => "max_size",
        }
    }
}

impl fmt::Display for SizeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`ChunkerParams`] was rejected by [`ChunkerParams::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamsError {
    /// A size lies outside its allowed range `min..=max`.
    OutOfRange {
        /// The offending field.
        field: SizeField,
        /// Its value.
        value: u32,
        /// Smallest allowed value for this field.
        min: u32,
        /// Largest allowed value for this field.
        max: u32,
    },
    /// A size is odd; all three must be even.
    Odd {
        /// The offending field.
        field: SizeField,
        /// Its value.
        value: u32,
    },
    /// The sizes are not strictly increasing (`min_size < avg_size < max_size`).
    Order {
        /// The given `min_size`.
        min_size: u32,
        /// The given `avg_size`.
        avg_size: u32,
        /// The given `max_size`.
        max_size: u32,
    },
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParamsError::OutOfRange { field, value, min, max } => {
                write!(f, "chunker {field} is {value} bytes; it must be in {min}..={max} bytes")
            }
            ParamsError::Odd { field, value } => {
                write!(f, "chunker {field} is {value} bytes; it must be an even number of bytes")
            }
            ParamsError::Order { min_size, avg_size, max_size } => write!(
                f,
                "chunker sizes must satisfy min_size < avg_size < max_size, \
                 got min_size {min_size}, avg_size {avg_size}, max_size {max_size}"
            ),
        }
    }
}

impl std::error::Error for ParamsError {}
