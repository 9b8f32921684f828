-- orgsync's embedded directory: departments, users and memberships per customer (CVR).
-- Rows are never deleted by orgsync: departments and users are deactivated (active = 0).

CREATE TABLE departments (
    id          INTEGER PRIMARY KEY,
    cvr         TEXT    NOT NULL,
    external_id TEXT,                        -- STS unit UUID; NULL for a department made by hand
    title       TEXT    NOT NULL CHECK (title <> ''),
    custom_id   TEXT,
    parent      TEXT,                        -- parent department's external_id
    manager     TEXT,                        -- manager's external_id (manager mapping)
    active      INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX departments_external_id ON departments (cvr, external_id);

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    cvr                  TEXT    NOT NULL,
    external_id          TEXT,               -- STS Bruger UUID; NULL for a user made by hand
    user_name            TEXT    NOT NULL CHECK (user_name <> ''),
    email                TEXT,
    first_name           TEXT,
    last_name            TEXT,
    primary_department   TEXT,
    title                TEXT,
    phone                TEXT,
    manager              TEXT,
    active               INTEGER NOT NULL CHECK (active IN (0, 1)),
    -- Written on create only (customer defaults). No password is ever stored.
    user_type            TEXT,
    language             TEXT,
    timezone             TEXT,
    currency             TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL
);
CREATE UNIQUE INDEX users_external_id ON users (cvr, external_id);
CREATE UNIQUE INDEX users_user_name ON users (cvr, user_name COLLATE NOCASE);

CREATE TABLE memberships (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    department TEXT    NOT NULL,             -- department external_id
    PRIMARY KEY (user_id, department)
) WITHOUT ROWID;
