//! WebSocket closes on the wire: the codes the gateway uses, a close order with its reason
//! (a JSON `{"code":..,"message":..}` for refusals, at most 123 bytes), and the close a bad
//! client frame calls for.

/// Close code a client retries on: the server is going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code a client retries on: try again later (overload, slow consumer).
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Normal close: a permanent refusal, the SDK does not reconnect.
pub const CLOSE_NORMAL: u16 = 1000;

/// How a connection is to be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseOrder {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (at most 123 bytes).
    pub reason: String,
}

impl CloseOrder {
    /// Close 1000 with a JSON reason `{"code":..,"message":..}` trimmed to fit 123 bytes.
    pub fn normal(code: i32, message: &str) -> Self {
        let mut msg: String = message.to_owned();
        loop {
            let reason = serde_json::json!({"code": code, "message": msg}).to_string();
            if reason.len() <= 123 || msg.is_empty() {
                return Self {
                    code: CLOSE_NORMAL,
                    reason,
                };
            }
            msg.pop();
        }
    }

    /// A close with a plain reason.
    pub fn raw(code: u16, reason: &str) -> Self {
        let mut reason = reason.to_owned();
        while reason.len() > 123 {
            reason.pop();
        }
        Self { code, reason }
    }
}

/// The close a frame the server cannot take calls for (RFC 6455 7.4.1): 1007 for text that is
/// not UTF-8, 1009 for a frame or message over the limits, 1002 for other protocol errors.
/// `None` when the socket itself failed and nothing can be sent.
pub fn read_error_close(e: &axum::Error) -> Option<CloseOrder> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    read_error_close_ws(std::error::Error::source(e)?.downcast_ref::<WsError>()?)
}

/// [`read_error_close`] for tungstenite's own error.
pub fn read_error_close_ws(e: &tokio_tungstenite::tungstenite::Error) -> Option<CloseOrder> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let order = match e {
        WsError::Utf8(_) => CloseOrder::raw(1007, "text frames must be UTF-8"),
        WsError::Capacity(_) => CloseOrder::raw(1009, "frame or message too big"),
        WsError::Protocol(_) => CloseOrder::raw(1002, "protocol error"),
        _ => return None,
    };
    tracing::debug!(error = %e, code = order.code, "closing on a bad frame");
    Some(order)
}
