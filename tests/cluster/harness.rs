//! The cluster under test: N real `chat-gateway` processes sharing one fresh PostgreSQL
//! database, each on listeners bound to `127.0.0.1:0`, with the controls an operator's bad day
//! needs (kill -9, SIGSTOP / SIGCONT, SIGTERM, restart on the same addresses).
//!
//! A node's addresses are read from the line the gateway logs once both listeners are bound
//! (`chat-gateway serving public=… admin=…`), so no port is picked in advance and released:
//! tests running side by side can never be handed the same port.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::pg::TestDb;
use crate::common::{random_secret, Api, API_KEY};
use crate::ws::{self, Socket};

/// How long a node may take from spawn to healthy listeners.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Connections each node's PostgreSQL pool may open: three nodes per test and two tests at a
/// time stay well inside a default server's 100 connections.
const POOL_SIZE: &str = "6";

/// Several gateway nodes on one database. Nodes are stopped (SIGKILL) before the database is
/// dropped: fields drop in declaration order.
pub struct Cluster {
    nodes: Vec<Node>,
    db: TestDb,
    _dir: tempfile::TempDir,
    started: Instant,
}

impl Cluster {
    /// Starts `n` nodes at once on a fresh database, with the default configuration.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, &[]).await
    }

    /// Starts `n` nodes at once on a fresh database; `env` (`CHAT_GATEWAY_*` overrides) goes
    /// to every node. The nodes start together, so they also race to create the schema.
    pub async fn start_with(n: usize, env: &[(&str, &str)]) -> Self {
        Self::start_on(n, TestDb::create().await, env).await
    }

    /// Starts `n` nodes at once on `db` (a database of a server the test controls).
    pub async fn start_on(n: usize, db: TestDb, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = random_secret();
        let mut common: Vec<(String, String)> = vec![
            ("CHAT_GATEWAY_STORE__KIND".into(), "postgres".into()),
            ("CHAT_GATEWAY_STORE__POSTGRES_URL".into(), db.url().into()),
            (
                "CHAT_GATEWAY_STORE__POSTGRES_POOL_SIZE".into(),
                POOL_SIZE.into(),
            ),
            (
                "CHAT_GATEWAY_STORE__POSTGRES_CONNECT_TIMEOUT_MS".into(),
                "2000".into(),
            ),
            ("CHAT_GATEWAY_STORE__BALLAST_BYTES".into(), "0".into()),
            ("CHAT_GATEWAY_API_KEY".into(), API_KEY.into()),
            ("CHAT_GATEWAY_API_SECRET".into(), secret),
        ];
        common.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let starts = (0..n).map(|i| {
            let spec = NodeSpec {
                index: i,
                data_dir: dir.path().join(format!("node-{i}")),
                log_path: dir.path().join(format!("node-{i}.log")),
                env: common.clone(),
            };
            Node::start(spec, unbound(), unbound())
        });
        let nodes = futures_util::future::join_all(starts).await;
        Self {
            nodes,
            db,
            _dir: dir,
            started: Instant::now(),
        }
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`, to kill, pause or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// Every node, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// How long ago every node was serving.
    #[allow(dead_code)] // for presence.rs, declared once presence crosses nodes
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The database the nodes share.
    #[allow(dead_code)] // for tests that act on the database itself
    pub fn db(&self) -> &TestDb {
        &self.db
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test shows what each node said last.
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} (last lines of its log) ----", node.index);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn unbound() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// What a node is started with; kept to restart it.
#[derive(Clone)]
struct NodeSpec {
    index: usize,
    data_dir: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
}

/// One `chat-gateway` process of the cluster. Dereferences to its [`Api`].
pub struct Node {
    /// Its position in the cluster.
    pub index: usize,
    api: Api,
    child: Option<Child>,
    spec: NodeSpec,
    public: SocketAddr,
    admin: SocketAddr,
}

impl std::ops::Deref for Node {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Node {
    /// Spawns the binary on these listener addresses (port 0: any free port), reads the
    /// addresses it bound from its log and waits until both listeners are healthy.
    async fn start(spec: NodeSpec, public: SocketAddr, admin: SocketAddr) -> Self {
        let log_start = std::fs::metadata(&spec.log_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .expect("log file opens");
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
        command
            .env_remove("CHAT_GATEWAY_CONFIG")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("CHAT_GATEWAY_PUBLIC_ADDR", public.to_string())
            .env("CHAT_GATEWAY_ADMIN_ADDR", admin.to_string())
            .env("CHAT_GATEWAY_DATA_DIR", &spec.data_dir)
            // The bound addresses are read from an info line.
            .env("RUST_LOG", "info");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("the chat-gateway binary starts");
        let (public, admin) = match bound_addresses(&spec.log_path, log_start, &mut child).await {
            Ok(addrs) => addrs,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {} did not start: {why}\n{}",
                    spec.index,
                    read_from(&spec.log_path, log_start)
                );
            }
        };
        let secret = spec
            .env
            .iter()
            .find(|(k, _)| k == "CHAT_GATEWAY_API_SECRET")
            .map(|(_, v)| v.clone())
            .expect("a secret");
        let api = Api::new(public, admin, API_KEY, &secret);
        api.wait_healthy(|| matches!(child.try_wait(), Ok(None)))
            .await;
        Self {
            index: spec.index,
            api,
            child: Some(child),
            spec,
            public,
            admin,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// Whether the process is still there (a paused one is).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the node printed, over all its starts.
    pub fn log(&self) -> String {
        read_from(&self.spec.log_path, 0)
    }

    /// kill -9: the process dies at once, leaving its sockets, database sessions and
    /// presence behind for the rest of the cluster to clean up.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the node is running");
        child.kill().expect("SIGKILL is delivered");
        wait_exit(&mut child, Duration::from_secs(10)).await;
    }

    /// SIGSTOP: the process freezes (its sockets and database sessions stay open, nothing it
    /// owes is renewed) until [`Node::resume`].
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// SIGTERM and wait for the process to exit (graceful shutdown); returns its status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        signal(child.id(), "TERM");
        wait_exit(&mut child, Duration::from_secs(30)).await
    }

    /// Starts the node again after a kill or a terminate: a new process (so a new node id),
    /// the same configuration, the same listener addresses, appending to the same log.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} is still running: kill or terminate it first",
            self.index
        );
        let restarted = Node::start(self.spec.clone(), self.public, self.admin).await;
        assert_eq!(
            (restarted.public, restarted.admin),
            (self.public, self.admin),
            "a restarted node serves on its old addresses"
        );
        *self = restarted;
    }

    /// Connects `user_id` to this node's public listener with a user token; returns the
    /// socket and its first frame (the `health.check` with `me`).
    pub async fn connect(&self, user_id: &str) -> (Socket, Value) {
        ws::connect_user(&self.api, user_id, json!({ "id": user_id })).await
    }

    /// The `/connect` URL of `user_id` on this node, with a fresh user token.
    pub fn connect_url(&self, user_id: &str) -> String {
        let token = self.api.user_token(user_id);
        ws::connect_url(&self.api, user_id, json!({ "id": user_id }), &token, "jwt")
    }

    /// Opens the admin WebSocket (`/ws`) with the server token.
    pub async fn admin_socket(&self) -> Socket {
        let url = format!(
            "{}/ws?api_key={}&authorization={}&stream-auth-type=jwt",
            self.api.admin_url.replacen("http", "ws", 1),
            crate::common::encode(&self.api.api_key),
            crate::common::encode(&self.api.server_token)
        );
        ws::open(&url).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL ends a paused process too.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal with the shell's `kill` builtin (no extra dependency).
fn signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -{name} {pid} failed");
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

/// The log from byte `offset` on (lossy).
fn read_from(path: &Path, offset: u64) -> String {
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut out);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the `chat-gateway serving public=… admin=…` line written after `offset`.
async fn bound_addresses(
    log_path: &Path,
    offset: u64,
    child: &mut Child,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let text = read_from(log_path, offset);
        if let Some(addrs) = text.lines().find_map(parse_serving_line) {
            return Ok(addrs);
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!("it exited ({status}) before serving"));
        }
        if Instant::now() > deadline {
            return Err(format!("no serving line within {START_DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The public and admin addresses of a `chat-gateway serving` log line.
fn parse_serving_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("chat-gateway serving") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<SocketAddr>().ok())
    };
    Some((field("public=")?, field("admin=")?))
}

#[test]
fn serving_lines_are_parsed() {
    let line = "2025-01-01T00:00:00.000001Z  INFO chat-gateway serving \
                public=127.0.0.1:41000 admin=127.0.0.1:41001 data_dir=/tmp/x";
    assert_eq!(
        parse_serving_line(line),
        Some((
            "127.0.0.1:41000".parse().unwrap(),
            "127.0.0.1:41001".parse().unwrap()
        ))
    );
    assert_eq!(parse_serving_line("INFO something else"), None);
}
