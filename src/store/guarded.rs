//! The store the gateway runs on: the real backend behind a [`SpaceGuard`] that refuses
//! writes while the data volume is low, reopened in place when a failed write has left it
//! unable to write.
//!
//! Why reopen: after an I/O error (ENOSPC above all) sled 0.34 keeps the error and fails
//! every later write and flush, even once space is back; only a new instance clears it. Reads
//! keep working on the failed instance, so it serves them until the volume has room again;
//! then the watch ticker drops it (once the calls using it are done, which releases its
//! directory lock) and opens a new one. Writes that failed were never acknowledged.
//!
//! At start, a backend that cannot open for want of space gets the room of the [`Ballast`].

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::ballast::Ballast;
use super::space::SpaceGuard;
use super::{
    NameScope, Store, StoreError, StoreHealth, StoredSettings, StoredUser, Task, UserChange,
};
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::protocol::Timestamp;

/// Opens the backend (again).
pub type Opener = Arc<dyn Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync>;

/// Free bytes a reopen needs at least, whatever the reserve: sled writes up to a 512 KiB log
/// segment and a snapshot when it opens.
pub const REOPEN_MIN_FREE: u64 = 1 << 20;

/// How long a reopen waits for calls still using the failed instance.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A backend behind the data volume guard; see the module documentation.
pub struct GuardedStore {
    space: Arc<SpaceGuard>,
    ballast: Arc<Ballast>,
    opener: Opener,
    state: RwLock<State>,
}

struct State {
    /// The backend; `None` between dropping a failed instance and opening the next.
    backend: Option<Arc<dyn Store>>,
    /// Why the backend takes no writes until it is reopened.
    failed: Option<StoreError>,
}

impl GuardedStore {
    /// Opens the backend. On a volume too full for it to open, releases the ballast and
    /// tries again; if it still cannot open, the error says the volume is full.
    pub fn open(opener: Opener, space: SpaceGuard, ballast: Ballast) -> Result<Self, StoreError> {
        let backend = match opener() {
            Err(StoreError::VolumeFull(_)) if ballast.release() => {
                space.measure();
                tracing::warn!(
                    free = space.free(),
                    ballast = ballast.size(),
                    "data volume full: ballast file released so the database could open; \
                     writes refused until space is freed"
                );
                opener()
            }
            other => other,
        };
        let backend = backend.map_err(|e| match e {
            StoreError::VolumeFull(why) => {
                space.measure();
                StoreError::VolumeFull(format!(
                    "cannot open the database with {} bytes free (sled writes when it opens); \
                     free space and start again ({why})",
                    space.free()
                ))
            }
            other => other,
        })?;
        ballast.keep(&space);
        Ok(Self {
            space: Arc::new(space),
            ballast: Arc::new(ballast),
            opener,
            state: RwLock::new(State {
                backend: Some(backend),
                failed: None,
            }),
        })
    }

    /// Measures the volume every `interval` and reopens a failed backend once there is room,
    /// until the store is dropped.
    pub fn spawn_watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.watch().await;
            }
        })
    }

    /// One watch step: measure, and reopen a failed backend if the volume has room. Only
    /// the watch task calls it, so reopens never overlap.
    async fn watch(&self) {
        self.space.measure();
        let failed = self.lock_read().failed.is_some();
        let room = self.space.free() >= REOPEN_MIN_FREE.max(self.space.resume_at());
        if failed && room && !self.space.is_low() {
            self.reopen().await;
        }
        if self.ballast.size() > 0 && !self.ballast.is_present() && !self.space.is_low() {
            let (ballast, space) = (self.ballast.clone(), self.space.clone());
            let _ = tokio::task::spawn_blocking(move || ballast.keep(&space)).await;
        }
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend for a read.
    fn backend(&self) -> Result<Arc<dyn Store>, StoreError> {
        let state = self.lock_read();
        match (&state.backend, &state.failed) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(e)) => Err(StoreError::Unavailable(e.to_string())),
            (None, None) => Err(StoreError::Unavailable(
                "the store is being reopened".into(),
            )),
        }
    }

    /// The backend for a write, unless writes are refused.
    fn admit_write(&self) -> Result<Arc<dyn Store>, StoreError> {
        if let Some(e) = &self.lock_read().failed {
            metrics::counter!("store_writes_refused").increment(1);
            return Err(e.clone());
        }
        self.space.admit()?;
        self.backend()
    }

    /// Passes a write's result on; a failure that left `backend` unable to write (its flush
    /// fails too) marks it failed, so later writes are refused until it is reopened.
    async fn after_write<T>(
        &self,
        backend: &Arc<dyn Store>,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Err(e @ (StoreError::VolumeFull(_) | StoreError::Backend(_))) = &result else {
            return result;
        };
        if matches!(e, StoreError::VolumeFull(_)) {
            self.space.measure();
        }
        if backend.flush().await.is_err() {
            let mut state = self.lock_write();
            let same = state
                .backend
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, backend));
            if same && state.failed.is_none() {
                tracing::error!(error = %e,
                    "store failed a write: writes refused until it is reopened, once the data \
                     volume has room; reads go on");
                state.failed = Some(e.clone());
            }
        }
        result
    }

    /// Drops the failed backend and opens a new one.
    async fn reopen(&self) {
        let old = self.lock_write().backend.take();
        let opener = self.opener.clone();
        let opened = tokio::task::spawn_blocking(move || {
            if let Some(old) = old {
                release(old);
            }
            opener()
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(e.to_string())));
        let mut state = self.lock_write();
        match opened {
            Ok(backend) => {
                state.backend = Some(backend);
                state.failed = None;
                tracing::info!("store reopened: writes accepted again");
            }
            Err(e) => {
                // Reads fail too until the next attempt succeeds (a tick later).
                tracing::warn!(error = %e, "store could not be reopened; retrying");
                state.failed = Some(StoreError::Unavailable(format!("reopening failed: {e}")));
            }
        }
    }
}

/// Drops the last handle on a backend once calls still using it are done (so its directory
/// lock is released), or after [`DRAIN_DEADLINE`].
fn release(backend: Arc<dyn Store>) {
    let deadline = std::time::Instant::now() + DRAIN_DEADLINE;
    while Arc::strong_count(&backend) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(backend);
}

#[async_trait]
impl Store for GuardedStore {
    async fn get_user(&self, id: &str) -> Result<Option<StoredUser>, StoreError> {
        self.backend()?.get_user(id).await
    }

    async fn is_tombstoned(&self, id: &str) -> Result<bool, StoreError> {
        self.backend()?.is_tombstoned(id).await
    }

    async fn apply_user_batch(&self, changes: Vec<UserChange>) -> Result<(), StoreError> {
        // Nothing to write (a connect with unchanged details): not a write to refuse.
        if changes.is_empty() {
            return Ok(());
        }
        let b = self.admit_write()?;
        let result = b.apply_user_batch(changes).await;
        self.after_write(&b, result).await
    }

    async fn touch_last_active(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        let b = self.admit_write()?;
        let result = b.touch_last_active(id, at).await;
        self.after_write(&b, result).await
    }

    async fn query_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        self.backend()?.query_users(query).await
    }

    async fn name_holders(&self, name: &str, scope: &NameScope) -> Result<Vec<String>, StoreError> {
        self.backend()?.name_holders(name, scope).await
    }

    async fn app_settings(&self) -> Result<StoredSettings, StoreError> {
        self.backend()?.app_settings().await
    }

    async fn save_app_settings(
        &self,
        settings: &Map<String, Value>,
        expect: u64,
    ) -> Result<u64, StoreError> {
        let b = self.admit_write()?;
        let result = b.save_app_settings(settings, expect).await;
        self.after_write(&b, result).await
    }

    async fn put_task(&self, task: &Task) -> Result<(), StoreError> {
        let b = self.admit_write()?;
        let result = b.put_task(task).await;
        self.after_write(&b, result).await
    }

    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.backend()?.get_task(id).await
    }

    async fn put_export(&self, id: &str, doc: &Value) -> Result<(), StoreError> {
        let b = self.admit_write()?;
        let result = b.put_export(id, doc).await;
        self.after_write(&b, result).await
    }

    async fn get_export(&self, id: &str) -> Result<Option<Value>, StoreError> {
        self.backend()?.get_export(id).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.backend()?.flush().await
    }

    fn health(&self) -> StoreHealth {
        if let Some(e) = &self.lock_read().failed {
            return StoreHealth::Degraded(format!(
                "store failed ({e}); writes refused until it is reopened, once the data volume \
                 has room"
            ));
        }
        if self.space.is_low() {
            return StoreHealth::Degraded(format!("data volume full: {}", self.space.describe()));
        }
        StoreHealth::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Expect, SledStore};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A guarded sled store in `dir` whose volume reports `free` bytes, reserve 1000.
    fn guarded(dir: &Path, free: Arc<AtomicU64>) -> GuardedStore {
        let db = dir.join("db");
        let opener: Opener = Arc::new(move || Ok(Arc::new(SledStore::open(&db)?)));
        let probe: super::super::space::Probe = Box::new(move |_| Ok(free.load(Ordering::Relaxed)));
        let space = SpaceGuard::with_probe(dir, 1000, Duration::from_millis(1), probe);
        GuardedStore::open(opener, space, Ballast::new(dir, 0)).unwrap()
    }

    fn create(id: &str) -> UserChange {
        UserChange::Put {
            user: User::new(id, Timestamp::now()),
            expect: Expect::Absent,
            check_names: vec![],
            tombstone: false,
        }
    }

    #[tokio::test]
    async fn a_low_volume_refuses_writes_but_not_reads_nor_empty_batches() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(1 << 30));
        let store = guarded(dir.path(), free.clone());
        store.apply_user_batch(vec![create("a")]).await.unwrap();
        assert_eq!(store.health(), StoreHealth::Ok);

        free.store(999, Ordering::Relaxed);
        store.watch().await;
        let refused = store.apply_user_batch(vec![create("b")]).await;
        assert!(
            matches!(refused, Err(StoreError::VolumeFull(_))),
            "{refused:?}"
        );
        let touched = store.touch_last_active("a", Timestamp::now()).await;
        assert!(
            matches!(touched, Err(StoreError::VolumeFull(_))),
            "{touched:?}"
        );
        let settings = store.save_app_settings(&Map::new(), 0).await;
        assert!(matches!(settings, Err(StoreError::VolumeFull(_))));
        store.apply_user_batch(vec![]).await.unwrap();
        assert!(store.get_user("a").await.unwrap().is_some());
        assert!(store.get_user("b").await.unwrap().is_none());
        match store.health() {
            StoreHealth::Degraded(why) => assert!(why.contains("999 bytes free"), "{why}"),
            StoreHealth::Ok => panic!("a low volume is reported"),
        }

        free.store(1250, Ordering::Relaxed);
        store.watch().await;
        assert_eq!(store.health(), StoreHealth::Ok);
        store.apply_user_batch(vec![create("b")]).await.unwrap();
    }

    #[tokio::test]
    async fn a_reopen_releases_the_directory_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(1 << 30));
        let store = guarded(dir.path(), free);
        store.apply_user_batch(vec![create("kept")]).await.unwrap();
        let reader = store.backend().unwrap();
        store.lock_write().failed = Some(StoreError::VolumeFull("test".into()));
        let refused = store.apply_user_batch(vec![create("x")]).await;
        assert!(matches!(refused, Err(StoreError::VolumeFull(_))));
        // A call still holding the old instance finishes before it is dropped.
        let held = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reader.get_user("kept").await.unwrap().is_some()
        });
        store.watch().await;
        assert!(held.await.unwrap());
        assert_eq!(store.health(), StoreHealth::Ok);
        assert!(store.get_user("kept").await.unwrap().is_some());
        store.apply_user_batch(vec![create("x")]).await.unwrap();
    }
}
