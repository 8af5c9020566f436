//! Payload compression: zstd when it pays, raw otherwise.
//!
//! Every sealed plaintext starts with one byte naming its compression
//! (0 = raw, 1 = zstd frame). Incompressible data is detected cheaply by
//! compressing a 32 KiB sample at the fastest level first, so random or
//! already-compressed data costs almost nothing beyond that sample.

use std::cell::RefCell;

/// The compression byte's values.
pub(crate) const RAW: u8 = 0;
pub(crate) const ZSTD: u8 = 1;

const SAMPLE: usize = 32 * 1024;
/// A sample that shrinks by less than this fraction marks the data incompressible.
const SAMPLE_MIN_GAIN: f64 = 0.03;

thread_local! {
    // One zstd context per thread, rebuilt when the level changes (so twice
    // per large blob: the sample runs at level 1). Keeping one context per
    // level instead measured slower (`cargo bench --bench repo`, id_and_seal:
    // 0.56 vs 0.75 GB/s random, 0.11 vs 0.15 GB/s text), so this stays.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

thread_local! {
    /// One decompression context per thread (creating one per blob showed
    /// in profiles of restores and tree reads).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn with_compressor<T>(level: i32, f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T) -> Option<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        slot.as_mut().map(|(_, c)| f(c))
    })
}

/// Appends `compression byte || payload` to `out`, compressing with zstd at
/// `level` when that saves space. `level == 0` disables compression.
pub(crate) fn encode(data: &[u8], level: i32, out: &mut Vec<u8>) {
    let start = out.len();
    if level != 0 && worth_trying(data) {
        // Compress straight into `out` (callers reuse it across blobs, so
        // no fresh memory is touched per blob).
        out.resize(start + 1 + zstd::zstd_safe::compress_bound(data.len()), 0);
        out[start] = ZSTD;
        let written = with_compressor(level, |c| c.compress_to_buffer(data, &mut out[start + 1..]).ok()).flatten();
        if let Some(n) = written.filter(|&n| n < data.len()) {
            out.truncate(start + 1 + n);
            return;
        }
        out.truncate(start);
    }
    out.push(RAW);
    out.extend_from_slice(data);
}

fn worth_trying(data: &[u8]) -> bool {
    if data.len() < 64 {
        return false;
    }
    if data.len() <= 4 * SAMPLE {
        return true;
    }
    let start = (data.len() - SAMPLE) / 2;
    let sample = &data[start..start + SAMPLE];
    match with_compressor(1, |c| c.compress(sample).ok()).flatten() {
        Some(c) => (c.len() as f64) < SAMPLE as f64 * (1.0 - SAMPLE_MIN_GAIN),
        None => true,
    }
}

/// Decodes `compression byte || payload`. `limit` bounds the decompressed
/// size so a forged frame cannot exhaust memory.
pub(crate) fn decode(plain: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let raw = decode_into(plain, limit, &mut out)?;
    Ok(if raw { plain[1..].to_vec() } else { out })
}

/// Like [`decode`], reusing `out`: a zstd payload is decompressed into
/// `out`; for a raw payload `out` is left alone and `true` is returned (the
/// data is `plain[1..]`, no copy needed).
pub(crate) fn decode_into(plain: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<bool, String> {
    let (&kind, body) = plain.split_first().ok_or("empty payload")?;
    match kind {
        RAW => Ok(true),
        ZSTD => {
            let size = match zstd::zstd_safe::get_frame_content_size(body) {
                Ok(Some(size)) => size,
                Ok(None) => return Err("zstd frame without content size".into()),
                Err(_) => return Err("not a zstd frame".into()),
            };
            if size > limit as u64 {
                return Err(format!("decompressed size {size} exceeds the limit of {limit} bytes"));
            }
            out.clear();
            out.reserve(size as usize);
            DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = zstd::bulk::Decompressor::new().ok();
                    }
                    match slot.as_mut() {
                        Some(d) => d.decompress_to_buffer(body, out).map(drop),
                        None => zstd::bulk::decompress_to_buffer(body, out).map(drop),
                    }
                })
                .map_err(|e| format!("zstd: {e}"))?;
            if out.len() as u64 != size {
                return Err(format!("zstd frame declared {size} bytes but held {}", out.len()));
            }
            Ok(false)
        }
        other => Err(format!("unknown compression {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_data_is_compressed_and_random_data_is_not() {
        let text: Vec<u8> =
            (0..200_000u32).flat_map(|i| format!("line {} of the log\n", i % 977).into_bytes()).collect();
        let mut out = Vec::new();
        encode(&text, 3, &mut out);
        assert_eq!(out[0], ZSTD);
        assert!(out.len() < text.len() / 4);
        assert_eq!(decode(&out, text.len()).unwrap(), text);
        assert!(decode(&out, text.len() - 1).is_err());

        let random: Vec<u8> = (0..300_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i as u8).rotate_left(3))
            .collect();
        let random: Vec<u8> = blake3::Hasher::new().update(&random).finalize_xof().fill_vec(random.len());
        let mut out = Vec::new();
        encode(&random, 3, &mut out);
        assert_eq!(out[0], RAW);
        assert_eq!(decode(&out, usize::MAX).unwrap(), random);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(decode(&[], 10).is_err());
        assert!(decode(&[7, 1, 2], 10).is_err());
        assert!(decode(&[ZSTD, 1, 2, 3], 10).is_err());
        let mut out = Vec::new();
        encode(&[0u8; 0], 0, &mut out);
        assert_eq!(decode(&out, 0).unwrap(), Vec::<u8>::new());
    }

    trait FillVec {
        fn fill_vec(self, n: usize) -> Vec<u8>;
    }
    impl FillVec for blake3::OutputReader {
        fn fill_vec(mut self, n: usize) -> Vec<u8> {
            let mut v = vec![0u8; n];
            self.fill(&mut v);
            v
        }
    }
}
