//! The PostgreSQL schema, its stored version and the numbered migrations that produce it,
//! run at start under a session advisory lock so that nodes starting together migrate once.
//!
//! Tables (schema version 1):
//! - `meta (key text primary key, value bigint)`: `schema_version` → the version below.
//! - `users (id text primary key, version bigint, doc text, last_active text)`: one row per
//!   stored user, deleted or not. `doc` is the JSON of the user (`text`, not `jsonb`: jsonb
//!   refuses `\u0000`, which custom data may hold; serde_json escapes it, so the text never
//!   holds a NUL byte). `version` is bumped by every write of the user; `last_active` is the
//!   wire time of [`Store::touch_last_active`](crate::store::Store::touch_last_active), kept
//!   outside `doc` so a touch does not bump the version.
//! - `user_names (kind "char", team bytea, name text, user_id text)`: the names active users
//!   hold — `kind` `a` (app scope, `team` empty) or `t` (one row per team of the user); `name`
//!   is the normal form (letters and digits only). Team names are free text from clients, so
//!   `bytea`. No UNIQUE constraint on the name: names held before enforcement was switched on
//!   are legal duplicates; uniqueness of *new* claims is checked under advisory locks (see
//!   `users`). Rows go with their user (`ON DELETE CASCADE`).
//! - `tombstones (id text primary key, deleted_at text)`: ids that can never be used again.
//! - `app_settings (id smallint primary key = 1, version bigint, doc text)`: the one settings
//!   object and its version (no row: version 0, empty settings).
//! - `tasks (id text primary key, doc text)`, `exports (id text primary key, doc text)`.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::StoreError;

/// The schema version this build writes. Migrations, numbered by the version they produce:
/// - 1: every table above.
pub const SCHEMA_VERSION: i64 = 1;

/// The session advisory lock held while migrating (an arbitrary constant: "cgschema").
const MIGRATION_LOCK: i64 = 0x6367_7363_6865_6d61;

/// Migration 1: the initial tables.
const V1: &str = r#"
CREATE TABLE users (
    id text PRIMARY KEY,
    version bigint NOT NULL,
    doc text NOT NULL,
    last_active text
);
CREATE TABLE user_names (
    kind "char" NOT NULL,
    team bytea NOT NULL,
    name text NOT NULL,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (kind, team, name, user_id)
);
CREATE INDEX user_names_by_user ON user_names (user_id);
CREATE TABLE tombstones (
    id text PRIMARY KEY,
    deleted_at text NOT NULL
);
CREATE TABLE app_settings (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL,
    doc text NOT NULL
);
CREATE TABLE tasks (
    id text PRIMARY KEY,
    doc text NOT NULL
);
CREATE TABLE exports (
    id text PRIMARY KEY,
    doc text NOT NULL
);
"#;

/// The migrations in order: `MIGRATIONS[i]` produces version `i + 1`.
const MIGRATIONS: &[&str] = &[V1];

/// Brings the database to [`SCHEMA_VERSION`], or refuses one written by a newer build.
/// Holds a session advisory lock for the whole run on this dedicated connection, so several
/// nodes starting at once migrate one after another (the later ones find nothing to do).
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    let result = migrate_locked(client).await;
    // The lock also goes with the connection, which the caller drops.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value bigint NOT NULL)",
        )
        .await
        .map_err(pg_error)?;
    let found: i64 = client
        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .await
        .map_err(pg_error)?
        .map(|row| row.get(0))
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {found}, this build knows {SCHEMA_VERSION}: \
             run a newer chat-gateway"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        // Each migration and its version bump commit together.
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        tracing::info!(version, "postgres schema migrated");
    }
    Ok(())
}
