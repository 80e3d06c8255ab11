//! The admin WebSocket: request/response frames over the same dispatch table as REST, and a
//! subscription to every `user.*` and presence event.
//!
//! Request `{"id":"7","op":"upsertUsers","body":{...},"params":{"id":"bob",...}}` →
//! `{"id":"7","result":{...}}` or `{"id":"7","error":{...envelope...}}`.
//! `{"id":"8","op":"subscribe"}` starts the event stream: each event arrives as
//! `{"event":{...}}`. A subscriber that falls behind is closed with 1013. Each operation
//! counts against the server-side budget of its endpoint, as the REST call would.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::ops::{dispatch, operation_name, OpRequest};
use super::AdminState;
use crate::hub::{CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN};
use crate::protocol::ApiError;

/// Largest admin frame accepted (a batch of 100 users fits comfortably).
const MAX_ADMIN_MESSAGE: usize = 4 << 20;

/// `GET /ws` (authenticated by the router's middleware).
pub async fn upgrade(
    State(state): State<AdminState>,
    crate::http::WsUpgrade(ws): crate::http::WsUpgrade,
) -> Response {
    let base_url = state.base_url.clone();
    ws.max_message_size(MAX_ADMIN_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, base_url))
}

/// Sends one message; `false` when the socket failed or the write took longer than
/// `timeout` (a back end that stopped reading is dropped, not waited for).
async fn send_within(ws: &mut WebSocket, msg: Message, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, ws.send(msg)).await,
        Ok(Ok(()))
    )
}

async fn close(ws: &mut WebSocket, code: u16, reason: &str, timeout: Duration) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    };
    send_within(ws, Message::Close(Some(frame)), timeout).await;
}

async fn serve(mut ws: WebSocket, state: AdminState, base_url: String) {
    let mut stop = state.stop.clone();
    let mut events: Option<broadcast::Receiver<std::sync::Arc<str>>> = None;
    let timeout = state.write_timeout;
    loop {
        tokio::select! {
            msg = ws.recv() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        if let Some(order) = crate::protocol::close::read_error_close(&e) {
                            close(&mut ws, order.code, &order.reason, timeout).await;
                        }
                        return;
                    }
                    None => return,
                };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => {
                        // tungstenite queued the close reply; flush it so the client sees a
                        // clean close instead of 1006.
                        let flush = futures_util::SinkExt::flush(&mut ws);
                        let _ = tokio::time::timeout(timeout, flush).await;
                        return;
                    }
                    Message::Binary(_) => {
                        return close(&mut ws, 1003, "text frames only", timeout).await
                    }
                    _ => continue,
                };
                let reply = match handle(&state, text.as_str(), &base_url, &mut events).await {
                    Some(r) => r,
                    None => continue,
                };
                let reply = Message::Text(Utf8Bytes::from(reply.to_string()));
                if !send_within(&mut ws, reply, timeout).await {
                    return;
                }
            }
            event = recv_event(&mut events) => match event {
                Ok(e) => {
                    let frame = format!(r#"{{"event":{e}}}"#);
                    if !send_within(&mut ws, Message::Text(Utf8Bytes::from(frame)), timeout).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "admin subscriber fell behind");
                    metrics::counter!("gateway_slow_consumer_disconnects").increment(1);
                    return close(&mut ws, CLOSE_TRY_AGAIN, "slow consumer", timeout).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                return close(&mut ws, CLOSE_GOING_AWAY, "server shutting down", timeout).await;
            }
        }
    }
}

async fn recv_event(
    events: &mut Option<broadcast::Receiver<std::sync::Arc<str>>>,
) -> Result<std::sync::Arc<str>, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Counts an operation against its endpoint's server-side budget; past it, code 9.
fn counted(state: &AdminState, op: &str) -> Result<(), ApiError> {
    use crate::ratelimit::{Caller, Endpoint, Platform};
    let Some(name) = operation_name(op) else {
        return Ok(()); // unknown operations are refused by the dispatch table
    };
    let endpoint = Endpoint::by_name(name);
    let verdict = state
        .rate_limits
        .admit(&Caller::Server, Platform::ServerSide, endpoint, true);
    if verdict.refused {
        return Err(crate::ratelimit::middleware::too_many_requests().in_operation(name));
    }
    Ok(())
}

/// Handles one request frame; `None` when there is nothing to answer.
async fn handle(
    state: &AdminState,
    text: &str,
    base_url: &str,
    events: &mut Option<broadcast::Receiver<std::sync::Arc<str>>>,
) -> Option<Value> {
    let frame: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => {
            let e = ApiError::input("frames must be JSON objects with id and op");
            return Some(json!({"id": null, "error": e.envelope("0.00ms")}));
        }
    };
    let id = frame.get("id").cloned().unwrap_or(Value::Null);
    let op = frame.get("op").and_then(Value::as_str).unwrap_or_default();
    let started = std::time::Instant::now();
    let result = match op {
        "subscribe" => {
            events.get_or_insert_with(|| state.feed.subscribe());
            Ok(json!({"subscribed": true})
                .as_object()
                .cloned()
                .unwrap_or_default())
        }
        "unsubscribe" => {
            *events = None;
            Ok(Map::new())
        }
        _ => {
            let params: std::collections::HashMap<String, String> = frame
                .get("params")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let req = OpRequest {
                id: params.get("id").cloned(),
                params,
                body: frame.get("body").cloned().unwrap_or_else(|| json!({})),
                base_url: base_url.to_owned(),
            };
            match counted(state, op) {
                Ok(()) => dispatch(&state.svc, op, req).await,
                Err(e) => Err(e),
            }
        }
    };
    let duration = crate::protocol::time::duration_text(started.elapsed());
    Some(match result {
        Ok(mut body) => {
            body.insert("duration".into(), Value::String(duration));
            json!({"id": id, "result": body})
        }
        Err(e) => {
            if e.code == crate::protocol::ErrorCode::Internal {
                tracing::error!(error = %e.detail, op, "admin ws operation failed");
            }
            json!({"id": id, "error": e.envelope(&duration)})
        }
    })
}
