//! The SCIM 2.0 adapter. Users are SCIM Users (`externalId` = STS UUID, `userName` = e-mail);
//! departments are SCIM Groups with `externalId` = unit UUID and the orgsync OrgUnit extension
//! (`parent`, `customId`, `active`); memberships are Group `members`.
//!
//! Every write first reads the object (by `externalId`, then `userName`), compares, and sends
//! only a PATCH of what differs, with `If-Match` when the server supports ETags (a 412 re-reads
//! and tries again). Repeating a write sends nothing.

mod client;
mod config;
mod health;
mod mapping;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use orgsync_model::fields::UserField;
use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{Action, DepartmentItem, UserItem};
use orgsync_model::target::{TargetDepartment, TargetState, TargetUser};
use rand::Rng as _;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::OnceCell;

pub use config::ScimOptions;
pub use mapping::{ORG_UNIT_EXTENSION, USER_EXTENSION};

use crate::{
    Capabilities, Health, Target, TargetError, WriteOutcome, department_differs, may_adopt,
    user_changes, user_label,
};
use client::Client;

/// How many times a write re-reads and retries after a 412 (the object changed meanwhile).
const CONFLICT_ATTEMPTS: usize = 3;

/// What the service provider announced in `/ServiceProviderConfig`.
#[derive(Clone, Copy, Debug, Default)]
struct Features {
    etags: bool,
    cursor_paging: bool,
    bulk: bool,
}

/// One customer's SCIM service provider.
#[derive(Debug)]
pub struct ScimTarget {
    client: Client,
    features: OnceCell<Features>,
    group_ids: Mutex<HashMap<UnitId, String>>,
    user_ids: Mutex<HashMap<UserId, String>>,
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl ScimTarget {
    /// A target for these options. Nothing is sent until the first operation.
    pub fn new(options: ScimOptions) -> Result<ScimTarget, TargetError> {
        Ok(ScimTarget {
            client: Client::new(options)?,
            features: OnceCell::new(),
            group_ids: Mutex::new(HashMap::new()),
            user_ids: Mutex::new(HashMap::new()),
        })
    }

    /// HTTP requests sent so far (reads and writes).
    pub fn requests(&self) -> u64 {
        self.client.requests()
    }

    async fn features(&self) -> Result<Features, TargetError> {
        self.features
            .get_or_try_init(|| async {
                let reply = self
                    .client
                    .send(
                        Method::GET,
                        "ServiceProviderConfig",
                        &[],
                        None,
                        None,
                        "ServiceProviderConfig",
                    )
                    .await
                    .map_err(|e| client::endpoint_missing(e, "ServiceProviderConfig"))?;
                let config = reply.body.unwrap_or(Value::Null);
                let flag = |pointer: &str| {
                    config
                        .pointer(pointer)
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                };
                Ok(Features {
                    etags: flag("/etag/supported"),
                    cursor_paging: flag("/pagination/cursor"),
                    bulk: flag("/bulk/supported"),
                })
            })
            .await
            .copied()
    }

    async fn if_match(&self, resource: &Value) -> Result<Option<String>, TargetError> {
        Ok(if self.features().await?.etags {
            mapping::version(resource)
        } else {
            None
        })
    }

    async fn find_one(&self, endpoint: &str, filter: String) -> Result<Option<Value>, TargetError> {
        let query = [("filter", filter), ("count", "2".to_owned())];
        let reply = self
            .client
            .send(Method::GET, endpoint, &query, None, None, endpoint)
            .await
            .map_err(|e| client::endpoint_missing(e, endpoint))?;
        Ok(reply.body.and_then(|b| {
            b.get("Resources")
                .and_then(Value::as_array)
                .and_then(|r| r.first().cloned())
        }))
    }

    async fn group_by_external_id(&self, unit: UnitId) -> Result<Option<Value>, TargetError> {
        let found = self
            .find_one(
                "Groups",
                format!("externalId eq {}", quoted(&unit.to_string())),
            )
            .await?;
        if let Some(id) = found.as_ref().and_then(mapping::scim_id) {
            self.remember_group(unit, id);
        }
        Ok(found)
    }

    async fn user_resource(
        &self,
        external_id: Option<UserId>,
        user_name: &str,
        item: Option<&UserItem>,
    ) -> Result<Option<Value>, TargetError> {
        if let Some(id) = external_id {
            if let Some(found) = self
                .find_one(
                    "Users",
                    format!("externalId eq {}", quoted(&id.to_string())),
                )
                .await?
            {
                return Ok(Some(found));
            }
        }
        let by_name = self
            .find_one("Users", format!("userName eq {}", quoted(user_name)))
            .await?;
        Ok(by_name.filter(|resource| {
            if mapping::is_foreign(resource) {
                return false;
            }
            let found =
                mapping::target_user(resource, BTreeSet::new(), None).and_then(|u| u.external_id);
            match item {
                Some(item) => may_adopt(found, item),
                None => true,
            }
        }))
    }

    fn remember_group(&self, unit: UnitId, scim_id: String) {
        if let Ok(mut ids) = self.group_ids.lock() {
            ids.insert(unit, scim_id);
        }
    }

    fn remember_user(&self, user: UserId, scim_id: String) {
        if let Ok(mut ids) = self.user_ids.lock() {
            ids.insert(user, scim_id);
        }
    }

    async fn group_scim_id(&self, unit: UnitId) -> Result<Option<String>, TargetError> {
        if let Some(id) = self
            .group_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(&unit).cloned())
        {
            return Ok(Some(id));
        }
        Ok(self
            .group_by_external_id(unit)
            .await?
            .as_ref()
            .and_then(mapping::scim_id))
    }

    async fn user_scim_id(&self, user: UserId) -> Result<Option<String>, TargetError> {
        if let Some(id) = self
            .user_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(&user).cloned())
        {
            return Ok(Some(id));
        }
        let found = self
            .find_one(
                "Users",
                format!("externalId eq {}", quoted(&user.to_string())),
            )
            .await?;
        let id = found.as_ref().and_then(mapping::scim_id);
        if let Some(id) = &id {
            self.remember_user(user, id.clone());
        }
        Ok(id)
    }

    /// The departments (by external id) whose Groups list this user.
    async fn memberships_of(&self, user_scim_id: &str) -> Result<BTreeSet<UnitId>, TargetError> {
        let groups = self
            .client
            .list(
                "Groups",
                Some(format!("members.value eq {}", quoted(user_scim_id))),
                self.features().await?.cursor_paging,
            )
            .await?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                let department = mapping::target_department(g);
                if let (Some(unit), Some(id)) = (department.external_id, mapping::scim_id(g)) {
                    self.remember_group(unit, id);
                }
                department.external_id
            })
            .collect())
    }

    /// The external id of the user with this SCIM id (for the manager reference).
    async fn external_id_of(&self, user_scim_id: &str) -> Result<Option<UserId>, TargetError> {
        let reply = match self
            .client
            .send(
                Method::GET,
                &format!("Users/{user_scim_id}"),
                &[],
                None,
                None,
                "manager",
            )
            .await
        {
            Err(TargetError::Rejected { status: 404, .. }) => return Ok(None),
            other => other?,
        };
        Ok(reply
            .body
            .as_ref()
            .and_then(|r| mapping::target_user(r, BTreeSet::new(), None))
            .and_then(|u| u.external_id))
    }

    async fn current_user(&self, resource: &Value) -> Result<TargetUser, TargetError> {
        let id = mapping::scim_id(resource)
            .ok_or_else(|| TargetError::Malformed("a User without an id".to_owned()))?;
        let memberships = self.memberships_of(&id).await?;
        let manager = match mapping::manager_scim_id(resource)
            .filter(|_| self.client.options().mappings.manager)
        {
            Some(manager) => self.external_id_of(&manager).await?,
            None => None,
        };
        mapping::target_user(resource, memberships, manager)
            .ok_or_else(|| TargetError::Malformed(format!("User {id} has no userName")))
    }

    async fn manager_reference(&self, item: &UserItem) -> Result<Option<String>, TargetError> {
        match item
            .fields
            .manager
            .filter(|_| self.client.options().mappings.manager)
        {
            Some(manager) => self.user_scim_id(manager).await,
            None => Ok(None),
        }
    }

    async fn sync_memberships(
        &self,
        object: &str,
        user_scim_id: &str,
        current: &BTreeSet<UnitId>,
        desired: &BTreeSet<UnitId>,
    ) -> Result<(), TargetError> {
        // Member add/remove commute, so no If-Match: other users' writes to the same Group must
        // not make this one fail.
        for (unit, add) in desired
            .difference(current)
            .map(|u| (*u, true))
            .chain(current.difference(desired).map(|u| (*u, false)))
        {
            let Some(group) = self.group_scim_id(unit).await? else {
                if !add {
                    continue;
                }
                return Err(TargetError::Rejected {
                    object: object.to_owned(),
                    status: 404,
                    scim_type: Some("noTarget".to_owned()),
                    detail: format!("department {unit} does not exist in the target"),
                });
            };
            let body = mapping::membership_patch(user_scim_id, add);
            self.client
                .send(
                    Method::PATCH,
                    &format!("Groups/{group}"),
                    &[],
                    Some(&body),
                    None,
                    object,
                )
                .await?;
        }
        Ok(())
    }

    async fn write_department_once(
        &self,
        item: &DepartmentItem,
    ) -> Result<WriteOutcome, TargetError> {
        let object = format!("department {:?} ({})", item.fields.title, item.external_id);
        let mappings = self.client.options().mappings;
        let active = item.action != Action::Deactivate;
        match self.group_by_external_id(item.external_id).await? {
            None if !active => Ok(WriteOutcome::Unchanged),
            None => {
                let body = mapping::new_group(item, mappings);
                let reply = self
                    .client
                    .send(Method::POST, "Groups", &[], Some(&body), None, &object)
                    .await?;
                if let Some(id) = reply.body.as_ref().and_then(mapping::scim_id) {
                    self.remember_group(item.external_id, id);
                }
                Ok(WriteOutcome::Written)
            }
            Some(resource) => {
                let current = mapping::target_department(&resource);
                if !department_differs(&current, item, mappings) {
                    return Ok(WriteOutcome::Unchanged);
                }
                let id = mapping::scim_id(&resource)
                    .ok_or_else(|| TargetError::Malformed("a Group without an id".to_owned()))?;
                let body = mapping::group_patch(&current, item, mappings, active);
                let version = self.if_match(&resource).await?;
                self.client
                    .send(
                        Method::PATCH,
                        &format!("Groups/{id}"),
                        &[],
                        Some(&body),
                        version.as_deref(),
                        &object,
                    )
                    .await?;
                Ok(WriteOutcome::Written)
            }
        }
    }

    async fn write_user_once(&self, item: &UserItem) -> Result<WriteOutcome, TargetError> {
        let f = &item.fields;
        let object = user_label(item);
        let mappings = self.client.options().mappings;
        if f.user_name.trim().is_empty() {
            // RFC 7643 makes userName required; some servers accept "" anyway. Refuse it here,
            // as the SQLite adapter's CHECK does, so both report it alike.
            return Err(TargetError::Rejected {
                object,
                status: 400,
                scim_type: Some("invalidValue".to_owned()),
                detail: "userName is empty".to_owned(),
            });
        }
        let desired: BTreeSet<UnitId> = f.memberships.iter().copied().collect();
        match self
            .user_resource(item.external_id, &f.user_name, Some(item))
            .await?
        {
            None if item.action == Action::Deactivate => Ok(WriteOutcome::Unchanged),
            None => {
                let manager = self.manager_reference(item).await?;
                let body = mapping::new_user(
                    item.external_id,
                    f,
                    item.defaults.as_ref(),
                    mappings,
                    manager.as_deref(),
                    random_password(),
                );
                let reply = self
                    .client
                    .send(Method::POST, "Users", &[], Some(&body), None, &object)
                    .await?;
                let id = reply
                    .body
                    .as_ref()
                    .and_then(mapping::scim_id)
                    .ok_or_else(|| {
                        TargetError::Malformed(format!("creating {object} answered without an id"))
                    })?;
                if let Some(external_id) = item.external_id {
                    self.remember_user(external_id, id.clone());
                }
                self.sync_memberships(&object, &id, &BTreeSet::new(), &desired)
                    .await?;
                Ok(WriteOutcome::Written)
            }
            Some(resource) => {
                let current = self.current_user(&resource).await?;
                let changed = user_changes(&current, item, mappings);
                if changed.is_empty() {
                    return Ok(WriteOutcome::Unchanged);
                }
                let id = mapping::scim_id(&resource)
                    .ok_or_else(|| TargetError::Malformed("a User without an id".to_owned()))?;
                let version = self.if_match(&resource).await?;
                let path = format!("Users/{id}");
                if item.action == Action::Deactivate {
                    let body = mapping::deactivate_patch();
                    self.client
                        .send(
                            Method::PATCH,
                            &path,
                            &[],
                            Some(&body),
                            version.as_deref(),
                            &object,
                        )
                        .await?;
                    return Ok(WriteOutcome::Written);
                }
                let manager = self.manager_reference(item).await?;
                let mut changed = changed;
                if f.manager.is_some() && manager.is_none() {
                    // The manager is not in the target (yet): leave the reference as it is
                    // rather than removing it; a later run sets it once the manager exists.
                    changed.retain(|c| *c != UserField::Manager);
                    if changed.is_empty() {
                        return Ok(WriteOutcome::Unchanged);
                    }
                }
                if let Some(body) = mapping::user_patch(
                    &resource,
                    &changed,
                    item.external_id,
                    f,
                    manager.as_deref(),
                ) {
                    self.client
                        .send(
                            Method::PATCH,
                            &path,
                            &[],
                            Some(&body),
                            version.as_deref(),
                            &object,
                        )
                        .await?;
                }
                if changed.contains(&UserField::Memberships) {
                    self.sync_memberships(&object, &id, &current.memberships, &desired)
                        .await?;
                }
                if let Some(external_id) = item.external_id {
                    self.remember_user(external_id, id);
                }
                Ok(WriteOutcome::Written)
            }
        }
    }
}

/// A random initial password: 24 characters from letters, digits and symbols. Never logged
/// or kept; the user must change it (or the target sends an invitation).
fn random_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-=?@_";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

async fn retry_conflicts<F, Fut>(
    object: impl Fn() -> String,
    mut attempt: F,
) -> Result<WriteOutcome, TargetError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<WriteOutcome, TargetError>>,
{
    for _ in 0..CONFLICT_ATTEMPTS {
        match attempt().await {
            Err(TargetError::Conflict { .. }) => continue, // changed meanwhile: read again
            other => return other,
        }
    }
    Err(TargetError::Conflict { object: object() })
}

#[async_trait]
impl Target for ScimTarget {
    fn capabilities(&self) -> Capabilities {
        let features = self.features.get().copied().unwrap_or_default();
        Capabilities {
            kind: "scim",
            etags: features.etags,
            cursor_paging: features.cursor_paging,
            max_in_flight: self.client.options().max_in_flight,
        }
    }

    async fn health(&self) -> Result<Health, TargetError> {
        health::check(self).await
    }

    async fn read_state(&self) -> Result<TargetState, TargetError> {
        let cursor = self.features().await?.cursor_paging;
        let users = self.client.list("Users", None, cursor).await?;
        let groups = self.client.list("Groups", None, cursor).await?;
        let mut memberships: HashMap<String, BTreeSet<UnitId>> = HashMap::new();
        let mut departments = Vec::with_capacity(groups.len());
        for group in &groups {
            let department = mapping::target_department(group);
            if let (Some(unit), Some(id)) = (department.external_id, mapping::scim_id(group)) {
                self.remember_group(unit, id);
                for member in mapping::member_ids(group) {
                    memberships.entry(member).or_default().insert(unit);
                }
            }
            departments.push(department);
        }
        let external: HashMap<String, UserId> = users
            .iter()
            .filter_map(|u| {
                let id = mapping::scim_id(u)?;
                let external_id = mapping::target_user(u, BTreeSet::new(), None)?.external_id?;
                self.remember_user(external_id, id.clone());
                Some((id, external_id))
            })
            .collect();
        let users = users
            .iter()
            .filter(|u| !mapping::is_foreign(u))
            .filter_map(|u| {
                let id = mapping::scim_id(u)?;
                let manager = mapping::manager_scim_id(u).and_then(|m| external.get(&m).copied());
                mapping::target_user(u, memberships.remove(&id).unwrap_or_default(), manager)
            })
            .collect();
        Ok(TargetState { departments, users })
    }

    async fn find_user(
        &self,
        external_id: UserId,
        user_name: &str,
    ) -> Result<Option<TargetUser>, TargetError> {
        match self
            .user_resource(Some(external_id), user_name, None)
            .await?
        {
            Some(resource) => Ok(Some(self.current_user(&resource).await?)),
            None => Ok(None),
        }
    }

    async fn find_department(
        &self,
        external_id: UnitId,
    ) -> Result<Option<TargetDepartment>, TargetError> {
        Ok(self
            .group_by_external_id(external_id)
            .await?
            .as_ref()
            .map(mapping::target_department))
    }

    async fn write_department(&self, item: &DepartmentItem) -> Result<WriteOutcome, TargetError> {
        retry_conflicts(
            || format!("department {}", item.external_id),
            || self.write_department_once(item),
        )
        .await
    }

    async fn write_user(&self, item: &UserItem) -> Result<WriteOutcome, TargetError> {
        retry_conflicts(
            || format!("user {}", item.fields.user_name),
            || self.write_user_once(item),
        )
        .await
    }

    async fn set_memberships(
        &self,
        user: UserId,
        departments: &BTreeSet<UnitId>,
    ) -> Result<WriteOutcome, TargetError> {
        let object = format!("user {user}");
        let Some(id) = self.user_scim_id(user).await? else {
            return Err(TargetError::Rejected {
                object,
                status: 404,
                scim_type: Some("noTarget".to_owned()),
                detail: "no such user in the target".to_owned(),
            });
        };
        let current = self.memberships_of(&id).await?;
        if &current == departments {
            return Ok(WriteOutcome::Unchanged);
        }
        self.sync_memberships(&object, &id, &current, departments)
            .await?;
        Ok(WriteOutcome::Written)
    }
}
