//! One client connection: the handshake over the upgraded socket, then a single `select!`
//! loop that answers health checks, drains the hub's outbound queue and carries out close
//! orders. Timers live in the shared liveness ticker, not here, to keep idle sockets cheap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::Value;
use tracing::Instrument;

use super::handshake::{self, ConnectRequest, Connected, Identified};
use super::GatewayState;
use crate::hub::{CloseOrder, ConnHandle, RegisterError, CLOSE_TRY_AGAIN};
use crate::protocol::close::read_error_close;
use crate::protocol::events::{connection_error, health_check};
use crate::protocol::{ApiError, ErrorCode, Timestamp};

async fn send_text(ws: &mut WebSocket, text: String, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, ws.send(Message::Text(Utf8Bytes::from(text)))).await,
        Ok(Ok(()))
    )
}

async fn close(ws: &mut WebSocket, order: &CloseOrder, timeout: Duration) {
    let frame = CloseFrame {
        code: order.code,
        reason: Utf8Bytes::from(order.reason.clone()),
    };
    let _ = tokio::time::timeout(timeout, ws.send(Message::Close(Some(frame)))).await;
}

/// The close for a binary frame: only text frames carry the protocol.
fn binary_close() -> CloseOrder {
    CloseOrder::raw(1003, "binary frames are not supported")
}

/// Refuses a connect: one `connection.error` frame, then close 1000 with a JSON reason.
async fn refuse(ws: &mut WebSocket, err: &ApiError, timeout: Duration) {
    metrics::counter!("gateway_connects_refused", "code" => err.code.code().to_string())
        .increment(1);
    tracing::info!(code = err.code.code(), reason = %err.detail, "connect refused");
    let frame = connection_error(err.code.code(), &err.message(), err.code.status());
    if send_text(ws, frame.to_string(), timeout).await {
        close(
            ws,
            &CloseOrder::normal(err.code.code(), &err.detail),
            timeout,
        )
        .await;
    }
}

/// Runs an upgraded `/connect` socket from handshake to close.
///
/// The task's own future stays small: the handshake (which awaits the store) and the
/// first-frame work run in a boxed future freed before the socket goes idle, and the idle
/// loop's owned state sits in one box passed by pointer (an async fn keeps a second copy of
/// its by-value arguments for its whole life, so big arguments cost twice).
pub fn serve(
    ws: WebSocket,
    state: GatewayState,
    req: ConnectRequest,
) -> impl std::future::Future<Output = ()> + Send {
    let setup = Box::pin(setup(ws, state, req));
    async move {
        if let Some(conn) = setup.await {
            run(conn).await;
        }
    }
}

/// An open connection's owned state.
struct Open {
    ws: WebSocket,
    state: GatewayState,
    live: Live,
}

/// Handshake and registration; hands the socket over once the first frame is out.
async fn setup(mut ws: WebSocket, state: GatewayState, req: ConnectRequest) -> Option<Box<Open>> {
    let deadline = tokio::time::Instant::now() + state.limits.handshake_timeout;
    let who = handshake_phase(&mut ws, &state, req, deadline).await?;
    let conn_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let span = tracing::info_span!("conn", conn_id = %conn_id, user_id = %who.user_id);
    let live = start(&mut ws, &state, who, conn_id, deadline, span.clone())
        .instrument(span)
        .await?;
    Some(Box::new(Open { ws, state, live }))
}

/// The idle life of a connection, then its unregistration.
async fn run(mut conn: Box<Open>) {
    let Open { ws, state, live } = &mut *conn;
    let span = live.span.clone();
    pump(ws, state, &live.handle).instrument(span).await;
    let Open { ws, state, live } = *conn;
    drop(ws);
    let span = live.span.clone();
    let finishing = Box::pin(finish(&state, live).instrument(span));
    finishing.await;
}

fn handshake_timed_out() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        "connect data did not arrive in time",
    )
}

/// Obtains the connect data and verifies who it claims to be; refuses on failure.
async fn handshake_phase(
    ws: &mut WebSocket,
    state: &GatewayState,
    mut req: ConnectRequest,
    deadline: tokio::time::Instant,
) -> Option<Identified> {
    let write_timeout = state.limits.write_timeout;
    if state.hub.is_full() {
        metrics::counter!("gateway_connects_refused", "code" => "overload").increment(1);
        let order = CloseOrder::raw(CLOSE_TRY_AGAIN, "server is full");
        close(ws, &order, write_timeout).await;
        return None;
    }
    let handshake = async {
        if req.awaits_frame() {
            let frame = loop {
                match ws.recv().await {
                    Some(Ok(Message::Text(t))) => break t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        close(ws, &binary_close(), write_timeout).await;
                        return Err(None);
                    }
                    Some(Err(e)) => {
                        if let Some(order) = read_error_close(&e) {
                            close(ws, &order, write_timeout).await;
                        }
                        return Err(None);
                    }
                    _ => return Err(None),
                }
            };
            req = req.clone().with_frame(frame.as_str()).map_err(Some)?;
        }
        handshake::identify(&state.svc, &req).map_err(Some)
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(who)) => Some(who),
        Ok(Err(Some(e))) => {
            refuse(ws, &e, write_timeout).await;
            None
        }
        Ok(Err(None)) => None,
        Err(_) => {
            refuse(ws, &handshake_timed_out(), write_timeout).await;
            None
        }
    }
}

/// What an open connection keeps for its disconnect: the hub handle and its span.
struct Live {
    handle: Arc<ConnHandle>,
    span: tracing::Span,
}

/// Registers the connection, admits it, sends the first frame and announces presence.
///
/// Registration comes before the checks against the stored user (in `admit`): an admin call
/// that ends the user (delete, deactivate, revoke) writes first and then closes the user's
/// registered connections, so either it finds this one registered, or `admit` reads its write
/// and refuses. Events wait until the connection is admitted; close orders do not.
async fn start(
    ws: &mut WebSocket,
    state: &GatewayState,
    who: Identified,
    conn_id: Arc<str>,
    deadline: tokio::time::Instant,
    span: tracing::Span,
) -> Option<Live> {
    let hub = &state.hub;
    let write_timeout = state.limits.write_timeout;
    let claims = who.token.as_ref();
    let handle = Arc::new(ConnHandle::new(
        conn_id.clone(),
        who.user_id.as_str().into(),
        claims.and_then(|c| c.iat),
        who.anonymous(),
        claims.is_some_and(|c| c.guest),
    ));
    handle
        .last_seen
        .store(state.clock.now_secs(), Ordering::Relaxed);
    let first = match hub.register(&handle) {
        Ok(first) => first,
        Err(RegisterError::PerUserLimit) => {
            let e = ApiError::new(
                ErrorCode::TooManyConnections,
                format!("user {} has too many connections", who.user_id),
            );
            refuse(ws, &e, write_timeout).await;
            return None;
        }
        Err(RegisterError::TotalLimit) => {
            metrics::counter!("gateway_connects_refused", "code" => "overload").increment(1);
            let order = CloseOrder::raw(CLOSE_TRY_AGAIN, "server is full");
            close(ws, &order, write_timeout).await;
            return None;
        }
        Err(RegisterError::AnonymousLimit) => {
            metrics::counter!("gateway_connects_refused", "code" => "anonymous").increment(1);
            let order = CloseOrder::raw(CLOSE_TRY_AGAIN, "server is full for anonymous users");
            close(ws, &order, write_timeout).await;
            return None;
        }
    };
    let admitted = tokio::time::timeout_at(deadline, handshake::admit(&state.svc, &who)).await;
    let connected = match admitted {
        Ok(Ok(c)) if !handle.is_closing() => c,
        Ok(Ok(_)) => {
            // Ended while being admitted: what the hub queued (the event or error frame) and
            // its close go out instead of a first frame.
            hub.unregister(&handle);
            tracing::info!("connect ended by a concurrent admin call");
            let (frames, order) = handle.drain();
            for f in frames {
                if !send_text(ws, f.to_string(), write_timeout).await {
                    return None;
                }
            }
            if let Some(order) = order {
                close(ws, &order, write_timeout).await;
            }
            return None;
        }
        // The connect needed a write the store refuses for now: transient, so a close the
        // SDK retries on rather than an error frame it gives up on.
        Ok(Err(e)) if e.code == ErrorCode::Unavailable => {
            hub.unregister(&handle);
            metrics::counter!("gateway_connects_refused", "code" => "unavailable").increment(1);
            tracing::debug!(reason = %e.detail, "connect deferred: storage unavailable");
            let order = CloseOrder::raw(CLOSE_TRY_AGAIN, "storage unavailable, retry later");
            close(ws, &order, write_timeout).await;
            return None;
        }
        Ok(Err(e)) => {
            hub.unregister(&handle);
            refuse(ws, &e, write_timeout).await;
            return None;
        }
        Err(_) => {
            hub.unregister(&handle);
            refuse(ws, &handshake_timed_out(), write_timeout).await;
            return None;
        }
    };
    handle.set_ready();
    let Connected {
        user,
        activity_recorded,
    } = connected;
    let anonymous = who.anonymous();
    let now = Timestamp::now();
    // The muted users in `me.mutes` are read now; a read that fails leaves them out rather
    // than refusing the connection.
    let mut me = match state.svc.own_user(&user, true).await {
        Ok(me) => me,
        Err(e) => {
            tracing::warn!(error = %e.detail, "me sent without its mutes");
            user.to_me(true)
        }
    };
    me.insert("last_active".into(), Value::String(now.to_wire()));
    let first_frame = health_check(&conn_id, Some(me));
    if first_frame.len() > state.limits.max_connect_frame {
        // Only a user stored before the bounds of a user can get here. Sent, the frame would
        // pin its size in the socket's write buffer for the connection's life, and past the
        // write buffer's bound it cannot be sent at all: refuse in a way the SDK stops on.
        hub.unregister(&handle);
        let e = connect_frame_too_big(&user.id, first_frame.len(), state.limits.max_connect_frame);
        refuse(ws, &e, write_timeout).await;
        return None;
    }
    // Counted in presence before the first frame: across a cluster, the per-user limit is a
    // fact of the shared presence, not of this node's registry.
    let came_online = if anonymous {
        false
    } else {
        match Box::pin(state.svc.count_connection(&user.id, first)).await {
            Ok(came_online) => came_online,
            Err(e) => {
                hub.unregister(&handle);
                if e.code == ErrorCode::Unavailable {
                    let order =
                        CloseOrder::raw(CLOSE_TRY_AGAIN, "presence unavailable, retry later");
                    close(ws, &order, write_timeout).await;
                } else {
                    refuse(ws, &e, write_timeout).await;
                }
                return None;
            }
        }
    };
    metrics::counter!("gateway_connects_accepted").increment(1);
    let live = Live { handle, span };
    if !send_text(ws, first_frame, write_timeout).await {
        let finishing = Box::pin(finish(state, live));
        finishing.await;
        return None;
    }
    if !anonymous {
        let opened = state
            .svc
            .connection_opened(&user, came_online, activity_recorded, now);
        Box::pin(opened).await;
    }
    tracing::debug!("connected");
    Some(live)
}

/// The refusal of a user too large to send as a first frame: 413, code 22.
fn connect_frame_too_big(user_id: &str, size: usize, max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooBig,
        format!(
            "user {user_id} is {size} bytes as a connect frame, more than the limit of {max}; \
             the back end must make the user smaller before it can connect"
        ),
    )
}

/// Unregisters the connection; the user's last one records `last_active` and goes offline.
async fn finish(state: &GatewayState, live: Live) {
    let last = state.hub.unregister(&live.handle);
    if !live.handle.anonymous {
        let closed = state.svc.connection_closed(&live.handle.user_id, last);
        closed.await;
    }
    tracing::debug!("disconnected");
}

/// The connection's loop: client frames in, queued frames out, until either side closes.
async fn pump(ws: &mut WebSocket, state: &GatewayState, handle: &Arc<ConnHandle>) {
    loop {
        // Only the two wake-up futures live in the idle state; handling a wake-up runs in a
        // boxed future that exists just while it works.
        let wake = tokio::select! {
            msg = ws.recv() => Wake::Frame(msg),
            _ = handle.notified() => Wake::Queued,
        };
        let reacting = Box::pin(react(ws, state, handle, wake));
        if !reacting.await {
            return;
        }
    }
}

/// Why the connection's loop woke up.
enum Wake {
    /// The client sent something (or the socket ended).
    Frame(Option<Result<Message, axum::Error>>),
    /// The hub queued frames or a close order.
    Queued,
}

/// Handles one wake-up; `false` ends the connection.
async fn react(ws: &mut WebSocket, state: &GatewayState, handle: &ConnHandle, wake: Wake) -> bool {
    let write_timeout = state.limits.write_timeout;
    match wake {
        Wake::Frame(msg) => {
            let msg = match msg {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    if let Some(order) = read_error_close(&e) {
                        close(ws, &order, write_timeout).await;
                    }
                    return false;
                }
                None => return false,
            };
            handle
                .last_seen
                .store(state.clock.now_secs(), Ordering::Relaxed);
            match msg {
                Message::Text(text) => {
                    !is_health_check(text.as_str())
                        || send_text(ws, health_check(&handle.conn_id, None), write_timeout).await
                }
                Message::Binary(_) => {
                    close(ws, &binary_close(), write_timeout).await;
                    false
                }
                Message::Close(_) => {
                    // tungstenite queued the close reply; flush it so the client sees a
                    // clean close instead of 1006.
                    let flush = futures_util::SinkExt::flush(ws);
                    let _ = tokio::time::timeout(write_timeout, flush).await;
                    false
                }
                Message::Ping(_) | Message::Pong(_) => true,
            }
        }
        Wake::Queued => {
            let (frames, order) = handle.drain();
            for f in frames {
                if !send_text(ws, f.to_string(), write_timeout).await {
                    return false;
                }
            }
            if let Some(order) = order {
                close(ws, &order, write_timeout).await;
                return false;
            }
            true
        }
    }
}

/// Whether a client text frame is a health check: `[{"type":"health.check",...}]` (the JS
/// SDK) or the bare object (other SDKs).
fn is_health_check(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items
            .first()
            .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("health.check")),
        Ok(v) => v.get("type").and_then(Value::as_str) == Some("health.check"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_health_check;

    #[test]
    fn health_check_forms() {
        assert!(is_health_check(
            r#"[{"type":"health.check","client_id":"a--1"}]"#
        ));
        assert!(is_health_check(r#"{"type":"health.check"}"#));
        assert!(!is_health_check(r#"{"type":"other"}"#));
        assert!(!is_health_check("not json"));
    }
}
