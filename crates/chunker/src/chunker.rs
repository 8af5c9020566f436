//! Cut-point search: the sequential definition and the multi-lane scan.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use crate::gear::GearTable;
use crate::params::{ChunkerParams, ParamsError};
use crate::scan::{self, Kernel, Tables, WARM, roll};
use crate::stream::StreamChunker;

/// Cut-point masks by rounded `log2` of the average chunk size, copied from
/// the `fastcdc` crate (`fastcdc::v2020::MASKS`, Nathan Fiedler, MIT), which
/// took the 64 B ..= 128 KiB values from the C reference implementation of
/// the FastCDC paper (Wen Xia et al., "The Design of Fast Content-Defined
/// Chunking for Data Deduplication Based Storage Systems", IEEE TPDS 2020)
/// and the larger ones from restic's FastCDC. The bits are spread out, which
/// the paper found to deduplicate slightly better than contiguous bits.
/// Indices 0 to 5 are unused here.
const MASKS: [u64; 26] = [
    0,                  // padding
    0,                  // padding
    0,                  // padding
    0,                  // padding
    0,                  // padding
    0x0000000001804110, // unused except for NC 3
    0x0000000001803110, // 64B
    0x0000000018035100, // 128B
    0x0000001800035300, // 256B
    0x0000019000353000, // 512B
    0x0000590003530000, // 1KB
    0x0000d90003530000, // 2KB
    0x0000d90103530000, // 4KB
    0x0000d90303530000, // 8KB
    0x0000d90313530000, // 16KB
    0x0000d90f03530000, // 32KB
    0x0000d90303537000, // 64KB
    0x0000d90703537000, // 128KB
    0x0000d90707537000, // 256KB
    0x0000d91707537000, // 512KB
    0x0000d91747537000, // 1MB
    0x0000d91767537000, // 2MB
    0x0000d93767537000, // 4MB
    0x0000d93777537000, // 8MB
    0x0000d93777577000, // 16MB
    0x0000db3777577000, // unused except for NC 3
];

/// `round(log2(value))` for `value >= 1`, computed exactly with integers.
///
/// Rounds up iff `log2(value) >= b + 1/2`, i.e. `value^2 >= 2^(2b+1)`, where
/// `b = floor(log2(value))`; equality cannot happen for an integer. This is
/// what the `fastcdc` crate computes in floating point.
fn log2_round(value: u32) -> u32 {
    let floor = value.max(1).ilog2();
    let square = u64::from(value) * u64::from(value);
    if square >= 1u64 << (2 * floor + 1) { floor + 1 } else { floor }
}

/// The strict (`mask_s`, below the average size) and relaxed (`mask_l`,
/// from the average size on) masks of normalization level 1.
pub(crate) fn select_masks(avg_size: u32) -> (u64, u64) {
    let bits = log2_round(avg_size) as usize;
    // avg_size is validated to 256..=4 MiB, so bits is 8..=22 and both
    // indices are in 7..=23; `get` keeps this panic-free regardless.
    let mask_s = MASKS.get(bits + 1).copied().unwrap_or(u64::MAX);
    let mask_l = MASKS.get(bits.saturating_sub(1)).copied().unwrap_or(u64::MAX);
    (mask_s, mask_l)
}

/// A content-defined chunker: FastCDC 2020 with normalization level 1 over a
/// keyed gear table.
///
/// Built once per repository from [`ChunkerParams`] and a [`GearTable`], then
/// used on slices ([`Chunker::chunks`], [`Chunker::cut`]) or readers
/// ([`Chunker::stream`]). The tables derived from the [`GearTable`] are
/// shared between clones, so cloning is cheap.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    kernel: Kernel,
    tables: Arc<Tables>,
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .field("kernel", &self.kernel)
            .field("mask_s", &format_args!("{:#018x}", self.mask_s))
            .field("mask_l", &format_args!("{:#018x}", self.mask_l))
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// Creates a chunker after [validating](ChunkerParams::validate) `params`.
    pub fn new(params: ChunkerParams, table: GearTable) -> Result<Chunker, ParamsError> {
        params.validate()?;
        let (mask_s, mask_l) = select_masks(params.avg_size);
        Ok(Chunker {
            params,
            kernel: Kernel::detect(),
            tables: Arc::new(Tables::new(&table.gear)),
            // Lossless: u32 fits usize on every target std supports here
            // (validated sizes are at most 16 MiB anyway).
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s,
            mask_l,
        })
    }

    /// The same keyed gear table with other sizes: for a second stream kind
    /// (cairn cuts bundles of small files finer than file contents) without
    /// rebuilding the tables.
    pub fn with_params(&self, params: ChunkerParams) -> Result<Chunker, ParamsError> {
        params.validate()?;
        let (mask_s, mask_l) = select_masks(params.avg_size);
        Ok(Chunker {
            params,
            kernel: self.kernel,
            tables: Arc::clone(&self.tables),
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s,
            mask_l,
        })
    }

    /// The size parameters this chunker was built with.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The scan kernel this chunker uses: by default the fastest one the CPU
    /// runs ([`Kernel::detect`]).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The same chunker with another scan kernel, for tests and benchmarks:
    /// the cut points are the same with every kernel. Fails if this CPU
    /// cannot run `kernel` (see [`Kernel::is_available`]).
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<Chunker, KernelUnavailable> {
        if !kernel.is_available() {
            return Err(KernelUnavailable(kernel));
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// Length of the chunk that starts at `data[0]`.
    ///
    /// `data` must hold at least `max_size` bytes unless it is the rest of the
    /// stream (bytes past `max_size` are ignored). Returns 0 only for empty
    /// `data`; otherwise the result is in `1..=min(data.len(), max_size)`, and
    /// at least `min_size` unless `data` is shorter than that.
    ///
    /// The result equals `fastcdc::v2020` (normalization level 1) with the
    /// same gear table: with `n = min(data.len(), max_size)`, it is the first
    /// `i` in `min_size .. 2 * floor(n / 2)` for which the gear hash of
    /// `data[min_size..=i]` has no bit of the mask set (the strict mask below
    /// `avg_size`, the relaxed one from there on), or `n` if there is none.
    /// Note that the chunk *ends before* byte `i`, the last byte hashed; this
    /// is the `fastcdc` crate's convention.
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let remaining = n.min(self.max);
        self.search(data, self.min, remaining & !1).unwrap_or(remaining)
    }

    /// Finds the first cut position in `from..to` (with `min <= from` and
    /// `to <= data.len()`), given that positions `min..from` hold none.
    ///
    /// Positions below `avg` use the strict mask and the others the relaxed
    /// one. (The `fastcdc` crate switches masks at `min(avg, n)` rounded down
    /// to even, for a chunk of `n` available bytes; when `n < avg` the search
    /// range ends at `n` rounded down to even anyway, so the two agree.)
    pub(crate) fn search(&self, data: &[u8], from: usize, to: usize) -> Option<usize> {
        let to = to.min(data.len());
        let from = from.max(self.min);
        if from >= to {
            return None;
        }
        let gear = self.tables.gear();
        // Positions closer than WARM to `min` hash fewer than 64 bytes; there
        // the hash must start from zero at `min`, so scan them one by one.
        let mut next = from;
        let head_end = to.min(self.min + WARM);
        if next < head_end {
            let mut hash = 0u64;
            for (i, &byte) in data.get(self.min..head_end)?.iter().enumerate() {
                let i = self.min + i;
                hash = roll(hash, gear, byte);
                let mask = if i < self.avg { self.mask_s } else { self.mask_l };
                if i >= from && hash & mask == 0 {
                    return Some(i);
                }
            }
            next = head_end;
        }
        // From here on every position sees a full 64-byte window.
        let strict_end = self.avg.max(next).min(to);
        if next < strict_end {
            if let Some(i) = scan::scan(self.kernel, &self.tables, data, next, strict_end, self.mask_s) {
                return Some(i);
            }
            next = strict_end;
        }
        if next < to {
            return scan::scan(self.kernel, &self.tables, data, next, to, self.mask_l);
        }
        None
    }

    /// Splits an in-memory slice into chunks, yielding their byte ranges.
    ///
    /// The ranges are contiguous, non-empty and cover `data` exactly; they are
    /// the same as those of [`Chunker::stream`] over the same bytes.
    pub fn chunks<'a>(&'a self, data: &'a [u8]) -> Chunks<'a> {
        Chunks { chunker: self, data, offset: 0 }
    }

    /// Splits the bytes of `reader` into owned [`Chunk`](crate::Chunk)s.
    ///
    /// Equivalent to `StreamChunker::new(self.clone(), reader)`.
    pub fn stream<R: Read>(&self, reader: R) -> StreamChunker<R> {
        StreamChunker::new(self.clone(), reader)
    }

    pub(crate) fn min(&self) -> usize {
        self.min
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The sequential definition of the cut point, transcribed from
    /// `fastcdc::v2020::cut_gear` one byte at a time. Used to check [`cut`].
    ///
    /// [`cut`]: Chunker::cut
    #[cfg(test)]
    pub(crate) fn cut_reference(&self, data: &[u8]) -> usize {
        let mut remaining = data.len();
        if remaining <= self.min {
            return remaining;
        }
        let mut center = self.avg;
        if remaining > self.max {
            remaining = self.max;
        } else if remaining < center {
            center = remaining;
        }
        let mut hash = 0u64;
        for (i, &byte) in data.iter().enumerate().take(2 * (remaining / 2)).skip(self.min) {
            hash = (hash << 1).wrapping_add(self.tables.gear()[usize::from(byte)]);
            let mask = if i < 2 * (center / 2) { self.mask_s } else { self.mask_l };
            if hash & mask == 0 {
                return i;
            }
        }
        remaining
    }
}

/// [`Chunker::with_kernel`] was asked for a kernel this CPU cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelUnavailable(pub Kernel);

impl std::fmt::Display for KernelUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "this CPU cannot run the {} chunker kernel; use Kernel::detect() for one it can", self.0)
    }
}

impl std::error::Error for KernelUnavailable {}

/// Iterator over the chunk ranges of a slice; see [`Chunker::chunks`].
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    chunker: &'a Chunker,
    data: &'a [u8],
    offset: usize,
}

impl Iterator for Chunks<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let rest = self.data.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let start = self.offset;
        self.offset += self.chunker.cut(rest);
        Some(start..self.offset)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let rest = self.data.len().saturating_sub(self.offset);
        (rest.div_ceil(self.chunker.max), Some(rest.div_ceil(self.chunker.min)))
    }
}

impl std::iter::FusedIterator for Chunks<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker(min: u32, avg: u32, max: u32, seed: u8) -> Chunker {
        let params = ChunkerParams { min_size: min, avg_size: avg, max_size: max };
        Chunker::new(params, GearTable::from_secret(&[seed; 32])).expect("valid params")
    }

    /// Data with runs and repetition, which stresses the mask tests
    /// differently from uniform noise.
    fn low_entropy(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let run = (x % 97) as usize;
            let byte = b"ab \n0"[(x >> 8) as usize % 5];
            out.extend(std::iter::repeat_n(byte, run.min(len - out.len())));
        }
        out
    }

    #[test]
    fn with_params_cuts_as_a_new_chunker_with_the_same_table() {
        let data = low_entropy(7, 300_000);
        let small = ChunkerParams { min_size: 1024, avg_size: 4096, max_size: 16384 };
        let derived = chunker(4096, 16384, 65536, 3).with_params(small).expect("valid params");
        let fresh = Chunker::new(small, GearTable::from_secret(&[3; 32])).expect("valid params");
        assert_eq!(derived.params(), small);
        assert_eq!(derived.chunks(&data).collect::<Vec<_>>(), fresh.chunks(&data).collect::<Vec<_>>());
        let bad = ChunkerParams { min_size: 8192, avg_size: 4096, max_size: 16384 };
        assert!(derived.with_params(bad).is_err());
    }

    #[test]
    fn with_kernel_accepts_exactly_the_available_kernels() {
        let c = chunker(4096, 16384, 65536, 1);
        assert_eq!(c.kernel(), Kernel::detect());
        assert!(Kernel::detect().is_available());
        for kernel in Kernel::ALL {
            match c.clone().with_kernel(kernel) {
                Ok(c) => {
                    assert!(kernel.is_available());
                    assert_eq!(c.kernel(), kernel);
                }
                Err(e) => {
                    assert!(!kernel.is_available());
                    assert_eq!(e, KernelUnavailable(kernel));
                    assert!(e.to_string().contains(kernel.name()), "{e}");
                }
            }
        }
    }

    #[test]
    fn masks_match_fastcdc_rounding() {
        for avg in (256u32..=4 * 1024 * 1024).step_by(2) {
            let float = (f64::from(avg)).log2().round() as u32;
            assert_eq!(log2_round(avg), float, "avg {avg}");
        }
    }

    #[test]
    fn fast_equals_reference_default_params() {
        let c = chunker(512 * 1024, 1024 * 1024, 8 * 1024 * 1024, 3);
        let mut data = vec![0u8; 3 * 1024 * 1024 + 11];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        let mut offset = 0;
        while offset < data.len() {
            let rest = &data[offset..];
            let len = c.cut(rest);
            assert_eq!(len, c.cut_reference(rest), "at offset {offset}");
            offset += len;
        }
    }

    /// A search split in two at any point (as the stream chunker does when
    /// more data arrives) finds the same cut as one search.
    #[test]
    fn split_search_equals_whole_search() {
        let c = chunker(1024, 4096, 16384, 9);
        let data = low_entropy(5, 60_000);
        let mut offset = 0;
        while offset < data.len() {
            let rest = &data[offset..];
            let end = rest.len().min(c.max) & !1;
            let whole = c.search(rest, c.min, end);
            for split in [0, 1, 62, 63, 64, 65, 1000, 3071, 3072, 3073, 9000] {
                let split = (c.min + split).min(end);
                let parts = c.search(rest, c.min, split).or_else(|| c.search(rest, split, end));
                assert_eq!(parts, whole, "offset {offset} split {split}");
            }
            offset += c.cut(rest);
        }
    }

    /// The same with sizes where the SIMD kernels run, for each kernel this
    /// CPU runs: the stream chunker searches piece by piece like this.
    #[test]
    fn split_search_equals_whole_search_every_kernel() {
        let data = random_bytes(17, 4_000_000);
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let c = chunker(65536, 262_144, 1_048_576, 4).with_kernel(kernel).expect("available");
            let mut offset = 0;
            while offset < data.len() {
                let rest = &data[offset..];
                let end = rest.len().min(c.max) & !1;
                let whole = c.search(rest, c.min, end);
                assert_eq!(c.cut(rest), c.cut_reference(rest), "{kernel}: offset {offset}");
                for split in [0, 64, 100, 32 * 1024 - 1, 32 * 1024, 100_000, 196_607, 196_608, 500_000] {
                    let split = (c.min + split).min(end);
                    let parts = c.search(rest, c.min, split).or_else(|| c.search(rest, split, end));
                    assert_eq!(parts, whole, "{kernel}: offset {offset} split {split}");
                }
                offset += c.cut(rest);
            }
        }
    }

    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn params_strategy() -> impl Strategy<Value = (u32, u32, u32)> {
        (32u32..=2048, 1u32..=4096, 1u32..=8192).prop_map(|(min, extra_avg, extra_max)| {
            let min = min * 2;
            let avg = (min + extra_avg * 2).max(256);
            let max = (avg + extra_max * 2).max(1024);
            (min, avg, max)
        })
    }

    /// Chunks all of `data` with every kernel this CPU runs and checks
    /// every cut against the reference loop.
    fn cuts_match_reference(c: &Chunker, data: &[u8]) -> Result<(), TestCaseError> {
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let c = c.clone().with_kernel(kernel).expect("available");
            let mut offset = 0;
            while offset < data.len() {
                let rest = &data[offset..];
                let len = c.cut(rest);
                prop_assert_eq!(len, c.cut_reference(rest), "{} at offset {}", kernel, offset);
                offset += len;
            }
        }
        Ok(())
    }

    /// Sizes with an average of 64 KiB to 4 MiB, where the masks have
    /// enough low bits for the SIMD kernels' filter.
    fn large_params_strategy() -> impl Strategy<Value = (u32, u32, u32)> {
        (32u32..=300_000, 32_768u32..=2_097_152, 1u32..=4_000_000).prop_map(|(min, avg, extra_max)| {
            let avg = avg * 2;
            let min = (min * 2).min(avg - 2);
            let max = (avg + extra_max * 2).min(16 * 1024 * 1024);
            (min, avg, max)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn fast_cut_equals_reference_random(
            (min, avg, max) in params_strategy(),
            seed in any::<u8>(),
            data in proptest::collection::vec(any::<u8>(), 0..40_000),
        ) {
            let c = chunker(min, avg, max, seed);
            cuts_match_reference(&c, &data)?;
        }

        #[test]
        fn fast_cut_equals_reference_low_entropy(
            (min, avg, max) in params_strategy(),
            seed in any::<u8>(),
            data_seed in any::<u64>(),
            len in 0usize..60_000,
        ) {
            let c = chunker(min, avg, max, seed);
            let data = low_entropy(data_seed, len);
            cuts_match_reference(&c, &data)?;
        }

        /// Large averages, where the SIMD kernels run: random and
        /// low-entropy data of up to a few MiB, all zeros, repeated
        /// patterns, and lengths around `min_size` and `max_size`.
        #[test]
        fn simd_kernels_equal_reference(
            (min, avg, max) in large_params_strategy(),
            seed in any::<u8>(),
            data_seed in any::<u64>(),
            len in 0usize..3_000_000,
            kind in 0u8..6,
        ) {
            let c = chunker(min, avg, max, seed);
            let (min, max) = (min as usize, max as usize);
            let data = match kind {
                0 => random_bytes(data_seed, len),
                1 => low_entropy(data_seed, len),
                2 => vec![0u8; len],
                3 => b"0123456789abcdef".repeat(len / 16),
                4 => random_bytes(data_seed, [min - 1, min, min + 1][len % 3]),
                _ => random_bytes(data_seed, [max - 1, max, max + 1, 2 * max][len % 4]),
            };
            cuts_match_reference(&c, &data)?;
        }

        /// Small masks make cut points dense, so hits land in every lane
        /// and block position, including several lanes in one step.
        #[test]
        fn fast_cut_equals_reference_dense_cuts(
            min in 32u32..=200,
            seed in any::<u8>(),
            data in proptest::collection::vec(any::<u8>(), 0..70_000),
        ) {
            let c = chunker(min * 2, 512, 65536, seed);
            cuts_match_reference(&c, &data)?;
        }
    }
}
