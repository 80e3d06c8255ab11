//! `scripts/cluster.sh`, as an operator runs it: it starts the nodes on a given database,
//! prints addresses that serve and share their users, and stops every node when told to.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::pg::TestDb;
use crate::common::{Api, API_KEY};
use crate::{fetch, upsert_ok};

/// The script's process: stopped with SIGTERM (so that it stops its nodes) if the test ends
/// early.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -TERM {}", self.0.id()))
                .status();
            let _ = self.0.wait();
        }
    }
}

/// Whether process `pid` still exists.
fn alive(pid: u32) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("kill -0 {pid} 2>/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn the_cluster_script_starts_nodes_that_share_users_and_stops_them() {
    let db = TestDb::create().await;
    let secret = crate::common::random_secret();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");
    let script = Command::new(root)
        .args(["-n", "2", db.url()])
        .env("CHAT_GATEWAY_BIN", env!("CARGO_BIN_EXE_chat-gateway"))
        .env("CHAT_GATEWAY_API_KEY", API_KEY)
        .env("CHAT_GATEWAY_API_SECRET", &secret)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scripts/cluster.sh starts");
    let mut script = Script(script);

    // Its output up to "Ctrl-C stops …", read on a thread of its own.
    let stdout = script.0.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Drains to the end even when nobody listens any more: a closed pipe would kill
        // the script before it stopped its nodes.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut nodes: Vec<(u32, SocketAddr, SocketAddr)> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines_rx
            .recv_timeout(left)
            .expect("the script prints its nodes within 60 s");
        if line.starts_with("Ctrl-C stops") {
            break;
        }
        // node 0  pid 123  clients ws://127.0.0.1:1/connect  admin http://127.0.0.1:2  log …
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"node") && words.get(2) == Some(&"pid") {
            let pid = words[3].parse().expect("pid");
            let public = words[5]
                .trim_start_matches("ws://")
                .trim_end_matches("/connect")
                .parse()
                .expect("client address");
            let admin = words[7]
                .trim_start_matches("http://")
                .parse()
                .expect("admin address");
            nodes.push((pid, public, admin));
        }
    }
    assert_eq!(nodes.len(), 2, "two nodes listed");

    // The printed addresses serve, and the nodes share one database.
    let apis: Vec<Api> = nodes
        .iter()
        .map(|(_, public, admin)| Api::new(*public, *admin, API_KEY, &secret))
        .collect();
    for api in &apis {
        api.wait_healthy(|| true).await;
    }
    upsert_ok(&apis[0], &[json!({"id": "via-script", "name": "S"})]).await;
    assert_eq!(
        fetch(&apis[1], "via-script").await.expect("shared")["name"],
        "S"
    );

    // SIGTERM (Ctrl-C takes the same path): every node stops, then the script.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", script.0.id()))
        .status()
        .expect("sh runs");
    assert!(status.success());
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = script.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < stop_deadline, "the script did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(143), "exit status after SIGTERM");
    for (pid, _, _) in &nodes {
        assert!(!alive(*pid), "node pid {pid} outlived the script");
    }
}
