//! Event latency: from an admin call to what the user's socket sees — `user.updated` after
//! `PATCH /users`, a custom event after `POST /users/{id}/event`, and the close after
//! `POST /users/{id}/deactivate`.
//!
//! Writes go one at a time, so each figure is the unloaded path through the gateway while
//! whatever other connections the caller opened stay idle.

use crate::auth::TokenMinter;
use crate::client::{self, Target};
use crate::stats::{micros, LatencySummary};
use clap::Args;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Options of `loadgen events`.
#[derive(Args, Debug, Clone)]
pub struct EventArgs {
    /// Public listener address (host:port).
    #[arg(long, default_value = "127.0.0.1:4600")]
    pub addr: SocketAddr,
    /// Admin listener base URL.
    #[arg(long, default_value = "http://127.0.0.1:4601")]
    pub admin: String,
    /// App API key.
    #[arg(long, default_value = "bench-key")]
    pub api_key: String,
    /// App API secret.
    #[arg(long, default_value = "bench-secret")]
    pub secret: String,
    /// Connected users the partial updates go to (round robin).
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Partial updates to time.
    #[arg(long, default_value_t = 500)]
    pub updates: usize,
    /// Custom user events to time (round robin over the same users as the updates).
    #[arg(long, default_value_t = 500)]
    pub custom_events: usize,
    /// Deactivations to time (each uses up one extra connected user).
    #[arg(long, default_value_t = 100)]
    pub deactivations: usize,
    /// User ids are `<prefix><index>` (updates) and `<prefix>d<index>` (deactivations).
    #[arg(long, default_value = "ev")]
    pub user_prefix: String,
    /// How long to wait for one event or close.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// The JSON report of `loadgen events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventReport {
    /// Always `"events"`.
    pub mode: String,
    /// `PATCH /users` sent → `user.updated` with the new value received on the user's socket.
    pub update_event: LatencySummary,
    /// `PATCH /users` sent → HTTP response received.
    pub update_http: LatencySummary,
    /// Updates whose event never came (within the timeout) or whose request failed.
    pub update_missed: usize,
    /// `POST /users/{id}/event` sent → the custom event received on the user's socket.
    #[serde(default)]
    pub custom_event: LatencySummary,
    /// `POST /users/{id}/event` sent → HTTP response received.
    #[serde(default)]
    pub custom_http: LatencySummary,
    /// Custom events that never came (within the timeout) or whose request failed.
    #[serde(default)]
    pub custom_missed: usize,
    /// `POST /users/{id}/deactivate` sent → the user's socket closed.
    pub deactivate_close: LatencySummary,
    /// `POST /users/{id}/deactivate` sent → HTTP response received.
    pub deactivate_http: LatencySummary,
    /// Deactivations whose socket was still open after the timeout, or whose request failed.
    pub deactivate_missed: usize,
    /// Deactivated sockets that received `user.deactivated` before closing.
    pub deactivated_event_seen: usize,
    /// Connections that failed to open.
    pub connect_failed: usize,
    /// The first failure in full, if any.
    pub first_error: Option<String>,
}

/// The type of the custom events sent.
const CUSTOM_TYPE: &str = "bench_custom";

/// What a watched socket saw, stamped when it arrived.
enum Seen {
    Updated { n: Option<i64> },
    Custom { n: Option<i64> },
    Deactivated,
    Closed,
}

/// Waits until connection `index` reports the event numbered `j` (its number as `number_of`
/// reads it), noting the connections seen closed meanwhile; when it arrived, or `None` once
/// `deadline` passes.
async fn wait_numbered(
    seen_rx: &mut mpsc::UnboundedReceiver<(usize, Seen, Instant)>,
    connected: &mut [bool],
    index: usize,
    j: usize,
    deadline: tokio::time::Instant,
    number_of: fn(&Seen) -> Option<i64>,
) -> Option<Instant> {
    loop {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some((i, seen, at))) if i == index && number_of(&seen) == Some(j as i64) => {
                return Some(at)
            }
            Ok(Some((i, Seen::Closed, _))) => connected[i] = false,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Opens one connection and forwards what it sees, stamped, to `seen_tx`.
async fn watch_user(
    target: &Target,
    user_id: &str,
    index: usize,
    timeout: Duration,
    seen_tx: mpsc::UnboundedSender<(usize, Seen, Instant)>,
) -> Result<(), String> {
    let request = target.request(user_id, index as u64);
    let connected = client::connect(target, &request, None, timeout)
        .await
        .map_err(|e| format!("{user_id}: {e}"))?;
    let mut socket = connected.socket;
    tokio::spawn(async move {
        while let Some(frame) = socket.next().await {
            let now = Instant::now();
            match frame {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    let seen = match value.get("type").and_then(Value::as_str) {
                        Some("user.updated") => Seen::Updated {
                            n: value.pointer("/user/n").and_then(Value::as_i64),
                        },
                        Some("user.deactivated") => Seen::Deactivated,
                        Some(CUSTOM_TYPE) => Seen::Custom {
                            n: value.get("n").and_then(Value::as_i64),
                        },
                        _ => continue,
                    };
                    let _ = seen_tx.send((index, seen, now));
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = seen_tx.send((index, Seen::Closed, Instant::now()));
    });
    Ok(())
}

/// Connects the watched users, then times the updates and the deactivations one by one.
pub async fn run_events(args: &EventArgs) -> EventReport {
    let minter = TokenMinter::new(&args.secret);
    let target = Target {
        addr: args.addr,
        api_key: args.api_key.clone(),
        minter: minter.clone(),
    };
    let server_token = minter.server_token();
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client");
    let base = args.admin.trim_end_matches('/').to_owned();
    let mut report = EventReport {
        mode: "events".into(),
        ..Default::default()
    };

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let update_ids: Vec<String> = (0..args.users)
        .map(|i| format!("{}{i}", args.user_prefix))
        .collect();
    let deactivate_ids: Vec<String> = (0..args.deactivations)
        .map(|i| format!("{}d{i}", args.user_prefix))
        .collect();
    let mut connected = vec![false; update_ids.len() + deactivate_ids.len()];
    for (index, id) in update_ids.iter().chain(&deactivate_ids).enumerate() {
        match watch_user(&target, id, index, timeout, seen_tx.clone()).await {
            Ok(()) => connected[index] = true,
            Err(e) => {
                report.connect_failed += 1;
                report.first_error.get_or_insert(e);
            }
        }
    }
    drop(seen_tx);

    let send = |request: reqwest::RequestBuilder| {
        let token = server_token.clone();
        async move {
            let response = request
                .header("Authorization", token)
                .header("stream-auth-type", "jwt")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {status}: {}", &body[..body.len().min(300)]))
            }
        }
    };

    let (mut event_us, mut http_us) = (Vec::new(), Vec::new());
    for j in 0..args.updates {
        let index = j % update_ids.len().max(1);
        if update_ids.is_empty() || !connected[index] {
            report.update_missed += 1;
            continue;
        }
        let body = json!({"users": [{"id": update_ids[index], "set": {"n": j}}]});
        let request = http
            .patch(format!("{base}/users?api_key={}", args.api_key))
            .json(&body);
        let t0 = Instant::now();
        if let Err(e) = send(request).await {
            report.update_missed += 1;
            report.first_error.get_or_insert(e);
            continue;
        }
        http_us.push(micros(t0.elapsed()));
        let deadline = tokio::time::Instant::from_std(t0 + timeout);
        let found =
            wait_numbered(
                &mut seen_rx,
                &mut connected,
                index,
                j,
                deadline,
                |seen| match seen {
                    Seen::Updated { n } => *n,
                    _ => None,
                },
            )
            .await;
        match found {
            Some(at) => event_us.push(micros(at.duration_since(t0))),
            None => report.update_missed += 1,
        }
    }
    report.update_event = LatencySummary::from_micros(&mut event_us);
    report.update_http = LatencySummary::from_micros(&mut http_us);

    let (mut event_us, mut http_us) = (Vec::new(), Vec::new());
    for j in 0..args.custom_events {
        let index = j % update_ids.len().max(1);
        if update_ids.is_empty() || !connected[index] {
            report.custom_missed += 1;
            continue;
        }
        let body = json!({"event": {"type": CUSTOM_TYPE, "n": j}});
        let request = http
            .post(format!(
                "{base}/users/{}/event?api_key={}",
                update_ids[index], args.api_key
            ))
            .json(&body);
        let t0 = Instant::now();
        if let Err(e) = send(request).await {
            report.custom_missed += 1;
            report.first_error.get_or_insert(e);
            continue;
        }
        http_us.push(micros(t0.elapsed()));
        let deadline = tokio::time::Instant::from_std(t0 + timeout);
        let found =
            wait_numbered(
                &mut seen_rx,
                &mut connected,
                index,
                j,
                deadline,
                |seen| match seen {
                    Seen::Custom { n } => *n,
                    _ => None,
                },
            )
            .await;
        match found {
            Some(at) => event_us.push(micros(at.duration_since(t0))),
            None => report.custom_missed += 1,
        }
    }
    report.custom_event = LatencySummary::from_micros(&mut event_us);
    report.custom_http = LatencySummary::from_micros(&mut http_us);

    let (mut close_us, mut http_us) = (Vec::new(), Vec::new());
    for (d, id) in deactivate_ids.iter().enumerate() {
        let index = update_ids.len() + d;
        if !connected[index] {
            report.deactivate_missed += 1;
            continue;
        }
        let request = http
            .post(format!(
                "{base}/users/{id}/deactivate?api_key={}",
                args.api_key
            ))
            .json(&json!({}));
        let t0 = Instant::now();
        if let Err(e) = send(request).await {
            report.deactivate_missed += 1;
            report.first_error.get_or_insert(e);
            continue;
        }
        http_us.push(micros(t0.elapsed()));
        let deadline = tokio::time::Instant::from_std(t0 + timeout);
        let closed = loop {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((i, Seen::Deactivated, _))) if i == index => {
                    report.deactivated_event_seen += 1
                }
                Ok(Some((i, Seen::Closed, at))) if i == index => break Some(at),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break None,
            }
        };
        match closed {
            Some(at) => close_us.push(micros(at.duration_since(t0))),
            None => report.deactivate_missed += 1,
        }
    }
    report.deactivate_close = LatencySummary::from_micros(&mut close_us);
    report.deactivate_http = LatencySummary::from_micros(&mut http_us);
    report
}
