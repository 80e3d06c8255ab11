//! The cluster under test: a fresh PostgreSQL database per run and gateway nodes sharing it,
//! each started on `127.0.0.1:0` and found through the addresses it logs once serving.

use crate::procfs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

/// How long a node may take from spawn to both listeners healthy.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A database created for one run and dropped at its end.
pub struct FreshDb {
    server_url: String,
    name: String,
    /// URL of the new database, for the nodes and the commit probe.
    pub url: String,
}

/// `url` with its database name replaced by `name` (query strings are not supported).
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let scheme_end = url.find("://").ok_or("the PostgreSQL URL has no scheme")? + 3;
    let path = url[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(url.len());
    if url[path..].contains('?') {
        return Err("PostgreSQL URLs with options are not supported here".into());
    }
    Ok(format!("{}/{name}", &url[..path]))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

impl FreshDb {
    /// Creates `chat_bench_<pid>_<time>` on the server `server_url` points at.
    pub async fn create(server_url: &str) -> Result<Self, String> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = format!("chat_bench_{}_{stamp}", std::process::id());
        let admin = connect(server_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(Self {
            server_url: server_url.to_owned(),
            url: with_database(server_url, &name)?,
            name,
        })
    }

    /// Drops the database, ending any session still in it.
    pub async fn drop_now(self) -> Result<(), String> {
        let admin = connect(&self.server_url).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(|e| format!("DROP DATABASE {}: {e}", self.name))
    }
}

/// What every node of one cluster shares.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    /// The `chat-gateway` binary.
    pub gateway_bin: PathBuf,
    /// Logs and data directories.
    pub work_dir: PathBuf,
    /// The shared database.
    pub db_url: String,
    /// App API key and secret, the same on every node.
    pub api_key: String,
    /// See `api_key`.
    pub secret: String,
    /// `store.postgres_pool_size` of each node.
    pub pool_size: usize,
    /// `limits.max_connections` (also used as the per-address limit: load comes from a few
    /// loopback addresses).
    pub max_connections: usize,
}

/// One running node.
pub struct Node {
    /// Index in the cluster (0 is node A).
    pub index: usize,
    /// Process id.
    pub pid: u32,
    /// Public (`/connect`) listener.
    pub public: SocketAddr,
    /// Admin listener base URL.
    pub admin: String,
    child: Child,
}

/// The public and admin addresses of a `chat-gateway serving` log line.
fn parse_serving_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("chat-gateway serving") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| {
                v.trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
    };
    Some((field("public=")?, field("admin=")?))
}

impl Node {
    /// Spawns node `index` and waits until both its listeners answer `/healthz`.
    pub async fn start(env: &ClusterEnv, index: usize) -> Result<Node, String> {
        std::fs::create_dir_all(&env.work_dir).map_err(|e| e.to_string())?;
        let log_path = env.work_dir.join(format!("node-{index}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let limit = env.max_connections.to_string();
        let mut child = Command::new(&env.gateway_bin)
            .arg("serve")
            .env_remove("CHAT_GATEWAY_CONFIG")
            .env("CHAT_GATEWAY_STORE__KIND", "postgres")
            .env("CHAT_GATEWAY_STORE__POSTGRES_URL", &env.db_url)
            .env(
                "CHAT_GATEWAY_STORE__POSTGRES_POOL_SIZE",
                env.pool_size.to_string(),
            )
            .env("CHAT_GATEWAY_API_KEY", &env.api_key)
            .env("CHAT_GATEWAY_API_SECRET", &env.secret)
            .env("CHAT_GATEWAY_PUBLIC_ADDR", "127.0.0.1:0")
            .env("CHAT_GATEWAY_ADMIN_ADDR", "127.0.0.1:0")
            .env(
                "CHAT_GATEWAY_DATA_DIR",
                env.work_dir.join(format!("node-{index}")),
            )
            .env("CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS", &limit)
            .env("CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_IP", &limit)
            .env("CHAT_GATEWAY_LIMITS__CONNECTS_PER_SECOND_PER_IP", "100000")
            // Capacity, not Stream's per-endpoint budgets, is what is measured.
            .env("CHAT_GATEWAY_RATE_LIMITS__ENABLED", "false")
            // The idle clients stay silent for the whole run.
            .env("CHAT_GATEWAY_LIMITS__IDLE_TIMEOUT_SECS", "3600")
            // The bound addresses are read from an info line of the app module.
            .env("RUST_LOG", "warn,chat_gateway::app=info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", env.gateway_bin.display()))?;
        let pid = child.id().ok_or("the node exited at once")?;
        let (public, admin) = match bound_addresses(&log_path, &mut child).await {
            Ok(addrs) => addrs,
            Err(why) => {
                let _ = child.kill().await;
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("node {index} did not start: {why}\n{tail}"));
            }
        };
        let node = Node {
            index,
            pid,
            public,
            admin: format!("http://{admin}"),
            child,
        };
        node.wait_healthy().await?;
        Ok(node)
    }

    async fn wait_healthy(&self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + START_DEADLINE;
        for base in [format!("http://{}", self.public), self.admin.clone()] {
            loop {
                let up = http
                    .get(format!("{base}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if up {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {}: {base} not healthy", self.index));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid).unwrap_or(0)
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Waits for the node's `chat-gateway serving public=… admin=…` line.
async fn bound_addresses(
    log_path: &Path,
    child: &mut Child,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        if let Some(addrs) = text.lines().find_map(parse_serving_line) {
            return Ok(addrs);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}) before serving"));
        }
        if Instant::now() > deadline {
            return Err(format!("no serving line within {START_DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_new_database() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(
            with_database(url, "b1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1", "b1").unwrap(),
            "postgres://u:p@h:1/b1"
        );
        assert!(with_database("postgres://h/db?sslmode=disable", "b1").is_err());
    }

    #[test]
    fn serving_lines_are_parsed() {
        let line = "2025-01-01T00:00:00Z  INFO chat_gateway::app: chat-gateway serving \
                    public=127.0.0.1:41000 admin=127.0.0.1:41001 data_dir=x";
        assert_eq!(
            parse_serving_line(line),
            Some((
                "127.0.0.1:41000".parse().unwrap(),
                "127.0.0.1:41001".parse().unwrap()
            ))
        );
        assert_eq!(parse_serving_line("INFO something else"), None);
    }
}
