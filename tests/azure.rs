//! End-to-end tests against Azurite, the Azure Blob Storage emulator.

mod support;

use support::{Kind, Service, scenarios};

#[test]
fn cli_init_and_keys_on_azure() {
    let Some(s) = Service::shared(Kind::Azure) else { return };
    scenarios::cli_init_and_keys(s);
}

#[test]
fn azure_errors_name_their_cause() {
    let Some(s) = Service::shared(Kind::Azure) else { return };
    scenarios::cli_errors_name_their_cause(s);
}

#[tokio::test]
async fn conditional_create_lets_exactly_one_writer_win_on_azure() {
    let Some(s) = Service::shared(Kind::Azure) else { return };
    scenarios::conditional_create_race(s).await;
}

#[tokio::test]
async fn blobs_and_snapshots_round_trip_on_azure() {
    let Some(s) = Service::shared(Kind::Azure) else { return };
    scenarios::round_trip(s).await;
}
