//! Keyed gear tables and parameter validation.

mod common;

use std::ops::Range;

use cairn_chunker::{Chunker, ChunkerParams, GearTable, ParamsError, SizeField};
use common::{params, random_bytes};

fn cuts(secret: &[u8; 32], data: &[u8]) -> Vec<Range<usize>> {
    Chunker::new(params(4096, 16384, 65536), GearTable::from_secret(secret)).expect("valid").chunks(data).collect()
}

#[test]
fn derivation_is_pinned() {
    // Regression guard for the table derivation: changing it would move
    // every cut point of every existing repository.
    let table = GearTable::from_secret(&[0u8; 32]);
    // Values computed once with an independent (pure Python) BLAKE3.
    assert_eq!(table.entries()[0], 0x24ad_db65_b7b2_380d);
    assert_eq!(table.entries()[255], 0x335a_ab62_4487_3cc1);
    // The derivation as documented, spelled out.
    let mut hasher = blake3::Hasher::new_keyed(&[0u8; 32]);
    hasher.update(b"cairn chunker gear table v1");
    let mut bytes = [0u8; 2048];
    hasher.finalize_xof().fill(&mut bytes);
    for (i, entry) in table.entries().iter().enumerate() {
        let le: [u8; 8] = bytes[8 * i..8 * i + 8].try_into().expect("8 bytes");
        assert_eq!(*entry, u64::from_le_bytes(le), "entry {i}");
    }
}

#[test]
fn same_secret_is_deterministic() {
    let secret = [0x5a; 32];
    assert_eq!(GearTable::from_secret(&secret), GearTable::from_secret(&secret));
    let data = random_bytes(1, 500_000);
    assert_eq!(cuts(&secret, &data), cuts(&secret, &data));
}

#[test]
fn different_secrets_give_different_tables_and_cuts() {
    let a = [1u8; 32];
    let mut b = a;
    b[31] ^= 1;
    let ta = GearTable::from_secret(&a);
    let tb = GearTable::from_secret(&b);
    assert_ne!(ta, tb);
    let same = ta.entries().iter().zip(tb.entries()).filter(|(x, y)| x == y).count();
    assert_eq!(same, 0, "tables should be unrelated");
    let data = random_bytes(2, 1_000_000);
    let (ca, cb) = (cuts(&a, &data), cuts(&b, &data));
    assert!(ca.len() > 20 && cb.len() > 20);
    assert_ne!(ca, cb);
    // Not just shifted a little: most boundaries differ.
    let ends_a: std::collections::HashSet<usize> = ca.iter().map(|r| r.end).collect();
    let shared = cb.iter().filter(|r| ends_a.contains(&r.end)).count();
    assert!(shared < cb.len() / 2, "{shared} of {} cut points shared", cb.len());
}

#[test]
fn debug_does_not_print_the_table() {
    let table = GearTable::from_secret(&[9; 32]);
    let entry = format!("{:x}", table.entries()[0]);
    let shown = format!("{table:?}");
    assert!(!shown.contains(&entry), "{shown}");
    let chunker = Chunker::new(ChunkerParams::default(), table).expect("valid");
    let shown = format!("{chunker:?}");
    assert!(!shown.contains(&entry), "{shown}");
}

#[test]
fn default_params_are_valid() {
    let p = ChunkerParams::default();
    assert_eq!(p, params(512 * 1024, 1024 * 1024, 8 * 1024 * 1024));
    assert_eq!(p.validate(), Ok(()));
    let c = Chunker::new(p, GearTable::from_secret(&[0; 32])).expect("valid");
    assert_eq!(c.params(), p);
}

#[test]
fn out_of_range() {
    let cases = [
        (params(62, 1024, 4096), SizeField::Min, 62, 64, 1 << 20),
        (params((1 << 20) + 2, 2 << 20, 4 << 20), SizeField::Min, (1 << 20) + 2, 64, 1 << 20),
        (params(64, 254, 4096), SizeField::Avg, 254, 256, 4 << 20),
        (params(1024, (4 << 20) + 2, 8 << 20), SizeField::Avg, (4 << 20) + 2, 256, 4 << 20),
        (params(64, 256, 1022), SizeField::Max, 1022, 1024, 16 << 20),
        (params(1024, 4096, (16 << 20) + 2), SizeField::Max, (16 << 20) + 2, 1024, 16 << 20),
        (params(0, 0, 0), SizeField::Min, 0, 64, 1 << 20),
        (params(u32::MAX, u32::MAX, u32::MAX), SizeField::Min, u32::MAX, 64, 1 << 20),
    ];
    for (p, field, value, min, max) in cases {
        let err = p.validate().expect_err("must be rejected");
        assert_eq!(err, ParamsError::OutOfRange { field, value, min, max }, "{p:?}");
        let msg = err.to_string();
        assert!(msg.contains(field.name()), "{msg}");
        assert!(msg.contains(&format!("{min}..={max}")), "{msg}");
        assert!(Chunker::new(p, GearTable::from_secret(&[0; 32])).is_err(), "{p:?}");
    }
}

#[test]
fn odd_sizes() {
    for (p, field, value) in [
        (params(65, 1024, 4096), SizeField::Min, 65),
        (params(64, 1025, 4096), SizeField::Avg, 1025),
        (params(64, 1024, 4097), SizeField::Max, 4097),
    ] {
        let err = p.validate().expect_err("must be rejected");
        assert_eq!(err, ParamsError::Odd { field, value });
        let msg = err.to_string();
        assert!(msg.contains(field.name()) && msg.contains("even"), "{msg}");
    }
}

#[test]
fn wrong_order() {
    for p in [
        params(4096, 4096, 8192),
        params(8192, 4096, 16384),
        params(1024, 8192, 8192),
        params(1024, 8192, 4096),
        params(1 << 20, 4 << 20, 2 << 20),
    ] {
        let err = p.validate().expect_err("must be rejected");
        assert_eq!(err, ParamsError::Order { min_size: p.min_size, avg_size: p.avg_size, max_size: p.max_size });
        let msg = err.to_string();
        assert!(msg.contains("min_size < avg_size < max_size"), "{msg}");
    }
}

#[test]
fn errors_are_std_errors() {
    let err: Box<dyn std::error::Error + Send + Sync> = params(0, 0, 0).validate().expect_err("invalid").into();
    assert!(err.to_string().contains("min_size"));
}

#[test]
fn extreme_valid_params_work() {
    for p in [params(64, 256, 1024), params(1 << 20, 4 << 20, 16 << 20), params(64, 4 << 20, 16 << 20)] {
        let c = Chunker::new(p, GearTable::from_secret(&[1; 32])).expect("valid");
        let data = random_bytes(3, 3_000_000);
        let total: usize = c.chunks(&data).map(|r| r.len()).sum();
        assert_eq!(total, data.len());
        assert!(c.chunks(&data).all(|r| r.len() <= p.max_size as usize));
    }
}

#[test]
fn chunker_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Chunker>();
    check::<GearTable>();
}
