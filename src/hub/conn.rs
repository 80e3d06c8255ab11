//! One live client connection as the hub sees it: identity, a bounded outbound queue, and a
//! pending close order. The connection's own task drains the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::protocol::close::{CloseOrder, CLOSE_TRY_AGAIN};

/// Result of queueing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued.
    Queued,
    /// The queue was full: the connection is being closed as a slow consumer.
    Overflowed,
    /// The connection is already closing.
    Closing,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Arc<str>>,
    close: Option<CloseOrder>,
}

/// A live connection's shared half.
pub struct ConnHandle {
    /// Server-generated connection id.
    pub conn_id: Arc<str>,
    /// The connected user's id.
    pub user_id: Arc<str>,
    /// `iat` of the token used, if any.
    pub token_iat: Option<i64>,
    /// Anonymous connection (no token, nothing to revoke).
    pub anonymous: bool,
    /// Connected with a guest's token (ends when the back end takes the id over).
    pub guest_token: bool,
    /// Seconds (on the hub's clock) of the last frame received from the client.
    pub last_seen: AtomicU64,
    outbox: Mutex<Outbox>,
    closing: AtomicBool,
    /// Admitted: events are queued from now on (close orders always are).
    ready: AtomicBool,
    notify: Notify,
}

impl ConnHandle {
    /// A new handle.
    pub fn new(
        conn_id: Arc<str>,
        user_id: Arc<str>,
        token_iat: Option<i64>,
        anonymous: bool,
        guest_token: bool,
    ) -> Self {
        Self {
            conn_id,
            user_id,
            token_iat,
            anonymous,
            guest_token,
            last_seen: AtomicU64::new(0),
            outbox: Mutex::new(Outbox::default()),
            closing: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Marks the connection admitted: from now on it receives events. Before, it is
    /// registered only so that ending its user reaches it.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the connection was admitted.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a text frame; a full queue turns into a slow-consumer close.
    pub fn push(&self, frame: Arc<str>, limit: usize) -> PushOutcome {
        let outcome = {
            let mut out = self.lock();
            if out.close.is_some() {
                PushOutcome::Closing
            } else if out.frames.len() >= limit {
                out.frames.clear();
                out.close = Some(CloseOrder::raw(CLOSE_TRY_AGAIN, "slow consumer"));
                self.closing.store(true, Ordering::Release);
                PushOutcome::Overflowed
            } else {
                out.frames.push_back(frame);
                PushOutcome::Queued
            }
        };
        self.notify.notify_one();
        outcome
    }

    /// Queues an optional last frame and a close order; later frames are dropped.
    pub fn close_with(&self, last: Option<Arc<str>>, order: CloseOrder) {
        {
            let mut out = self.lock();
            if out.close.is_some() {
                return;
            }
            if let Some(f) = last {
                out.frames.push_back(f);
            }
            out.close = Some(order);
            self.closing.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// Whether a close has been ordered.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Takes everything queued: frames first, then the close order if any.
    pub fn drain(&self) -> (Vec<Arc<str>>, Option<CloseOrder>) {
        let mut out = self.lock();
        let frames: Vec<Arc<str>> = out.frames.drain(..).collect();
        if out.frames.capacity() > 8 {
            out.frames.shrink_to_fit();
        }
        (frames, out.close.clone())
    }

    /// Waits until something is queued.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}
