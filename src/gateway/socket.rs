//! One `/connect` connection's WebSocket: tungstenite reads frames from the TCP stream, and
//! the text frames the gateway sends are written straight to the stream, so no write buffer
//! keeps the size of the largest frame sent (the first one carries the whole user) for the
//! connection's life.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::ConnLimits;
use crate::protocol::close::CloseOrder;
use crate::serve::Slotted;

/// A server-side WebSocket over an accepted TCP stream.
pub struct Socket {
    ws: WebSocketStream<Slotted>,
}

/// What reading the socket gives: a message, a protocol or I/O error, or `None` at its end.
pub type Received = Option<Result<Message, WsError>>;

impl Socket {
    /// Wraps the upgraded `stream`; `read` holds bytes that arrived with the request.
    pub async fn new(stream: Slotted, read: Vec<u8>, limits: &ConnLimits) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer)
            .write_buffer_size(0)
            .max_write_buffer_size(limits.max_write_buffer)
            .max_frame_size(Some(limits.max_frame))
            .max_message_size(Some(limits.max_message));
        let ws = if read.is_empty() {
            WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
        } else {
            WebSocketStream::from_partially_read(stream, read, Role::Server, Some(config)).await
        };
        Self { ws }
    }

    /// The next frame from the client.
    pub async fn recv(&mut self) -> Received {
        self.ws.next().await
    }

    /// Sends one text frame within `timeout`; `false` when the socket failed or was too slow.
    pub async fn send_text(&mut self, text: &str, timeout: Duration) -> bool {
        let write = async {
            // Whatever tungstenite queued itself (a pong, a close reply) goes out first.
            self.ws.flush().await.map_err(std::io::Error::other)?;
            let frame = text_frame(text.as_bytes());
            let stream = self.ws.get_mut();
            stream.write_all(&frame).await?;
            stream.flush().await
        };
        matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(())))
    }

    /// Sends a close frame for `order` within `timeout`.
    pub async fn close(&mut self, order: &CloseOrder, timeout: Duration) {
        let frame = CloseFrame {
            code: CloseCode::from(order.code),
            reason: Utf8Bytes::from(order.reason.clone()),
        };
        let _ = tokio::time::timeout(timeout, self.ws.send(Message::Close(Some(frame)))).await;
    }

    /// Flushes what tungstenite queued (the reply to a client's close) within `timeout`.
    pub async fn flush(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.ws.flush()).await;
    }
}

/// A final, unmasked text frame (RFC 6455 §5.2) carrying `payload`.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut frame = Vec::with_capacity(n + 10);
    frame.push(0x81);
    if n < 126 {
        frame.push(n as u8);
    } else if let Ok(short) = u16::try_from(n) {
        frame.push(126);
        frame.extend_from_slice(&short.to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(n as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::text_frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn text_frames_parse_back_at_every_length_form() {
        for n in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = "x".repeat(n);
            let bytes = text_frame(payload.as_bytes());
            let mut cursor = std::io::Cursor::new(bytes.as_slice());
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert!(header.mask.is_none());
            assert_eq!(len as usize, n);
            assert_eq!(bytes.len() - cursor.position() as usize, n);
        }
    }
}
