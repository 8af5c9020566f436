//! The cut-point scan: finds the first position in a range whose gear hash
//! has no bit of a mask set, with one of several kernels that all return
//! exactly what the sequential definition returns.
//!
//! * [`portable`]: five interleaved scalar hash chains (any CPU).
//! * `avx2` and `avx512` (x86-64 only, chosen at run time): sixteen (AVX-512)
//!   or eight (AVX2) lanes, one per 32-bit SIMD element, each hashing its own
//!   part of the range. They compute only the low 32 bits of each hash, as a
//!   filter: a position whose low 32 bits have a masked bit set cannot be a
//!   cut point, and the rare candidates that pass are checked with the full
//!   64-bit hash ([`hash_at`]).

use zeroize::Zeroize;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod portable;

/// Bytes hashed before the first tested position of a lane. A 64-bit gear
/// hash only depends on the last 64 bytes it consumed: every older byte's
/// table entry has been shifted out of the word. (63 would do, since the
/// entry of the 64th byte back is shifted by 64 bits; 64 keeps the warm-up in
/// whole groups of four bytes.)
pub(crate) const WARM: usize = 64;

/// The fewest mask bits below bit 32 for which the SIMD kernels' 32-bit
/// filter pays: with `b` such bits, one position in `2^b` is a candidate
/// that needs the full 64-bit hash. Masks with fewer (average sizes below
/// about 64 KiB) are scanned by the portable kernel.
const MIN_FILTER_BITS: u32 = 9;

/// Which implementation of the cut-point scan a [`Chunker`](crate::Chunker)
/// uses. Every kernel finds exactly the same cut points; they differ only in
/// speed and in the instructions they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Five interleaved scalar hash chains, on any CPU.
    Portable,
    /// Eight 32-bit lanes with AVX2 gathers (x86-64 with AVX2).
    Avx2,
    /// Sixteen 32-bit lanes with AVX-512 byte permutes as table lookups
    /// (x86-64 with AVX-512 F, BW and VBMI: Intel Ice Lake and later, AMD
    /// Zen 4 and later).
    Avx512,
}

impl Kernel {
    /// All kernels.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2, Kernel::Portable];

    /// The kernel to use on this CPU, detected at run time: AVX-512 where
    /// available, else the portable one. (The AVX2 kernel is not chosen: its
    /// gathers made it slower than the portable kernel on AMD Zen 4, 1.6
    /// against 4.2 GB/s; it stays available through
    /// [`Chunker::with_kernel`](crate::Chunker::with_kernel).)
    pub fn detect() -> Kernel {
        if Kernel::Avx512.is_available() { Kernel::Avx512 } else { Kernel::Portable }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vbmi")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512 => false,
        }
    }

    /// A short lowercase name: `portable`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The gear table in the forms the kernels use. Wiped when the last chunker
/// using it is dropped: it is derived from the repository's secret, and
/// knowing it predicts every cut point.
pub(crate) struct Tables {
    /// The table shifted left by 0, 1, 2 and 3 bits (portable kernel and
    /// candidate checks; `[0]` is the table itself).
    pub(crate) shifted: [[u64; 256]; 4],
    /// Byte `q` of every entry, in `planes[q]`, for `q` in `0..4`: the low 32
    /// bits as four byte tables (AVX-512 byte permutes).
    pub(crate) planes: [[u8; 256]; 4],
    /// The low 32 bits of every entry (AVX2 gathers).
    pub(crate) low32: [u32; 256],
}

impl Tables {
    pub(crate) fn new(gear: &[u64; 256]) -> Tables {
        let byte = |q: u32| gear.map(|g| (g >> (8 * q)) as u8);
        Tables {
            shifted: [*gear, gear.map(|g| g << 1), gear.map(|g| g << 2), gear.map(|g| g << 3)],
            planes: [byte(0), byte(1), byte(2), byte(3)],
            low32: gear.map(|g| g as u32),
        }
    }

    pub(crate) fn gear(&self) -> &[u64; 256] {
        &self.shifted[0]
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        self.shifted.zeroize();
        self.planes.zeroize();
        self.low32.zeroize();
    }
}

/// One gear hash step: shift out the oldest bit, add the next byte's entry.
#[inline(always)]
pub(crate) fn roll(hash: u64, gear: &[u64; 256], byte: u8) -> u64 {
    (hash << 1).wrapping_add(gear[usize::from(byte)])
}

/// The full gear hash at the last byte of `window`, which covers the 64
/// bytes up to and including it: `sum(G[window[63 - k]] << k)` for `k` in
/// `0..64`. Four independent chains of 16 bytes, combined, so that checking
/// a candidate costs about as long as 16 dependent steps.
#[inline]
pub(crate) fn hash_at(tables: &Tables, window: &[u8; 64]) -> u64 {
    let gear = tables.gear();
    let mut part = [0u64; 4];
    for (c, quarter) in window.chunks_exact(16).enumerate() {
        part[c] = quarter.iter().fold(0u64, |h, &b| roll(h, gear, b));
    }
    (part[0] << 48).wrapping_add(part[1] << 32).wrapping_add(part[2] << 16).wrapping_add(part[3])
}

/// Whether position `pos` of `data` is a cut point for `mask`, by its full
/// hash over `data[pos - 63 ..= pos]` (`false` if that is not inside `data`).
#[inline]
pub(crate) fn is_cut(tables: &Tables, data: &[u8], pos: usize, mask: u64) -> bool {
    pos.checked_sub(63)
        .and_then(|start| data.get(start..=pos))
        .and_then(|w| <&[u8; 64]>::try_from(w).ok())
        .is_some_and(|w| hash_at(tables, w) & mask == 0)
}

/// Returns the first position `i` in `from..to` whose gear hash (over the
/// bytes up to and including `data[i]`) has no bit of `mask` set, with
/// `kernel` (which the caller has checked is available).
///
/// Requires `from >= WARM`, that the hash origin is at or before
/// `from - WARM` (every tested hash covers 64 bytes of the chunk's search
/// region), and `mask < 2^60`. Returns `None` if the range does not fit
/// `data`.
pub(crate) fn scan(kernel: Kernel, tables: &Tables, data: &[u8], from: usize, to: usize, mask: u64) -> Option<usize> {
    let filter_pays = (mask as u32).count_ones() >= MIN_FILTER_BITS;
    scan_with(if filter_pays { kernel } else { Kernel::Portable }, tables, data, from, to, mask)
}

/// [`scan`] with `kernel` whatever the mask (the SIMD kernels fall back to
/// the portable one on a CPU that lacks their instructions).
fn scan_with(kernel: Kernel, tables: &Tables, data: &[u8], from: usize, to: usize, mask: u64) -> Option<usize> {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => avx512::scan(tables, data, from, to, mask),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => avx2::scan(tables, data, from, to, mask),
        _ => portable::scan(tables, data, from, to, mask),
    }
}

/// Checks the candidates of one group of four steps of a SIMD kernel with
/// the full hash, in data order within each lane. `hits[r]` has bit `l` set
/// for a candidate at `first + l * lane + r`; only lanes in `active` are
/// checked. A confirmed cut in lane `l` becomes `best` (it precedes any cut
/// of a later lane) and removes lanes `l..` from `active`, so `active` is
/// empty once lane 0 has a cut. Runs about once per candidate.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_candidates(
    tables: &Tables,
    data: &[u8],
    hits: [u32; 4],
    first: usize,
    lane: usize,
    mask: u64,
    active: &mut u32,
    best: &mut Option<usize>,
) {
    for (r, &hit) in hits.iter().enumerate() {
        let mut lanes = hit & *active;
        while lanes != 0 {
            let l = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            let pos = first + l * lane + r;
            if is_cut(tables, data, pos, mask) {
                *best = Some(pos);
                *active &= (1 << l) - 1;
                lanes &= (1 << l) - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn tables(seed: u8) -> Tables {
        Tables::new(crate::GearTable::from_secret(&[seed; 32]).entries())
    }

    /// The kernels this CPU runs; the test output names them.
    fn kernels() -> Vec<Kernel> {
        let kernels: Vec<Kernel> = Kernel::ALL.into_iter().filter(|k| k.is_available()).collect();
        eprintln!("kernels tested on this CPU: {kernels:?}");
        assert!(kernels.contains(&Kernel::Portable));
        kernels
    }

    /// The first position of `data[from..to]` whose hash from `origin` has
    /// no bit of `mask` set, one byte at a time: the definition.
    fn sequential(tables: &Tables, data: &[u8], origin: usize, from: usize, to: usize, mask: u64) -> Option<usize> {
        let mut hash = 0u64;
        for (i, &byte) in data.iter().enumerate().take(to).skip(origin) {
            hash = roll(hash, tables.gear(), byte);
            if i >= from && hash & mask == 0 {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn hash_at_is_the_rolling_hash() {
        let t = tables(3);
        let data = random_bytes(11, 300);
        let mut hash = 0u64;
        for (i, &b) in data.iter().enumerate() {
            hash = roll(hash, t.gear(), b);
            if i >= 63 {
                let window: &[u8; 64] = data[i - 63..=i].try_into().expect("64 bytes");
                assert_eq!(hash_at(&t, window), hash, "position {i}");
            }
        }
        assert!(!is_cut(&t, &data, 62, 0), "positions without 64 bytes before them are never cuts");
    }

    #[test]
    fn every_kernel_on_zeros_and_patterns() {
        let t = tables(5);
        let mask = 0x0000_d917_6753_7000;
        for data in [vec![0u8; 300_000], b"abc".repeat(100_000), (0..=255u8).cycle().take(300_000).collect()] {
            for from in [64, 100, 1000] {
                for to in [from, from + 1, 4095, 70_000, 299_999, data.len()] {
                    let expected = sequential(&t, &data, from - 64, from, to, mask);
                    for &kernel in &kernels() {
                        assert_eq!(scan_with(kernel, &t, &data, from, to, mask), expected, "{kernel} {from}..{to}");
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every kernel finds the same first hit as the definition, with
        /// masks loose enough that hits land in every lane and several lanes
        /// often hit in the same step, or late lanes before early ones, and
        /// with masks whose low 32 bits are all zero (every position passes
        /// the SIMD kernels' filter) or nearly so.
        #[test]
        fn kernels_equal_sequential(
            data_seed in any::<u64>(),
            table_seed in any::<u8>(),
            mask_bits in proptest::collection::btree_set(0u32..60, 3..22),
            high_only in any::<bool>(),
            start in 64usize..200,
            len in 0usize..300_000,
        ) {
            let mut mask = mask_bits.iter().fold(0u64, |m, b| m | 1 << b);
            if high_only {
                mask &= !0xffff_ffff;
            }
            let t = tables(table_seed);
            let data = random_bytes(data_seed, start + len);
            let origin = start - 64;
            let expected = sequential(&t, &data, origin, start, data.len(), mask);
            for &kernel in &kernels() {
                prop_assert_eq!(scan_with(kernel, &t, &data, start, data.len(), mask), expected, "{}", kernel);
            }
        }

        /// The same with the default masks and hits planted: the data is
        /// random except for copies of a 64-byte window known to be a cut
        /// point, so that cuts land in chosen lanes and steps.
        #[test]
        fn kernels_find_planted_cuts(
            data_seed in any::<u64>(),
            plants in proptest::collection::vec(64usize..400_000, 0..6),
            to in 64usize..400_064,
        ) {
            let t = tables(9);
            let mask = 0x0000_d917_6753_7000;
            let mut data = random_bytes(data_seed, 400_064);
            // A window whose hash is a cut point: search a random stream.
            let hay = random_bytes(!data_seed, 1 << 24);
            let cut = sequential(&t, &hay, 0, 63, hay.len(), mask);
            if let Some(cut) = cut {
                let window = hay[cut - 63..=cut].to_vec();
                for &p in &plants {
                    data[p - 63..=p].copy_from_slice(&window);
                }
            }
            let expected = sequential(&t, &data, 0, 64, to, mask);
            for &kernel in &kernels() {
                prop_assert_eq!(scan_with(kernel, &t, &data, 64, to, mask), expected, "{}", kernel);
            }
        }
    }
}
