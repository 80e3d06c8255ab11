//! A gateway process whose public sockets fill its descriptor budget: it waits for a slot
//! instead of meeting `EMFILE` (and never spins in its accept loop), the admin listener keeps
//! answering new connections, and it accepts again once sockets free up. The binary runs with
//! a small descriptor limit so that a few hundred sockets reach it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{free_port, random_secret, Api, API_KEY};
use crate::ws::{connect_url, next, Next, Socket};
use chat_gateway::auth::{self, Secret};

/// The gateway binary under `ulimit -n <nofile>`, on fresh ports and a temporary data dir.
struct Gateway {
    api: Api,
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(nofile: u32, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let secret = random_secret();
        let log = dir.path().join("gateway.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_chat-gateway"))
            .env_remove("CHAT_GATEWAY_CONFIG")
            .env("CHAT_GATEWAY_PUBLIC_ADDR", &public)
            .env("CHAT_GATEWAY_ADMIN_ADDR", &admin)
            .env("CHAT_GATEWAY_DATA_DIR", dir.path().join("data"))
            .env("CHAT_GATEWAY_API_KEY", API_KEY)
            .env("CHAT_GATEWAY_API_SECRET", &secret)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("the gateway starts");
        let secret = Secret::new(secret);
        let api = Api {
            public_url: format!("http://{public}"),
            admin_url: format!("http://{admin}"),
            api_key: API_KEY.to_owned(),
            server_token: auth::server_token(&secret),
            secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        };
        let mut gw = Self {
            api,
            child,
            log,
            _dir: dir,
        };
        let api = gw.api.clone();
        let child = &mut gw.child;
        api.wait_healthy(|| matches!(child.try_wait(), Ok(None)))
            .await;
        gw
    }

    /// CPU time (user + system) used so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/<pid>/stat");
        let after = stat.rsplit_once(')').expect("comm").1;
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().expect("number"))
            .collect();
        f[0] + f[1]
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects `id` and waits for its first frame, giving up after `wait`.
async fn try_connect(api: &Api, id: String, wait: Duration) -> Option<Socket> {
    let url = connect_url(api, &id, json!({"id": id}), &api.user_token(&id), "jwt");
    tokio::time::timeout(wait, async {
        let (mut sock, _) = tokio_tungstenite::connect_async(url.as_str()).await.ok()?;
        match next(&mut sock, wait).await {
            Next::Frame(f) if f["type"] == "health.check" => Some(sock),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten()
}

const CLOCK_TICKS_PER_SEC: u64 = 100;

#[tokio::test]
async fn at_its_descriptor_budget_the_gateway_waits_serves_admin_and_recovers() {
    // 160 descriptors, and a connection limit the descriptors run out before.
    let mut gw = Gateway::start(160, &[("CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS", "1000")]).await;
    let baseline = gw.open_fds();
    assert!(baseline < 60, "{baseline} descriptors before any client");

    // Fill every descriptor with held connections.
    let mut held = Vec::new();
    let attempts = futures_util::future::join_all(
        (0..200).map(|i| try_connect(&gw.api, format!("fill-{i}"), Duration::from_secs(6))),
    )
    .await;
    for sock in attempts.into_iter().flatten() {
        held.push(sock);
    }
    // A tenth of the limit stays in reserve: at most 160 - 16 - baseline sockets.
    assert!(
        held.len() >= 80 && held.len() <= 144 - baseline,
        "{} held with a limit of 160 descriptors (baseline {baseline}):\n{}",
        held.len(),
        gw.log()
    );
    assert!(gw.alive(), "the gateway died:\n{}", gw.log());
    assert!(
        gw.log().contains("descriptor budget"),
        "the budget was never reached:\n{}",
        gw.log()
    );
    assert!(
        !gw.log().contains("Too many open files"),
        "the public listener met EMFILE:\n{}",
        gw.log()
    );
    assert!(
        gw.open_fds() <= 160 - 8,
        "{} descriptors open",
        gw.open_fds()
    );

    // Saturated, with clients waiting in the backlog: the accept loop pauses, it does not spin.
    let api = gw.api.clone();
    let waiting = tokio::spawn(async move {
        let tries =
            (0..20).map(|i| try_connect(&api, format!("late-{i}"), Duration::from_secs(15)));
        futures_util::future::join_all(tries).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ticks, started) = (gw.cpu_ticks(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = (gw.cpu_ticks() - ticks) as f64
        / CLOCK_TICKS_PER_SEC as f64
        / started.elapsed().as_secs_f64();
    assert!(cpu < 0.25, "{:.0}% of a core while saturated", cpu * 100.0);

    // The admin listener still answers, on a new connection.
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let health = fresh
        .get(format!("{}/healthz", gw.api.admin_url))
        .send()
        .await;
    assert_eq!(health.expect("admin /healthz answers").status(), 200);

    // Free some sockets: the waiting clients get in.
    held.truncate(held.len() - 40);
    let late = waiting.await.expect("waiting clients");
    let admitted = late.iter().filter(|s| s.is_some()).count();
    assert_eq!(admitted, 20, "only {admitted} of 20 waiting clients got in");
    assert!(try_connect(&gw.api, "after".into(), Duration::from_secs(5))
        .await
        .is_some());
    assert!(gw.alive());
    drop(held);
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn silent_admin_sockets_are_closed_and_cannot_starve_the_public_listener() {
    let mut gw = Gateway::start(
        160,
        &[
            ("CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS", "1000"),
            ("CHAT_GATEWAY_LIMITS__ADMIN_HEADER_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let admin = crate::addr_of(&gw.api.admin_url);

    // A keep-alive back end: idle for longer than the first-request deadline between two
    // requests on one connection, and served both times.
    let mut keep = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    for round in 0..2 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), keep.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // 300 sockets to the admin listener that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            tokio::net::TcpStream::connect(admin)
                .await
                .expect("TCP connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The public listener still takes WebSockets and answers /healthz, on new connections.
    let sock = try_connect(&gw.api, "during-flood".into(), Duration::from_secs(3)).await;
    assert!(
        sock.is_some(),
        "no WebSocket during the flood:\n{}",
        gw.log()
    );
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let health = fresh
        .get(format!("{}/healthz", gw.api.public_url))
        .send()
        .await;
    assert_eq!(health.expect("public /healthz answers").status(), 200);
    assert!(
        gw.open_fds() <= 160 - 8,
        "{} descriptors open",
        gw.open_fds()
    );
    assert!(
        !gw.log().contains("Too many open files"),
        "a listener met EMFILE:\n{}",
        gw.log()
    );

    // The silent sockets the admin listener took are closed after the first-request deadline.
    let mut closed = 0;
    for s in silent.iter_mut().take(10) {
        if closed_within(s, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 10, "silent admin sockets still open after 3 s");
    // The flood ends: the admin listener serves again, on a new connection.
    drop(silent);
    let health = fresh
        .get(format!("{}/healthz", gw.api.admin_url))
        .send()
        .await;
    assert_eq!(health.expect("admin /healthz answers").status(), 200);
    assert!(gw.alive());
}
