//! The storage boundary: a domain-level async [`Store`] trait that the users service calls,
//! and its implementations (sled, embedded, the default; PostgreSQL, a database several nodes
//! can share), and the guard the gateway runs sled behind ([`GuardedStore`]: refuses writes
//! while the data volume is low, reopens a backend a failed write left broken).
//!
//! Every multi-key change that must be atomic — a batch of users with their username index
//! entries and tombstones — is one [`Store::apply_user_batch`] call, and a call returns only
//! once the change is durable. Rule checks that must hold across concurrent writers (a
//! username claimed by exactly one user, a deleted id never reused, a user unchanged since it
//! was read) are evaluated inside that call, so a shared backend serving several gateway nodes
//! can enforce them the same way.

pub mod ballast;
pub mod group_commit;
pub mod guarded;
pub mod postgres;
pub mod sled_snapshots;
pub mod sled_store;
pub mod space;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::protocol::Timestamp;

pub use ballast::Ballast;
pub use guarded::GuardedStore;
pub use postgres::{PgOptions, PostgresStore};
pub use sled_store::SledStore;
pub use space::SpaceGuard;

/// A user as stored, with the version its next conditional write must name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredUser {
    /// Bumped by the store on every write of this user.
    pub version: u64,
    /// The user.
    pub user: User,
}

/// What a conditional write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No user with this id, and no tombstone.
    Absent,
    /// The user at exactly this version.
    Version(u64),
}

/// A username scope to check for a new collision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameScope {
    /// Across the whole app.
    App,
    /// Among the members of one team.
    Team(String),
}

/// One change in a batch.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a batch holds at most 100 changes
pub enum UserChange {
    /// Write the user (create or replace).
    Put {
        /// The new state.
        user: User,
        /// What must be stored now.
        expect: Expect,
        /// Scopes in which the user's name must not be held by any other active user
        /// once the earlier changes of the batch are applied.
        check_names: Vec<NameScope>,
        /// Also record a permanent tombstone of the id (pruning delete).
        tombstone: bool,
    },
    /// Erase the user and leave only a tombstone (hard delete).
    Erase {
        /// The id.
        id: String,
        /// What must be stored now.
        expect: Expect,
        /// When it was deleted.
        deleted_at: Timestamp,
    },
}

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A user changed between read and write; the caller re-reads and retries.
    #[error("user {0} changed concurrently")]
    Conflict(String),
    /// The id was deleted and can never be used again.
    #[error("the user {0} was deleted")]
    Tombstoned(String),
    /// A name check of the batch failed.
    #[error("username '{name}' already exists")]
    NameTaken {
        /// The name as the writer gave it.
        name: String,
        /// The first team in which it collides, in team mode.
        team: Option<String>,
    },
    /// The backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The app settings were saved by another writer since they were read.
    #[error("app settings changed concurrently")]
    SettingsChanged,
    /// The page of a query is larger than its `max_answer_bytes`.
    #[error("the answer would be larger than {0} bytes")]
    AnswerTooLarge(usize),
    /// The data volume has no room for the write: refused before writing (free space below
    /// the reserve) or failed for want of space. Reads still work; writes resume once space
    /// is freed.
    #[error("data volume full: {0}")]
    VolumeFull(String),
    /// The backend takes no writes until it is reopened (a write failed and left it broken,
    /// or reopening it failed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Whether a store takes writes, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Reads and writes work.
    Ok,
    /// Writes are refused, for the reason given; reads may still work.
    Degraded(String),
}

/// The app settings as stored, with the version a conditional save names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredSettings {
    /// Bumped by every save; 0 before the first.
    pub version: u64,
    /// The settings object.
    pub settings: Map<String, Value>,
}

/// A persisted batch task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// A uuid v4.
    pub task_id: String,
    /// `pending`, `running`, `completed` or `failed`.
    pub status: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last status change.
    pub updated_at: Timestamp,
    /// The result, once completed.
    #[serde(default)]
    pub result: Map<String, Value>,
    /// The error, once failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// The storage a gateway node runs on.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One user, deleted or not.
    async fn get_user(&self, id: &str) -> Result<Option<StoredUser>, StoreError>;
    /// Whether the id carries a tombstone.
    async fn is_tombstoned(&self, id: &str) -> Result<bool, StoreError>;
    /// Applies every change or none, checking each change's expectations and name scopes
    /// in order; returns once the batch is durable.
    async fn apply_user_batch(&self, changes: Vec<UserChange>) -> Result<(), StoreError>;
    /// [`Self::apply_user_batch`], also recording `events` (encoded by the event bus) for the
    /// other nodes of a cluster in the same transaction: the write never commits without
    /// them, nor they without it. A store serving a single node has no one to tell: it
    /// ignores them (the default).
    async fn apply_user_batch_emitting(
        &self,
        changes: Vec<UserChange>,
        events: Vec<String>,
    ) -> Result<(), StoreError> {
        let _ = events;
        self.apply_user_batch(changes).await
    }
    /// Records a user's last activity. Not a rule-bearing write: it may be lost in a crash.
    async fn touch_last_active(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Users matching a query (filter, sort, paging), never soft-deleted ones. A page whose
    /// stored records add up to more than `query.max_answer_bytes` is refused
    /// ([`StoreError::AnswerTooLarge`]) without being decoded whole.
    async fn query_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError>;
    /// Ids of other active users holding a name in the given scope (for tests and audits).
    async fn name_holders(&self, name: &str, scope: &NameScope) -> Result<Vec<String>, StoreError>;
    /// The app settings object and its version (0 before the first save).
    async fn app_settings(&self) -> Result<StoredSettings, StoreError>;
    /// Replaces the app settings object, durably, if it is still at version `expect`;
    /// returns the new version, or [`StoreError::SettingsChanged`] when another writer saved
    /// first (the caller re-reads and merges again).
    async fn save_app_settings(
        &self,
        settings: &Map<String, Value>,
        expect: u64,
    ) -> Result<u64, StoreError>;
    /// [`Self::save_app_settings`], also recording `events` for the other nodes of a cluster
    /// in the same transaction (ignored by a single-node store, the default).
    async fn save_app_settings_emitting(
        &self,
        settings: &Map<String, Value>,
        expect: u64,
        events: Vec<String>,
    ) -> Result<u64, StoreError> {
        let _ = events;
        self.save_app_settings(settings, expect).await
    }
    /// Creates or replaces a task, durably.
    async fn put_task(&self, task: &Task) -> Result<(), StoreError>;
    /// One task.
    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError>;
    /// Stores an export document, durably.
    async fn put_export(&self, id: &str, doc: &Value) -> Result<(), StoreError>;
    /// One export document.
    async fn get_export(&self, id: &str) -> Result<Option<Value>, StoreError>;
    /// Makes everything written so far durable (on shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
    /// Whether the store takes writes now, and why not.
    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }
}
