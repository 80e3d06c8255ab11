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
//!
//! Added by version 2, for several nodes sharing the database (see `crate::cluster`):
//! - `outbox (seq bigserial primary key, node text, at timestamptz, event text)`: the events
//!   of each write, recorded in the write's transaction (see `outbox`); pruned after ten minutes.
//! - `nodes (id text primary key, lock_key bigint, lease_until timestamptz, started_at
//!   timestamptz)`: the live gateway nodes and their leases. `UNLOGGED`, like `presence`:
//!   both are rebuilt from the nodes' live connections when a crash of the database empties
//!   them.
//! - `presence (node text, user_id text, conns int, primary key (node, user_id))`: how many
//!   connections each node holds for each user — the cluster-wide per-user limit and
//!   `online` are sums over it.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::StoreError;

/// The schema version this build writes. Migrations, numbered by the version they produce:
/// - 1: the users, names, tombstones, settings, tasks and exports.
/// - 2: the outbox, nodes and presence.
pub const SCHEMA_VERSION: i64 = 2;

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

/// Migration 2: what nodes share beside the users (the outbox, leases, presence), and the
/// two presence functions (one round trip each for a connect and a disconnect).
const V2: &str = r#"
CREATE TABLE outbox (
    seq bigserial PRIMARY KEY,
    node text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    event text NOT NULL
);
CREATE INDEX outbox_at ON outbox (at);
CREATE UNLOGGED TABLE nodes (
    id text PRIMARY KEY,
    lock_key bigint NOT NULL,
    lease_until timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE presence (
    node text NOT NULL,
    user_id text NOT NULL,
    conns integer NOT NULL,
    PRIMARY KEY (node, user_id)
);
CREATE INDEX presence_by_user ON presence (user_id);
-- A connection of p_user opens on p_node: -1 when the user already holds p_max
-- connections across the cluster (nothing recorded), else how many it held before.
CREATE FUNCTION presence_open(p_node text, p_user text, p_max integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    held integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(p_user));
    SELECT coalesce(sum(conns), 0) INTO held FROM presence WHERE user_id = p_user;
    IF held >= p_max THEN
        RETURN -1;
    END IF;
    INSERT INTO presence (node, user_id, conns) VALUES (p_node, p_user, 1)
    ON CONFLICT (node, user_id) DO UPDATE SET conns = presence.conns + 1;
    RETURN held;
END
$$;
-- A connection of p_user on p_node closed: how many the user still holds across the
-- cluster, or -1 when p_node held none (a reaped node's late close: nothing to undo).
CREATE FUNCTION presence_close(p_node text, p_user text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    left_here integer;
    held integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(p_user));
    UPDATE presence SET conns = conns - 1 WHERE node = p_node AND user_id = p_user
    RETURNING conns INTO left_here;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    IF left_here <= 0 THEN
        DELETE FROM presence WHERE node = p_node AND user_id = p_user;
    END IF;
    SELECT coalesce(sum(conns), 0) INTO held FROM presence WHERE user_id = p_user;
    RETURN held;
END
$$;
"#;

/// The migrations in order: `MIGRATIONS[i]` produces version `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

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
