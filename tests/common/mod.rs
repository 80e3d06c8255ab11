//! Shared harness for the integration tests: a gateway served in-process on `127.0.0.1:0`
//! ([`TestServer`]), the real binary as a child process that can be stopped gracefully or
//! killed and restarted on the same data dir ([`ProcessServer`]), an HTTP client for both
//! listeners ([`Api`]), and a small WebSocket client for `/connect` ([`ws`]).
//!
//! Test binaries include it with `#[path = "../common/mod.rs"] mod common;` (or `mod common;`
//! from the `tests/` root); not every binary uses every helper.
#![allow(dead_code)]

pub mod pg;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chat_gateway::auth::{self, Secret};
use chat_gateway::config::Config;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The API key every test server runs with.
pub const API_KEY: &str = "test-key";

/// How long a server may take to answer its first health check.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// A fresh random API secret.
pub fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

/// An HTTP answer: status, headers and the body as JSON (`Value::Null` when the body is
/// empty or not JSON).
pub type Reply = (u16, HeaderMap, Value);

/// The credentials a request carries; `None` leaves that credential out.
#[derive(Debug, Clone)]
pub struct Creds {
    /// `api_key` query parameter.
    pub api_key: Option<String>,
    /// `Authorization` header.
    pub token: Option<String>,
    /// `stream-auth-type` header.
    pub auth_type: Option<String>,
}

/// Addresses and credentials of a running gateway, and a client to call it.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>` of the public listener.
    pub public_url: String,
    /// `http://127.0.0.1:<port>` of the admin listener.
    pub admin_url: String,
    /// The app's API key.
    pub api_key: String,
    /// The app's API secret.
    pub secret: Secret,
    /// A server token signed with `secret`.
    pub server_token: String,
    /// The HTTP client (connection pool shared by clones).
    pub http: reqwest::Client,
}

impl Api {
    /// The client side of a gateway serving on these addresses with these credentials.
    pub fn new(public: SocketAddr, admin: SocketAddr, api_key: &str, secret: &str) -> Self {
        let secret = Secret::new(secret);
        Self {
            public_url: format!("http://{public}"),
            admin_url: format!("http://{admin}"),
            api_key: api_key.to_owned(),
            server_token: auth::server_token(&secret),
            secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client builds"),
        }
    }

    /// The credentials of a back end: api key, server token, `stream-auth-type: jwt`.
    pub fn server_creds(&self) -> Creds {
        Creds {
            api_key: Some(self.api_key.clone()),
            token: Some(self.server_token.clone()),
            auth_type: Some("jwt".into()),
        }
    }

    /// A user token signed with the app's secret (no `exp`).
    pub fn user_token(&self, user_id: &str) -> String {
        auth::user_token(user_id, None, &self.secret)
    }

    /// Calls the admin listener with the server credentials.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.admin_with(method, path, body, &self.server_creds())
            .await
    }

    /// Calls the admin listener with the given credentials.
    pub async fn admin_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        creds: &Creds,
    ) -> Reply {
        self.call(&self.admin_url, method, path, body, creds).await
    }

    /// Calls the public listener with the given credentials.
    pub async fn public_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        creds: &Creds,
    ) -> Reply {
        self.call(&self.public_url, method, path, body, creds).await
    }

    /// Calls `base + path`, adding `api_key` to the query and the other credentials as
    /// headers.
    pub async fn call(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        creds: &Creds,
    ) -> Reply {
        let mut url = format!("{base}{path}");
        if let Some(key) = &creds.api_key {
            let sep = if path.contains('?') { '&' } else { '?' };
            url.push(sep);
            url.push_str("api_key=");
            url.push_str(&encode(key));
        }
        let mut req = self.http.request(method, &url);
        if let Some(t) = &creds.token {
            req = req.header("Authorization", t);
        }
        if let Some(a) = &creds.auth_type {
            req = req.header("stream-auth-type", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("response body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, json)
    }

    /// Calls the admin listener and asserts a 200; returns the body.
    pub async fn admin_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, _, json) = self.admin(method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path} answered {json}");
        json
    }

    /// `GET {url}` without credentials (health checks, export downloads).
    pub async fn get_url(&self, url: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("response body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Waits until both listeners answer `GET /healthz` with 200.
    pub async fn wait_healthy(&self, mut alive: impl FnMut() -> bool) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        for base in [&self.public_url, &self.admin_url] {
            loop {
                let ok = self
                    .http
                    .get(format!("{base}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ok {
                    break;
                }
                assert!(alive(), "the gateway exited before {base} became healthy");
                assert!(
                    Instant::now() < deadline,
                    "{base}/healthz not ready in time"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Percent-encodes a query or path component.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Asserts that a reply is Stream's error envelope with this status, code and (when given)
/// exact message.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, code: i64, message: Option<&str>) {
    let (got, _, body) = reply;
    assert_eq!(*got, status, "unexpected status; body {body}");
    assert_eq!(body["code"], code, "unexpected code; body {body}");
    assert_eq!(body["StatusCode"], status, "StatusCode; body {body}");
    if let Some(m) = message {
        assert_eq!(body["message"], m, "unexpected message");
    }
}

/// A gateway served by `chat_gateway::app::run` inside the test's runtime.
pub struct TestServer {
    api: Api,
    /// The configuration it runs with.
    pub config: Config,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), chat_gateway::app::AppError>>>,
    _data_dir: tempfile::TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    /// A gateway with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway whose configuration `tweak` adjusts (limits, ...) before it starts.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let secret = random_secret();
        let mut config = Config::defaults();
        config.data_dir = data_dir.path().join("data");
        config.api_key = API_KEY.to_owned();
        config.api_secret = secret.clone();
        // No 16 MiB ballast written and synced per test server (tests/disk_full covers it).
        config.store.ballast_bytes = 0;
        tweak(&mut config);
        config.validate().expect("test configuration is valid");
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let api = Api::new(
            public.local_addr().expect("public addr"),
            admin.local_addr().expect("admin addr"),
            &config.api_key,
            &config.api_secret,
        );
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(chat_gateway::app::run(
            config.clone(),
            config.api_key.clone(),
            Secret::new(config.api_secret.clone()),
            public,
            admin,
            async move {
                let _ = shutdown_rx.await;
            },
        ));
        let server = Self {
            api,
            config,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
            _data_dir: data_dir,
        };
        let task = server.task.as_ref().expect("task");
        server.api.wait_healthy(|| !task.is_finished()).await;
        server
    }

    /// The client side of this server.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Shuts the gateway down and waits for `run` to return; panics if it failed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the gateway stops within 30 s")
                .expect("the gateway task does not panic");
            result.expect("the gateway stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The real `chat-gateway` binary running as a child process on a data dir it does not own,
/// so a test can stop or kill it and start another on the same directory.
pub struct ProcessServer {
    api: Api,
    child: Option<Child>,
    /// The data dir it runs on.
    pub data_dir: PathBuf,
    log_path: PathBuf,
}

impl std::ops::Deref for ProcessServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl ProcessServer {
    /// Starts the binary on `data_dir` with these credentials, on fresh ports, and waits
    /// until both listeners are healthy. Its output goes to `<data_dir>.log`.
    pub async fn start(data_dir: &Path, api_key: &str, secret: &str) -> Self {
        let log_path = data_dir.with_extension("log");
        let mut server = Self::spawn(data_dir, &log_path, api_key, secret, &[]);
        let api = server.api.clone();
        let child = server.child.as_mut().expect("child");
        api.wait_healthy(|| matches!(child.try_wait(), Ok(None)))
            .await;
        server
    }

    /// Starts the binary on `data_dir` with these credentials and extra environment
    /// (`CHAT_GATEWAY_*` overrides), on fresh ports, logging to `log_path` (appended), and
    /// returns at once: see [`ProcessServer::wait_serving`].
    pub fn spawn(
        data_dir: &Path,
        log_path: &Path,
        api_key: &str,
        secret: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let public: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("log file opens");
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
        command
            .env_remove("CHAT_GATEWAY_CONFIG")
            .env("CHAT_GATEWAY_PUBLIC_ADDR", public.to_string())
            .env("CHAT_GATEWAY_ADMIN_ADDR", admin.to_string())
            .env("CHAT_GATEWAY_DATA_DIR", data_dir)
            .env("CHAT_GATEWAY_API_KEY", api_key)
            .env("CHAT_GATEWAY_API_SECRET", secret)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("the chat-gateway binary starts");
        Self {
            api: Api::new(public, admin, api_key, secret),
            child: Some(child),
            data_dir: data_dir.to_owned(),
            log_path: log_path.to_owned(),
        }
    }

    /// Waits until both listeners answer `GET /healthz` with any status (a degraded gateway
    /// answers 503); `Err` with the exit status if the process exits first.
    pub async fn wait_serving(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let bases = [self.api.public_url.clone(), self.api.admin_url.clone()];
        for base in bases {
            loop {
                let answered = self
                    .api
                    .http
                    .get(format!("{base}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok();
                if answered {
                    break;
                }
                let child = self.child.as_mut().expect("running");
                if let Some(status) = child.try_wait().expect("try_wait") {
                    self.child = None;
                    return Err(status);
                }
                assert!(
                    Instant::now() < deadline,
                    "{base}/healthz not ready in time"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// The process id (for reading `/proc/<pid>/status` in measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the process printed so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // The shell's `kill` builtin: no extra dependency, and `sh` is always there.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -TERM failed");
        wait_exit(&mut child, Duration::from_secs(30)).await
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL is delivered");
        wait_exit(&mut child, Duration::from_secs(10)).await;
    }
}

async fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for ProcessServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
