//! Raw sled baseline for admin writes: the same batches in one cross-tree transaction and a
//! flush, with nothing else — no HTTP, no validation, no events.
//!
//! The writes run from `--concurrency` tasks at once. Durability is `flush_async` by default;
//! `--flush serial|blocking` work around sled 0.34's concurrent-`flush_async` deadlock.
//!
//! Trees (mirroring what a user store needs):
//! - `userid_user`: user id → user JSON.
//! - `username_userid`: normalised name, `0xFF`, user id → user id (the unique-name index).

use crate::admin::{drive, user_payload};
use crate::stats::Throughput;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `sledbase`.
#[derive(Args, Debug, Clone)]
pub struct SledArgs {
    /// Database directory (created; should be empty).
    #[arg(long)]
    pub dir: PathBuf,
    /// Users to upsert.
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Users per transaction.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Transactions in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Single-user partial updates after the upserts.
    #[arg(long, default_value_t = 5_000)]
    pub partial: usize,
    /// How each write is made durable (see [`FlushMode`]).
    #[arg(long, value_enum, default_value_t = FlushMode::Async)]
    pub flush: FlushMode,
}

/// How a write waits for durability. sled 0.34's `flush_async` can deadlock when several
/// run at once alongside transactions (upstream sled issue 1308), hence the alternatives.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushMode {
    /// `flush_async().await` after every transaction, concurrently.
    Async,
    /// `flush_async().await`, one at a time behind an async mutex.
    Serial,
    /// Blocking `flush()` on the blocking pool.
    Blocking,
}

/// The JSON report of `sledbase`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SledReport {
    /// Always `"sledbase"`.
    pub mode: String,
    /// Users per transaction.
    pub batch: usize,
    /// Transactions in flight at once.
    pub concurrency: usize,
    /// How writes were made durable.
    pub flush: Option<FlushMode>,
    /// Batch upserts: items are users.
    pub upsert: Throughput,
    /// Single-user read-modify-write updates: items are updates.
    pub partial: Throughput,
    /// The first failure in full, if any.
    pub first_error: Option<String>,
    /// CPU time (utime + stime) of this process over both workloads, s.
    #[serde(default)]
    pub cpu_secs: f64,
}

struct Trees {
    db: sled::Db,
    users: sled::Tree,
    names: sled::Tree,
    flush: FlushMode,
    flush_lock: tokio::sync::Mutex<()>,
}

impl Trees {
    async fn durable(&self) -> Result<(), String> {
        match self.flush {
            FlushMode::Async => self.db.flush_async().await.map(drop),
            FlushMode::Serial => {
                let _one_at_a_time = self.flush_lock.lock().await;
                self.db.flush_async().await.map(drop)
            }
            FlushMode::Blocking => {
                let db = self.db.clone();
                tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| e.to_string())?
                    .map(drop)
            }
        }
        .map_err(|e| e.to_string())
    }
}

/// Letters and digits only, lowercased: the unique-username normal form.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn name_key(user: &Value, id: &str) -> Option<Vec<u8>> {
    let name = normalise(user.get("name")?.as_str()?);
    if name.is_empty() {
        return None;
    }
    let mut key = name.into_bytes();
    key.push(0xFF);
    key.extend_from_slice(id.as_bytes());
    Some(key)
}

type TxResult<T> = Result<T, TransactionError<String>>;

/// A user ready to write: id, serialised JSON, name-index key.
type PreparedUser = (String, Vec<u8>, Option<Vec<u8>>);

/// Writes `batch` (id, user) pairs in one transaction across both trees.
fn upsert_batch(trees: &Trees, batch: &[PreparedUser]) -> TxResult<()> {
    (&trees.users, &trees.names).transaction(|(users, names)| {
        for (id, json, new_key) in batch {
            if let Some(old) = users.get(id.as_bytes())? {
                let old: Value = serde_json::from_slice(&old)
                    .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                if let Some(old_key) = name_key(&old, id) {
                    names.remove(old_key)?;
                }
            }
            users.insert(id.as_bytes(), json.as_slice())?;
            if let Some(key) = new_key {
                names.insert(key.as_slice(), id.as_bytes())?;
            }
        }
        Ok(())
    })
}

/// Reads one user, sets `n`, writes it back (and fixes the name index if the name moved).
fn partial_update(trees: &Trees, id: &str, n: usize) -> TxResult<()> {
    (&trees.users, &trees.names).transaction(|(users, names)| {
        let Some(old) = users.get(id.as_bytes())? else {
            return Err(ConflictableTransactionError::Abort(format!(
                "{id} not found"
            )));
        };
        let old: Value = serde_json::from_slice(&old)
            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
        let mut new = old.clone();
        new["n"] = n.into();
        let (old_key, new_key) = (name_key(&old, id), name_key(&new, id));
        if old_key != new_key {
            if let Some(k) = old_key {
                names.remove(k)?;
            }
            if let Some(k) = new_key {
                names.insert(k, id.as_bytes())?;
            }
        }
        let bytes = serde_json::to_vec(&new)
            .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
        users.insert(id.as_bytes(), bytes)?;
        Ok(())
    })
}

/// Runs the batch upserts, then the partial updates, each followed by `flush_async`.
pub async fn run_sledbase(args: &SledArgs) -> Result<SledReport, sled::Error> {
    let db = sled::open(&args.dir)?;
    let trees = Arc::new(Trees {
        users: db.open_tree("userid_user")?,
        names: db.open_tree("username_userid")?,
        db,
        flush: args.flush,
        flush_lock: tokio::sync::Mutex::new(()),
    });
    let own_pid = std::process::id();
    let ticks_before = crate::procfs::cpu_ticks(own_pid).unwrap_or(0);
    let batch = args.batch.max(1);
    let total = args.users;
    let batches = total.div_ceil(batch);

    let upsert = {
        let trees = trees.clone();
        drive(batches, args.concurrency, move |b| {
            let trees = trees.clone();
            async move {
                // Serialising is part of the write, as it is in the gateway.
                let items: Vec<_> = (b * batch..((b + 1) * batch).min(total))
                    .map(|index| {
                        let id = format!("a{index}");
                        let user = user_payload(&id, index);
                        let key = name_key(&user, &id);
                        (id, serde_json::to_vec(&user).expect("JSON"), key)
                    })
                    .collect();
                let t = trees.clone();
                tokio::task::spawn_blocking(move || upsert_batch(&t, &items))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{e:?}"))?;
                trees.durable().await?;
                Ok(())
            }
        })
        .await
    };
    let partial = {
        let trees = trees.clone();
        let population = total.max(1);
        drive(args.partial, args.concurrency, move |j| {
            let trees = trees.clone();
            async move {
                let t = trees.clone();
                let id = format!("a{}", j % population);
                tokio::task::spawn_blocking(move || partial_update(&t, &id, j))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{e:?}"))?;
                trees.durable().await?;
                Ok(())
            }
        })
        .await
    };
    let (ok, failed, mut lat, secs, err_a) = upsert;
    let (pok, pfailed, mut plat, psecs, err_b) = partial;
    Ok(SledReport {
        mode: "sledbase".into(),
        batch,
        concurrency: args.concurrency,
        flush: Some(args.flush),
        upsert: Throughput::new(ok, failed, (ok * batch).min(total), secs, &mut lat),
        partial: Throughput::new(pok, pfailed, pok, psecs, &mut plat),
        first_error: err_a.or(err_b),
        cpu_secs: crate::procfs::cpu_ticks(own_pid)
            .unwrap_or(0)
            .saturating_sub(ticks_before) as f64
            / crate::procfs::clock_ticks_per_sec() as f64,
    })
}
