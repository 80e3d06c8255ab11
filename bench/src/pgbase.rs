//! Raw PostgreSQL baseline for admin writes: the statements the gateway's PostgreSQL store
//! sends for a batch upsert and for a single-user partial update, sent straight through
//! tokio-postgres — no HTTP, no validation, no pool.
//!
//! What one batch of new users costs the store, and so pgbase (the names are not checked:
//! the app's default is `enforce_unique_usernames = "no"`, so no advisory locks either):
//! - per user, outside any transaction, the read the users service makes before deciding
//!   (`SELECT version, doc, last_active FROM users WHERE id = $1`);
//! - one READ COMMITTED transaction: per user the insert (`ON CONFLICT DO NOTHING`), the
//!   tombstone check after it, the release of the names it held and the claim of its name;
//!   then the batch's events into the outbox with their notification (one statement, as the
//!   store records them); then `COMMIT`.
//!
//! A partial update reads the row, changes the document, then in one transaction updates
//! it under its version, releases and claims its name, records its event, and commits.
//!
//! Every statement is prepared once per connection; each worker task owns one connection.
//! `--pipeline` sends the statements inside one transaction without waiting for each answer
//! (tokio-postgres sends a request when its future is first polled, so futures polled
//! together share round trips); the reads stay one at a time, as the store is asked for
//! them.
//! The tables are those of the store's schema version 1 (`users`, `user_names`,
//! `tombstones`).

use crate::admin::{drive, user_payload};
use crate::stats::Throughput;
use clap::Args;
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// Options of `pgbase`.
#[derive(Args, Debug, Clone)]
pub struct PgArgs {
    /// Connection string of an empty database (the tables are created in it).
    #[arg(long)]
    pub url: String,
    /// Users to upsert.
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Users per transaction.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Transactions in flight at once (one connection each).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Single-user partial updates after the upserts.
    #[arg(long, default_value_t = 5_000)]
    pub partial: usize,
    /// Leave out the read of each user before its write.
    #[arg(long)]
    pub no_reads: bool,
    /// Send the statements of a transaction without waiting for each answer.
    #[arg(long)]
    pub pipeline: bool,
}

/// The JSON report of `pgbase`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PgReport {
    /// Always `"pgbase"`.
    pub mode: String,
    /// Users per transaction.
    pub batch: usize,
    /// Transactions in flight at once.
    pub concurrency: usize,
    /// Whether each user was read before its write.
    pub reads: bool,
    /// Whether statements were pipelined.
    pub pipeline: bool,
    /// Batch upserts: items are users.
    pub upsert: Throughput,
    /// Single-user read-modify-write updates: items are updates.
    pub partial: Throughput,
    /// The first failure in full, if any.
    pub first_error: Option<String>,
    /// CPU time (utime + stime) of this process over both workloads, s.
    pub cpu_secs: f64,
}

/// The tables the writes touch, as the store's schema versions 1 and 2 create them.
const SCHEMA: &str = r#"
CREATE TABLE users (
    id text PRIMARY KEY,
    version bigint NOT NULL,
    doc text NOT NULL,
    last_active text
);
CREATE TABLE user_names (
    kind "char" NOT NULL,
    team bytea NOT NULL,
    name text NOT NULL,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (kind, team, name, user_id)
);
CREATE INDEX user_names_by_user ON user_names (user_id);
CREATE TABLE tombstones (
    id text PRIMARY KEY,
    deleted_at text NOT NULL
);
CREATE TABLE outbox (
    seq bigserial PRIMARY KEY,
    node text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    event text NOT NULL
);
"#;

/// The node name pgbase records its events under.
const NODE: &str = "pgbase";

/// The notification channel of the outbox (the gateway's; nobody listens here).
const CHANNEL: &str = "chat_gateway_events";

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    read: Statement,
    insert: Statement,
    tombstoned: Statement,
    update: Statement,
    release: Statement,
    claim: Statement,
    outbox: Statement,
}

impl Conn {
    async fn open(url: &str) -> Result<Conn, String> {
        let client = crate::pgdb::connect(url).await?;
        let prepare = |sql: &'static str| {
            let client = &client;
            async move { client.prepare(sql).await.map_err(err) }
        };
        Ok(Conn {
            read: prepare("SELECT version, doc, last_active FROM users WHERE id = $1").await?,
            insert: prepare(
                "INSERT INTO users (id, version, doc) VALUES ($1, 1, $2)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?,
            tombstoned: prepare("SELECT 1 FROM tombstones WHERE id = $1").await?,
            update: prepare(
                "UPDATE users SET version = version + 1, doc = $3
                 WHERE id = $1 AND version = $2",
            )
            .await?,
            release: prepare("DELETE FROM user_names WHERE user_id = $1").await?,
            claim: prepare(
                "INSERT INTO user_names (kind, team, name, user_id)
                 SELECT 'a', ''::bytea, $2, $1
                 UNION ALL SELECT 't', t, $2, $1 FROM unnest($3::bytea[]) AS t
                 ON CONFLICT DO NOTHING",
            )
            .await?,
            outbox: prepare(
                "WITH added AS (
                     INSERT INTO outbox (node, event)
                     SELECT $1, e FROM unnest($2::text[]) WITH ORDINALITY AS u (e, n) ORDER BY n
                     RETURNING seq
                 )
                 SELECT pg_notify($3, $1 || ' ' || min(seq) || ' ' || max(seq)) FROM added",
            )
            .await?,
            client,
        })
    }
}

/// Connections handed to the worker tasks (as many as there are workers, so never empty).
struct Conns(Mutex<Vec<Conn>>);

impl Conns {
    fn take(&self) -> Conn {
        self.0
            .lock()
            .expect("conns lock")
            .pop()
            .expect("a connection per worker")
    }

    fn give(&self, conn: Conn) {
        self.0.lock().expect("conns lock").push(conn);
    }
}

/// Letters and digits only, lowercased: the unique-username normal form (ASCII names here).
fn normalise(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// A user document as the gateway stores it, near enough: the payload plus what the service
/// adds (role, times).
fn stored_doc(id: &str, index: usize) -> Value {
    let mut user = user_payload(id, index);
    let now = crate::timefmt::rfc3339_now();
    user["role"] = "user".into();
    user["teams"] = Value::Array(Vec::new());
    user["created_at"] = now.clone().into();
    user["updated_at"] = now.into();
    user
}

/// Statement parameters as the driver takes them.
macro_rules! params {
    ($($p:expr),*) => { vec![$($p as &(dyn ToSql + Sync)),*] };
}

fn err(e: tokio_postgres::Error) -> String {
    crate::pgdb::describe(&e)
}

/// What a statement's answer must be for the write to go on.
#[derive(Clone, Copy)]
enum Want {
    /// Exactly one row touched (the insert or the versioned update).
    One,
    /// No row (the tombstone check).
    None,
    /// Anything.
    Any,
}

/// One statement in flight: how many rows it touched (or returned).
type Step<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

fn exec<'a>(c: &'a Conn, stmt: &'a Statement, params: Vec<&'a (dyn ToSql + Sync)>) -> Step<'a> {
    Box::pin(c.client.execute_raw(stmt, params))
}

fn count<'a>(c: &'a Conn, stmt: &'a Statement, params: Vec<&'a (dyn ToSql + Sync)>) -> Step<'a> {
    Box::pin(async move {
        let rows = c.client.query_raw(stmt, params).await?;
        Ok(rows.try_collect::<Vec<_>>().await?.len() as u64)
    })
}

/// Runs the steps in order: one answer at a time, or all sent before the first answer is read
/// (tokio-postgres queues each request when its future is first polled, in polling order).
async fn run_steps(steps: Vec<(Want, Step<'_>)>, pipeline: bool) -> Result<(), String> {
    let (wants, futures): (Vec<Want>, Vec<Step<'_>>) = steps.into_iter().unzip();
    let counts = if pipeline {
        try_join_all(futures).await.map_err(err)?
    } else {
        let mut counts = Vec::with_capacity(futures.len());
        for f in futures {
            counts.push(f.await.map_err(err)?);
        }
        counts
    };
    for (want, n) in wants.into_iter().zip(counts) {
        let ok = match want {
            Want::One => n == 1,
            Want::None => n == 0,
            Want::Any => true,
        };
        if !ok {
            return Err(format!("unexpected answer: {n} rows"));
        }
    }
    Ok(())
}

/// A user ready to write: id, document, normal form of its name.
type Prepared = (String, String, String);

/// `START TRANSACTION ISOLATION LEVEL READ COMMITTED`, the steps, `COMMIT` (or `ROLLBACK`).
async fn transaction(c: &Conn, steps: Vec<(Want, Step<'_>)>, pipeline: bool) -> Result<(), String> {
    c.client
        .batch_execute("START TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(err)?;
    match run_steps(steps, pipeline).await {
        Ok(()) => c.client.batch_execute("COMMIT").await.map_err(err),
        Err(e) => {
            let _ = c.client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// One batch of new users: the reads, then one transaction of four statements per user.
async fn upsert_batch(
    c: &Conn,
    users: &[Prepared],
    reads: bool,
    pipeline: bool,
) -> Result<(), String> {
    let no_teams: Vec<&[u8]> = Vec::new();
    if reads {
        // One at a time whatever the mode: the users service asks the store for one user
        // at a time.
        let steps = users
            .iter()
            .map(|(id, _, _)| (Want::None, count(c, &c.read, params![id])))
            .collect();
        run_steps(steps, false).await?;
    }
    let events: Vec<String> = users.iter().map(|(_, doc, _)| event_of(doc)).collect();
    let mut steps = Vec::with_capacity(users.len() * 4 + 1);
    for (id, doc, norm) in users {
        steps.push((Want::One, exec(c, &c.insert, params![id, doc])));
        steps.push((Want::None, count(c, &c.tombstoned, params![id])));
        steps.push((Want::Any, exec(c, &c.release, params![id])));
        steps.push((Want::Any, exec(c, &c.claim, params![id, norm, &no_teams])));
    }
    steps.push((
        Want::Any,
        exec(c, &c.outbox, params![&NODE, &events, &CHANNEL]),
    ));
    transaction(c, steps, pipeline).await
}

/// One partial update: read, set `n`, then update, release and claim in one transaction.
async fn partial_update(c: &Conn, id: &str, n: usize, pipeline: bool) -> Result<(), String> {
    let row = c
        .client
        .query_opt(&c.read, &[&id])
        .await
        .map_err(err)?
        .ok_or_else(|| format!("{id} not found"))?;
    let version: i64 = row.get(0);
    let mut doc: Value = serde_json::from_str(row.get(1)).map_err(|e| e.to_string())?;
    doc["n"] = n.into();
    doc["updated_at"] = crate::timefmt::rfc3339_now().into();
    let norm = normalise(doc["name"].as_str().unwrap_or(""));
    let doc = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
    let no_teams: Vec<&[u8]> = Vec::new();
    let id = id.to_owned();
    let events = vec![event_of(&doc)];
    let steps = vec![
        (Want::One, exec(c, &c.update, params![&id, &version, &doc])),
        (Want::Any, exec(c, &c.release, params![&id])),
        (Want::Any, exec(c, &c.claim, params![&id, &norm, &no_teams])),
        (
            Want::Any,
            exec(c, &c.outbox, params![&NODE, &events, &CHANNEL]),
        ),
    ];
    transaction(c, steps, pipeline).await
}

/// The outbox row of a user's write: a `user.updated` event carrying the user, about the
/// size of the gateway's own.
fn event_of(doc: &str) -> String {
    format!(r#"{{"kind":"updated","user":{doc}}}"#)
}

/// Creates the tables, runs the batch upserts, then the partial updates.
pub async fn run_pgbase(args: &PgArgs) -> Result<PgReport, String> {
    let setup = crate::pgdb::connect(&args.url).await?;
    setup
        .batch_execute(SCHEMA)
        .await
        .map_err(|e| format!("creating the tables: {}", err(e)))?;
    drop(setup);
    let workers = args.concurrency.max(1);
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        conns.push(Conn::open(&args.url).await?);
    }
    let conns = Arc::new(Conns(Mutex::new(conns)));
    let own_pid = std::process::id();
    let ticks_before = crate::procfs::cpu_ticks(own_pid).unwrap_or(0);
    let batch = args.batch.max(1);
    let total = args.users;
    let batches = total.div_ceil(batch);
    let (reads, pipeline) = (!args.no_reads, args.pipeline);

    let upsert = {
        let conns = conns.clone();
        drive(batches, workers, move |b| {
            let conns = conns.clone();
            async move {
                // Serialising is part of the write, as it is in the gateway.
                let users: Vec<_> = (b * batch..((b + 1) * batch).min(total))
                    .map(|index| {
                        let id = format!("a{index}");
                        let doc = stored_doc(&id, index);
                        let norm = normalise(doc["name"].as_str().unwrap_or(""));
                        (id, doc.to_string(), norm)
                    })
                    .collect();
                let conn = conns.take();
                let result = upsert_batch(&conn, &users, reads, pipeline).await;
                conns.give(conn);
                result
            }
        })
        .await
    };
    let partial = {
        let conns = conns.clone();
        let population = total.max(1);
        drive(args.partial, workers, move |j| {
            let conns = conns.clone();
            async move {
                let id = format!("a{}", j % population);
                let conn = conns.take();
                let result = partial_update(&conn, &id, j, pipeline).await;
                conns.give(conn);
                result
            }
        })
        .await
    };
    let (ok, failed, mut lat, secs, err_a) = upsert;
    let (pok, pfailed, mut plat, psecs, err_b) = partial;
    Ok(PgReport {
        mode: "pgbase".into(),
        batch,
        concurrency: workers,
        reads,
        pipeline,
        upsert: Throughput::new(ok, failed, (ok * batch).min(total), secs, &mut lat),
        partial: Throughput::new(pok, pfailed, pok, psecs, &mut plat),
        first_error: err_a.or(err_b),
        cpu_secs: crate::procfs::cpu_ticks(own_pid)
            .unwrap_or(0)
            .saturating_sub(ticks_before) as f64
            / crate::procfs::clock_ticks_per_sec() as f64,
    })
}
