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
//!
//! Round trips: every statement is prepared once per pooled connection, and a batch's
//! statements go to the server together (pipelined), so a batch costs three round trips
//! whatever its size; the server still runs them one by one, in the order above (see
//! [`apply_batch`]).

use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::{Client, GenericClient};
use futures_util::future::{join3, join_all};
use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Statement};

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
fn failed(id: &str, e: tokio_postgres::Error) -> StoreError {
    match pg_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict(id.to_owned()),
        other => other,
    }
}

/// The statements of a batch, prepared once per pooled connection (deadpool keeps them), so
/// that every one of them can go out without a round trip of its own to prepare it.
struct Statements {
    lock: Statement,
    insert: Statement,
    update: Statement,
    exists: Statement,
    erase: Statement,
    tombstoned: Statement,
    tombstone: Statement,
    release: Statement,
    check: Statement,
    claim: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, StoreError> {
        let prepare = |sql: &'static str| client.prepare_cached(sql);
        let (lock, insert, update, exists, erase) = tokio::try_join!(
            // One row per key, in array order: the locks are taken in sorted order.
            prepare("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"),
            prepare(
                "INSERT INTO users (id, version, doc) VALUES ($1, 1, $2)
                 ON CONFLICT (id) DO NOTHING"
            ),
            prepare(
                "UPDATE users SET version = version + 1, doc = $3
                 WHERE id = $1 AND version = $2"
            ),
            prepare("SELECT 1 FROM users WHERE id = $1"),
            prepare("DELETE FROM users WHERE id = $1 AND version = $2"),
        )
        .map_err(pg_error)?;
        let (tombstoned, tombstone, release, check, claim) = tokio::try_join!(
            prepare(TOMBSTONED),
            prepare(
                "INSERT INTO tombstones (id, deleted_at) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at"
            ),
            prepare("DELETE FROM user_names WHERE user_id = $1"),
            prepare(
                "SELECT 1 FROM user_names
                 WHERE kind = $1 AND team = $2 AND name = $3 AND user_id <> $4 LIMIT 1"
            ),
            // The names an active user holds: the app scope and each of its teams.
            prepare(
                "INSERT INTO user_names (kind, team, name, user_id)
                 SELECT 'a', ''::bytea, $2, $1
                 UNION ALL SELECT 't', t, $2, $1 FROM unnest($3::bytea[]) AS t
                 ON CONFLICT DO NOTHING"
            ),
        )
        .map_err(pg_error)?;
        Ok(Self {
            lock,
            insert,
            update,
            exists,
            erase,
            tombstoned,
            tombstone,
            release,
            check,
            claim,
        })
    }
}

const TOMBSTONED: &str = "SELECT 1 FROM tombstones WHERE id = $1";

/// What a change's statements need computed before they go out (they borrow it).
struct Values<'a> {
    /// The user's JSON (a put).
    doc: String,
    /// The version `expect` names, if any.
    version: Option<i64>,
    /// The normal form of the name the user holds (a put of an active user with a name).
    norm: Option<String>,
    /// The user's teams, as stored.
    teams: Vec<&'a [u8]>,
    /// `(kind, team)` of each scope whose name check the put asks for.
    scopes: Vec<(i8, &'a [u8])>,
    /// The wire time of the tombstone the change leaves, if any.
    deleted_at: Option<String>,
}

fn values(change: &UserChange) -> Values<'_> {
    let version = |e: &Expect| match e {
        Expect::Absent => None,
        Expect::Version(v) => Some(*v as i64),
    };
    match change {
        UserChange::Put {
            user,
            expect,
            check_names,
            tombstone,
        } => Values {
            doc: serde_json::to_string(user).expect("user encodes"),
            version: version(expect),
            norm: held_name(user),
            teams: user.teams.iter().map(|t| t.as_bytes()).collect(),
            scopes: check_names.iter().map(scope_columns).collect(),
            deleted_at: tombstone.then(|| user.deleted_at.unwrap_or_else(Timestamp::now).to_wire()),
        },
        UserChange::Erase {
            expect, deleted_at, ..
        } => Values {
            doc: String::new(),
            version: version(expect),
            norm: None,
            teams: Vec::new(),
            scopes: Vec::new(),
            deleted_at: Some(deleted_at.to_wire()),
        },
    }
}

/// What a statement's answer (rows touched or returned) means for the batch.
enum Want<'a> {
    /// Any answer.
    Any,
    /// A row touched, else the change conflicts (the insert, the versioned update or delete).
    Touched,
    /// No row, else the id exists (an erase of an id expected absent).
    Absent,
    /// No row, else the id is tombstoned.
    NotTombstoned,
    /// No row, else `user`'s name is taken in the scope.
    NameFree(&'a User, &'a NameScope),
}

/// One statement of the batch on its way: the id it is about, what its answer must be, and
/// the answer (rows touched or returned).
struct Step<'a> {
    id: &'a str,
    want: Want<'a>,
    answer: Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>,
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// The parameters of a statement, as the driver takes them.
macro_rules! params {
    ($($p:expr),*) => { vec![$($p as &(dyn ToSql + Sync)),*] };
}

/// The statements of a batch in the order they are to run. Nothing is sent until
/// [`Pipeline::run`] polls them all, in order: tokio-postgres queues a request when its
/// future is first polled, so they go out together and the server runs them in that order.
struct Pipeline<'a> {
    tx: &'a tokio_postgres::Transaction<'a>,
    steps: Vec<Step<'a>>,
}

impl<'a> Pipeline<'a> {
    /// A statement whose answer is the number of rows it touched.
    fn exec(&mut self, stmt: &'a Statement, id: &'a str, want: Want<'a>, params: Params<'a>) {
        let answer = Box::pin(self.tx.execute_raw(stmt, params));
        self.steps.push(Step { id, want, answer });
    }

    /// A query whose answer is the number of rows it returned.
    fn find(&mut self, stmt: &'a Statement, id: &'a str, want: Want<'a>, params: Params<'a>) {
        let tx = self.tx;
        let answer = Box::pin(async move {
            let rows = tx.query_raw(stmt, params).await?;
            futures_util::pin_mut!(rows);
            let mut n = 0;
            while rows.try_next().await?.is_some() {
                n += 1;
            }
            Ok(n)
        });
        self.steps.push(Step { id, want, answer });
    }

    /// Sends every statement, waits for every answer, and judges them in order: the first
    /// one that fails or breaks a rule is the batch's error.
    async fn run(self) -> Result<(), StoreError> {
        let (judged, answers): (Vec<_>, Vec<_>) = self
            .steps
            .into_iter()
            .map(|s| ((s.id, s.want), s.answer))
            .unzip();
        let answers = join_all(answers).await;
        for ((id, want), answer) in judged.into_iter().zip(answers) {
            let n = answer.map_err(|e| failed(id, e))?;
            let found = n > 0;
            match want {
                Want::Any => {}
                Want::Touched if !found => return Err(StoreError::Conflict(id.to_owned())),
                Want::Absent if found => return Err(StoreError::Conflict(id.to_owned())),
                Want::NotTombstoned if found => return Err(StoreError::Tombstoned(id.to_owned())),
                Want::NameFree(user, scope) if found => {
                    return Err(StoreError::NameTaken {
                        name: user.name.clone().unwrap_or_default(),
                        team: match scope {
                            NameScope::App => None,
                            NameScope::Team(t) => Some(t.clone()),
                        },
                    })
                }
                Want::Touched | Want::Absent | Want::NotTombstoned | Want::NameFree(..) => {}
            }
        }
        Ok(())
    }
}

/// Applies a batch as one transaction; see the module documentation.
///
/// The statements are the ones the rules need, in the order they need them, sent together
/// (see [`Pipeline`]): a batch costs three round trips — start, the statements, commit —
/// instead of several per user. The server still runs them one after another, each as its
/// own statement, so each sees what the earlier ones did; the answers are judged in order,
/// and the first that breaks a rule fails the batch as if nothing after it had been sent
/// (the transaction is rolled back).
///
/// The batch's events for the other nodes (recorded by `node` in the outbox, see `outbox`)
/// go last, in the same transaction: one more round trip, on a cluster only.
pub async fn apply_batch(
    client: &mut Client,
    changes: &[UserChange],
    node: &str,
    events: &[String],
) -> Result<(), StoreError> {
    let stmts = Statements::prepare(client).await?;
    let values: Vec<Values<'_>> = changes.iter().map(values).collect();
    let keys = batch_lock_keys(changes);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(pg_error)?;
    let mut pipeline = Pipeline {
        tx: &tx,
        steps: Vec::with_capacity(1 + changes.len() * 5),
    };
    if !keys.is_empty() {
        // Before anything else, so that every check runs under its lock.
        pipeline.exec(&stmts.lock, "", Want::Any, params![&keys]);
    }
    for (change, v) in changes.iter().zip(&values) {
        change_steps(&mut pipeline, &stmts, change, v);
    }
    pipeline.run().await?;
    super::outbox::record(&tx, node, events).await?;
    // Dropping an uncommitted transaction (on any error above) rolls it back.
    tx.commit().await.map_err(pg_error)
}

/// The statements of one change, in the order the rules need them.
fn change_steps<'a>(
    p: &mut Pipeline<'a>,
    stmts: &'a Statements,
    change: &'a UserChange,
    v: &'a Values<'a>,
) {
    match change {
        UserChange::Put {
            user, check_names, ..
        } => {
            let id = &user.id;
            match &v.version {
                None => {
                    p.exec(&stmts.insert, id, Want::Touched, params![id, &v.doc]);
                    // After the insert: an erase of this id racing with it has committed by now.
                    p.find(&stmts.tombstoned, id, Want::NotTombstoned, params![id]);
                }
                Some(version) => {
                    p.exec(
                        &stmts.update,
                        id,
                        Want::Touched,
                        params![id, version, &v.doc],
                    );
                }
            }
            p.exec(&stmts.release, id, Want::Any, params![id]);
            if let Some(norm) = &v.norm {
                for ((kind, team), scope) in v.scopes.iter().zip(check_names) {
                    let want = Want::NameFree(user, scope);
                    p.find(&stmts.check, id, want, params![kind, team, norm, id]);
                }
                if user.holds_name() {
                    p.exec(&stmts.claim, id, Want::Any, params![id, norm, &v.teams]);
                }
            }
            if let Some(at) = &v.deleted_at {
                p.exec(&stmts.tombstone, id, Want::Any, params![id, at]);
            }
        }
        UserChange::Erase { id, .. } => {
            match &v.version {
                None => {
                    p.find(&stmts.exists, id, Want::Absent, params![id]);
                    p.find(&stmts.tombstoned, id, Want::NotTombstoned, params![id]);
                }
                Some(version) => {
                    // Its names go with it (ON DELETE CASCADE).
                    p.exec(&stmts.erase, id, Want::Touched, params![id, version]);
                }
            }
            if let Some(at) = &v.deleted_at {
                p.exec(&stmts.tombstone, id, Want::Any, params![id, at]);
            }
        }
    }
}

/// Whether the id carries a tombstone.
pub async fn is_tombstoned(client: &impl GenericClient, id: &str) -> Result<bool, StoreError> {
    let stmt = client.prepare_cached(TOMBSTONED).await.map_err(pg_error)?;
    let row = client.query_opt(&stmt, &[&id]).await.map_err(pg_error)?;
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
    let stmt = client
        .prepare_cached("SELECT version, doc, last_active FROM users WHERE id = $1")
        .await
        .map_err(pg_error)?;
    let row = client.query_opt(&stmt, &[&id]).await.map_err(pg_error)?;
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
///
/// Committed without waiting for the server to flush its log (`synchronous_commit` off for
/// this transaction alone): the store's contract lets a crash lose the touch, and every
/// connect and every last disconnect makes one, so waiting for the disk each time would
/// bound connects by commits. The statements go out together: one round trip.
pub async fn touch_last_active(client: &Client, id: &str, at: Timestamp) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached("UPDATE users SET last_active = $2 WHERE id = $1")
        .await
        .map_err(pg_error)?;
    let at = at.to_wire();
    let pg: &tokio_postgres::Client = client;
    // Polled in this order, so sent in this order; a failed update makes COMMIT roll back.
    let (begun, touched, committed) = join3(
        pg.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF"),
        pg.execute(&stmt, &[&id, &at]),
        pg.batch_execute("COMMIT"),
    )
    .await;
    begun.map_err(pg_error)?;
    touched.map_err(pg_error)?;
    committed.map_err(pg_error)
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
