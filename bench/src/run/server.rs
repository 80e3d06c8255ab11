//! The servers under test: the gateway binary (on sled, or on a fresh PostgreSQL database)
//! and the baseline, started fresh for each run.

use crate::pgdb::FreshDb;
use crate::procfs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `chat-gateway serve` on its default store, sled.
    Gateway,
    /// `chat-gateway serve` with `store.kind = "postgres"`, on a database of its own.
    GatewayPg,
    /// The bench crate's `baseline`.
    Baseline,
}

impl Kind {
    /// The name used in results and file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::GatewayPg => "gateway-pg",
            Kind::Baseline => "baseline",
        }
    }
}

/// Where the binaries are and what credentials the app uses.
#[derive(Debug, Clone)]
pub struct ServerEnv {
    /// `target/release/chat-gateway`.
    pub gateway_bin: PathBuf,
    /// `target/release/baseline`.
    pub baseline_bin: PathBuf,
    /// Scratch space: data directories and server logs.
    pub work_dir: PathBuf,
    /// App API key.
    pub api_key: String,
    /// App API secret.
    pub secret: String,
    /// `CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// The baseline's initial WebSocket read buffer, bytes.
    pub baseline_read_buffer: usize,
    /// The PostgreSQL server [`Kind::GatewayPg`] gets a fresh database on.
    pub pg_url: String,
}

/// A running server process.
pub struct Server {
    /// What it is.
    pub kind: Kind,
    /// Its process id.
    pub pid: u32,
    /// The public (`/connect`) listener.
    pub public: SocketAddr,
    /// The admin listener's base URL (gateway only).
    pub admin: Option<String>,
    child: Child,
    data_dir: Option<PathBuf>,
    database: Option<FreshDb>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn log_file(work_dir: &Path, name: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work_dir.join(format!("{name}.log")))
}

impl Server {
    /// Starts a fresh server (new data directory for the gateway) and waits until it serves.
    /// `health_check_secs` is the server's own health-check interval.
    pub async fn start(
        env: &ServerEnv,
        kind: Kind,
        health_check_secs: u64,
    ) -> Result<Server, String> {
        std::fs::create_dir_all(&env.work_dir).map_err(|e| e.to_string())?;
        let public: SocketAddr = ([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?).into();
        let log = log_file(&env.work_dir, kind.name()).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let database = match kind {
            Kind::GatewayPg => Some(FreshDb::create(&env.pg_url, "gw").await?),
            _ => None,
        };
        let (mut command, admin, data_dir) = match kind {
            Kind::Gateway | Kind::GatewayPg => {
                let admin: SocketAddr =
                    ([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?).into();
                let data_dir = env.work_dir.join(format!("gateway-data-{}", public.port()));
                let _ = std::fs::remove_dir_all(&data_dir);
                let mut c = Command::new(&env.gateway_bin);
                c.arg("serve")
                    .env("CHAT_GATEWAY_PUBLIC_ADDR", public.to_string())
                    .env("CHAT_GATEWAY_ADMIN_ADDR", admin.to_string())
                    .env("CHAT_GATEWAY_DATA_DIR", &data_dir)
                    .env("CHAT_GATEWAY_API_KEY", &env.api_key)
                    .env("CHAT_GATEWAY_API_SECRET", &env.secret)
                    .env(
                        "CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS",
                        env.max_connections.to_string(),
                    )
                    // Load comes from a few loopback addresses.
                    .env(
                        "CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_IP",
                        env.max_connections.to_string(),
                    )
                    .env(
                        "CHAT_GATEWAY_LIMITS__HEALTH_CHECK_INTERVAL_SECS",
                        health_check_secs.to_string(),
                    )
                    // Capacity, not Stream's per-endpoint budgets (10,000 connects and
                    // 300 upserts a minute), is what the scenarios measure.
                    .env("CHAT_GATEWAY_RATE_LIMITS__ENABLED", "false")
                    .env("RUST_LOG", "warn");
                if let Some(db) = &database {
                    c.env("CHAT_GATEWAY_STORE__KIND", "postgres")
                        .env("CHAT_GATEWAY_STORE__POSTGRES_URL", &db.url);
                }
                (c, Some(format!("http://{admin}")), Some(data_dir))
            }
            Kind::Baseline => {
                let mut c = Command::new(&env.baseline_bin);
                c.arg(format!("--addr={public}"))
                    .arg(format!("--secret={}", env.secret))
                    .arg(format!("--health-check-secs={health_check_secs}"))
                    .arg(format!("--read-buffer={}", env.baseline_read_buffer));
                (c, None, None)
            }
        };
        let spawned = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.name()))
            .and_then(|child| {
                let pid = child.id().ok_or("server exited at once")?;
                Ok((child, pid))
            });
        let (child, pid) = match spawned {
            Ok(started) => started,
            Err(e) => {
                if let Some(db) = database {
                    let _ = db.drop_now().await;
                }
                return Err(e);
            }
        };
        let mut server = Server {
            kind,
            pid,
            public,
            admin,
            child,
            data_dir,
            database,
        };
        if let Err(e) = server.wait_ready().await {
            server.stop().await;
            return Err(e);
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited during start-up: {status}",
                    self.kind.name()
                ));
            }
            let ready = match &self.admin {
                Some(admin) => {
                    let mut ok = true;
                    for base in [format!("http://{}", self.public), admin.clone()] {
                        let up = http
                            .get(format!("{base}/healthz"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        ok &= up;
                    }
                    ok
                }
                None => tokio::net::TcpStream::connect(self.public).await.is_ok(),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} not ready after 60 s", self.kind.name()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Current resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid).unwrap_or(0)
    }

    /// CPU time used so far, clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        procfs::cpu_ticks(self.pid).unwrap_or(0)
    }

    /// Open descriptors right now.
    pub fn open_fds(&self) -> usize {
        procfs::open_fds(self.pid).unwrap_or(0)
    }

    /// Waits until the open descriptors fall to `target` or fewer (closed clients reaped).
    pub async fn wait_fds_at_most(&self, target: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open_fds() > target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; removes the data directory (and drops
    /// the database).
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
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(db) = self.database.take() {
            if let Err(e) = db.drop_now().await {
                eprintln!("[benchrun] {e}");
            }
        }
    }
}
