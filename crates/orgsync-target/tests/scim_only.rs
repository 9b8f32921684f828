//! SCIM behaviour against the real scim2-server that the SQLite adapter has no counterpart for:
//! users of other provisioning systems, numbers and addresses orgsync does not own, a wrong
//! tenant URL.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

mod common;

use common::{Harness, ScimHarness, TOKEN};
use orgsync_model::ids::UserId;
use orgsync_model::plan::{Action, CreateDefaults, UserFields, UserItem};
use orgsync_model::policy::Mappings;
use orgsync_target::{Target, TargetError, WriteOutcome};
use serde_json::{Value, json};

fn item(action: Action, phone: Option<&str>) -> UserItem {
    UserItem {
        action,
        external_id: Some(UserId(uuid::Uuid::from_u128(7))),
        fields: UserFields {
            user_name: "anna@kommune.dk".into(),
            email: Some("anna@kommune.dk".into()),
            first_name: Some("Anna".into()),
            last_name: Some("Berg".into()),
            memberships: vec![],
            primary_department: None,
            title: None,
            phone: phone.map(str::to_owned),
            manager: None,
        },
        defaults: (action == Action::Create).then(|| CreateDefaults {
            user_type: "employee".into(),
            language: "da".into(),
            timezone: "Europe/Copenhagen".into(),
            currency: "DKK".into(),
            must_change_password: true,
        }),
        changes: None,
    }
}

async fn raw_users(h: &ScimHarness) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}Users", h.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["Resources"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_user_another_system_provisioned_with_a_guid_external_id_is_never_touched() {
    let h = ScimHarness::start(Mappings::default()).await;
    // Entra-style: a GUID in externalId, no orgsync marker.
    h.seed_user(
        "entra@kommune.dk",
        Some("6f1c9a34-2b7e-4d8a-9c21-5e7f0a1b2c3d"),
    )
    .await;
    let state = h.target().read_state().await.unwrap();
    assert!(
        state.users.is_empty(),
        "another system's user is not orgsync's to plan for: {state:?}"
    );
}

#[tokio::test]
async fn updating_the_work_phone_keeps_numbers_and_addresses_orgsync_does_not_own() {
    let h = ScimHarness::start(Mappings {
        phone: true,
        ..Mappings::default()
    })
    .await;
    h.target()
        .write_user(&item(Action::Create, Some("+45 1111 1111")))
        .await
        .unwrap();
    // Someone adds a mobile number and a private address in the HR system.
    let id = raw_users(&h).await[0]["id"].as_str().unwrap().to_owned();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "value": {
        "phoneNumbers": [{"value": "+45 2222 2222", "type": "mobile"}],
        "emails": [{"value": "anna@privat.dk", "type": "home"}]}}]});
    let response = reqwest::Client::new()
        .patch(format!("{}Users/{id}", h.base_url))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/scim+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );

    let mut update = item(Action::Update, Some("+45 3333 3333"));
    update.fields.email = Some("anna.berg@kommune.dk".into());
    update.fields.user_name = "anna.berg@kommune.dk".into();
    assert_eq!(
        h.target().write_user(&update).await.unwrap(),
        WriteOutcome::Written
    );
    let user = &raw_users(&h).await[0];
    let phones: Vec<&str> = user["phoneNumbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert!(
        phones.contains(&"+45 2222 2222") && phones.contains(&"+45 3333 3333"),
        "{phones:?}"
    );
    assert!(!phones.contains(&"+45 1111 1111"), "{phones:?}");
    let emails: Vec<&str> = user["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert!(
        emails.contains(&"anna@privat.dk") && emails.contains(&"anna.berg@kommune.dk"),
        "{emails:?}"
    );

    // STS loses the phone: only the work number goes.
    let mut no_phone = update.clone();
    no_phone.fields.phone = None;
    h.target().write_user(&no_phone).await.unwrap();
    let user = &raw_users(&h).await[0];
    let phones: Vec<&str> = user["phoneNumbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(phones, ["+45 2222 2222"]);
    // And a repeat writes nothing.
    assert_eq!(
        h.target().write_user(&no_phone).await.unwrap(),
        WriteOutcome::Unchanged
    );
}

#[tokio::test]
async fn a_base_url_for_a_missing_tenant_is_a_configuration_error_not_an_empty_target() {
    let h = ScimHarness::start(Mappings::default()).await;
    let wrong = h.base_url.replace("/11111111/", "/99999999/");
    let target = orgsync_target::scim::ScimTarget::new(orgsync_target::scim::ScimOptions::new(
        wrong.parse().unwrap(),
        secrecy::SecretString::from(TOKEN.to_owned()),
        orgsync_model::ids::Cvr::parse("11111111").unwrap(),
        Mappings::default(),
    ))
    .unwrap();
    let error = target.health().await.unwrap_err();
    assert!(matches!(error, TargetError::Config(_)), "{error}");
    assert!(
        error.to_string().contains("check target.base_url"),
        "{error}"
    );
    let error = target.read_state().await.unwrap_err();
    assert!(matches!(error, TargetError::Config(_)), "{error}");
    assert!(
        target
            .write_user(&item(Action::Create, None))
            .await
            .is_err()
    );
}
