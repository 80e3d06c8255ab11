//! App settings (a versioned conditional save), tasks and export documents on PostgreSQL.

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::{decode, pg_error};
use crate::store::{StoreError, StoredSettings, Task};

/// The app settings and their version (0 and empty before the first save).
pub async fn app_settings(client: &impl GenericClient) -> Result<StoredSettings, StoreError> {
    let row = client
        .query_opt("SELECT version, doc FROM app_settings WHERE id = 1", &[])
        .await
        .map_err(pg_error)?;
    let Some(row) = row else {
        return Ok(StoredSettings::default());
    };
    Ok(StoredSettings {
        version: row.get::<_, i64>(0) as u64,
        settings: decode("app settings", row.get(1))?,
    })
}

/// Replaces the settings if they are still at version `expect`; returns the new version, or
/// [`StoreError::SettingsChanged`] when another writer (on any node) saved first. One
/// statement, so no transaction is needed: the insert of the first save conflicts with a
/// concurrent first save, and the update re-checks the version after waiting for a
/// concurrent one (READ COMMITTED).
///
/// With `events`, the save and their record in the outbox (by `node`) are one transaction.
pub async fn save_app_settings(
    client: &mut deadpool_postgres::Client,
    settings: &Map<String, Value>,
    expect: u64,
    node: &str,
    events: &[String],
) -> Result<u64, StoreError> {
    if events.is_empty() {
        return save_settings(&***client, settings, expect).await;
    }
    let tx = client.transaction().await.map_err(pg_error)?;
    let version = save_settings(&*tx, settings, expect).await?;
    super::outbox::record(&tx, node, events).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(version)
}

async fn save_settings(
    client: &impl GenericClient,
    settings: &Map<String, Value>,
    expect: u64,
) -> Result<u64, StoreError> {
    let doc = serde_json::to_string(settings).expect("settings encode");
    let saved = if expect == 0 {
        client
            .execute(
                "INSERT INTO app_settings (id, version, doc) VALUES (1, 1, $1)
                 ON CONFLICT (id) DO NOTHING",
                &[&doc],
            )
            .await
    } else {
        client
            .execute(
                "UPDATE app_settings SET version = version + 1, doc = $2
                 WHERE id = 1 AND version = $1",
                &[&(expect as i64), &doc],
            )
            .await
    }
    .map_err(pg_error)?;
    if saved == 0 {
        return Err(StoreError::SettingsChanged);
    }
    Ok(expect + 1)
}

/// Creates or replaces a task.
pub async fn put_task(client: &impl GenericClient, task: &Task) -> Result<(), StoreError> {
    let doc = serde_json::to_string(task).expect("task encodes");
    put_doc(client, "tasks", &task.task_id, &doc).await
}

/// One task.
pub async fn get_task(client: &impl GenericClient, id: &str) -> Result<Option<Task>, StoreError> {
    get_doc(client, "tasks", id)
        .await?
        .map(|d| decode("task", &d))
        .transpose()
}

/// Stores an export document.
pub async fn put_export(
    client: &impl GenericClient,
    id: &str,
    doc: &Value,
) -> Result<(), StoreError> {
    put_doc(client, "exports", id, &doc.to_string()).await
}

/// One export document.
pub async fn get_export(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<Value>, StoreError> {
    get_doc(client, "exports", id)
        .await?
        .map(|d| decode("export", &d))
        .transpose()
}

/// Upserts `(id, doc)` into `table` (one of the fixed names above, never input).
async fn put_doc(
    client: &impl GenericClient,
    table: &str,
    id: &str,
    doc: &str,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {table} (id, doc) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc"
    );
    client.execute(&sql, &[&id, &doc]).await.map_err(pg_error)?;
    Ok(())
}

async fn get_doc(
    client: &impl GenericClient,
    table: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let sql = format!("SELECT doc FROM {table} WHERE id = $1");
    let row = client.query_opt(&sql, &[&id]).await.map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}
