//! Throwaway PostgreSQL databases for the benchmarks: which server to use, a fresh database
//! per run (created on that server, dropped afterwards), and its connection string.
//!
//! The server is `--pg-url`, else `CHAT_GATEWAY_TEST_PG_URL`, else the local default. When
//! none answers, the scenario fails with a message naming the URL: never a silent skip.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls};

/// The server used when neither `--pg-url` nor `CHAT_GATEWAY_TEST_PG_URL` names one.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The environment variable the tests and the harness read the server from.
pub const URL_ENV: &str = "CHAT_GATEWAY_TEST_PG_URL";

/// How long connecting to the server may take before the harness gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `CHAT_GATEWAY_TEST_PG_URL` when set and not empty, else [`DEFAULT_URL`].
pub fn default_url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// `url` pointing at database `name` instead: the path of a `postgres://` URL is replaced,
/// a key=value string gets a trailing `dbname=` (the last occurrence of a key wins).
pub fn with_dbname(url: &str, name: &str) -> String {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"));
    let Some(rest) = rest else {
        return format!("{} dbname={name}", url.trim_end());
    };
    let scheme = &url[..url.len() - rest.len()];
    let (main, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = main.split('/').next().unwrap_or("");
    format!("{scheme}{authority}/{name}{query}")
}

/// Connects to `url` (within a few seconds) and drives the connection in the background.
pub async fn connect(url: &str) -> Result<Client, String> {
    let mut config = Config::from_str(url).map_err(|e| format!("bad PostgreSQL URL {url}: {e}"))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT * 2, config.connect(NoTls))
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match connected {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(e) => Err(format!(
            "no PostgreSQL answers at {url} ({e}); give one with --pg-url or {URL_ENV}"
        )),
    }
}

/// A database created for one run on the server behind `server_url`; [`FreshDb::drop_now`]
/// removes it.
pub struct FreshDb {
    server_url: String,
    /// Its name.
    pub name: String,
    /// A connection string for it.
    pub url: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl FreshDb {
    /// Creates an empty database named `cgbench_<label>_<pid>_<n>` (dropping a leftover of
    /// the same name first).
    pub async fn create(server_url: &str, label: &str) -> Result<FreshDb, String> {
        let name = format!(
            "cgbench_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(server_url).await?;
        // Separate statements: one simple query of several runs as a transaction block, which
        // neither statement accepts.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client.batch_execute(&sql).await.map_err(|e| {
                format!(
                    "cannot create database {name} at {server_url}: {}",
                    describe(&e)
                )
            })?;
        }
        Ok(FreshDb {
            server_url: server_url.to_owned(),
            url: with_dbname(server_url, &name),
            name,
        })
    }

    /// Drops the database, closing whatever sessions still use it.
    pub async fn drop_now(self) -> Result<(), String> {
        let client = connect(&self.server_url).await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(|e| format!("cannot drop database {}: {}", self.name, describe(&e)))
    }
}

/// A driver error with the server's message when there is one (its `Display` alone says
/// only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_replace_the_path_or_are_appended() {
        assert_eq!(
            with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_dbname("postgresql://u:p@h/x?sslmode=disable", "b1"),
            "postgresql://u:p@h/b1?sslmode=disable"
        );
        assert_eq!(
            with_dbname("postgres://h:5433", "b1"),
            "postgres://h:5433/b1"
        );
        assert_eq!(
            with_dbname("host=h user=u dbname=x", "b1"),
            "host=h user=u dbname=x dbname=b1"
        );
    }
}
