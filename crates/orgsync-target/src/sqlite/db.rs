//! The SQL of the directory database: synchronous functions over one connection, run by
//! [`super::SqliteTarget`] on tokio's blocking pool.

use std::collections::BTreeSet;
use std::path::Path;

use orgsync_model::fields::UserField;
use orgsync_model::ids::{UnitId, UserId};
use orgsync_model::plan::{Action, DepartmentItem, UserItem};
use orgsync_model::policy::Mappings;
use orgsync_model::snapshot::UnitContact;
use orgsync_model::target::{TargetDepartment, TargetUser};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rusqlite_migration::{M, Migrations};

use crate::{TargetError, WriteOutcome, department_differs, may_adopt, user_changes, user_label};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_directory.sql"),
    include_str!("../../migrations/sqlite/0002_unit_contact.sql"),
];

/// The identity of the file at `path` (device and inode), `None` when there is none.
pub(crate) fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The error of a file that is not (or no longer) where the configuration says.
pub(crate) fn gone(path: &Path, what: &str) -> TargetError {
    TargetError::Storage {
        fault: crate::StorageFault::Gone,
        message: format!("the SQLite file {} {what}", path.display()),
    }
}

/// Opens and migrates the database; with `create`, creates it and its directory if needed,
/// without, a missing file is a [`crate::StorageFault::Gone`] error (and is not created).
/// Returns the connection and the identity of the file it opened.
pub(crate) fn open(path: &Path, create: bool) -> Result<(Connection, (u64, u64)), TargetError> {
    if create {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                TargetError::Config(format!(
                    "cannot create the directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
    } else if identity(path).is_none() {
        return Err(gone(
            path,
            "does not exist (removed or moved?); orgsync does not create it again outside a run's start",
        ));
    }
    let mut flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| {
        if !create && e.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen) {
            return gone(path, &format!("cannot be opened: {e}"));
        }
        TargetError::Config(format!("cannot open the database {}: {e}", path.display()))
    })?;
    let opened = identity(path).ok_or_else(|| gone(path, "disappeared while it was opened"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(storage)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(storage)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(storage)?;
    let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
    migrations.to_latest(&mut conn).map_err(|e| match &e {
        rusqlite_migration::Error::RusqliteError { err, .. } => {
            TargetError::storage(err, format!("migrating {}: ", path.display()))
        }
        _ => TargetError::Storage {
            fault: crate::StorageFault::Other,
            message: format!("migrating {}: {e}", path.display()),
        },
    })?;
    Ok((conn, opened))
}

pub(crate) fn storage(e: rusqlite::Error) -> TargetError {
    TargetError::storage(&e, "")
}

/// Maps constraint violations to the SCIM equivalents, so both adapters report alike.
fn write_error(object: String, e: rusqlite::Error) -> TargetError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &e {
        let detail = message.clone().unwrap_or_else(|| e.to_string());
        match failure.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return TargetError::Rejected {
                    object,
                    status: 409,
                    scim_type: Some("uniqueness".to_owned()),
                    detail,
                };
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK | rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => {
                return TargetError::Rejected {
                    object,
                    status: 400,
                    scim_type: Some("invalidValue".to_owned()),
                    detail,
                };
            }
            _ => {}
        }
    }
    storage(e)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn uuid_column<T>(
    row: &Row<'_>,
    index: usize,
    wrap: fn(uuid::Uuid) -> T,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(index)?;
    text.map(|t| {
        uuid::Uuid::parse_str(&t).map(wrap).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })
    })
    .transpose()
}

const DEPARTMENT_COLUMNS: &str = "external_id, title, custom_id, parent, manager, active, postal_address, email, phone, ean, p_number, cvr_number";

fn department_row(row: &Row<'_>) -> rusqlite::Result<TargetDepartment> {
    Ok(TargetDepartment {
        // Another source's external id (not a UUID): a department orgsync never touches.
        external_id: row
            .get::<_, Option<String>>(0)?
            .and_then(|id| uuid::Uuid::parse_str(&id).ok())
            .map(UnitId),
        title: row.get(1)?,
        custom_id: row.get(2)?,
        parent: uuid_column(row, 3, UnitId)?,
        manager: uuid_column(row, 4, UserId)?,
        active: row.get(5)?,
        contact: UnitContact {
            postal_address: row.get(6)?,
            email: row.get(7)?,
            phone: row.get(8)?,
            ean: row.get(9)?,
            p_number: row.get(10)?,
            cvr: row.get(11)?,
        },
    })
}

/// A user's row id and the user.
type UserRow = (i64, TargetUser);

/// Rows orgsync may see: its own (a UUID external id) and those made by hand (none). A row with
/// another source's external id is invisible: never adopted or deactivated, and a user name it
/// holds makes orgsync's insert fail as a duplicate, reported per object.
const OURS: &str = "(external_id IS NULL OR external_id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-*')";

const USER_COLUMNS: &str = "id, external_id, user_name, email, first_name, last_name, primary_department, title, phone, manager, active";

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok((
        row.get(0)?,
        TargetUser {
            external_id: uuid_column(row, 1, UserId)?,
            user_name: row.get(2)?,
            email: row.get(3)?,
            first_name: row.get(4)?,
            last_name: row.get(5)?,
            memberships: BTreeSet::new(),
            primary_department: uuid_column(row, 6, UnitId)?,
            title: row.get(7)?,
            phone: row.get(8)?,
            manager: uuid_column(row, 9, UserId)?,
            active: row.get(10)?,
        },
    ))
}

fn memberships(conn: &Connection, user_id: i64) -> rusqlite::Result<BTreeSet<UnitId>> {
    let mut stmt = conn.prepare_cached("SELECT department FROM memberships WHERE user_id = ?1")?;
    let rows = stmt.query_map([user_id], |row| row.get::<_, String>(0))?;
    let mut set = BTreeSet::new();
    for department in rows {
        if let Ok(id) = uuid::Uuid::parse_str(&department?) {
            set.insert(UnitId(id));
        }
    }
    Ok(set)
}

pub(crate) fn read_departments(
    conn: &Connection,
    cvr: &str,
) -> rusqlite::Result<Vec<TargetDepartment>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE cvr = ?1 ORDER BY id"
    ))?;
    stmt.query_map([cvr], department_row)?.collect()
}

pub(crate) fn read_users(conn: &Connection, cvr: &str) -> rusqlite::Result<Vec<TargetUser>> {
    let mut all: std::collections::HashMap<i64, BTreeSet<UnitId>> =
        std::collections::HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT m.user_id, m.department FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.cvr = ?1",
    )?;
    let rows = stmt.query_map([cvr], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (user, department) = row?;
        if let Ok(id) = uuid::Uuid::parse_str(&department) {
            all.entry(user).or_default().insert(UnitId(id));
        }
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE cvr = ?1 AND {OURS} ORDER BY id"
    ))?;
    let users = stmt.query_map([cvr], user_row)?;
    users
        .map(|row| {
            row.map(|(id, mut user)| {
                user.memberships = all.remove(&id).unwrap_or_default();
                user
            })
        })
        .collect()
}

pub(crate) fn find_department(
    conn: &Connection,
    cvr: &str,
    id: UnitId,
) -> rusqlite::Result<Option<TargetDepartment>> {
    conn.query_row(
        &format!(
            "SELECT {DEPARTMENT_COLUMNS} FROM departments WHERE cvr = ?1 AND external_id = ?2"
        ),
        params![cvr, id.to_string()],
        department_row,
    )
    .optional()
}

fn find_user_row(
    conn: &Connection,
    cvr: &str,
    external_id: Option<UserId>,
    user_name: &str,
) -> rusqlite::Result<(Option<UserRow>, Option<UserRow>)> {
    let by_external = match external_id {
        Some(id) => conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE cvr = ?1 AND external_id = ?2"),
                params![cvr, id.to_string()],
                user_row,
            )
            .optional()?,
        None => None,
    };
    let by_name = conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE cvr = ?1 AND user_name = ?2 COLLATE NOCASE AND {OURS}"),
            params![cvr, user_name],
            user_row,
        )
        .optional()?;
    let with_memberships = |found: Option<UserRow>| -> rusqlite::Result<Option<UserRow>> {
        found
            .map(|(id, mut user)| {
                user.memberships = memberships(conn, id)?;
                Ok((id, user))
            })
            .transpose()
    };
    Ok((with_memberships(by_external)?, with_memberships(by_name)?))
}

pub(crate) fn find_user(
    conn: &Connection,
    cvr: &str,
    external_id: UserId,
    user_name: &str,
) -> rusqlite::Result<Option<TargetUser>> {
    let (by_external, by_name) = find_user_row(conn, cvr, Some(external_id), user_name)?;
    Ok(by_external.or(by_name).map(|(_, user)| user))
}

pub(crate) fn write_department(
    conn: &mut Connection,
    cvr: &str,
    item: &DepartmentItem,
    mappings: Mappings,
) -> Result<WriteOutcome, TargetError> {
    let object = format!("department {:?} ({})", item.fields.title, item.external_id);
    let current = find_department(conn, cvr, item.external_id).map_err(storage)?;
    let active = item.action != Action::Deactivate;
    let f = &item.fields;
    let manager = |current: Option<UserId>| if mappings.manager { f.manager } else { current };
    // Unmapped contact data is left as the department holds it.
    let contact = |current: &UnitContact| {
        if mappings.unit_contact {
            f.contact.clone()
        } else {
            current.clone()
        }
    };
    let result = match current {
        None if !active => return Ok(WriteOutcome::Unchanged), // nothing to deactivate
        None => {
            let c = contact(&UnitContact::default());
            conn.execute(
                "INSERT INTO departments (cvr, external_id, title, custom_id, parent, manager, active, created_at, updated_at,
                                          postal_address, email, phone, ean, p_number, cvr_number)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    cvr,
                    item.external_id.to_string(),
                    f.title,
                    f.custom_id,
                    f.parent.map(|p| p.to_string()),
                    manager(None).map(|m| m.to_string()),
                    now(),
                    c.postal_address,
                    c.email,
                    c.phone,
                    c.ean,
                    c.p_number,
                    c.cvr,
                ],
            )
        }
        Some(current) if !department_differs(&current, item, mappings) => return Ok(WriteOutcome::Unchanged),
        Some(_) if !active => conn.execute(
            "UPDATE departments SET active = 0, updated_at = ?3 WHERE cvr = ?1 AND external_id = ?2",
            params![cvr, item.external_id.to_string(), now()],
        ),
        Some(current) => {
            let c = contact(&current.contact);
            conn.execute(
                "UPDATE departments SET title = ?3, custom_id = ?4, parent = ?5, manager = ?6, active = 1, updated_at = ?7,
                                        postal_address = ?8, email = ?9, phone = ?10, ean = ?11, p_number = ?12, cvr_number = ?13
                 WHERE cvr = ?1 AND external_id = ?2",
                params![
                    cvr,
                    item.external_id.to_string(),
                    f.title,
                    f.custom_id,
                    f.parent.map(|p| p.to_string()),
                    manager(current.manager).map(|m| m.to_string()),
                    now(),
                    c.postal_address,
                    c.email,
                    c.phone,
                    c.ean,
                    c.p_number,
                    c.cvr,
                ],
            )
        }
    };
    result.map_err(|e| write_error(object, e))?;
    Ok(WriteOutcome::Written)
}

pub(crate) fn write_user(
    conn: &mut Connection,
    cvr: &str,
    item: &UserItem,
    mappings: Mappings,
) -> Result<WriteOutcome, TargetError> {
    let f = &item.fields;
    let object = user_label(item);
    let (by_external, by_name) =
        find_user_row(conn, cvr, item.external_id, &f.user_name).map_err(storage)?;
    let current = by_external.or_else(|| by_name.filter(|(_, u)| may_adopt(u.external_id, item)));
    let tx = conn.transaction().map_err(storage)?;
    let outcome = match current {
        None if item.action == Action::Deactivate => return Ok(WriteOutcome::Unchanged), // nothing to deactivate
        None => {
            let defaults = item.defaults.as_ref();
            tx.execute(
                "INSERT INTO users (cvr, external_id, user_name, email, first_name, last_name, primary_department,
                                    title, phone, manager, active, user_type, language, timezone, currency,
                                    must_change_password, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?13, ?14, ?15, ?16, ?16)",
                params![
                    cvr,
                    item.external_id.map(|id| id.to_string()),
                    f.user_name,
                    f.email,
                    f.first_name,
                    f.last_name,
                    f.primary_department.map(|d| d.to_string()),
                    f.title.as_ref().filter(|_| mappings.title),
                    f.phone.as_ref().filter(|_| mappings.phone),
                    f.manager.filter(|_| mappings.manager).map(|m| m.to_string()),
                    defaults.map(|d| d.user_type.clone()),
                    defaults.map(|d| d.language.clone()),
                    defaults.map(|d| d.timezone.clone()),
                    defaults.map(|d| d.currency.clone()),
                    defaults.is_some_and(|d| d.must_change_password),
                    now()
                ],
            )
            .map_err(|e| write_error(object.clone(), e))?;
            let id = tx.last_insert_rowid();
            replace_memberships(&tx, id, &f.memberships.iter().copied().collect())
                .map_err(|e| write_error(object, e))?;
            WriteOutcome::Written
        }
        Some((id, current)) => {
            let changed = user_changes(&current, item, mappings);
            if changed.is_empty() {
                return Ok(WriteOutcome::Unchanged);
            }
            if item.action == Action::Deactivate {
                tx.execute(
                    "UPDATE users SET active = 0, updated_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )
                .map_err(|e| write_error(object, e))?;
            } else {
                tx.execute(
                    "UPDATE users SET external_id = ?2, user_name = ?3, email = ?4, first_name = ?5, last_name = ?6,
                                      primary_department = ?7, title = ?8, phone = ?9, manager = ?10, active = 1,
                                      updated_at = ?11
                     WHERE id = ?1",
                    params![
                        id,
                        item.external_id.or(current.external_id).map(|e| e.to_string()),
                        f.user_name,
                        f.email,
                        f.first_name,
                        f.last_name,
                        f.primary_department.map(|d| d.to_string()),
                        if mappings.title { f.title.clone() } else { current.title },
                        if mappings.phone { f.phone.clone() } else { current.phone },
                        if mappings.manager { f.manager } else { current.manager }.map(|m| m.to_string()),
                        now()
                    ],
                )
                .map_err(|e| write_error(object.clone(), e))?;
                if changed.contains(&UserField::Memberships) {
                    replace_memberships(&tx, id, &f.memberships.iter().copied().collect())
                        .map_err(|e| write_error(object, e))?;
                }
            }
            WriteOutcome::Written
        }
    };
    tx.commit().map_err(storage)?;
    Ok(outcome)
}

fn replace_memberships(
    conn: &Connection,
    user_id: i64,
    departments: &BTreeSet<UnitId>,
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM memberships WHERE user_id = ?1", [user_id])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO memberships (user_id, department) VALUES (?1, ?2)")?;
    for department in departments {
        insert.execute(params![user_id, department.to_string()])?;
    }
    Ok(())
}

pub(crate) fn set_memberships(
    conn: &mut Connection,
    cvr: &str,
    user: UserId,
    departments: &BTreeSet<UnitId>,
) -> Result<WriteOutcome, TargetError> {
    let id: Option<i64> = conn
        .query_row(
            "SELECT id FROM users WHERE cvr = ?1 AND external_id = ?2",
            params![cvr, user.to_string()],
            |row| row.get(0),
        )
        .optional()
        .map_err(storage)?;
    let Some(id) = id else {
        return Err(TargetError::Rejected {
            object: format!("user {user}"),
            status: 404,
            scim_type: Some("noTarget".to_owned()),
            detail: "no such user in the directory".to_owned(),
        });
    };
    if &memberships(conn, id).map_err(storage)? == departments {
        return Ok(WriteOutcome::Unchanged);
    }
    let tx = conn.transaction().map_err(storage)?;
    replace_memberships(&tx, id, departments).map_err(storage)?;
    tx.execute(
        "UPDATE users SET updated_at = ?2 WHERE id = ?1",
        params![id, now()],
    )
    .map_err(storage)?;
    tx.commit().map_err(storage)?;
    Ok(WriteOutcome::Written)
}
