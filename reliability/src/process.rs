//! The gateway under test as a child process: started on a data dir (sled) or a database
//! (PostgreSQL) with fresh ports, waited for until both listeners answer `/healthz`, then
//! SIGKILLed (or stopped with SIGTERM).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before it counts as failed.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// A running gateway.
pub struct GatewayProcess {
    child: Child,
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
}

fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Where and how to start the gateway.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `chat-gateway` binary.
    pub binary: PathBuf,
    /// The data dir every start shares.
    pub data_dir: PathBuf,
    /// The database every start shares, when the store is PostgreSQL (else sled in
    /// `data_dir`).
    pub postgres_url: Option<String>,
    /// Appended to by every start.
    pub log: PathBuf,
    /// API key.
    pub api_key: String,
    /// API secret.
    pub secret: String,
}

impl GatewayProcess {
    /// Starts the binary and waits until it is healthy; retries once on other ports if the
    /// chosen ones were taken meanwhile.
    pub async fn start(launch: &Launch) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_once(launch).await {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn start_once(launch: &Launch) -> Result<Self, String> {
        let public = free_addr().map_err(|e| e.to_string())?;
        let admin = free_addr().map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(|e| format!("{}: {e}", launch.log.display()))?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&launch.binary);
        command
            .env_remove("CHAT_GATEWAY_CONFIG")
            .env_remove("CHAT_GATEWAY_STORE__KIND")
            .env_remove("CHAT_GATEWAY_STORE__POSTGRES_URL");
        if let Some(url) = &launch.postgres_url {
            command
                .env("CHAT_GATEWAY_STORE__KIND", "postgres")
                .env("CHAT_GATEWAY_STORE__POSTGRES_URL", url);
        }
        let child = command
            .env("CHAT_GATEWAY_PUBLIC_ADDR", public.to_string())
            .env("CHAT_GATEWAY_ADMIN_ADDR", admin.to_string())
            .env("CHAT_GATEWAY_DATA_DIR", &launch.data_dir)
            .env("CHAT_GATEWAY_API_KEY", &launch.api_key)
            .env("CHAT_GATEWAY_API_SECRET", &launch.secret)
            // Writes as fast as the store takes them: Stream's per-endpoint budgets
            // (300 upserts a minute) would refuse most of them.
            .env("CHAT_GATEWAY_RATE_LIMITS__ENABLED", "false")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.binary.display()))?;
        let mut process = Self {
            child,
            public,
            admin,
        };
        process.wait_healthy().await?;
        Ok(process)
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + STARTUP_DEADLINE;
        for addr in [self.public, self.admin] {
            loop {
                let healthy = http
                    .get(format!("http://{addr}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if healthy {
                    break;
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!("the gateway exited during startup: {status}"));
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "{addr}/healthz not ready within {STARTUP_DEADLINE:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to 30 s for a clean exit.
    pub async fn terminate(mut self) -> Result<ExitStatus, String> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("the gateway did not stop within 30 s of SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a log file (for failure reports).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
