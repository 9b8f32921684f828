//! Between the model and SCIM resources: users (core + enterprise + orgsync User extension) and
//! departments (Groups with the orgsync OrgUnit extension). The extension schemas ship in
//! `crates/orgsync-target/scim/`.

use std::collections::BTreeSet;

use orgsync_model::fields::UserField;
use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{CreateDefaults, DepartmentItem, UserFields};
use orgsync_model::policy::Mappings;
use orgsync_model::snapshot::UnitContact;
use orgsync_model::target::{TargetDepartment, TargetUser};
use scim_v2::Asserted;
use scim_v2::models::enterprise_user::{EnterpriseUser, Manager};
use scim_v2::models::group::Group;
use scim_v2::models::others::{OperationTarget, PatchOp, PatchOperation};
use scim_v2::models::user::{Email, Name, PhoneNumber, User};
use scim_v2::schema_urns;
use serde_json::{Map, Value, json};

/// The value of the User extension's `source`: the marker of users orgsync created or adopted.
pub(crate) const SOURCE: &str = "orgsync";

/// The orgsync extension on Users: `source`, `currency`, `mustChangePassword`, `primaryDepartment`.
pub const USER_EXTENSION: &str = "urn:ietf:params:scim:schemas:extension:orgsync:2.0:User";
/// The orgsync extension on Groups that are departments: `parent`, `customId`, `active`, `manager`,
/// and with the `unit_contact` mapping `postalAddress`, `email`, `phone`, `ean`, `pNumber`, `cvr`.
pub const ORG_UNIT_EXTENSION: &str = "urn:ietf:params:scim:schemas:extension:orgsync:2.0:OrgUnit";

fn display_name(fields: &UserFields) -> Option<String> {
    let parts: Vec<&str> = [fields.first_name.as_deref(), fields.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn name(fields: &UserFields) -> Name {
    Name {
        given_name: fields
            .first_name
            .clone()
            .map_or(Asserted::absent(), Asserted::from),
        family_name: fields
            .last_name
            .clone()
            .map_or(Asserted::absent(), Asserted::from),
        ..Name::default()
    }
}

fn emails(email: &str) -> Vec<Email> {
    vec![Email {
        value: Some(email.to_owned()),
        r#type: Some("work".to_owned()),
        primary: Some(true),
        ..Email::default()
    }]
}

fn phones(phone: &str) -> Vec<PhoneNumber> {
    vec![PhoneNumber {
        value: Some(phone.to_owned()),
        r#type: Some("work".to_owned()),
        ..PhoneNumber::default()
    }]
}

fn manager(scim_id: &str) -> EnterpriseUser {
    EnterpriseUser {
        manager: Asserted::from(Manager {
            value: Asserted::from(scim_id.to_owned()),
            ..Manager::default()
        }),
        ..EnterpriseUser::default()
    }
}

/// The body of `POST /Users`. `password` is a fresh random one (never logged or kept).
pub(crate) fn new_user(
    external_id: Option<UserId>,
    fields: &UserFields,
    defaults: Option<&CreateDefaults>,
    mappings: Mappings,
    manager_scim_id: Option<&str>,
    password: String,
) -> Value {
    let mut user: User = User {
        external_id: external_id.map_or(Asserted::absent(), |id| Asserted::from(id.to_string())),
        user_name: fields.user_name.clone(),
        name: Asserted::from(name(fields)),
        display_name: display_name(fields).map_or(Asserted::absent(), Asserted::from),
        emails: fields
            .email
            .as_deref()
            .map_or(Asserted::absent(), |e| Asserted::from(emails(e))),
        active: Asserted::from(true),
        password: Asserted::from(password),
        ..User::default()
    };
    if let Some(d) = defaults {
        user.user_type = Asserted::from(d.user_type.clone());
        user.preferred_language = Asserted::from(d.language.clone());
        user.locale = Asserted::from(d.language.clone());
        user.timezone = Asserted::from(d.timezone.clone());
    }
    if mappings.title {
        if let Some(title) = &fields.title {
            user.title = Asserted::from(title.clone());
        }
    }
    if mappings.phone {
        if let Some(phone) = &fields.phone {
            user.phone_numbers = Asserted::from(phones(phone));
        }
    }
    if let Some(id) = manager_scim_id.filter(|_| mappings.manager) {
        user.enterprise_user = Asserted::from(manager(id));
        user.schemas.push(schema_urns::ENTERPRISE_USER.to_owned());
    }
    user.schemas.push(USER_EXTENSION.to_owned());
    let mut value = serde_json::to_value(&user).unwrap_or(Value::Null);
    let mut extension = Map::new();
    extension.insert("source".into(), json!(SOURCE));
    if let Some(department) = fields.primary_department {
        extension.insert("primaryDepartment".into(), json!(department.to_string()));
    }
    if let Some(d) = defaults {
        extension.insert("currency".into(), json!(d.currency));
        extension.insert("mustChangePassword".into(), json!(d.must_change_password));
    }
    if let Some(object) = value.as_object_mut() {
        object.insert(USER_EXTENSION.into(), Value::Object(extension));
    }
    value
}

/// A PATCH that writes the changed user fields (as [`crate::user_changes`] gives them).
pub(crate) fn user_patch(
    current: &Value,
    changed: &[UserField],
    external_id: Option<UserId>,
    fields: &UserFields,
    manager_scim_id: Option<&str>,
) -> Option<Value> {
    let mut replace = Map::new();
    let mut removes = Vec::new();
    for field in changed {
        match field {
            UserField::Active => {
                replace.insert("active".into(), json!(true));
            }
            UserField::ExternalId => {
                if let Some(id) = external_id {
                    replace.insert("externalId".into(), json!(id.to_string()));
                    // Adopted: from now on the user carries orgsync's marker.
                    replace.insert(
                        USER_EXTENSION.into(),
                        json!({"source": SOURCE, "primaryDepartment": fields.primary_department.map(|d| d.to_string())}),
                    );
                }
            }
            UserField::UserName => {
                replace.insert("userName".into(), json!(fields.user_name));
            }
            UserField::Email => {
                // Replace only orgsync's work address; other addresses stay (not primary).
                let mut list = others(current, "emails", fields.email.as_deref());
                if let Some(email) = &fields.email {
                    list.push(serde_json::to_value(&emails(email)[0]).unwrap_or(Value::Null));
                }
                if list.is_empty() {
                    removes.push("emails");
                } else {
                    replace.insert("emails".into(), Value::Array(list));
                }
            }
            UserField::FirstName | UserField::LastName => {
                replace.insert(
                    "name".into(),
                    serde_json::to_value(name(fields)).unwrap_or(Value::Null),
                );
                if let Some(display) = display_name(fields) {
                    replace.insert("displayName".into(), json!(display));
                }
            }
            UserField::PrimaryDepartment => {
                replace.insert(
                    USER_EXTENSION.into(),
                    json!({"primaryDepartment": fields.primary_department.map(|d| d.to_string())}),
                );
            }
            UserField::Title => match &fields.title {
                Some(title) => {
                    replace.insert("title".into(), json!(title));
                }
                None => removes.push("title"),
            },
            UserField::Phone => {
                // Replace only the work number; mobile and other numbers stay.
                let mut list = others(current, "phoneNumbers", None);
                if let Some(phone) = &fields.phone {
                    list.push(serde_json::to_value(&phones(phone)[0]).unwrap_or(Value::Null));
                }
                if list.is_empty() {
                    removes.push("phoneNumbers");
                } else {
                    replace.insert("phoneNumbers".into(), Value::Array(list));
                }
            }
            UserField::Manager => match manager_scim_id {
                Some(id) => {
                    replace.insert(
                        schema_urns::ENTERPRISE_USER.into(),
                        serde_json::to_value(manager(id)).unwrap_or(Value::Null),
                    );
                }
                None => removes
                    .push("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"),
            },
            UserField::Memberships => {} // memberships are written on the Groups
        }
    }
    patch(replace, &removes)
}

/// The entries of a multi-valued attribute that orgsync does not own: everything but the
/// `work` entries (and an entry equal to `keep_out`), with `primary` cleared.
fn others(current: &Value, attribute: &str, keep_out: Option<&str>) -> Vec<Value> {
    current
        .get(attribute)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|e| e.get("type").and_then(Value::as_str) != Some("work"))
                .filter(|e| {
                    keep_out.is_none() || e.get("value").and_then(Value::as_str) != keep_out
                })
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(object) = e.as_object_mut() {
                        object.remove("primary");
                    }
                    e
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A PATCH that sets `active` to false.
pub(crate) fn deactivate_patch() -> Value {
    patch(Map::from_iter([("active".to_owned(), json!(false))]), &[]).unwrap_or(Value::Null)
}

fn patch(replace: Map<String, Value>, removes: &[&str]) -> Option<Value> {
    let mut operations = Vec::new();
    if !replace.is_empty() {
        operations.push(PatchOperation::Replace(OperationTarget::WithoutPath {
            value: replace,
        }));
    }
    for path in removes {
        if let Ok(path) = path.parse() {
            operations.push(PatchOperation::Remove { path, value: None });
        }
    }
    (!operations.is_empty()).then(|| {
        serde_json::to_value(PatchOp {
            schemas: vec![schema_urns::PATCH_OP.to_owned()],
            operations,
        })
        .unwrap_or(Value::Null)
    })
}

/// A PATCH that adds (or removes) one member of a Group.
pub(crate) fn membership_patch(user_scim_id: &str, add: bool) -> Value {
    let operation = if add {
        PatchOperation::Add(OperationTarget::WithPath {
            path: "members".parse().unwrap_or_else(|_| unreachable_path()),
            value: Some(json!([{"value": user_scim_id}])),
        })
    } else {
        let path = format!("members[value eq \"{user_scim_id}\"]");
        PatchOperation::Remove {
            path: path.parse().unwrap_or_else(|_| unreachable_path()),
            value: None,
        }
    };
    serde_json::to_value(PatchOp {
        schemas: vec![schema_urns::PATCH_OP.to_owned()],
        operations: vec![operation],
    })
    .unwrap_or(Value::Null)
}

fn unreachable_path() -> scim_v2::filter::PatchPath {
    // "members" and members[value eq "<hex id>"] always parse; this keeps the code panic-free.
    scim_v2::filter::PatchPath::Attr(scim_v2::filter::AttrPath::with_name("members"))
}

fn org_unit(item: &DepartmentItem, mappings: Mappings, active: bool) -> Value {
    let mut extension = Map::new();
    extension.insert("active".into(), json!(active));
    if let Some(custom_id) = &item.fields.custom_id {
        extension.insert("customId".into(), json!(custom_id));
    }
    if let Some(parent) = item.fields.parent {
        extension.insert("parent".into(), json!(parent.to_string()));
    }
    if mappings.manager {
        if let Some(manager) = item.fields.manager {
            extension.insert("manager".into(), json!(manager.to_string()));
        }
    }
    if mappings.unit_contact {
        for (name, value) in contact_attributes(&item.fields.contact) {
            if let Some(value) = value {
                extension.insert(name.into(), json!(value));
            }
        }
    }
    Value::Object(extension)
}

/// The OrgUnit extension's contact attributes and their values.
fn contact_attributes(contact: &UnitContact) -> [(&'static str, &Option<String>); 6] {
    [
        ("postalAddress", &contact.postal_address),
        ("email", &contact.email),
        ("phone", &contact.phone),
        ("ean", &contact.ean),
        ("pNumber", &contact.p_number),
        ("cvr", &contact.cvr),
    ]
}

/// The body of `POST /Groups` for a department.
pub(crate) fn new_group(item: &DepartmentItem, mappings: Mappings) -> Value {
    let group: Group = Group {
        schemas: vec![schema_urns::GROUP.to_owned(), ORG_UNIT_EXTENSION.to_owned()],
        id: None,
        external_id: Asserted::from(item.external_id.to_string()),
        display_name: item.fields.title.clone(),
        members: Asserted::absent(),
        meta: None,
    };
    let mut value = serde_json::to_value(&group).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert(ORG_UNIT_EXTENSION.into(), org_unit(item, mappings, true));
    }
    value
}

/// A PATCH that writes a department's fields (and activation).
pub(crate) fn group_patch(
    current: &TargetDepartment,
    item: &DepartmentItem,
    mappings: Mappings,
    active: bool,
) -> Value {
    let mut replace = Map::new();
    if active {
        replace.insert("displayName".into(), json!(item.fields.title));
    }
    let extension = if active {
        org_unit(item, mappings, true)
    } else {
        json!({"active": false})
    };
    replace.insert(ORG_UNIT_EXTENSION.into(), extension);
    let mut removes = Vec::new();
    if active && item.fields.parent.is_none() && current.parent.is_some() {
        removes
            .push("urn:ietf:params:scim:schemas:extension:orgsync:2.0:OrgUnit:parent".to_owned());
    }
    if active && mappings.manager && item.fields.manager.is_none() && current.manager.is_some() {
        removes
            .push("urn:ietf:params:scim:schemas:extension:orgsync:2.0:OrgUnit:manager".to_owned());
    }
    if active && mappings.unit_contact {
        let now = contact_attributes(&current.contact);
        for ((name, wanted), (_, held)) in contact_attributes(&item.fields.contact)
            .into_iter()
            .zip(now)
        {
            if wanted.is_none() && held.is_some() {
                removes.push(format!("{ORG_UNIT_EXTENSION}:{name}"));
            }
        }
    }
    let removes: Vec<&str> = removes.iter().map(String::as_str).collect();
    patch(replace, &removes).unwrap_or(Value::Null)
}

fn uuid_at(value: &Value, pointer: &str) -> Option<uuid::Uuid> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
}

fn string_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether a User belongs to another source: it has an `externalId` but not orgsync's marker
/// (the User extension's `source`). Entra and Okta put GUIDs in `externalId` too, so the id's
/// shape proves nothing. Such a user is never adopted, updated or deactivated by orgsync.
pub(crate) fn is_foreign(resource: &Value) -> bool {
    let has_external_id = resource.get("externalId").and_then(Value::as_str).is_some();
    let ours = resource
        .get(USER_EXTENSION)
        .and_then(|e| e.get("source"))
        .and_then(Value::as_str)
        == Some(SOURCE);
    has_external_id && !ours
}

/// The SCIM `id` of a resource.
pub(crate) fn scim_id(resource: &Value) -> Option<String> {
    string_at(resource, "/id")
}

/// The resource's version for `If-Match` (`meta.version`).
pub(crate) fn version(resource: &Value) -> Option<String> {
    string_at(resource, "/meta/version")
}

/// A SCIM User as the model's [`TargetUser`]; `memberships` and the manager's external id come
/// from elsewhere (Groups, the manager's resource).
pub(crate) fn target_user(
    resource: &Value,
    memberships: BTreeSet<UnitId>,
    manager: Option<UserId>,
) -> Option<TargetUser> {
    let user_name = string_at(resource, "/userName")?;
    let emails = resource.get("emails").and_then(Value::as_array);
    let email = emails.and_then(|list| {
        list.iter()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| {
                list.iter()
                    .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
            })
            .or_else(|| list.first())
            .and_then(|e| e.get("value").and_then(Value::as_str).map(str::to_owned))
    });
    // Only the work number is orgsync's to compare and write.
    let phone = resource
        .get("phoneNumbers")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("work"))
                .and_then(|p| p.get("value").and_then(Value::as_str).map(str::to_owned))
        });
    Some(TargetUser {
        external_id: uuid_at(resource, "/externalId").map(UserId),
        user_name,
        email,
        first_name: string_at(resource, "/name/givenName"),
        last_name: string_at(resource, "/name/familyName"),
        memberships,
        primary_department: resource
            .get(USER_EXTENSION)
            .and_then(|e| e.get("primaryDepartment"))
            .and_then(Value::as_str)
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(UnitId),
        title: string_at(resource, "/title"),
        phone,
        manager,
        active: resource
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}

/// The SCIM id of a User's manager (enterprise extension), if any.
pub(crate) fn manager_scim_id(resource: &Value) -> Option<String> {
    resource
        .get(schema_urns::ENTERPRISE_USER)
        .and_then(|e| e.pointer("/manager/value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A SCIM Group as the model's [`TargetDepartment`]. A Group without a UUID `externalId` is
/// one made by hand (external id `None`).
pub(crate) fn target_department(resource: &Value) -> TargetDepartment {
    let extension = resource.get(ORG_UNIT_EXTENSION);
    let ext_string = |key: &str| extension.and_then(|e| e.get(key)).and_then(Value::as_str);
    TargetDepartment {
        // A Group is a department orgsync manages only with the OrgUnit extension; any other
        // Group (made by hand or by another system, whatever its externalId) is never touched.
        external_id: extension.and(uuid_at(resource, "/externalId")).map(UnitId),
        title: string_at(resource, "/displayName").unwrap_or_default(),
        custom_id: ext_string("customId").map(str::to_owned),
        parent: ext_string("parent")
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(UnitId),
        manager: ext_string("manager")
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(UserId),
        contact: UnitContact {
            postal_address: ext_string("postalAddress").map(str::to_owned),
            email: ext_string("email").map(str::to_owned),
            phone: ext_string("phone").map(str::to_owned),
            ean: ext_string("ean").map(str::to_owned),
            p_number: ext_string("pNumber").map(str::to_owned),
            cvr: ext_string("cvr").map(str::to_owned),
        },
        active: extension
            .and_then(|e| e.get("active"))
            .and_then(Value::as_bool)
            .unwrap_or(true),
    }
}

/// The SCIM ids of a Group's members.
pub(crate) fn member_ids(resource: &Value) -> Vec<String> {
    resource
        .get("members")
        .and_then(Value::as_array)
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
