//! The AVX2 kernel: eight lanes, table lookups by gathers.
//!
//! The same scheme as the [AVX-512 kernel](super::avx512) with eight 32-bit
//! lanes in a 256-bit register: each lane hashes the low 32 bits of the gear
//! hash over its own part of a block, as a filter, and candidates are
//! checked with the full hash. AVX2 has no byte permute wide enough for a
//! 256-entry table, so each step gathers the eight lanes' `G32` entries
//! with `vpgatherdd` from a table of the low 32 bits.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, __m256i, _mm_loadu_si128, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_ps, _mm256_cmpeq_epi32,
    _mm256_i32gather_epi32, _mm256_movemask_ps, _mm256_set_m128i, _mm256_set1_epi32, _mm256_setzero_si256,
    _mm256_slli_epi32, _mm256_srli_epi32, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32,
    _mm256_unpacklo_epi64,
};

use super::{Kernel, Tables, check_candidates, portable};

/// Lanes per block: the 32-bit elements of a 256-bit register.
const LANES: usize = 8;

/// Bytes tested by each lane per block (a multiple of 16); see the AVX-512
/// kernel's `LANE_LEN`.
const LANE_LEN: usize = 4096;

/// Bytes hashed before a lane's first tested position: the low 32 bits of a
/// gear hash depend on the last 32 bytes only.
const WARM32: usize = 32;

/// Ranges with fewer than this many bytes per lane left after the full
/// blocks go to the portable kernel.
const MIN_TAIL_LANE: usize = 256;

/// The AVX2 kernel's [`scan`](super::scan), with the same contract. Falls
/// back to the portable kernel on a CPU without AVX2.
pub(super) fn scan(tables: &Tables, data: &[u8], mut from: usize, to: usize, mask: u64) -> Option<usize> {
    if !Kernel::Avx2.is_available() {
        return portable::scan(tables, data, from, to, mask);
    }
    const BLOCK: usize = LANES * LANE_LEN;
    while to.saturating_sub(from) >= BLOCK {
        // SAFETY: the CPU has AVX2 (checked above).
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

/// `table[index]` for each 32-bit element of `index`, each below 256.
#[inline]
#[target_feature(enable = "avx2")]
fn gather(table: &[u32; 256], index: __m256i) -> __m256i {
    // SAFETY: every index is masked to 0..=255 by the caller, so the eight
    // 4-byte reads at `table + 4 * index` stay inside the 256-entry table;
    // AVX2 is enabled.
    unsafe { _mm256_i32gather_epi32::<4>(table.as_ptr().cast(), index) }
}

/// Scans `data[from .. from + LANES * lane]` like the AVX-512 kernel's
/// `scan_block`, with eight lanes.
#[target_feature(enable = "avx2")]
fn scan_block(tables: &Tables, data: &[u8], from: usize, lane: usize, mask: u64) -> Option<usize> {
    debug_assert!(lane.is_multiple_of(16) && lane > 0);
    let window = data.get(from.checked_sub(WARM32)?..from + LANES * lane)?;
    let mut lanes: [&[u8]; LANES] = [&[]; LANES];
    for (l, bytes) in lanes.iter_mut().enumerate() {
        *bytes = window.get(l * lane..l * lane + WARM32 + lane)?;
    }
    let mask32 = _mm256_set1_epi32(mask as u32 as i32);
    let byte = _mm256_set1_epi32(0xff);
    let zero = _mm256_setzero_si256();

    let mut hash = _mm256_setzero_si256();
    let mut active: u32 = (1 << LANES) - 1;
    let mut best = None;
    for offset in (0..WARM32 + lane).step_by(16) {
        // z[a] holds bytes offset..offset+16 of lanes a and 4+a.
        let mut z = [zero; 4];
        for (a, reg) in z.iter_mut().enumerate() {
            *reg = _mm256_set_m128i(load16(lanes[4 + a], offset)?, load16(lanes[a], offset)?);
        }
        let u0 = _mm256_unpacklo_epi32(z[0], z[1]);
        let u1 = _mm256_unpackhi_epi32(z[0], z[1]);
        let u2 = _mm256_unpacklo_epi32(z[2], z[3]);
        let u3 = _mm256_unpackhi_epi32(z[2], z[3]);
        // t[j], element l: bytes offset + 4j .. offset + 4j + 4 of lane l.
        let t = [
            _mm256_unpacklo_epi64(u0, u2),
            _mm256_unpackhi_epi64(u0, u2),
            _mm256_unpacklo_epi64(u1, u3),
            _mm256_unpackhi_epi64(u1, u3),
        ];
        for (j, &tj) in t.iter().enumerate() {
            let index = [
                _mm256_and_si256(tj, byte),
                _mm256_and_si256(_mm256_srli_epi32::<8>(tj), byte),
                _mm256_and_si256(_mm256_srli_epi32::<16>(tj), byte),
                _mm256_srli_epi32::<24>(tj),
            ];
            let mut hits = [0u8; 4];
            for (hit, &ir) in hits.iter_mut().zip(&index) {
                hash = _mm256_add_epi32(_mm256_slli_epi32::<1>(hash), gather(&tables.low32, ir));
                let none_set = _mm256_cmpeq_epi32(_mm256_and_si256(hash, mask32), zero);
                *hit = _mm256_movemask_ps(_mm256_castsi256_ps(none_set)) as u8;
            }
            let any = u32::from(hits[0] | hits[1] | hits[2] | hits[3]) & active;
            if any != 0 && offset >= WARM32 {
                let first = from + offset - WARM32 + 4 * j;
                check_candidates(tables, data, hits.map(u32::from), first, lane, mask, &mut active, &mut best);
            }
        }
        if active == 0 {
            break;
        }
    }
    best
}
