//! The AVX-512 kernel: sixteen lanes, table lookups by byte permutes.
//!
//! A block of the range is split into 16 consecutive parts, one per 32-bit
//! element (lane) of a 512-bit register; each lane hashes its part after
//! warming up on the 32 bytes before it, and all 16 advance one byte per
//! step: `h = (h << 1) + G32[byte]`, where `G32` is the low 32 bits of the
//! gear table. The low 32 bits of a gear hash depend only on the last 32
//! bytes (older entries are shifted past bit 31), and they are exactly the
//! low 32 bits of the full 64-bit hash, so a position whose `h & mask`
//! (low 32 bits of the mask) is not zero is no cut point. The few that pass
//! (with the default 1 MiB average, one position in `2^12` below the
//! average size and one in `2^10` from there on) are checked with the full
//! hash ([`is_cut`](super::is_cut)). Each group of steps also prefetches its
//! share of the next block: 16 streams are more than the hardware
//! prefetcher follows (with it, 9.6 instead of 7.5 GB/s over data in RAM on
//! AMD Zen 4).
//!
//! Per 16 bytes of each lane (256 bytes in all):
//!
//! 1. *Transpose.* Four registers take 16 bytes of four lanes each (lanes
//!    `4k + a` in 128-bit block `k` of register `a`); two rounds of 8- and
//!    16-bit unpacks turn them into four registers `T_j` in which byte
//!    `16k + 4d + a` is byte `4j + d` of lane `4k + a`.
//! 2. *Look up.* `vpermt2b` looks up 64 bytes at once in a 128-byte table;
//!    two of them and a blend on the index's top bit look up a 256-entry
//!    byte table. Four such lookups give bytes 0 to 3 of `G32` for every
//!    byte of `T_j`, in four registers `P_0 .. P_3`.
//! 3. *Assemble.* The same two rounds of unpacks on `P_0 .. P_3` give, for
//!    each of the four steps `d`, a register `S_d` whose 32-bit element
//!    `4k + a` is `G32` of byte `4j + d` of lane `4k + a`.
//! 4. *Hash and test.* Per step a shift and an add; then, per lane, the
//!    smallest of the four `h & mask` is zero if and only if one of the four
//!    positions is a candidate, one test and branch for all of them.
//!
//! The first cut is the first confirmed candidate of the lowest lane that
//! has one: lanes after a confirmed hit stop being checked, and the block
//! ends early when lane 0 hits.
//!
//! The loop is bound by the vector unit's shuffles (about 21 per 64 bytes:
//! 8 lookups, 8 unpacks to assemble, 5 to load and transpose). Tried and
//! dropped: `vpermt2b` instead of unpacks to assemble (slower), scalar lanes
//! in the integer units alongside (slower: they compete for the front end),
//! 1 or 4 KiB lanes, prefetching further ahead or into L2 only.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, __m512i, _MM_HINT_T0, _mm_loadu_si128, _mm_prefetch, _mm512_add_epi32, _mm512_and_si512,
    _mm512_castsi128_si512, _mm512_loadu_si512, _mm512_mask_blend_epi8, _mm512_mask_broadcast_i32x4, _mm512_min_epu32,
    _mm512_movepi8_mask, _mm512_permutex2var_epi8, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_slli_epi32,
    _mm512_testn_epi32_mask, _mm512_unpackhi_epi8, _mm512_unpackhi_epi16, _mm512_unpacklo_epi8, _mm512_unpacklo_epi16,
};

use super::{Kernel, Tables, check_candidates, portable};

/// Lanes per block: the 32-bit elements of a 512-bit register.
const LANES: usize = 16;

/// Bytes tested by each lane per block (a multiple of 16). Each lane also
/// hashes the [`WARM32`] bytes before its part, and on a cut the block's
/// other lanes still run to its end, so shorter lanes waste less after a cut
/// and longer ones less on warming up; 2 KiB (32 KiB blocks) suits chunks
/// of hundreds of KiB and more.
const LANE_LEN: usize = 2048;

/// Bytes hashed before a lane's first tested position: the low 32 bits of a
/// gear hash depend on the last 32 bytes only.
const WARM32: usize = 32;

/// Ranges with fewer than this many bytes per lane left after the full
/// blocks go to the portable kernel.
const MIN_TAIL_LANE: usize = 256;

/// The AVX-512 kernel's [`scan`](super::scan), with the same contract.
/// Falls back to the portable kernel on a CPU without AVX-512 F, BW and VBMI.
pub(super) fn scan(tables: &Tables, data: &[u8], mut from: usize, to: usize, mask: u64) -> Option<usize> {
    if !Kernel::Avx512.is_available() {
        return portable::scan(tables, data, from, to, mask);
    }
    const BLOCK: usize = LANES * LANE_LEN;
    while to.saturating_sub(from) >= BLOCK {
        // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked above).
        if let Some(i) = unsafe { scan_block(tables, data, from, LANE_LEN, mask) } {
            return Some(i);
        }
        from += BLOCK;
    }
    let lane = (to.saturating_sub(from) / LANES) & !15;
    if lane >= MIN_TAIL_LANE {
        // SAFETY: as above.
        if let Some(i) = unsafe { scan_block(tables, data, from, lane, mask) } {
            return Some(i);
        }
        from += LANES * lane;
    }
    if from < to { portable::scan(tables, data, from, to, mask) } else { None }
}

/// Loads 16 bytes from `bytes[offset..]` (`None` past the end).
#[inline(always)]
fn load16(bytes: &[u8], offset: usize) -> Option<__m128i> {
    let chunk: &[u8; 16] = bytes.get(offset..offset + 16)?.try_into().ok()?;
    // SAFETY: `_mm_loadu_si128` reads 16 bytes, with no alignment
    // requirement, from a pointer to a `[u8; 16]` borrowed for the call.
    Some(unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) })
}

/// Loads 64 bytes.
#[inline]
#[target_feature(enable = "avx512f")]
fn load64(bytes: &[u8; 64]) -> __m512i {
    // SAFETY: `_mm512_loadu_si512` reads 64 bytes, with no alignment
    // requirement, from a pointer to a `[u8; 64]`; AVX-512 F is enabled.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

/// A 256-entry byte table as four 64-byte registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn load_table(table: &[u8; 256]) -> [__m512i; 4] {
    let mut out = [_mm512_setzero_si512(); 4];
    for (reg, part) in out.iter_mut().zip(table.chunks_exact(64)) {
        if let Ok(part) = <&[u8; 64]>::try_from(part) {
            *reg = load64(part);
        }
    }
    out
}

/// Asks for the four cache lines at `bytes[at .. at + 256]` (which may lie
/// past the end of `bytes`) to be loaded into the cache: the 16 lanes read
/// 16 places at once, more than the hardware prefetcher follows, so each
/// group of steps prefetches its share of the next block.
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch_next(bytes: &[u8], at: usize) {
    let base = bytes.as_ptr().wrapping_add(at);
    for line in 0..4 {
        // A prefetch never faults, whatever the address: the pointer is
        // computed with `wrapping_add` and never dereferenced.
        _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(64 * line).cast());
    }
}

/// Scans `data[from .. from + LANES * lane]`, lane `l` testing positions
/// `from + l * lane ..` after hashing the [`WARM32`] bytes before them, and
/// returns the first cut point. `lane` must be a multiple of 16, and the
/// hash origin at or before `from - 64` (see [`scan`](super::scan)). `None`
/// if there is no cut or the range does not fit `data`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn scan_block(tables: &Tables, data: &[u8], from: usize, lane: usize, mask: u64) -> Option<usize> {
    debug_assert!(lane.is_multiple_of(16) && lane > 0);
    let window = data.get(from.checked_sub(WARM32)?..from + LANES * lane)?;
    let mut lanes: [&[u8]; LANES] = [&[]; LANES];
    for (l, bytes) in lanes.iter_mut().enumerate() {
        *bytes = window.get(l * lane..l * lane + WARM32 + lane)?;
    }
    let planes = tables.planes.each_ref().map(|p| load_table(p));
    let mask32 = _mm512_set1_epi32(mask as u32 as i32);

    let mut hash = _mm512_setzero_si512();
    let mut active: u32 = (1 << LANES) - 1;
    let mut best = None;
    for offset in (0..WARM32 + lane).step_by(16) {
        prefetch_next(window, LANES * lane + 16 * offset);
        // 1. z[a] holds bytes offset..offset+16 of lanes a, 4+a, 8+a, 12+a.
        let mut z = [_mm512_setzero_si512(); 4];
        for (a, reg) in z.iter_mut().enumerate() {
            // (Masked broadcasts: cheaper than inserts on AMD Zen 4.)
            let v = _mm512_castsi128_si512(load16(lanes[a], offset)?);
            let v = _mm512_mask_broadcast_i32x4(v, 0x00f0, load16(lanes[4 + a], offset)?);
            let v = _mm512_mask_broadcast_i32x4(v, 0x0f00, load16(lanes[8 + a], offset)?);
            *reg = _mm512_mask_broadcast_i32x4(v, 0xf000, load16(lanes[12 + a], offset)?);
        }
        // t[j], byte 16k + 4d + a: byte offset + 4j + d of lane 4k + a.
        let a0 = _mm512_unpacklo_epi8(z[0], z[1]);
        let a1 = _mm512_unpackhi_epi8(z[0], z[1]);
        let b0 = _mm512_unpacklo_epi8(z[2], z[3]);
        let b1 = _mm512_unpackhi_epi8(z[2], z[3]);
        let t = [
            _mm512_unpacklo_epi16(a0, b0),
            _mm512_unpackhi_epi16(a0, b0),
            _mm512_unpacklo_epi16(a1, b1),
            _mm512_unpackhi_epi16(a1, b1),
        ];
        for (j, &tj) in t.iter().enumerate() {
            // 2. p[q], byte i: byte q of G32[tj byte i].
            let top = _mm512_movepi8_mask(tj);
            let p = planes.map(|[t0, t1, t2, t3]| {
                let low = _mm512_permutex2var_epi8(t0, tj, t1);
                let high = _mm512_permutex2var_epi8(t2, tj, t3);
                _mm512_mask_blend_epi8(top, low, high)
            });
            // 3. s[d], element 4k + a: G32[byte offset + 4j + d of lane
            //    4k + a], by the same two rounds of unpacks.
            let e = _mm512_unpacklo_epi8(p[0], p[1]);
            let f = _mm512_unpackhi_epi8(p[0], p[1]);
            let g = _mm512_unpacklo_epi8(p[2], p[3]);
            let h = _mm512_unpackhi_epi8(p[2], p[3]);
            let s = [
                _mm512_unpacklo_epi16(e, g),
                _mm512_unpackhi_epi16(e, g),
                _mm512_unpacklo_epi16(f, h),
                _mm512_unpackhi_epi16(f, h),
            ];
            // 4. One step per byte. A lane has a candidate in this group
            //    if the smallest of its four `h & mask` is zero.
            let mut masked = [_mm512_setzero_si512(); 4];
            for (m, &sr) in masked.iter_mut().zip(&s) {
                hash = _mm512_add_epi32(_mm512_slli_epi32::<1>(hash), sr);
                *m = _mm512_and_si512(hash, mask32);
            }
            let least =
                _mm512_min_epu32(_mm512_min_epu32(masked[0], masked[1]), _mm512_min_epu32(masked[2], masked[3]));
            if _mm512_testn_epi32_mask(least, least) != 0 && offset >= WARM32 {
                let hits = masked.map(|m| u32::from(_mm512_testn_epi32_mask(m, m)));
                let first = from + offset - WARM32 + 4 * j;
                check_candidates(tables, data, hits, first, lane, mask, &mut active, &mut best);
            }
        }
        if active == 0 {
            break;
        }
    }
    best
}
