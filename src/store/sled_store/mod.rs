//! The embedded sled store: opening a data dir (and migrating it), the [`Store`] calls, and
//! the transaction that applies a batch of user changes.
//!
//! - `names`      — the username index (one key per holder, a count per name).
//! - `indexes`    — the secondary indexes queries read (role, teams, name, timestamps...).
//! - `planner`    — which index, walk or scan answers a query.
//! - `query`      — runs the plan and cuts the page.
//! - `migrations` — the stored schema version and the numbered migrations.
//!
//! Trees and key layouts (the index trees are documented in their modules):
//! - `userid_user`: user id → JSON [`StoredUser`] (version + user).
//! - `namekey_userid`, `namekey_count`: the username index ([`names`]).
//! - `field_value_userid`: the query indexes ([`indexes`]).
//! - `userid_tombstone`: user id → deletion time; permanent.
//! - `userid_lastactive`: user id → last activity (not part of the user's version).
//! - `settings`: `app` → JSON app settings; `app_version` → u64 big-endian, bumped by every
//!   save (absent: 0, as written before settings were versioned).
//! - `taskid_task`: task id → JSON [`Task`].
//! - `exportid_export`: export id → JSON document.
//! - `meta`: `schema_version` → u32 big-endian ([`migrations`]).
//!
//! A batch is one sled transaction over the user, username, tombstone, activity and query
//! index trees (sled runs
//! transactions under its global concurrency lock, so they are serialisable), followed by a
//! flush through the group-commit thread, so concurrent writers share flushes.

pub mod indexes;
pub mod migrations;
mod names;
pub mod planner;
mod query;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::group_commit::GroupCommit;
use super::{Expect, NameScope, Store, StoreError, StoredSettings, StoredUser, Task, UserChange};
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::model::username::normalise;
use crate::protocol::Timestamp;
use names::{held_name_keys, name_key, name_keys, NamesTx};

pub use migrations::SCHEMA_VERSION;
pub use planner::PlannerLimits;

/// A sled database holding every tree of the gateway.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    flusher: GroupCommit,
    users: sled::Tree,
    name_holders: sled::Tree,
    name_counts: sled::Tree,
    tombstones: sled::Tree,
    last_active: sled::Tree,
    index: sled::Tree,
    limits: PlannerLimits,
    settings: sled::Tree,
    tasks: sled::Tree,
    exports: sled::Tree,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A sled failure as a store error: running out of space is [`StoreError::VolumeFull`]
/// (sled then refuses every later write until it is reopened), anything else a backend error.
pub(crate) fn sled_error(e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if is_no_space(io) => StoreError::VolumeFull(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// The database in `data_dir/db` is open in another process: say so, and what to do.
pub fn in_use(data_dir: &Path) -> String {
    format!(
        "data dir {} is in use by another process (its database {} is locked): stop that \
         process, or give this one another data_dir (CHAT_GATEWAY_DATA_DIR)",
        data_dir.display(),
        data_dir.join("db").display()
    )
}

/// Whether another process holds the database in `data_dir/db` open (sled locks its `db`
/// file for as long as it is open). Taking and dropping the lock writes nothing.
pub fn is_in_use(data_dir: &Path) -> bool {
    use fs2::FileExt;
    match std::fs::File::open(data_dir.join("db").join("db")) {
        Ok(file) => file.try_lock_exclusive().is_err(),
        Err(_) => false,
    }
}

/// A failure to open the database in `dir`; sled's lock conflict (another process has the
/// database open) said in words, with what to do.
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
            StoreError::Backend(in_use(dir.parent().unwrap_or(dir)))
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            StoreError::Backend(format!(
                "cannot open the database in {}: {io}; give the user running the gateway write \
                 access to it, or set data_dir (CHAT_GATEWAY_DATA_DIR) to a directory it owns",
                dir.display()
            ))
        }
        _ => sled_error(e),
    }
}

/// ENOSPC or EDQUOT, however sled wrapped it.
fn is_no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

impl SledStore {
    /// Opens (or creates) the database in `dir` and migrates it to the current schema.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_limits(dir, PlannerLimits::default())
    }

    /// [`Self::open`] with other query planner thresholds (tests use tiny ones to take every
    /// path of the planner with few users).
    pub fn open_with_limits(dir: &Path, limits: PlannerLimits) -> Result<Self, StoreError> {
        super::sled_snapshots::remove_unfinished(dir).map_err(backend)?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| open_error(dir, e))?;
        migrations::migrate(&db)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let inner = Inner {
            users: tree("userid_user")?,
            name_holders: tree(names::HOLDERS_TREE)?,
            name_counts: tree(names::COUNTS_TREE)?,
            tombstones: tree("userid_tombstone")?,
            last_active: tree("userid_lastactive")?,
            index: tree(indexes::TREE)?,
            limits,
            settings: tree("settings")?,
            tasks: tree("taskid_task")?,
            exports: tree("exportid_export")?,
            flusher: GroupCommit::start(db.clone()).map_err(backend)?,
            db,
        };
        inner.db.flush().map_err(sled_error)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    async fn durable(&self) -> Result<(), StoreError> {
        self.inner.flusher.flush().await
    }

    fn decode_user(&self, bytes: &[u8]) -> Result<StoredUser, StoreError> {
        self.inner.decode_user(bytes)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(backend)?
    }
}

impl Inner {
    /// A stored user with its activity record applied, as every read returns it.
    fn decode_user(&self, bytes: &[u8]) -> Result<StoredUser, StoreError> {
        let mut stored = decode_record(bytes)?;
        let activity = self
            .last_active
            .get(stored.user.id.as_bytes())
            .map_err(sled_error)?;
        apply_activity(&mut stored.user, activity.as_deref());
        Ok(stored)
    }
}

fn decode_record(bytes: &[u8]) -> Result<StoredUser, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// `last_active` as the store returns it: the later of the user's own and its activity
/// record (`userid_lastactive`).
fn apply_activity(user: &mut User, activity: Option<&[u8]>) {
    let recorded = activity
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(Timestamp::parse);
    if let Some(t) = recorded {
        if user.last_active.is_none_or(|old| old < t) {
            user.last_active = Some(t);
        }
    }
}

/// The two fields of a stored record that decide its `last_active` index entry, decoded
/// without the rest of the user.
struct ActivityView {
    last_active: Option<Timestamp>,
    deleted: bool,
}

impl ActivityView {
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        #[derive(serde::Deserialize)]
        struct Record {
            user: Fields,
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(default)]
            last_active: Option<Timestamp>,
            #[serde(default)]
            deleted_at: Option<serde::de::IgnoredAny>,
        }
        let r: Record =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Self {
            last_active: r.user.last_active,
            deleted: r.user.deleted_at.is_some(),
        })
    }

    /// `last_active` as reads return it with this activity record (see [`apply_activity`]).
    fn effective(&self, activity: Option<&[u8]>) -> Option<Timestamp> {
        let recorded = activity
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(Timestamp::parse);
        match (self.last_active, recorded) {
            (Some(a), Some(b)) => Some(if a < b { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// A stored record decoded with its activity record applied.
fn decode_stored(bytes: &[u8], activity: Option<&[u8]>) -> Result<StoredUser, StoreError> {
    let mut stored = decode_record(bytes)?;
    apply_activity(&mut stored.user, activity);
    Ok(stored)
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn check_expect(users: &TransactionalTree, id: &str, expect: Expect) -> TxResult<Option<User>> {
    let current = match users.get(id.as_bytes())? {
        None => None,
        Some(bytes) => Some(
            serde_json::from_slice::<StoredUser>(&bytes)
                .or_else(|e| abort(StoreError::Corrupt(e.to_string())))?,
        ),
    };
    match (expect, &current) {
        (Expect::Absent, None) => Ok(None),
        (Expect::Version(v), Some(s)) if s.version == v => Ok(Some(s.user.clone())),
        _ => abort(StoreError::Conflict(id.to_owned())),
    }
}

/// The trees a batch writes, inside its transaction.
struct BatchTx<'a> {
    users: &'a TransactionalTree,
    names: NamesTx<'a>,
    tombstones: &'a TransactionalTree,
    last_active: &'a TransactionalTree,
    index: &'a TransactionalTree,
}

/// A user with the activity record `activity` applied (for its index entries).
fn with_activity(user: &User, activity: Option<&[u8]>) -> User {
    let mut user = user.clone();
    apply_activity(&mut user, activity);
    user
}

fn apply_change(tx: &BatchTx<'_>, change: &UserChange) -> TxResult<()> {
    let BatchTx {
        users,
        names,
        tombstones,
        last_active,
        index,
    } = tx;
    let (id, expect) = match change {
        UserChange::Put { user, expect, .. } => (user.id.as_str(), *expect),
        UserChange::Erase { id, expect, .. } => (id.as_str(), *expect),
    };
    let old = check_expect(users, id, expect)?;
    if expect == Expect::Absent && tombstones.get(id.as_bytes())?.is_some() {
        return abort(StoreError::Tombstoned(id.to_owned()));
    }
    let old_version = match expect {
        Expect::Absent => 0,
        Expect::Version(v) => v,
    };
    // Release the names the old state held.
    if let Some(old) = &old {
        for key in name_keys(old) {
            names.remove(&key, id)?;
        }
    }
    match change {
        UserChange::Erase { deleted_at, .. } => {
            users.remove(id.as_bytes())?;
            tombstones.insert(id.as_bytes(), deleted_at.to_wire().as_bytes())?;
            // A hard delete erases everything but the tombstone, the activity record too.
            let activity = last_active.remove(id.as_bytes())?;
            let old = old.map(|u| with_activity(&u, activity.as_deref()));
            indexes::update(index, old.as_ref(), None)?;
        }
        UserChange::Put {
            user,
            check_names,
            tombstone,
            ..
        } => {
            if let Some(norm) = user.name.as_deref().map(normalise) {
                if !norm.is_empty() && user.is_active() {
                    for scope in check_names {
                        let team = match scope {
                            NameScope::App => None,
                            NameScope::Team(t) => Some(t.clone()),
                        };
                        if names.held_by_other(&name_key(scope, &norm), id)? {
                            return abort(StoreError::NameTaken {
                                name: user.name.clone().unwrap_or_default(),
                                team,
                            });
                        }
                    }
                }
            }
            for key in held_name_keys(user) {
                names.add(&key, id)?;
            }
            let stored = StoredUser {
                version: old_version + 1,
                user: user.clone(),
            };
            let bytes = serde_json::to_vec(&stored).expect("user encodes");
            users.insert(id.as_bytes(), bytes)?;
            let activity = last_active.get(id.as_bytes())?;
            let old = old.map(|u| with_activity(&u, activity.as_deref()));
            let new = with_activity(user, activity.as_deref());
            indexes::update(index, old.as_ref(), Some(&new))?;
            if *tombstone {
                let at = user.deleted_at.unwrap_or_else(Timestamp::now);
                tombstones.insert(id.as_bytes(), at.to_wire().as_bytes())?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SledStore {
    async fn get_user(&self, id: &str) -> Result<Option<StoredUser>, StoreError> {
        match self.inner.users.get(id.as_bytes()).map_err(sled_error)? {
            None => Ok(None),
            Some(bytes) => self.decode_user(&bytes).map(Some),
        }
    }

    async fn is_tombstoned(&self, id: &str) -> Result<bool, StoreError> {
        self.inner
            .tombstones
            .contains_key(id.as_bytes())
            .map_err(sled_error)
    }

    async fn apply_user_batch(&self, changes: Vec<UserChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            let trees = (
                &inner.users,
                &inner.name_holders,
                &inner.name_counts,
                &inner.tombstones,
                &inner.last_active,
                &inner.index,
            );
            trees
                .transaction(|(users, holders, counts, tombstones, last_active, index)| {
                    let tx = BatchTx {
                        users,
                        names: NamesTx { holders, counts },
                        tombstones,
                        last_active,
                        index,
                    };
                    for change in &changes {
                        apply_change(&tx, change)?;
                    }
                    Ok(())
                })
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => sled_error(e),
                })
        })
        .await?;
        self.durable().await
    }

    async fn touch_last_active(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        // Otherwise one transaction with the user and its index entry: a batch rewriting the
        // user meanwhile sees either the old activity or the new one, never half of it. Only
        // the `last_active` entry can move, so only the two fields that decide it are decoded.
        let at_wire = at.to_wire();
        // Within the hour of the activity recorded, only the record changes: one
        // compare-and-swap, which fails (and leaves it to the transaction) if the record
        // changed or went meanwhile — an erased user's record is never written back.
        let records = &self.inner.last_active;
        if let Some(current) = records.get(id.as_bytes()).map_err(sled_error)? {
            let recorded = std::str::from_utf8(&current)
                .ok()
                .and_then(Timestamp::parse);
            if recorded.is_some_and(|r| indexes::touch_keeps_entry(r, at)) {
                let swapped = records
                    .compare_and_swap(id.as_bytes(), Some(&current), Some(at_wire.as_bytes()))
                    .map_err(sled_error)?;
                if swapped.is_ok() {
                    return Ok(());
                }
            }
        }
        let at = at_wire;
        let trees = (
            &self.inner.users,
            &self.inner.last_active,
            &self.inner.index,
        );
        trees
            .transaction(|(users, last_active, index)| {
                // Not for an erased user: its last connection closing must not leave a
                // record behind.
                let Some(bytes) = users.get(id.as_bytes())? else {
                    return Ok(());
                };
                let before = last_active.insert(id.as_bytes(), at.as_bytes())?;
                let view = ActivityView::decode(&bytes).or_else(abort)?;
                if view.deleted {
                    // A soft-deleted user has no index entries.
                    return Ok(());
                }
                let old = view.effective(before.as_deref());
                let new = view.effective(Some(at.as_bytes()));
                if old != new {
                    if let Some(t) = old {
                        index.remove(indexes::last_active_key(t, id))?;
                    }
                    if let Some(t) = new {
                        index.insert(indexes::last_active_key(t, id), &[])?;
                    }
                }
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => sled_error(e),
            })
    }

    async fn query_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| query::run(inner, &query)).await
    }

    async fn name_holders(&self, name: &str, scope: &NameScope) -> Result<Vec<String>, StoreError> {
        let key = name_key(scope, &normalise(name));
        let tree = self.inner.name_holders.clone();
        self.blocking(move |_| names::holders(&tree, &key)).await
    }

    async fn app_settings(&self) -> Result<StoredSettings, StoreError> {
        let tree = &self.inner.settings;
        let (app, version) = (
            tree.get("app").map_err(sled_error)?,
            tree.get("app_version").map_err(sled_error)?,
        );
        let settings = match app {
            None => Map::new(),
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
        };
        Ok(StoredSettings {
            version: settings_version(version.as_deref())?,
            settings,
        })
    }

    async fn save_app_settings(
        &self,
        settings: &Map<String, Value>,
        expect: u64,
    ) -> Result<u64, StoreError> {
        let bytes = serde_json::to_vec(settings).expect("settings encode");
        let saved = self.inner.settings.transaction(|tx| {
            let found = settings_version(tx.get("app_version")?.as_deref())
                .map_err(ConflictableTransactionError::Abort)?;
            if found != expect {
                return Err(ConflictableTransactionError::Abort(
                    StoreError::SettingsChanged,
                ));
            }
            let next = found + 1;
            tx.insert("app", bytes.as_slice())?;
            tx.insert("app_version", &next.to_be_bytes())?;
            Ok(next)
        });
        let version = match saved {
            Ok(v) => v,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(sled_error(e)),
        };
        self.durable().await?;
        Ok(version)
    }

    async fn put_task(&self, task: &Task) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(task).expect("task encodes");
        self.inner
            .tasks
            .insert(task.task_id.as_bytes(), bytes)
            .map_err(sled_error)?;
        self.durable().await
    }

    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        match self.inner.tasks.get(id.as_bytes()).map_err(sled_error)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    async fn put_export(&self, id: &str, doc: &Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(doc).expect("export encodes");
        self.inner
            .exports
            .insert(id.as_bytes(), bytes)
            .map_err(sled_error)?;
        self.durable().await
    }

    async fn get_export(&self, id: &str) -> Result<Option<Value>, StoreError> {
        match self.inner.exports.get(id.as_bytes()).map_err(sled_error)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.durable().await
    }
}

/// The settings version stored under `app_version` (absent: 0).
fn settings_version(bytes: Option<&[u8]>) -> Result<u64, StoreError> {
    match bytes {
        None => Ok(0),
        Some(b) => b
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("app_version".into())),
    }
}

#[cfg(test)]
mod tests;
