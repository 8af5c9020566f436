//! The portable kernel: five interleaved scalar hash chains.

use super::{Tables, WARM, roll};

/// Number of independent hash chains interleaved by [`scan_lanes`]. Four
/// hide the latency of one chain; the fifth gave a few percent more on the
/// development machine (AMD EPYC, Zen 3/4).
const LANES: usize = 5;

/// Bytes tested by each lane per block in [`scan`]. A block covers
/// `LANES * LANE_LEN` positions; each lane first re-hashes the [`WARM`] bytes
/// before its part (overhead `WARM / LANE_LEN`), and on a hit the earlier
/// lanes still finish their part (on average about a lane of extra work per
/// chunk). 4 KiB balances the two for chunks around 1 MiB.
const LANE_LEN: usize = 4096;

/// Tails shorter than this many bytes per lane are scanned sequentially.
const MIN_TAIL_LANE: usize = 256;

/// Sequential scan of `window = data[from - WARM .. to]`: hashes the first
/// [`WARM`] bytes without testing them, then returns the offset (relative to
/// `from`) of the first position whose hash has no bit of `mask` set.
pub(crate) fn scan_sequential(gear: &[u64; 256], window: &[u8], mask: u64) -> Option<usize> {
    let (warm, body) = window.split_at_checked(WARM)?;
    let mut hash = warm.iter().fold(0u64, |h, &b| roll(h, gear, b));
    for (offset, &byte) in body.iter().enumerate() {
        hash = roll(hash, gear, byte);
        if hash & mask == 0 {
            return Some(offset);
        }
    }
    None
}

/// Finishes a lane scan after lane `lane` hit at offset `pos`: lanes before
/// it come first in the data, so the cut is the first hit of lanes
/// `0..lane` after `pos` (they have none up to `pos`), else `pos` in `lane`.
///
/// `shifted[k]` is lane `k`'s hash at offset `pos` shifted left by one (only
/// its bits below 61 need to be right, see [`scan_lanes`]). Runs about once
/// per chunk.
#[cold]
#[inline(never)]
fn resolve_hit(
    gear: &[u64; 256],
    body: &[&[u8]; LANES],
    shifted: [u64; LANES],
    lane: usize,
    pos: usize,
    mask: u64,
) -> usize {
    for (k, (bytes, &start)) in body.iter().zip(&shifted).enumerate().take(lane) {
        let mut hash_shifted = start;
        for (offset, &byte) in bytes.iter().enumerate().skip(pos + 1) {
            let hash = hash_shifted.wrapping_add(gear[usize::from(byte)]);
            if hash & mask == 0 {
                return k * bytes.len() + offset;
            }
            hash_shifted = hash << 1;
        }
    }
    lane * body[0].len() + pos
}

/// Interleaved scan of `window = data[from - WARM .. from + LANES * lane]`
/// with [`LANES`] independent hash chains, lane `k` testing positions
/// `from + k * lane .. from + (k + 1) * lane` after warming up on the
/// [`WARM`] bytes before them. `lane` must be a multiple of 4 and
/// `mask < 2^60`.
///
/// Returns the offset (relative to `from`) of the first position whose hash
/// has no bit of `mask` set, exactly as a sequential scan would.
///
/// One hash chain is latency-bound (shift, then add, for every byte), so the
/// lanes are interleaved for the CPU to overlap them. Each lane then costs
/// per byte a byte load, a table add and a test-and-branch, plus one shift per
/// four bytes: with `w = h << 4` at the start of a group of bytes `a b c d`,
/// `w + (G[a] << 3)` is `h_a << 3`, adding `G[b] << 2` gives `h_b << 2`, and
/// so on down to `h_d` itself, so `h_a & mask == 0` is tested as
/// `w & (mask << 3) == 0`, etc. (The shifted-out top bits never matter: bits
/// only carry upwards, and the masks are below bit 61.) Every test is its own
/// rarely taken branch.
#[inline(always)]
pub(crate) fn scan_lanes(tables: &Tables, window: &[u8], lane: usize, mask: u64) -> Option<usize> {
    let [g0, g1, g2, g3] = &tables.shifted;
    let lane = lane & !3;
    // Lane k's warm-up bytes, then the bytes it tests. Sub-slicing to a known
    // length lets the optimizer drop the bounds checks below.
    let mut warm: [&[u8]; LANES] = [&[]; LANES];
    let mut body: [&[u8]; LANES] = [&[]; LANES];
    for k in 0..LANES {
        let part = window.get(k * lane..)?.get(..WARM + lane)?;
        let (w, b) = part.split_at(WARM);
        warm[k] = &w[..WARM];
        body[k] = &b[..lane];
    }

    let mut hash = [0u64; LANES];
    for j in (0..WARM).step_by(4) {
        for k in 0..LANES {
            hash[k] = (hash[k] << 4)
                .wrapping_add(g3[usize::from(warm[k][j])])
                .wrapping_add(g2[usize::from(warm[k][j + 1])])
                .wrapping_add(g1[usize::from(warm[k][j + 2])])
                .wrapping_add(g0[usize::from(warm[k][j + 3])]);
        }
    }

    let (m0, m1, m2, m3) = (mask, mask << 1, mask << 2, mask << 3);
    let mut j = 0;
    while j + 3 < lane {
        for k in 0..LANES {
            hash[k] = (hash[k] << 4).wrapping_add(g3[usize::from(body[k][j])]);
            if hash[k] & m3 == 0 {
                // hash[0..=k] hold the hashes at j shifted left by 3.
                let shifted = hash.map(|h| h >> 2);
                return Some(resolve_hit(g0, &body, shifted, k, j, mask));
            }
        }
        for k in 0..LANES {
            hash[k] = hash[k].wrapping_add(g2[usize::from(body[k][j + 1])]);
            if hash[k] & m2 == 0 {
                let shifted = hash.map(|h| h >> 1);
                return Some(resolve_hit(g0, &body, shifted, k, j + 1, mask));
            }
        }
        for k in 0..LANES {
            hash[k] = hash[k].wrapping_add(g1[usize::from(body[k][j + 2])]);
            if hash[k] & m1 == 0 {
                return Some(resolve_hit(g0, &body, hash, k, j + 2, mask));
            }
        }
        for k in 0..LANES {
            hash[k] = hash[k].wrapping_add(g0[usize::from(body[k][j + 3])]);
            if hash[k] & m0 == 0 {
                let shifted = hash.map(|h| h << 1);
                return Some(resolve_hit(g0, &body, shifted, k, j + 3, mask));
            }
        }
        j += 4;
    }
    None
}

/// Returns the first position `i` in `from..to` whose gear hash (over the
/// bytes up to and including `data[i]`) has no bit of `mask` set.
///
/// Requires `from >= WARM`, that the hash origin is at or before
/// `from - WARM` (every tested hash covers 64 bytes of the chunk's search
/// region), and `mask < 2^60`. Returns `None` if the range does not fit
/// `data`.
pub(crate) fn scan(tables: &Tables, data: &[u8], mut from: usize, to: usize, mask: u64) -> Option<usize> {
    const BLOCK: usize = LANES * LANE_LEN;
    debug_assert!(mask >> 60 == 0);
    while to.saturating_sub(from) >= BLOCK {
        let window = data.get(from.checked_sub(WARM)?..from + BLOCK)?;
        if let Some(offset) = scan_lanes(tables, window, LANE_LEN, mask) {
            return Some(from + offset);
        }
        from += BLOCK;
    }
    let lane = (to.saturating_sub(from) / LANES) & !3;
    if lane >= MIN_TAIL_LANE {
        let window = data.get(from.checked_sub(WARM)?..from + LANES * lane)?;
        if let Some(offset) = scan_lanes(tables, window, lane, mask) {
            return Some(from + offset);
        }
        from += LANES * lane;
    }
    if from < to {
        let window = data.get(from.checked_sub(WARM)?..to)?;
        return scan_sequential(tables.gear(), window, mask).map(|offset| from + offset);
    }
    None
}
