//! The PostgreSQL store (`store.kind = "postgres"`): the same domain-level [`Store`] as sled,
//! on a database that several gateway nodes can share.
//!
//! Modules: `schema` (tables, stored version, migrations), `users` (user batches with their
//! name and tombstone rules, single-user reads), `queries` (user queries), `records` (app
//! settings, tasks, exports), `outbox` (events recorded with the writes, for other nodes).
//!
//! A PostgreSQL outage is an error, never a hang: connecting is bounded by the connect
//! timeout, every statement by `statement_timeout` on the server, and every store call by the
//! same deadline on the client (for a network that drops packets silently). A call that fails
//! for want of a working connection is [`StoreError::Unavailable`] (503); a failure the
//! server reports is [`StoreError::Backend`] (500). While the last call (or the periodic
//! probe) found no working connection, [`Store::health`] says so, and `/healthz` answers
//! 503. TLS is not supported yet (`NoTls`).

pub mod outbox;
mod queries;
mod records;
pub mod schema;
mod users;

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use tokio_postgres::NoTls;

use super::{
    NameScope, Store, StoreError, StoreHealth, StoredSettings, StoredUser, Task, UserChange,
};
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::protocol::Timestamp;

/// How the store connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq-style URL or key=value string.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Deadline for opening one connection.
    pub connect_timeout: Duration,
    /// Deadline for one store call (and `statement_timeout` of every statement).
    pub call_timeout: Duration,
}

impl PgOptions {
    /// The defaults of `config/default.toml` for this URL.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
        }
    }
}

/// A pool of connections to one database holding the gateway's tables.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    call_timeout: Duration,
    /// Why the last call found no working connection; cleared by the next call that
    /// reaches the server. What [`Store::health`] reports.
    unreachable: Mutex<Option<String>>,
    /// The node whose events the outbox records (set by the cluster; empty alone).
    node: RwLock<Arc<str>>,
    /// Why the node took itself out of service (the cluster's fencing), for `/healthz`.
    fenced: Mutex<Option<String>>,
}

/// Checks a connection string without connecting (for configuration validation).
pub fn parse_url(url: &str) -> Result<(), String> {
    tokio_postgres::Config::from_str(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// How every connection of the store (and the cluster's dedicated ones) connects: bounded
/// connect, TCP keepalives and user timeout, `statement_timeout` of one call.
pub fn connect_config(options: &PgOptions) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(&options.url)
        .map_err(|e| StoreError::Backend(format!("store.postgres_url: {e}")))?;
    let statement_ms = options.call_timeout.as_millis().max(1);
    config
        .connect_timeout(options.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .tcp_user_timeout(options.call_timeout)
        .options(format!("-c statement_timeout={statement_ms}"))
        .application_name("chat-gateway");
    Ok(config)
}

/// A driver error as a store error: no working connection (closed, refused, timed out) is
/// [`StoreError::Unavailable`], a deadlock or serialisation failure a
/// [`StoreError::Conflict`] the caller retries, anything the server reports a backend error.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        {
            return StoreError::Conflict(String::new());
        }
        if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::QUERY_CANCELED
        {
            return StoreError::Unavailable(format!("postgres: {db}"));
        }
        return StoreError::Backend(format!("postgres: {db}"));
    }
    if e.is_closed() || e.code().is_none() {
        return StoreError::Unavailable(format!("postgres: {e}"));
    }
    StoreError::Backend(format!("postgres: {e}"))
}

/// A pool failure: no connection could be had (none free in time, or opening one failed,
/// whatever the server said) — the database is unavailable for this call.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("postgres: no connection: {e}"))
}

/// Decodes a JSON document column.
fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl PostgresStore {
    /// Connects, creates or migrates the schema (refusing a newer one), and opens the pool.
    pub async fn open(options: &PgOptions) -> Result<Self, StoreError> {
        let config = connect_config(options)?;
        let deadline = options.connect_timeout + options.call_timeout;
        let (mut client, connection) = tokio::time::timeout(deadline, config.connect(NoTls))
            .await
            .map_err(|_| StoreError::Unavailable("postgres: connect timed out".into()))?
            .map_err(pg_error)?;
        let driver = tokio::spawn(connection);
        let migrated = tokio::time::timeout(deadline, schema::migrate(&mut client)).await;
        drop(client);
        let _ = driver.await;
        migrated.map_err(|_| StoreError::Unavailable("postgres: migration timed out".into()))??;

        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.call_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                call_timeout: options.call_timeout,
                unreachable: Mutex::new(None),
                node: RwLock::new(Arc::from("")),
                fenced: Mutex::new(None),
            }),
        })
    }

    /// Names the node whose events [`Store::apply_user_batch_emitting`] records.
    pub fn set_node(&self, node: &str) {
        *self.inner.node.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(node);
    }

    fn node(&self) -> Arc<str> {
        self.inner
            .node
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The stored users among `ids` (deleted ones too; erased ones are missing), by id.
    pub async fn get_users(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, StoredUser>, StoreError> {
        self.bounded("get_users", async {
            users::get_users(&self.client().await?, ids).await
        })
        .await
    }

    /// Marks the node out of service (`Some(reason)`) or back in it, for `/healthz`.
    pub fn set_fenced(&self, reason: Option<String>) {
        *self.inner.fenced.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Asks the server `SELECT 1` every `every`, so that [`Store::health`] (and `/healthz`)
    /// follows an outage and the recovery even while no request comes; stops once the
    /// store is dropped.
    pub fn spawn_probe(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let store = PostgresStore { inner };
                let _ = store
                    .bounded("probe", async {
                        let client = store.client().await?;
                        client.simple_query("SELECT 1").await.map_err(pg_error)?;
                        Ok(())
                    })
                    .await;
            }
        })
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    /// Runs one store call within the call deadline, noting whether it reached the server.
    pub async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.inner.call_timeout;
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres: {what} took longer than {} ms",
                timeout.as_millis()
            ))),
        };
        let mut unreachable = self
            .inner
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(StoreError::Unavailable(why)) => {
                if unreachable.is_none() {
                    tracing::warn!(reason = %why, "postgres unreachable: calls fail with 503");
                }
                *unreachable = Some(why.clone());
            }
            _ => {
                if unreachable.take().is_some() {
                    tracing::info!("postgres reachable again");
                }
            }
        }
        drop(unreachable);
        result
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn get_user(&self, id: &str) -> Result<Option<StoredUser>, StoreError> {
        self.bounded("get_user", async {
            users::get_user(&self.client().await?, id).await
        })
        .await
    }

    async fn is_tombstoned(&self, id: &str) -> Result<bool, StoreError> {
        self.bounded("is_tombstoned", async {
            users::is_tombstoned(&self.client().await?, id).await
        })
        .await
    }

    async fn apply_user_batch(&self, changes: Vec<UserChange>) -> Result<(), StoreError> {
        self.apply_user_batch_emitting(changes, Vec::new()).await
    }

    async fn apply_user_batch_emitting(
        &self,
        changes: Vec<UserChange>,
        events: Vec<String>,
    ) -> Result<(), StoreError> {
        if changes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let node = self.node();
        self.bounded("apply_user_batch", async {
            let mut client = self.client().await?;
            users::apply_batch(&mut client, &changes, &node, &events).await
        })
        .await
    }

    async fn touch_last_active(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.bounded("touch_last_active", async {
            users::touch_last_active(&self.client().await?, id, at).await
        })
        .await
    }

    async fn query_users(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        self.bounded("query_users", async {
            queries::query_users(&**self.client().await?, query).await
        })
        .await
    }

    async fn name_holders(&self, name: &str, scope: &NameScope) -> Result<Vec<String>, StoreError> {
        self.bounded("name_holders", async {
            users::name_holders(&self.client().await?, name, scope).await
        })
        .await
    }

    async fn app_settings(&self) -> Result<StoredSettings, StoreError> {
        self.bounded("app_settings", async {
            records::app_settings(&**self.client().await?).await
        })
        .await
    }

    async fn save_app_settings(
        &self,
        settings: &Map<String, Value>,
        expect: u64,
    ) -> Result<u64, StoreError> {
        self.save_app_settings_emitting(settings, expect, Vec::new())
            .await
    }

    async fn save_app_settings_emitting(
        &self,
        settings: &Map<String, Value>,
        expect: u64,
        events: Vec<String>,
    ) -> Result<u64, StoreError> {
        let node = self.node();
        self.bounded("save_app_settings", async {
            let mut client = self.client().await?;
            records::save_app_settings(&mut client, settings, expect, &node, &events).await
        })
        .await
    }

    async fn put_task(&self, task: &Task) -> Result<(), StoreError> {
        self.bounded("put_task", async {
            records::put_task(&**self.client().await?, task).await
        })
        .await
    }

    async fn get_task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        self.bounded("get_task", async {
            records::get_task(&**self.client().await?, id).await
        })
        .await
    }

    async fn put_export(&self, id: &str, doc: &Value) -> Result<(), StoreError> {
        self.bounded("put_export", async {
            records::put_export(&**self.client().await?, id, doc).await
        })
        .await
    }

    async fn get_export(&self, id: &str) -> Result<Option<Value>, StoreError> {
        self.bounded("get_export", async {
            records::get_export(&**self.client().await?, id).await
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every write is committed (and so durable) before it returns.
        Ok(())
    }

    fn health(&self) -> StoreHealth {
        if let Some(why) = self
            .inner
            .fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return StoreHealth::Degraded(why.clone());
        }
        let unreachable = self
            .inner
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match unreachable.as_ref() {
            None => StoreHealth::Ok,
            Some(why) => StoreHealth::Degraded(format!("database unreachable ({why})")),
        }
    }
}
