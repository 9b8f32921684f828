//! The client reads the simulator's municipality completely: the snapshot equals the generator's model.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use common::*;
use orgsync_model::ids::UnitId;
use orgsync_sts::client::StsClient;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts::wire::{Operation, Service};
use orgsync_sts_sim::generate::{Size, expected_read, expected_read_with_unit_contact};
use orgsync_sts_sim::server::SimOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_median_municipality_yields_exactly_the_generated_model() {
    let truth = municipality(Size::M, 7);
    let sim = start(truth.clone(), SimOptions::default()).await;
    let client = client(&sim);
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    let expected = normalised(expected_read(&truth, today()));
    let actual = normalised(read.snapshot.clone());
    assert_eq!(actual.units.len(), expected.units.len());
    assert_eq!(actual.users.len(), expected.users.len());
    for (a, e) in actual.users.iter().zip(&expected.users) {
        assert_eq!(a, e);
    }
    assert_eq!(actual, expected);
    // Only the synthetic passivated users are noted: nothing else is wrong with the data.
    assert!(
        read.issues.is_empty(),
        "{:#?}",
        &read.issues[..read.issues.len().min(5)]
    );
    let stats = sim.stats();
    assert_eq!(stats.calls, read.calls);
    assert!(
        // 4 lists and 4 pages issued ahead.
        stats.max_in_flight <= 8,
        "{} calls in flight",
        stats.max_in_flight
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_contact_data_is_read_by_role_only_with_the_option_and_costs_calls_only_then() {
    let truth = municipality(Size::S, 11);
    let with_contact = truth.units.iter().filter(|u| !u.contact.is_empty()).count();
    assert!(
        with_contact * 2 > truth.units.len(),
        "the generator gives most units contact data"
    );
    let sim = start(truth.clone(), SimOptions::default()).await;

    // Off (the default): no contact data, and not one Adresse call more than the users need.
    let plain = client(&sim).read_snapshot().await.unwrap();
    assert_eq!(
        normalised(plain.snapshot),
        normalised(expected_read(&truth, today()))
    );
    assert!(
        plain.issues.is_empty(),
        "{:?}",
        &plain.issues[..plain.issues.len().min(3)]
    );
    let adresse_lists = |sim: &orgsync_sts_sim::server::Simulator| {
        sim.stats()
            .by_operation
            .iter()
            .filter(|(op, _)| op.to_lowercase().starts_with("adresse/"))
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let plain_adresse = adresse_lists(&sim);
    let virksomhed_lists = |sim: &orgsync_sts_sim::server::Simulator| {
        sim.stats()
            .by_operation
            .get("virksomhed/list")
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(
        virksomhed_lists(&sim),
        0,
        "without the option no Virksomhed is listed"
    );

    // On: postal address, e-mail, phone and EAN by role UUID, whatever the label says (the
    // simulator mislabels some, and adds a web address whose role is not read); P-number and
    // CVR from the Virksomhed objects the units' Produktionsenhed and Skatteenhed name.
    let options = ClientOptions {
        unit_contact: true,
        ..fast_options(&sim)
    };
    let client = StsClient::new(cvr(), &options, SystemLimits::new(0.0)).unwrap();
    let read = client.read_snapshot().await.unwrap();
    assert!(
        read.issues.is_empty(),
        "{:?}",
        &read.issues[..read.issues.len().min(3)]
    );
    let expected = normalised(expected_read_with_unit_contact(&truth, today()));
    let actual = normalised(read.snapshot);
    for (a, e) in actual.units.iter().zip(&expected.units) {
        assert_eq!(a, e);
    }
    assert_eq!(actual, expected);
    assert!(actual.units.iter().any(|u| u.contact.ean.is_some()));
    let with_p_number = actual
        .units
        .iter()
        .filter(|u| u.contact.p_number.is_some())
        .count();
    let with_cvr = actual
        .units
        .iter()
        .filter(|u| u.contact.cvr.is_some())
        .count();
    assert!(
        with_p_number * 2 > actual.units.len() && with_cvr * 2 > actual.units.len(),
        "most units have a P-number ({with_p_number}) and a CVR ({with_cvr}) of {}",
        actual.units.len()
    );
    assert!(actual.units.iter().all(|u| {
        u.contact
            .p_number
            .as_ref()
            .is_none_or(|p| p.len() == 10 && p.bytes().all(|b| b.is_ascii_digit()))
            && u.contact
                .cvr
                .as_ref()
                .is_none_or(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit()))
    }));
    // Each unit names its own production and tax unit: one Virksomhed per number, listed in
    // batches of at most list_batch_size.
    let batch = options.list_batch_size;
    assert_eq!(
        virksomhed_lists(&sim),
        (with_p_number + with_cvr).div_ceil(batch) as u64,
        "Virksomhed lists of at most {batch}"
    );
    let contact_adresse = adresse_lists(&sim) - plain_adresse;
    assert!(
        contact_adresse > plain_adresse,
        "the contact read lists the units' addresses too: {contact_adresse} vs {plain_adresse}"
    );

    // The per-unit read carries the unit's contact data as well.
    let unit = truth
        .units
        .iter()
        .find(|u| {
            u.active
                && u.contact.postal_address.is_some()
                && u.contact.p_number.is_some()
                && u.contact.cvr.is_some()
        })
        .unwrap();
    let one = client.read_unit(unit.uuid).await.unwrap();
    assert!(one.issues.is_empty(), "{:?}", one.issues);
    assert_eq!(one.unit.unwrap().contact, unit.contact);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_returning_full_history_gives_the_same_snapshot() {
    let truth = municipality(Size::S, 3);
    let options = SimOptions {
        full_history: true,
        ..SimOptions::default()
    };
    let sim = start(truth.clone(), options).await;
    let read = client(&sim).read_snapshot().await.unwrap();
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_full_history_a_units_p_number_and_cvr_are_the_ones_valid_now() {
    let truth = municipality(Size::S, 3);
    let sim = start(
        truth.clone(),
        SimOptions {
            full_history: true,
            ..SimOptions::default()
        },
    )
    .await;
    let options = ClientOptions {
        unit_contact: true,
        ..fast_options(&sim)
    };
    let recording = Recording::new(&options);
    let client =
        StsClient::with_transport(cvr(), &options, SystemLimits::new(0.0), recording.clone());
    let read = client.read_snapshot().await.unwrap();
    assert!(
        read.issues.is_empty(),
        "{:?}",
        &read.issues[..read.issues.len().min(3)]
    );
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read_with_unit_contact(&truth, today()))
    );
    // The history is on the wire: some Virksomhed carries an ended Egenskab with another number.
    let log = recording.log.lock().unwrap().clone();
    let company_lists: Vec<String> = log
        .iter()
        .filter(|(call, _, _)| call.service == Service::Virksomhed)
        .filter(|(call, _, _)| call.operation == Operation::List)
        .map(|(_, _, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    assert!(!company_lists.is_empty());
    let objects = company_lists
        .iter()
        .map(|b| b.matches("FiltreretOejebliksbillede>").count() / 2)
        .sum::<usize>();
    let properties = company_lists
        .iter()
        .map(|b| b.matches("Egenskab>").count() / 2)
        .sum::<usize>();
    assert!(
        properties > objects,
        "{properties} Egenskab entries on {objects} Virksomhed objects: no history served"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_unit_read_returns_the_unit_and_the_positions_in_it() {
    let truth = municipality(Size::S, 5);
    let expected = expected_read(&truth, today());
    let sim = start(truth.clone(), SimOptions::default()).await;
    let client = client(&sim);
    // The unit with most positions (as a default client reads it: no contact data).
    let unit = expected
        .units
        .iter()
        .max_by_key(|u| {
            expected
                .users
                .iter()
                .flat_map(|x| &x.positions)
                .filter(|p| p.unit_uuid == u.uuid)
                .count()
        })
        .unwrap()
        .clone();
    let read = client.read_unit(unit.uuid).await.unwrap();
    assert_eq!(read.unit.as_ref(), Some(&unit));
    assert_eq!(read.partial, None);
    let mut want: Vec<_> = expected
        .users
        .iter()
        .filter(|u| u.positions.iter().any(|p| p.unit_uuid == unit.uuid))
        .map(|u| {
            let mut u = u.clone();
            u.positions.retain(|p| p.unit_uuid == unit.uuid);
            u
        })
        .collect();
    want.sort_by_key(|u| u.uuid);
    let got = normalised(orgsync_model::snapshot::Snapshot {
        cvr: cvr(),
        units: vec![],
        users: read.users.clone(),
        partial: None,
    })
    .users;
    let want = normalised(orgsync_model::snapshot::Snapshot {
        cvr: cvr(),
        units: vec![],
        users: want,
        partial: None,
    })
    .users;
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // An unknown unit reads as absent, not as an error.
    let none = client
        .read_unit(UnitId(uuid::Uuid::new_v4()))
        .await
        .unwrap();
    assert!(none.unit.is_none() && none.users.is_empty());
    sim.shutdown().await;
}

/// The simulator writes every date as the instant Danish midnight begins, in UTC
/// (`2026-12-31T23:00:00.000Z` for 1 January), like the independent fake that found the bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_dates_are_danish_dates_across_both_dst_changes_and_new_year() {
    let mut truth = municipality(Size::Xs, 5);
    let date = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
    // New Year (winter, UTC+1), the spring change day, summer (UTC+2), the autumn change day.
    let boundaries = [
        (date("2026-01-01"), Some(date("2099-01-01"))),
        (date("2026-03-29"), Some(date("2099-03-29"))),
        (date("2026-07-01"), Some(date("2099-07-01"))),
        (date("2025-10-25"), Some(date("2099-10-26"))),
    ];
    let mut changed = 0;
    for (user, (from, to)) in truth
        .users
        .iter_mut()
        .filter(|u| u.active && !u.positions.is_empty())
        .zip(boundaries.iter().cycle())
        .take(8)
    {
        user.positions[0].valid_from = Some(*from);
        user.positions[0].valid_to = *to;
        changed += 1;
    }
    assert_eq!(changed, 8);
    let sim = start(truth.clone(), SimOptions::default()).await;
    let read = client(&sim).read_snapshot().await.unwrap();
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    sim.shutdown().await;
}
