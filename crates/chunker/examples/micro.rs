//! Temporary micro benchmark of scan loop variants.
use std::hint::black_box;
use std::time::Instant;

const WARM: usize = 63;

#[inline(always)]
fn roll(h: u64, g: &[u64; 256], b: u8) -> u64 {
    (h << 1).wrapping_add(g[b as usize])
}

#[inline(never)]
fn seq(g: &[u64; 256], w: &[u8], mask: u64) -> Option<usize> {
    let mut h = 0u64;
    for (i, &b) in w.iter().enumerate() {
        h = roll(h, g, b);
        if h & mask == 0 && i >= WARM {
            return Some(i);
        }
    }
    None
}

#[inline(never)]
fn lanes_any<const N: usize>(g: &[u64; 256], window: &[u8], lane: usize, mask: u64) -> Option<usize> {
    let mut warm: [&[u8]; N] = [&[]; N];
    let mut body: [&[u8]; N] = [&[]; N];
    for k in 0..N {
        let part = window.get(k * lane..k * lane + WARM + lane)?;
        let (w, b) = part.split_at(WARM);
        warm[k] = &w[..WARM];
        body[k] = &b[..lane];
    }
    let mut hash = [0u64; N];
    for j in 0..WARM {
        for k in 0..N {
            hash[k] = roll(hash[k], g, warm[k][j]);
        }
    }
    for j in 0..lane {
        for k in 0..N {
            hash[k] = roll(hash[k], g, body[k][j]);
        }
        if hash.iter().any(|&h| h & mask == 0) {
            return Some(j);
        }
    }
    None
}

#[inline(never)]
fn lanes_fold<const N: usize>(g: &[u64; 256], window: &[u8], lane: usize, mask: u64) -> Option<usize> {
    let mut warm: [&[u8]; N] = [&[]; N];
    let mut body: [&[u8]; N] = [&[]; N];
    for k in 0..N {
        let part = window.get(k * lane..k * lane + WARM + lane)?;
        let (w, b) = part.split_at(WARM);
        warm[k] = &w[..WARM];
        body[k] = &b[..lane];
    }
    let mut hash = [0u64; N];
    for j in 0..WARM {
        for k in 0..N {
            hash[k] = roll(hash[k], g, warm[k][j]);
        }
    }
    for j in 0..lane {
        let mut hit = false;
        for k in 0..N {
            hash[k] = roll(hash[k], g, body[k][j]);
            hit |= hash[k] & mask == 0;
        }
        if hit {
            return Some(j);
        }
    }
    None
}

/// Two bytes per step with the shifted table.
#[inline(never)]
fn lanes_pair<const N: usize>(g: &[u64; 256], gls: &[u64; 256], window: &[u8], lane: usize, mask: u64) -> Option<usize> {
    let lane = lane & !1;
    let mut warm: [&[u8]; N] = [&[]; N];
    let mut body: [&[u8]; N] = [&[]; N];
    for k in 0..N {
        let part = window.get(k * lane..k * lane + WARM + lane)?;
        let (w, b) = part.split_at(WARM);
        warm[k] = &w[..WARM];
        body[k] = &b[..lane];
    }
    let mut hash = [0u64; N];
    for j in 0..WARM {
        for k in 0..N {
            hash[k] = roll(hash[k], g, warm[k][j]);
        }
    }
    let mask_ls = mask << 1;
    for j in (0..lane).step_by(2) {
        let mut hit = false;
        for k in 0..N {
            let p = &body[k][j..j + 2];
            hash[k] = (hash[k] << 2).wrapping_add(gls[p[0] as usize]);
            hit |= hash[k] & mask_ls == 0;
            hash[k] = hash[k].wrapping_add(g[p[1] as usize]);
            hit |= hash[k] & mask == 0;
        }
        if hit {
            return Some(j);
        }
    }
    None
}

/// Hash only, no tests: the ceiling.
#[inline(never)]
fn lanes_notest<const N: usize>(g: &[u64; 256], window: &[u8], lane: usize, _mask: u64) -> Option<usize> {
    let mut body: [&[u8]; N] = [&[]; N];
    for k in 0..N {
        let part = window.get(k * lane..k * lane + WARM + lane)?;
        body[k] = &part[..WARM + lane];
    }
    let mut hash = [0u64; N];
    for j in 0..lane + WARM {
        for k in 0..N {
            hash[k] = roll(hash[k], g, body[k][j]);
        }
    }
    Some(hash.iter().fold(0, |a, b| a ^ *b as usize))
}

/// Words: one u64 load per 8 bytes per lane.
#[inline(never)]
fn lanes_words<const N: usize>(g: &[u64; 256], window: &[u8], lane: usize, mask: u64) -> Option<usize> {
    let lane = lane & !7;
    let mut warm: [&[u8]; N] = [&[]; N];
    let mut body: [&[u8]; N] = [&[]; N];
    for k in 0..N {
        let part = window.get(k * lane..k * lane + WARM + lane)?;
        let (w, b) = part.split_at(WARM);
        warm[k] = &w[..WARM];
        body[k] = &b[..lane];
    }
    let mut hash = [0u64; N];
    for j in 0..WARM {
        for k in 0..N {
            hash[k] = roll(hash[k], g, warm[k][j]);
        }
    }
    for j in (0..lane).step_by(8) {
        let mut words = [0u64; N];
        for k in 0..N {
            words[k] = u64::from_le_bytes(body[k][j..j + 8].try_into().unwrap());
        }
        let mut hit = false;
        for b in 0..8 {
            for k in 0..N {
                hash[k] = roll(hash[k], g, (words[k] >> (8 * b)) as u8);
                hit |= hash[k] & mask == 0;
            }
        }
        if hit {
            return Some(j);
        }
    }
    None
}

/// Test unrolled 2 steps, one branch per 2 steps.
#[inline(never)]
fn lanes_fold2<const N: usize>(g: &[u64; 256], window: &[u8], lane: usize, mask: u64) -> Option<usize> {
    let lane = lane & !1;
    let mut warm: [&[u8]; N] = [&[]; N];
    let mut body: [&[u8]; N] = [&[]; N];
    for k in 0..N {
        let part = window.get(k * lane..k * lane + WARM + lane)?;
        let (w, b) = part.split_at(WARM);
        warm[k] = &w[..WARM];
        body[k] = &b[..lane];
    }
    let mut hash = [0u64; N];
    for j in 0..WARM {
        for k in 0..N {
            hash[k] = roll(hash[k], g, warm[k][j]);
        }
    }
    for j in (0..lane).step_by(2) {
        let mut hit = false;
        for k in 0..N {
            let p = &body[k][j..j + 2];
            hash[k] = roll(hash[k], g, p[0]);
            hit |= hash[k] & mask == 0;
            hash[k] = roll(hash[k], g, p[1]);
            hit |= hash[k] & mask == 0;
        }
        if hit {
            return Some(j);
        }
    }
    None
}

fn main() {
    let n = 64 << 20;
    let mut x = 0x1234_5678_9abc_def1u64;
    let data: Vec<u8> = (0..n / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let mut g = [0u64; 256];
    for (i, e) in g.iter_mut().enumerate() {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        *e = x ^ i as u64;
    }
    let gls = g.map(|v| v << 1);
    let mask = black_box(0xffff_ffff_ffff_fff0u64);
    let lane: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(4096);
    let run = |name: &str, f: &dyn Fn(&[u8]) -> Option<usize>, block: usize| {
        let mut best = 0f64;
        for _ in 0..7 {
            let t = Instant::now();
            let mut r = 0;
            let mut from = WARM;
            while from + block <= data.len() {
                if let Some(i) = f(&data[from - WARM..from + block]) { r += i; }
                from += block;
            }
            black_box(r);
            let s = t.elapsed().as_secs_f64();
            best = best.max((from - WARM) as f64 / s / 1e9);
        }
        println!("{name:12} {best:.2} GB/s");
    };
    run("notest4", &|w| lanes_notest::<4>(&g, w, lane, mask), lane * 4);
    run("notest8", &|w| lanes_notest::<8>(&g, w, lane, mask), lane * 8);
    run("words4", &|w| lanes_words::<4>(&g, w, lane, mask), lane * 4);
    run("words8", &|w| lanes_words::<8>(&g, w, lane, mask), lane * 8);
    run("fold2_4", &|w| lanes_fold2::<4>(&g, w, lane, mask), lane * 4);
    run("fold2_8", &|w| lanes_fold2::<8>(&g, w, lane, mask), lane * 8);
    run("seq", &|w| seq(&g, w, mask), lane * 4);
    run("any4", &|w| lanes_any::<4>(&g, w, lane, mask), lane * 4);
    run("fold4", &|w| lanes_fold::<4>(&g, w, lane, mask), lane * 4);
    run("any8", &|w| lanes_any::<8>(&g, w, lane, mask), lane * 8);
    run("fold8", &|w| lanes_fold::<8>(&g, w, lane, mask), lane * 8);
    run("pair4", &|w| lanes_pair::<4>(&g, &gls, w, lane, mask), lane * 4);
    run("pair8", &|w| lanes_pair::<8>(&g, &gls, w, lane, mask), lane * 8);
    run("any2", &|w| lanes_any::<2>(&g, w, lane, mask), lane * 2);
    run("any3", &|w| lanes_any::<3>(&g, w, lane, mask), lane * 3);
}
