//! What a repository costs a month, estimated from what cairn knows: its
//! size, how much the runs add, and what checks and drills read back. An
//! estimate, not the bill: the rate cards are list prices (read on
//! 2026-12-05) and every price can be given in the config instead.
//!
//! | card | storage /GB-month | PUT /1,000 | GET /1,000 | egress /GB | free |
//! | --- | --- | --- | --- | --- | --- |
//! | `aws-s3-standard` (`:us-east-1`) | 0.023 | 0.005 | 0.0004 | 0.09 | 100 GB egress a month |
//! | `aws-s3-standard:ap-southeast-2` | 0.025 | 0.0055 | 0.00044 | 0.114 | 100 GB egress a month |
//! | `b2` | 0.00695 | 0 | 0 | 0 (within 3× the stored size) | 10 GB stored |
//! | `local` | 0 | 0 | 0 | 0 | |

use serde::{Deserialize, Serialize};

use super::config::{Prices, RatesConfig};

/// Bytes in a GB as storage providers bill them.
const GB: f64 = 1e9;

/// Requests a run makes besides one PUT per pack: its snapshot, an index
/// file, the lease and listings.
const REQUESTS_PER_RUN: f64 = 4.0;

/// The built-in rate cards, by name.
const CARDS: &[(&str, Prices)] = &[
    (
        "aws-s3-standard:us-east-1",
        Prices {
            storage_per_gb_month: 0.023,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            egress_per_gb: 0.09,
            free_gb: 0.0,
            free_egress_gb: 100.0,
        },
    ),
    (
        "aws-s3-standard:ap-southeast-2",
        Prices {
            storage_per_gb_month: 0.025,
            put_per_1000: 0.0055,
            get_per_1000: 0.00044,
            egress_per_gb: 0.114,
            free_gb: 0.0,
            free_egress_gb: 100.0,
        },
    ),
    (
        "b2",
        Prices {
            storage_per_gb_month: 0.00695,
            put_per_1000: 0.0,
            get_per_1000: 0.0,
            egress_per_gb: 0.0,
            free_gb: 10.0,
            free_egress_gb: 0.0,
        },
    ),
    (
        "local",
        Prices {
            storage_per_gb_month: 0.0,
            put_per_1000: 0.0,
            get_per_1000: 0.0,
            egress_per_gb: 0.0,
            free_gb: 0.0,
            free_egress_gb: 0.0,
        },
    ),
];

/// The prices of `rates`, with the card's name, or what is wrong.
pub fn prices(rates: &RatesConfig) -> Result<(String, Prices), String> {
    match rates {
        RatesConfig::Prices(p) => {
            let all =
                [p.storage_per_gb_month, p.put_per_1000, p.get_per_1000, p.egress_per_gb, p.free_gb, p.free_egress_gb];
            if all.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err("prices must be zero or more".into());
            }
            Ok(("custom".into(), *p))
        }
        RatesConfig::Named(name) => {
            let full = if name == "aws-s3-standard" { "aws-s3-standard:us-east-1" } else { name.as_str() };
            CARDS.iter().find(|(n, _)| *n == full).map(|(n, p)| ((*n).to_owned(), *p)).ok_or_else(|| {
                let known: Vec<&str> = CARDS.iter().map(|(n, _)| *n).collect();
                format!(
                    "no built-in rate card {name:?} (there are: aws-s3-standard, {}); give the prices as a table \
                     instead: rates = {{ storage-per-gb-month = 0.02, put-per-1000 = 0.005 }}",
                    known.join(", ")
                )
            })
        }
    }
}

/// Parses a budget: `8`, `8.50 USD`, `8 USD/month`.
pub fn parse_budget(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/month").trim().trim_end_matches("USD").trim().trim_start_matches('$');
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(format!("budget {text:?} is not an amount in USD a month: write e.g. \"8 USD/month\"")),
    }
}

/// What a repository does in a month, as far as a bill goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MonthlyUse {
    /// Bytes stored (now).
    pub stored_bytes: u64,
    /// Bytes written in a month.
    pub written_bytes: f64,
    /// Runs in a month.
    pub runs: f64,
    /// Bytes read back (checks, drills) in a month.
    pub read_bytes: f64,
    /// The pack size (one PUT, and one GET when read whole).
    pub pack_bytes: u64,
}

/// An estimated monthly cost, in USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEstimate {
    /// The rate card used.
    pub rates: String,
    /// For the bytes stored.
    pub storage: f64,
    /// For requests (uploads of packs, snapshots and indexes; reads).
    pub requests: f64,
    /// For bytes downloaded (checks and drills).
    pub egress: f64,
    /// The sum.
    pub total: f64,
}

/// Estimates a month of `usage` at `prices` (a pure function). The free
/// egress allowance (AWS's is per account) is counted as this
/// repository's own.
pub fn estimate(rates: &str, prices: &Prices, usage: &MonthlyUse) -> CostEstimate {
    let stored_gb = usage.stored_bytes as f64 / GB;
    let storage = (stored_gb - prices.free_gb).max(0.0) * prices.storage_per_gb_month;
    let pack = usage.pack_bytes.max(1) as f64;
    let puts = (usage.written_bytes / pack).ceil() + usage.runs * REQUESTS_PER_RUN;
    let gets = (usage.read_bytes / pack).ceil();
    let requests = puts / 1000.0 * prices.put_per_1000 + gets / 1000.0 * prices.get_per_1000;
    let egress = (usage.read_bytes / GB - prices.free_egress_gb).max(0.0) * prices.egress_per_gb;
    CostEstimate { rates: rates.to_owned(), storage, requests, egress, total: storage + requests + egress }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(name: &str) -> Prices {
        prices(&RatesConfig::Named(name.into())).unwrap().1
    }

    /// The research brief's worked example: 200 GB stored, +30 GB a month,
    /// a weekly 2 GiB check and a monthly drill from the local repository.
    #[test]
    fn the_worked_example() {
        let usage = MonthlyUse {
            stored_bytes: 200_000_000_000,
            written_bytes: 30e9,
            runs: 30.0,
            read_bytes: 4.0 * 2.0 * 1024f64.powi(3),
            pack_bytes: 16 * 1024 * 1024,
        };
        // (card, storage, total) in USD
        let table =
            [("aws-s3-standard", 4.60, 4.61), ("aws-s3-standard:ap-southeast-2", 5.00, 5.01), ("b2", 1.32, 1.32)];
        for (name, storage, total) in table {
            let cost = estimate(name, &card(name), &usage);
            assert!((cost.storage - storage).abs() < 0.01, "{name}: {cost:?}");
            assert!((cost.total - total).abs() < 0.01, "{name}: {cost:?}");
        }
        assert_eq!(estimate("local", &card("local"), &usage).total, 0.0);
    }

    #[test]
    fn names_prices_and_budgets() {
        assert_eq!(prices(&RatesConfig::Named("aws-s3-standard".into())).unwrap().0, "aws-s3-standard:us-east-1");
        let unknown = prices(&RatesConfig::Named("aws-s3-standard:mars-1".into())).unwrap_err();
        assert!(unknown.contains("b2") && unknown.contains("storage-per-gb-month"), "{unknown}");
        let negative = Prices { storage_per_gb_month: -1.0, ..Default::default() };
        assert!(prices(&RatesConfig::Prices(negative)).is_err());
        for (text, amount) in [("8", 8.0), ("8 USD/month", 8.0), ("$2.5", 2.5), ("12.75 USD", 12.75)] {
            assert_eq!(parse_budget(text), Ok(amount), "{text}");
        }
        for bad in ["", "eight", "-1", "8 EUR"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }
}
