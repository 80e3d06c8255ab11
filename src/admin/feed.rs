//! The admin feed: a bus subscriber that hands every event with a frame (but a user's
//! private ones) to the admin WebSocket subscribers, each reading at its own pace from a bounded broadcast.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::events::{EventSink, UserEvent};

/// Events for admin subscribers.
pub struct AdminFeed {
    tx: broadcast::Sender<Arc<str>>,
}

impl AdminFeed {
    /// A feed holding up to `capacity` frames for a subscriber that falls behind.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

impl EventSink for AdminFeed {
    fn deliver(&self, event: &UserEvent, frame: Option<&Arc<str>>) {
        if event.is_private() {
            return;
        }
        if let Some(frame) = frame {
            // No subscriber is not an error.
            let _ = self.tx.send(frame.clone());
        }
    }
}
