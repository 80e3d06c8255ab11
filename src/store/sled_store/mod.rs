//! The embedded sled store: opening a data dir (and migrating it), the [`Store`] calls, and
//! the transaction that applies a batch of user changes.
//!
//! - `names`      — the username index (one key per holder, a count per name).
//! - `migrations` — the stored schema version and the numbered migrations.
//!
//! Trees and key layouts (the index trees are documented in their modules):
//! - `userid_user`: user id → JSON [`StoredUser`] (version + user).
//! - `namekey_userid`, `namekey_count`: the username index ([`names`]).
//! - `userid_tombstone`: user id → deletion time; permanent.
//! - `userid_lastactive`: user id → last activity (not part of the user's version).
//! - `settings`: `app` → JSON app settings.
//! - `taskid_task`: task id → JSON [`Task`].
//! - `exportid_export`: export id → JSON document.
//! - `meta`: `schema_version` → u32 big-endian ([`migrations`]).
//!
//! A batch is one sled transaction over the user, username and tombstone trees (sled runs
//! transactions under its global concurrency lock, so they are serialisable), followed by a
//! flush through the group-commit thread, so concurrent writers share flushes.

pub mod migrations;
mod names;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::group_commit::GroupCommit;
use super::{Expect, NameScope, Store, StoreError, StoredUser, Task, UserChange};
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::model::username::normalise;
use crate::protocol::Timestamp;
use names::{name_key, name_keys, NamesTx};

pub use migrations::SCHEMA_VERSION;

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

/// ENOSPC or EDQUOT, however sled wrapped it.
fn is_no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

impl SledStore {
    /// Opens (or creates) the database in `dir` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        super::sled_snapshots::remove_unfinished(dir).map_err(backend)?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(sled_error)?;
        migrations::migrate(&db)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let inner = Inner {
            users: tree("userid_user")?,
            name_holders: tree(names::HOLDERS_TREE)?,
            name_counts: tree(names::COUNTS_TREE)?,
            tombstones: tree("userid_tombstone")?,
            last_active: tree("userid_lastactive")?,
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
        let mut stored: StoredUser =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Some(t) = self
            .inner
            .last_active
            .get(stored.user.id.as_bytes())
            .map_err(sled_error)?
        {
            if let Some(t) = std::str::from_utf8(&t).ok().and_then(Timestamp::parse) {
                if stored.user.last_active.is_none_or(|old| old < t) {
                    stored.user.last_active = Some(t);
                }
            }
        }
        Ok(stored)
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

fn apply_change(
    users: &TransactionalTree,
    names: &NamesTx<'_>,
    tombstones: &TransactionalTree,
    change: &UserChange,
) -> TxResult<()> {
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
            for key in name_keys(user) {
                names.add(&key, id)?;
            }
            let stored = StoredUser {
                version: old_version + 1,
                user: user.clone(),
            };
            let bytes = serde_json::to_vec(&stored).expect("user encodes");
            users.insert(id.as_bytes(), bytes)?;
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
            );
            trees
                .transaction(|(users, holders, counts, tombstones)| {
                    let names = NamesTx { holders, counts };
                    for change in &changes {
                        apply_change(users, &names, tombstones, change)?;
                    }
                    Ok(())
                })
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => sled_error(e),
                })?;
            // A hard delete erases everything but the tombstone, the activity record too
            // (kept outside the transaction, like every `touch_last_active`).
            for change in &changes {
                if let UserChange::Erase { id, .. } = change {
                    inner
                        .last_active
                        .remove(id.as_bytes())
                        .map_err(sled_error)?;
                }
            }
            Ok(())
        })
        .await?;
        self.durable().await
    }

    async fn touch_last_active(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        // Not for an erased user: its last connection closing must not leave a record behind.
        if !self
            .inner
            .users
            .contains_key(id.as_bytes())
            .map_err(sled_error)?
        {
            return Ok(());
        }
        self.inner
            .last_active
            .insert(id.as_bytes(), at.to_wire().as_bytes())
            .map_err(sled_error)?;
        Ok(())
    }

    async fn query_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        let query = query.clone();
        let this = self.clone();
        self.blocking(move |inner| {
            // Keep the sort keys and ids of the matches, not the users: users stored before
            // the size bounds may be megabytes each.
            let mut matched = Vec::new();
            for item in inner.users.iter() {
                let (_, bytes) = item.map_err(sled_error)?;
                let user = this.decode_user(&bytes)?.user;
                if let Some(keys) = query.admit(&user) {
                    matched.push((keys, user.id, ()));
                }
            }
            // Then read the page's users again, within the answer's size bound. One changed
            // or deleted meanwhile keeps its place or is left out.
            let mut page = Vec::new();
            let mut bytes_read = 0usize;
            for (id, ()) in query.page(matched) {
                let Some(bytes) = inner.users.get(id.as_bytes()).map_err(backend)? else {
                    continue;
                };
                bytes_read = bytes_read.saturating_add(bytes.len());
                if bytes_read > query.max_answer_bytes {
                    return Err(StoreError::AnswerTooLarge(query.max_answer_bytes));
                }
                let user = this.decode_user(&bytes)?.user;
                if query.admits(&user) {
                    page.push(user);
                }
            }
            Ok(page)
        })
        .await
    }

    async fn name_holders(&self, name: &str, scope: &NameScope) -> Result<Vec<String>, StoreError> {
        let key = name_key(scope, &normalise(name));
        let tree = self.inner.name_holders.clone();
        self.blocking(move |_| names::holders(&tree, &key)).await
    }

    async fn app_settings(&self) -> Result<Map<String, Value>, StoreError> {
        match self.inner.settings.get("app").map_err(sled_error)? {
            None => Ok(Map::new()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    async fn save_app_settings(&self, settings: &Map<String, Value>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(settings).expect("settings encode");
        self.inner
            .settings
            .insert("app", bytes)
            .map_err(sled_error)?;
        self.durable().await
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

#[cfg(test)]
mod tests;
