//! The embedded sled store.
//!
//! Trees and key layouts:
//! - `userid_user`: user id → JSON [`StoredUser`] (version + user).
//! - `username_userids`: `a\0<normal form>` (app scope) or `t\0<team>\0<normal form>` (team
//!   scope) → JSON array of the ids of active users holding that name there. Kept for every
//!   user whatever the enforcement setting, so switching enforcement on is instant.
//! - `userid_tombstone`: user id → deletion time; permanent.
//! - `userid_lastactive`: user id → last activity (not part of the user's version).
//! - `settings`: `app` → JSON app settings; `app_version` → u64 big-endian, bumped by every
//!   save (absent: 0, as written before settings were versioned).
//! - `taskid_task`: task id → JSON [`Task`].
//! - `exportid_export`: export id → JSON document.
//! - `meta`: `schema_version` → u32 big-endian.
//!
//! A batch is one sled transaction over the user, username and tombstone trees (sled runs
//! transactions under its global concurrency lock, so they are serialisable), followed by a
//! flush through the group-commit thread, so concurrent writers share flushes.

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

/// The schema version this code writes. Migrations, numbered by the version they produce:
/// - 2: the username index is rebuilt, its keys being normal forms and normalisation having
///   changed (NFKC first; see [`normalise`]).
pub const SCHEMA_VERSION: u32 = 2;

/// A sled database holding every tree of the gateway.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    flusher: GroupCommit,
    users: sled::Tree,
    names: sled::Tree,
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
        let meta = db.open_tree("meta").map_err(sled_error)?;
        match meta.get("schema_version").map_err(sled_error)? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(sled_error)?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("schema_version".into()))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::Backend(format!(
                        "data dir has schema version {found}, this build knows {SCHEMA_VERSION}"
                    )));
                }
                if found < 2 {
                    rebuild_name_index(&db)?;
                }
                // Written after the migrations; the flush below makes both durable, and
                // sled recovers writes in order, so a crash redoes an unfinished migration.
                if found < SCHEMA_VERSION {
                    meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                        .map_err(sled_error)?;
                }
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let inner = Inner {
            users: tree("userid_user")?,
            names: tree("username_userids")?,
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

/// Migration to 2: rebuilds `username_userids` from `userid_user` with the current normal
/// form. Idempotent (it starts by clearing the index), run before the store serves.
fn rebuild_name_index(db: &sled::Db) -> Result<(), StoreError> {
    let users = db.open_tree("userid_user").map_err(sled_error)?;
    let names = db.open_tree("username_userids").map_err(sled_error)?;
    let mut index: std::collections::BTreeMap<Vec<u8>, Vec<String>> = Default::default();
    for item in users.iter() {
        let (_, bytes) = item.map_err(sled_error)?;
        let stored: StoredUser =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for key in name_keys(&stored.user) {
            index.entry(key).or_default().push(stored.user.id.clone());
        }
    }
    names.clear().map_err(sled_error)?;
    for (key, ids) in index {
        let bytes = serde_json::to_vec(&ids).expect("string list encodes");
        names.insert(key, bytes).map_err(sled_error)?;
    }
    tracing::info!(entries = names.len(), "username index rebuilt (schema 2)");
    Ok(())
}

/// The username index keys an active user occupies.
pub fn name_keys(user: &User) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if !user.is_active() {
        return keys;
    }
    let Some(norm) = user.name.as_deref().map(normalise) else {
        return keys;
    };
    if norm.is_empty() {
        return keys;
    }
    keys.push(app_key(&norm));
    for team in &user.teams {
        keys.push(team_key(team, &norm));
    }
    keys
}

fn app_key(norm: &str) -> Vec<u8> {
    let mut k = b"a\0".to_vec();
    k.extend_from_slice(norm.as_bytes());
    k
}

fn team_key(team: &str, norm: &str) -> Vec<u8> {
    let mut k = b"t\0".to_vec();
    k.extend_from_slice(team.as_bytes());
    k.push(0);
    k.extend_from_slice(norm.as_bytes());
    k
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn read_holders(names: &TransactionalTree, key: &[u8]) -> TxResult<Vec<String>> {
    match names.get(key)? {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_slice(&v)
            .or_else(|e| abort(StoreError::Corrupt(format!("username index: {e}")))),
    }
}

fn write_holders(names: &TransactionalTree, key: &[u8], ids: &[String]) -> TxResult<()> {
    if ids.is_empty() {
        names.remove(key)?;
    } else {
        let bytes = serde_json::to_vec(ids).expect("string list encodes");
        names.insert(key, bytes)?;
    }
    Ok(())
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
    names: &TransactionalTree,
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
            let mut ids = read_holders(names, &key)?;
            ids.retain(|x| x != id);
            write_holders(names, &key, &ids)?;
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
                        let (key, team) = match scope {
                            NameScope::App => (app_key(&norm), None),
                            NameScope::Team(t) => (team_key(t, &norm), Some(t.clone())),
                        };
                        if read_holders(names, &key)?.iter().any(|x| x != id) {
                            return abort(StoreError::NameTaken {
                                name: user.name.clone().unwrap_or_default(),
                                team,
                            });
                        }
                    }
                }
            }
            for key in name_keys(user) {
                let mut ids = read_holders(names, &key)?;
                if !ids.iter().any(|x| x == id) {
                    ids.push(id.to_owned());
                }
                write_holders(names, &key, &ids)?;
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
            (&inner.users, &inner.names, &inner.tombstones)
                .transaction(|(users, names, tombstones)| {
                    for change in &changes {
                        apply_change(users, names, tombstones, change)?;
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
        let norm = normalise(name);
        let key = match scope {
            NameScope::App => app_key(&norm),
            NameScope::Team(t) => team_key(t, &norm),
        };
        match self.inner.names.get(key).map_err(sled_error)? {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string())),
        }
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn upgrading_from_schema_1_rebuilds_the_username_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::open(&path).unwrap();
            let mut u = User::new("u1", Timestamp::now());
            u.name = Some("Jose\u{301}".into()); // decomposed: "e" + combining acute
            u.teams = vec!["red".into()];
            let change = UserChange::Put {
                user: u,
                expect: Expect::Absent,
                check_names: vec![],
                tombstone: false,
            };
            store.apply_user_batch(vec![change]).await.unwrap();
            // Make it look like a schema-1 data dir: index keyed by the old normal form.
            let names = &store.inner.names;
            names.clear().unwrap();
            names
                .insert(app_key("jose"), br#"["u1"]"#.to_vec())
                .unwrap();
            names
                .insert(team_key("red", "jose"), br#"["u1"]"#.to_vec())
                .unwrap();
            let meta = store.inner.db.open_tree("meta").unwrap();
            meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
            store.inner.db.flush().unwrap();
        }
        let store = SledStore::open(&path).expect("a dropped store releases its data dir at once");
        let precomposed = "Jos\u{e9}";
        let app = store
            .name_holders(precomposed, &NameScope::App)
            .await
            .unwrap();
        assert_eq!(app, ["u1"]);
        let team = NameScope::Team("red".into());
        assert_eq!(
            store.name_holders(precomposed, &team).await.unwrap(),
            ["u1"]
        );
        assert!(store.inner.names.get(app_key("jose")).unwrap().is_none());
        assert_eq!(store.inner.names.len(), 2);
        let meta = store.inner.db.open_tree("meta").unwrap();
        let version = meta.get("schema_version").unwrap().unwrap();
        assert_eq!(version.as_ref(), SCHEMA_VERSION.to_be_bytes());
    }

    #[tokio::test]
    async fn a_hard_delete_erases_the_activity_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        let create = UserChange::Put {
            user: User::new("gone", Timestamp::now()),
            expect: Expect::Absent,
            check_names: vec![],
            tombstone: false,
        };
        store.apply_user_batch(vec![create]).await.unwrap();
        store
            .touch_last_active("gone", Timestamp::now())
            .await
            .unwrap();
        assert!(store.inner.last_active.contains_key("gone").unwrap());
        let version = store.get_user("gone").await.unwrap().unwrap().version;
        let erase = UserChange::Erase {
            id: "gone".into(),
            expect: Expect::Version(version),
            deleted_at: Timestamp::now(),
        };
        store.apply_user_batch(vec![erase]).await.unwrap();
        assert!(!store.inner.last_active.contains_key("gone").unwrap());
        // A late disconnect of the erased user records nothing.
        store
            .touch_last_active("gone", Timestamp::now())
            .await
            .unwrap();
        assert!(!store.inner.last_active.contains_key("gone").unwrap());
        assert!(store.inner.last_active.is_empty());
    }
}
