//! User batches and single-user reads on PostgreSQL: versions, tombstones and the name rules,
//! enforced inside one READ COMMITTED transaction per batch.
//!
//! How a batch keeps the rules across nodes:
//! - Versions: a replace is `UPDATE ... WHERE version = $expected` (READ COMMITTED re-checks
//!   the condition on the newest committed row after waiting for a concurrent writer), a
//!   create `INSERT ... ON CONFLICT DO NOTHING`; no row touched is a [`StoreError::Conflict`].
//! - Tombstones: a create looks for a tombstone *after* its insert, so a concurrent erase of
//!   the same id has committed by then (the insert waited for it) and is seen.
//! - Names: before anything else the batch takes a transaction-scoped advisory lock per
//!   (scope, team, normal form) it must check, in sorted order (no deadlock between batches);
//!   each check then runs as its own statement, so it sees every claim committed by earlier
//!   holders of the lock, and the batch's own earlier changes. Measured in the design notes:
//!   with READ COMMITTED this gives exactly one winner per race (REPEATABLE READ would not:
//!   its snapshot predates the lock). No UNIQUE index: names held before enforcement are
//!   legal duplicates.
//! - Durability: the call returns after `COMMIT`.

use deadpool_postgres::{Client, Transaction};
use tokio_postgres::GenericClient;
use tokio_postgres::IsolationLevel;

use super::{decode, pg_error};
use crate::model::user::User;
use crate::model::username::normalise;
use crate::protocol::Timestamp;
use crate::store::{Expect, NameScope, StoreError, StoredUser, UserChange};

/// `user_names.kind` of the app scope.
const APP: i8 = b'a' as i8;
/// `user_names.kind` of a team scope.
const TEAM: i8 = b't' as i8;

/// The advisory lock key of a name in a scope: FNV-1a (64 bits) of `kind 0 team 0 name`, a
/// function every node computes alike whatever its build. A collision only serialises two
/// unrelated claims.
fn lock_key(kind: i8, team: &[u8], norm: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = [&[kind as u8, 0][..], team, &[0], norm.as_bytes()];
    for b in bytes.iter().flat_map(|s| s.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The normal form of a user's name when it holds it (active, non-empty form).
fn held_name(user: &User) -> Option<String> {
    if !user.is_active() {
        return None;
    }
    user.name
        .as_deref()
        .map(normalise)
        .filter(|n| !n.is_empty())
}

/// `(kind, team)` of a scope.
fn scope_columns(scope: &NameScope) -> (i8, &[u8]) {
    match scope {
        NameScope::App => (APP, b""),
        NameScope::Team(t) => (TEAM, t.as_bytes()),
    }
}

/// The advisory lock keys a batch must hold, sorted and without repeats.
fn batch_lock_keys(changes: &[UserChange]) -> Vec<i64> {
    let mut keys: Vec<i64> = changes
        .iter()
        .filter_map(|c| match c {
            UserChange::Put {
                user, check_names, ..
            } => held_name(user).map(|n| (n, check_names)),
            UserChange::Erase { .. } => None,
        })
        .flat_map(|(norm, scopes)| {
            scopes.iter().map(move |s| {
                let (kind, team) = scope_columns(s);
                lock_key(kind, team, &norm)
            })
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// A driver error during the change of `id`: a deadlock or serialisation failure names it.
fn failed(id: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| match pg_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict(id.to_owned()),
        other => other,
    }
}

/// Applies a batch as one transaction, with its events for the other nodes (recorded by
/// `node` in the outbox); see the module documentation.
pub async fn apply_batch(
    client: &mut Client,
    changes: &[UserChange],
    node: &str,
    events: &[String],
) -> Result<(), StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(pg_error)?;
    let keys = batch_lock_keys(changes);
    if !keys.is_empty() {
        // One row per key, in array order: the locks are taken in sorted order.
        tx.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k",
            &[&keys],
        )
        .await
        .map_err(pg_error)?;
    }
    for change in changes {
        apply_change(&tx, change).await?;
    }
    super::outbox::record(&tx, node, events).await?;
    // Dropping an uncommitted transaction (on any error above) rolls it back.
    tx.commit().await.map_err(pg_error)
}

async fn apply_change(tx: &Transaction<'_>, change: &UserChange) -> Result<(), StoreError> {
    match change {
        UserChange::Put {
            user,
            expect,
            check_names,
            tombstone,
        } => {
            let id = user.id.as_str();
            let doc = serde_json::to_string(user).expect("user encodes");
            write_user(tx, id, *expect, &doc).await?;
            release_names(tx, id).await?;
            if let Some(norm) = held_name(user) {
                for scope in check_names {
                    check_name(tx, user, &norm, scope).await?;
                }
                if user.holds_name() {
                    claim_names(tx, user, &norm).await?;
                }
            }
            if *tombstone {
                let at = user.deleted_at.unwrap_or_else(Timestamp::now);
                put_tombstone(tx, id, at).await?;
            }
        }
        UserChange::Erase {
            id,
            expect,
            deleted_at,
        } => {
            match expect {
                Expect::Absent => {
                    let exists = tx
                        .query_opt("SELECT 1 FROM users WHERE id = $1", &[id])
                        .await
                        .map_err(failed(id))?;
                    if exists.is_some() {
                        return Err(StoreError::Conflict(id.clone()));
                    }
                    if is_tombstoned(&**tx, id).await? {
                        return Err(StoreError::Tombstoned(id.clone()));
                    }
                }
                Expect::Version(v) => {
                    // Its names go with it (ON DELETE CASCADE).
                    let erased = tx
                        .execute(
                            "DELETE FROM users WHERE id = $1 AND version = $2",
                            &[id, &(*v as i64)],
                        )
                        .await
                        .map_err(failed(id))?;
                    if erased == 0 {
                        return Err(StoreError::Conflict(id.clone()));
                    }
                }
            }
            put_tombstone(tx, id, *deleted_at).await?;
        }
    }
    Ok(())
}

/// Creates or replaces the user's row if `expect` holds.
async fn write_user(
    tx: &Transaction<'_>,
    id: &str,
    expect: Expect,
    doc: &str,
) -> Result<(), StoreError> {
    match expect {
        Expect::Absent => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO users (id, version, doc) VALUES ($1, 1, $2)
                     ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(failed(id))?;
            let inserted = tx.execute(&stmt, &[&id, &doc]).await.map_err(failed(id))?;
            if inserted == 0 {
                return Err(StoreError::Conflict(id.to_owned()));
            }
            // After the insert: an erase of this id racing with it has committed by now.
            if is_tombstoned(&**tx, id).await? {
                return Err(StoreError::Tombstoned(id.to_owned()));
            }
        }
        Expect::Version(v) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE users SET version = version + 1, doc = $3
                     WHERE id = $1 AND version = $2",
                )
                .await
                .map_err(failed(id))?;
            let updated = tx
                .execute(&stmt, &[&id, &(v as i64), &doc])
                .await
                .map_err(failed(id))?;
            if updated == 0 {
                return Err(StoreError::Conflict(id.to_owned()));
            }
        }
    }
    Ok(())
}

async fn release_names(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("DELETE FROM user_names WHERE user_id = $1")
        .await
        .map_err(failed(id))?;
    tx.execute(&stmt, &[&id]).await.map_err(failed(id))?;
    Ok(())
}

/// Fails with [`StoreError::NameTaken`] when another active user holds `norm` in `scope`.
async fn check_name(
    tx: &Transaction<'_>,
    user: &User,
    norm: &str,
    scope: &NameScope,
) -> Result<(), StoreError> {
    let id = user.id.as_str();
    let (kind, team) = scope_columns(scope);
    let stmt = tx
        .prepare_cached(
            "SELECT 1 FROM user_names
             WHERE kind = $1 AND team = $2 AND name = $3 AND user_id <> $4 LIMIT 1",
        )
        .await
        .map_err(failed(id))?;
    let taken = tx
        .query_opt(&stmt, &[&kind, &team, &norm, &id])
        .await
        .map_err(failed(id))?;
    if taken.is_some() {
        return Err(StoreError::NameTaken {
            name: user.name.clone().unwrap_or_default(),
            team: match scope {
                NameScope::App => None,
                NameScope::Team(t) => Some(t.clone()),
            },
        });
    }
    Ok(())
}

/// Records the names an active user holds: the app scope and each of its teams.
async fn claim_names(tx: &Transaction<'_>, user: &User, norm: &str) -> Result<(), StoreError> {
    let id = user.id.as_str();
    let teams: Vec<&[u8]> = user.teams.iter().map(|t| t.as_bytes()).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO user_names (kind, team, name, user_id)
             SELECT 'a', ''::bytea, $2, $1
             UNION ALL SELECT 't', t, $2, $1 FROM unnest($3::bytea[]) AS t
             ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(failed(id))?;
    tx.execute(&stmt, &[&id, &norm, &teams])
        .await
        .map_err(failed(id))?;
    Ok(())
}

async fn put_tombstone(tx: &Transaction<'_>, id: &str, at: Timestamp) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tombstones (id, deleted_at) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at",
        &[&id, &at.to_wire()],
    )
    .await
    .map_err(failed(id))?;
    Ok(())
}

/// Whether the id carries a tombstone.
pub async fn is_tombstoned(client: &impl GenericClient, id: &str) -> Result<bool, StoreError> {
    let row = client
        .query_opt("SELECT 1 FROM tombstones WHERE id = $1", &[&id])
        .await
        .map_err(pg_error)?;
    Ok(row.is_some())
}

/// A user row as stored: the later of its document's `last_active` and the touched one.
pub(super) fn stored_user(
    version: i64,
    doc: &str,
    last_active: Option<&str>,
) -> Result<StoredUser, StoreError> {
    let mut user: User = decode("user", doc)?;
    if let Some(t) = last_active.and_then(Timestamp::parse) {
        if user.last_active.is_none_or(|old| old < t) {
            user.last_active = Some(t);
        }
    }
    Ok(StoredUser {
        version: version as u64,
        user,
    })
}

/// One user, deleted or not.
pub async fn get_user(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<StoredUser>, StoreError> {
    let row = client
        .query_opt(
            "SELECT version, doc, last_active FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg_error)?;
    row.map(|r| stored_user(r.get(0), r.get(1), r.get(2)))
        .transpose()
}

/// The users among `ids`, by id.
pub async fn get_users(
    client: &impl GenericClient,
    ids: &[String],
) -> Result<std::collections::HashMap<String, StoredUser>, StoreError> {
    let rows = client
        .query(
            "SELECT id, version, doc, last_active FROM users WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| Ok((r.get(0), stored_user(r.get(1), r.get(2), r.get(3))?)))
        .collect()
}

/// Records a user's last activity, outside its version; nothing for an erased user.
pub async fn touch_last_active(
    client: &impl GenericClient,
    id: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE users SET last_active = $2 WHERE id = $1",
            &[&id, &at.to_wire()],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Ids of the active users holding `name` in `scope`.
pub async fn name_holders(
    client: &impl GenericClient,
    name: &str,
    scope: &NameScope,
) -> Result<Vec<String>, StoreError> {
    let norm = normalise(name);
    if norm.is_empty() {
        return Ok(Vec::new());
    }
    let (kind, team) = scope_columns(scope);
    let rows = client
        .query(
            "SELECT user_id FROM user_names WHERE kind = $1 AND team = $2 AND name = $3
             ORDER BY user_id",
            &[&kind, &team, &norm],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_sorted_and_distinct_per_scope() {
        // Fixed forever: nodes of different builds must agree on them.
        assert_eq!(lock_key(APP, b"", "john"), 1_477_448_422_178_517_737);
        assert_ne!(lock_key(APP, b"", "john"), lock_key(TEAM, b"", "john"));
        assert_ne!(
            lock_key(TEAM, b"red", "john"),
            lock_key(TEAM, b"blue", "john")
        );
        let mut u = User::new("u", Timestamp::now());
        u.name = Some("John Doe".into());
        let change = |u: &User, scopes: Vec<NameScope>| UserChange::Put {
            user: u.clone(),
            expect: Expect::Absent,
            check_names: scopes,
            tombstone: false,
        };
        let keys = batch_lock_keys(&[
            change(&u, vec![NameScope::Team("red".into()), NameScope::App]),
            change(&u, vec![NameScope::App]),
        ]);
        assert_eq!(keys.len(), 2);
        assert!(keys[0] < keys[1]);
        // An inactive user or an empty normal form claims nothing, so locks nothing.
        u.name = Some("...".into());
        assert!(batch_lock_keys(&[change(&u, vec![NameScope::App])]).is_empty());
        u.name = Some("John".into());
        u.deactivated_at = Some(Timestamp::now());
        assert!(batch_lock_keys(&[change(&u, vec![NameScope::App])]).is_empty());
    }
}
