//! One client connection: the handshake over the upgraded socket, then a single `select!`
//! loop that answers health checks, drains the hub's outbound queue and carries out close
//! orders. Timers live in the shared liveness ticker, not here, to keep idle sockets cheap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::handshake::{self, ConnectRequest, Connected, Identified};
use super::ip_sockets::IpSlot;
use super::socket::{Received, Socket};
use super::{upgrade, GatewayState};
use crate::hub::{CloseOrder, ConnHandle, RegisterError, CLOSE_TRY_AGAIN};
use crate::protocol::close::read_error_close_ws;
use crate::protocol::events::{connection_error, health_check};
use crate::protocol::{ApiError, ErrorCode, Timestamp};

async fn send_text(ws: &mut Socket, text: &str, timeout: Duration) -> bool {
    ws.send_text(text, timeout).await
}

async fn close(ws: &mut Socket, order: &CloseOrder, timeout: Duration) {
    ws.close(order, timeout).await
}

/// The close for a binary frame: only text frames carry the protocol.
fn binary_close() -> CloseOrder {
    CloseOrder::raw(1003, "binary frames are not supported")
}

/// Refuses a connect: one `connection.error` frame, then close 1000 with a JSON reason.
async fn refuse(ws: &mut Socket, err: &ApiError, timeout: Duration) {
    metrics::counter!("gateway_connects_refused", "code" => err.code.code().to_string())
        .increment(1);
    crate::telemetry::tally::refused(&err.code.code().to_string());
    tracing::debug!(code = err.code.code(), reason = %err.detail, "connect refused");
    let frame = connection_error(err.code.code(), &err.message(), err.code.status());
    if send_text(ws, frame.as_ref(), timeout).await {
        close(
            ws,
            &CloseOrder::normal(err.code.code(), &err.detail),
            timeout,
        )
        .await;
    }
}

/// Runs an upgraded `/connect` socket from handshake to close: the whole life of the
/// connection's task, which owns the socket, the state and the per-address slot `slot`.
///
/// The task's own future stays small: the upgrade, the handshake (which awaits the store) and
/// the first-frame work run in a boxed future freed before the socket goes idle, and the idle
/// loop's owned state sits in one box passed by pointer (an async fn keeps a second copy of
/// its by-value arguments for its whole life, so big arguments cost twice).
pub fn serve(
    on_upgrade: OnUpgrade,
    state: GatewayState,
    req: ConnectRequest,
    slot: IpSlot,
) -> impl std::future::Future<Output = ()> + Send {
    let setup = Box::pin(setup(on_upgrade, state, req, slot));
    async move {
        if let Some(conn) = setup.await {
            run(conn).await;
        }
    }
}

/// An open connection's owned state.
struct Open {
    ws: Socket,
    state: GatewayState,
    handle: Arc<ConnHandle>,
    _slot: IpSlot,
}

/// The span of a connection's log lines. Made when something is logged rather than kept:
/// an idle connection holds no span.
fn conn_span(conn_id: &str, user_id: &str) -> tracing::Span {
    tracing::info_span!("conn", conn_id = %conn_id, user_id = %user_id)
}

/// Upgrade, handshake and registration; hands the socket over once the first frame is out.
async fn setup(
    on_upgrade: OnUpgrade,
    state: GatewayState,
    req: ConnectRequest,
    slot: IpSlot,
) -> Option<Box<Open>> {
    let deadline = tokio::time::Instant::now() + state.limits.handshake_timeout;
    let (stream, read) = upgrade::stream_of(on_upgrade).await?;
    let mut ws = Socket::new(stream, read, &state.limits).await;
    let who = handshake_phase(&mut ws, &state, req, deadline).await?;
    let conn_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let span = conn_span(&conn_id, &who.user_id);
    let handle = start(&mut ws, &state, who, conn_id, deadline)
        .instrument(span)
        .await?;
    Some(Box::new(Open {
        ws,
        state,
        handle,
        _slot: slot,
    }))
}

/// The idle life of a connection, then its unregistration.
async fn run(mut conn: Box<Open>) {
    let Open {
        ws, state, handle, ..
    } = &mut *conn;
    pump(ws, state, handle).await;
    let Open {
        ws,
        state,
        handle,
        _slot,
    } = *conn;
    drop(ws);
    let span = conn_span(&handle.conn_id, &handle.user_id);
    let finishing = Box::pin(finish(&state, handle).instrument(span));
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
    ws: &mut Socket,
    state: &GatewayState,
    mut req: ConnectRequest,
    deadline: tokio::time::Instant,
) -> Option<Identified> {
    let write_timeout = state.limits.write_timeout;
    if state.hub.is_full() {
        metrics::counter!("gateway_connects_refused", "code" => "overload").increment(1);
        crate::telemetry::tally::refused("overload");
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
                        if let Some(order) = read_error_close_ws(&e) {
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

/// Registers the connection, admits it, sends the first frame and announces presence.
///
/// Registration comes before the checks against the stored user (in `admit`): an admin call
/// that ends the user (delete, deactivate, revoke) writes first and then closes the user's
/// registered connections, so either it finds this one registered, or `admit` reads its write
/// and refuses. Events wait until the connection is admitted; close orders do not.
async fn start(
    ws: &mut Socket,
    state: &GatewayState,
    who: Identified,
    conn_id: Arc<str>,
    deadline: tokio::time::Instant,
) -> Option<Arc<ConnHandle>> {
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
            crate::telemetry::tally::refused("overload");
            let order = CloseOrder::raw(CLOSE_TRY_AGAIN, "server is full");
            close(ws, &order, write_timeout).await;
            return None;
        }
        Err(RegisterError::AnonymousLimit) => {
            metrics::counter!("gateway_connects_refused", "code" => "anonymous").increment(1);
            crate::telemetry::tally::refused("anonymous");
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
                if !send_text(ws, &f, write_timeout).await {
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
            crate::telemetry::tally::refused("unavailable");
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
    crate::telemetry::tally::accepted();
    if !send_text(ws, &first_frame, write_timeout).await {
        let finishing = Box::pin(finish(state, handle));
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
    Some(handle)
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
async fn finish(state: &GatewayState, handle: Arc<ConnHandle>) {
    let last = state.hub.unregister(&handle);
    if !handle.anonymous {
        let closed = state.svc.connection_closed(&handle.user_id, last);
        closed.await;
    }
    crate::telemetry::tally::closed();
    tracing::debug!("disconnected");
}

/// The connection's loop: client frames in, queued frames out, until either side closes.
async fn pump(ws: &mut Socket, state: &GatewayState, handle: &Arc<ConnHandle>) {
    loop {
        // Only the two wake-up futures live in the idle state; handling a wake-up runs in a
        // boxed future that exists just while it works.
        let wake = tokio::select! {
            msg = ws.recv() => Wake::Frame(msg),
            _ = handle.notified() => Wake::Queued,
        };
        let span = conn_span(&handle.conn_id, &handle.user_id);
        let reacting = Box::pin(react(ws, state, handle, wake).instrument(span));
        if !reacting.await {
            return;
        }
    }
}

/// Why the connection's loop woke up.
enum Wake {
    /// The client sent something (or the socket ended).
    Frame(Received),
    /// The hub queued frames or a close order.
    Queued,
}

/// Handles one wake-up; `false` ends the connection.
async fn react(ws: &mut Socket, state: &GatewayState, handle: &ConnHandle, wake: Wake) -> bool {
    let write_timeout = state.limits.write_timeout;
    match wake {
        Wake::Frame(msg) => {
            let msg = match msg {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    if let Some(order) = read_error_close_ws(&e) {
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
                        || send_text(ws, &health_check(&handle.conn_id, None), write_timeout).await
                }
                Message::Binary(_) => {
                    close(ws, &binary_close(), write_timeout).await;
                    false
                }
                Message::Close(_) => {
                    // tungstenite queued the close reply; flush it so the client sees a
                    // clean close instead of 1006.
                    ws.flush(write_timeout).await;
                    false
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => true,
            }
        }
        Wake::Queued => {
            let (frames, order) = handle.drain();
            for f in frames {
                if !send_text(ws, &f, write_timeout).await {
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
