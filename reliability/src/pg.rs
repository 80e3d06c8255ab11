//! The PostgreSQL side of a run: a fresh database of its own on the given server, the checks
//! made straight on its tables (the users, the name index, the tombstones), the sessions a
//! killed gateway left behind, and the hold that keeps the gateway's transactions open at a
//! kill.
//!
//! The hold is the second kind of kill: the harness locks `outbox` (EXCLUSIVE mode: reads go
//! on, writes wait), so each admin write stops at its last statement before `COMMIT`, with
//! every user of its batch already written inside its transaction. The gateway is killed
//! there; its transactions stay open in PostgreSQL, with their row and advisory locks, until
//! the hold ends and their sessions find the client gone. None of them may ever show.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::{Client, NoTls};

use crate::model::{normalise, Slot};
use crate::workload::Worker;

/// How long the sessions of a killed gateway may take to end once nothing holds them.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(15);

/// Connects with a task driving the connection.
pub async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((b, p)) => (b, Some(p)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match params {
        Some(p) => format!("{host_part}/{db}?{p}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A database created for one run, on a server the harness may create databases on.
#[derive(Debug)]
pub struct Database {
    /// Its name (`crashcheck_` and random hex).
    pub name: String,
    /// Its URL, for the gateway and the checks.
    pub url: String,
    server_url: String,
}

impl Database {
    /// Creates an empty database with a random name on the server at `server_url`.
    pub async fn create(server_url: &str) -> Result<Self, String> {
        let name = format!("crashcheck_{:016x}", rand::random::<u64>());
        connect(server_url)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(Self {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_owned(),
        })
    }

    /// Drops it, ending any session still connected to it.
    pub async fn drop_now(self) -> Result<(), String> {
        connect(&self.server_url)
            .await?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(|e| format!("DROP DATABASE {}: {e}", self.name))
    }
}

/// Sessions on the run's database, other than the harness's own.
pub async fn sessions(client: &Client, own: &[i32]) -> Result<BTreeSet<i32>, String> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> ALL($1::int[])",
            &[&own],
        )
        .await
        .map_err(|e| format!("pg_stat_activity: {e}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// This connection's server process id.
pub async fn backend_pid(client: &Client) -> Result<i32, String> {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| format!("pg_backend_pid: {e}"))
}

/// Waits until none of `pids` is connected any more; how long that took.
pub async fn wait_gone(client: &Client, pids: &BTreeSet<i32>) -> Result<Duration, String> {
    let started = Instant::now();
    let pids: Vec<i32> = pids.iter().copied().collect();
    loop {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                &[&pids],
            )
            .await
            .map_err(|e| format!("pg_stat_activity: {e}"))?
            .get(0);
        if left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > ORPHAN_DEADLINE {
            return Err(format!(
                "{left} sessions of the killed gateway still open {ORPHAN_DEADLINE:?} after \
                 nothing held them"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write transactions waiting at their outbox insert, with all their other statements run.
/// Asked on a connection outside any transaction: within one, `pg_stat_activity` is a
/// snapshot taken at its first read.
pub async fn writes_waiting(client: &Client) -> Result<u64, String> {
    let n: i64 = client
        .query_one(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.relation = 'outbox'::regclass AND NOT l.granted
               AND a.query LIKE '%INSERT INTO outbox%'",
            &[],
        )
        .await
        .map_err(|e| format!("pg_locks: {e}"))?
        .get(0);
    Ok(n as u64)
}

/// Waits until `want` writes wait at the outbox (or `patience` has passed); how many do.
pub async fn wait_for_writes(
    client: &Client,
    want: u64,
    patience: Duration,
) -> Result<u64, String> {
    let deadline = Instant::now() + patience;
    loop {
        let n = writes_waiting(client).await?;
        if n >= want || Instant::now() > deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The outbox locked against writes, on a connection of its own.
pub struct Hold {
    client: Client,
    /// The holding session's process id.
    pub pid: i32,
}

impl Hold {
    /// Takes the lock (once the schema exists: after the gateway's first start).
    pub async fn take(url: &str) -> Result<Self, String> {
        let client = connect(url).await?;
        let pid = backend_pid(&client).await?;
        client
            .batch_execute("BEGIN; LOCK TABLE outbox IN EXCLUSIVE MODE")
            .await
            .map_err(|e| format!("LOCK TABLE outbox: {e}"))?;
        Ok(Self { client, pid })
    }

    /// Ends the hold: the waiting statements run, their sessions find the client gone.
    pub async fn release(self) -> Result<(), String> {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| format!("ending the hold: {e}"))
    }
}

/// What the database checks compared.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tables {
    /// Rows of `users`.
    pub users: u64,
    /// Rows of `user_names`.
    pub names: u64,
    /// Tombstones looked up.
    pub tombstones: u64,
}

/// Compares the tables with the ledgers (already resolved by the API checks): `users` holds
/// exactly the live ids; `user_names` holds, for each, its name's normal form in the app
/// scope and nothing else, and no normal form twice; every hard-deleted id (the workers' and
/// the probes') has its tombstone, and no tombstoned id has a row.
pub async fn check_tables(
    client: &Client,
    workers: &[Worker],
    probes: &[String],
    violations: &mut Vec<String>,
) -> Result<Tables, String> {
    let sql = |e: tokio_postgres::Error| format!("reading the tables: {e}");
    let users: BTreeMap<String, String> = client
        .query("SELECT id, doc FROM users", &[])
        .await
        .map_err(sql)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut names: BTreeMap<String, BTreeSet<(i8, Vec<u8>, String)>> = BTreeMap::new();
    let name_rows = client
        .query("SELECT kind, team, name, user_id FROM user_names", &[])
        .await
        .map_err(sql)?;
    for r in &name_rows {
        names
            .entry(r.get(3))
            .or_default()
            .insert((r.get(0), r.get(1), r.get(2)));
    }
    let mut tables = Tables {
        users: users.len() as u64,
        names: name_rows.len() as u64,
        tombstones: 0,
    };

    let mut expected_live = BTreeSet::new();
    let mut tombs: Vec<&str> = probes.iter().map(String::as_str).collect();
    for w in workers {
        for (id, slot) in &w.ledger.users {
            match slot {
                Slot::Live(_) => {
                    expected_live.insert(id.as_str());
                }
                Slot::Tomb => tombs.push(id),
                Slot::Absent => {}
            }
        }
    }
    for id in users.keys() {
        if !expected_live.contains(id.as_str()) {
            violations.push(format!("table users has a row for {id}, which is not live"));
        }
    }
    for id in &expected_live {
        if !users.contains_key(*id) {
            violations.push(format!("table users has no row for live {id}"));
        }
    }

    for (id, doc) in &users {
        let doc: Value = serde_json::from_str(doc)
            .map_err(|e| format!("the stored document of {id} is not JSON: {e}"))?;
        let norm = doc
            .get("name")
            .and_then(Value::as_str)
            .map(normalise)
            .unwrap_or_default();
        let expected: BTreeSet<(i8, Vec<u8>, String)> = if norm.is_empty() {
            BTreeSet::new()
        } else {
            BTreeSet::from([(b'a' as i8, Vec::new(), norm)])
        };
        let found = names.remove(id.as_str()).unwrap_or_default();
        if found != expected {
            violations.push(format!(
                "user_names for {id}: expected {expected:?}, found {found:?}"
            ));
        }
    }
    for (id, rows) in &names {
        violations.push(format!(
            "user_names has {rows:?} for {id}, which has no row"
        ));
    }
    // No normal form held twice in the app scope (every name was claimed under enforcement).
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &name_rows {
        if r.get::<_, i8>(0) == b'a' as i8 {
            by_name.entry(r.get(2)).or_default().push(r.get(3));
        }
    }
    for (name, ids) in by_name.iter().filter(|(_, ids)| ids.len() > 1) {
        violations.push(format!("user_names: {name} is held by {ids:?}"));
    }

    let tomb_ids: Vec<String> = tombs.iter().map(|s| (*s).to_owned()).collect();
    let stored: BTreeSet<String> = client
        .query(
            "SELECT id FROM tombstones WHERE id = ANY($1::text[])",
            &[&tomb_ids],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables.tombstones = tomb_ids.len() as u64;
    for id in &tomb_ids {
        if !stored.contains(id) {
            violations.push(format!("hard-deleted {id} has no tombstone"));
        }
    }
    let both: Vec<String> = client
        .query(
            "SELECT u.id FROM users u JOIN tombstones t ON t.id = u.id",
            &[],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in both {
        violations.push(format!("{id} has both a row and a tombstone"));
    }
    Ok(tables)
}
