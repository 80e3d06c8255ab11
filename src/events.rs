//! Typed user events and the bus they travel on. The users service publishes what happened
//! (a user updated, deleted, deactivated, reactivated, a presence change, a revocation, ...);
//! subscribers turn events into frames for the sockets they serve: the hub for client
//! connections, the admin feed for admin subscribers.
//!
//! [`LocalBus`] is the in-process bus: `publish` hands the event to every subscriber before
//! it returns, so a subscriber that closes sockets (the hub, on a delete) has done so by the
//! time the publisher answers its caller. A bus spanning several nodes (`crate::cluster`)
//! keeps that for the publishing node and delivers to the others after the write commits:
//! the events of a write are encoded ([`EventBus::encode`]) and recorded by the store in the
//! write's own transaction, then handed to this node's subscribers
//! ([`EventBus::committed`]).

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::model::user::User;
use crate::protocol::{events, Timestamp};

/// Something that happened to a user (or to every user), as its subscribers need it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserEvent {
    /// The user was written: `user.updated`.
    Updated {
        /// The user as written.
        user: User,
        /// Whether the user is online.
        online: bool,
    },
    /// The user was deleted: `user.deleted`; its connections end.
    Deleted {
        /// The user, `deleted_at` set.
        user: User,
        /// Hard delete.
        hard: bool,
        /// The delete's `mark_messages_deleted`.
        mark_messages_deleted: bool,
    },
    /// The user was deactivated: `user.deactivated`; its connections end.
    Deactivated {
        /// The user, `deactivated_at` set.
        user: User,
        /// Who deactivated it.
        created_by: Option<User>,
    },
    /// The user was reactivated: `user.reactivated`.
    Reactivated {
        /// The user.
        user: User,
        /// Who reactivated it.
        created_by: Option<User>,
    },
    /// The user came online or went offline (never published for invisible users).
    PresenceChanged {
        /// The user.
        user_id: String,
        /// Online now.
        online: bool,
        /// Last activity.
        last_active: Option<Timestamp>,
    },
    /// Tokens issued before `before` (or without `iat`) are revoked: of one user, or of
    /// every user when `user_id` is `None`. Their connections end with code 40.
    TokensRevoked {
        /// The user, or every user.
        user_id: Option<String>,
        /// The cutoff.
        before: Timestamp,
    },
    /// The back end made a guest something else: connections made with the guest's token
    /// end with code 40.
    GuestTakenOver {
        /// The user.
        user_id: String,
    },
    /// The app settings changed.
    AppSettingsChanged,
    /// A back end's custom event for one user (`sendUserCustomEvent`): to every connection
    /// of the user on every node, and to no one else (admin subscribers do not see it).
    Custom {
        /// The user.
        user_id: String,
        /// The event as the back end sent it, `created_at` stamped by the gateway.
        event: Map<String, Value>,
    },
    /// The user was banned (`user.banned`): told to its connections unless the ban is a
    /// shadow ban, and to admin subscribers.
    Banned {
        /// The user, its ban set.
        user: User,
        /// The ban.
        ban: crate::model::moderation::Ban,
    },
    /// The user's ban was lifted (`user.unbanned`): told as its ban was.
    Unbanned {
        /// The user.
        user: User,
        /// The lifted ban was a shadow ban.
        shadow: bool,
    },
    /// A change to the user's own lists, for its own connections only, carrying its `me`
    /// (`notification.mutes_updated`).
    OwnUserChanged {
        /// The user.
        user_id: String,
        /// The event type.
        event_type: String,
        /// The user's `me` after the change.
        me: Map<String, Value>,
    },
}

impl UserEvent {
    /// Whether the event is for one user's own connections only: admin subscribers do not
    /// receive it.
    pub fn is_private(&self) -> bool {
        matches!(self, Self::Custom { .. } | Self::OwnUserChanged { .. })
    }

    /// The event as another node reads it back ([`Self::decode`]).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("events encode")
    }

    /// An event [`Self::encode`] wrote.
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame this event is on the wire, for clients and admin subscribers; `None` for
    /// events no client frame describes.
    pub fn frame(&self) -> Option<Arc<str>> {
        let created_by = |by: &Option<User>| json!({"created_by": by.as_ref().map(|u| Value::Object(u.to_wire(false)))});
        Some(match self {
            Self::Updated { user, online } => {
                events::user_event("user.updated", user.to_wire(*online), None)
            }
            Self::Deleted {
                user,
                hard,
                mark_messages_deleted,
            } => {
                let extra =
                    json!({"hard_delete": hard, "mark_messages_deleted": mark_messages_deleted});
                events::user_event("user.deleted", user.to_wire(false), Some(extra))
            }
            Self::Deactivated {
                user,
                created_by: by,
            } => events::user_event(
                "user.deactivated",
                user.to_wire(false),
                Some(created_by(by)),
            ),
            Self::Reactivated {
                user,
                created_by: by,
            } => events::user_event(
                "user.reactivated",
                user.to_wire(false),
                Some(created_by(by)),
            ),
            Self::PresenceChanged {
                user_id,
                online,
                last_active,
            } => events::presence_event(user_id, *online, *last_active),
            Self::Custom { event, .. } => Value::Object(event.clone()).to_string().into(),
            Self::Banned { user, ban } => {
                let mut extra = json!({"shadow": ban.shadow});
                if let Some(r) = &ban.reason {
                    extra["reason"] = json!(r);
                }
                if let Some(e) = ban.expires {
                    extra["expiration"] = json!(e.to_wire());
                }
                if let Some(by) = &ban.banned_by_id {
                    extra["created_by"] = json!({ "id": by });
                }
                events::user_event("user.banned", user.to_wire(false), Some(extra))
            }
            Self::Unbanned { user, shadow } => events::user_event(
                "user.unbanned",
                user.to_wire(false),
                Some(json!({ "shadow": shadow })),
            ),
            Self::OwnUserChanged { event_type, me, .. } => json!({
                "type": event_type,
                "me": me,
                "created_at": Timestamp::now().to_wire(),
            })
            .to_string()
            .into(),
            Self::TokensRevoked { .. } | Self::GuestTakenOver { .. } | Self::AppSettingsChanged => {
                return None
            }
        })
    }
}

/// A subscriber of the bus on this node.
pub trait EventSink: Send + Sync {
    /// Takes one event; `frame` is its rendering ([`UserEvent::frame`]), made once for all
    /// subscribers. Must not block: it runs inside the publisher's call.
    fn deliver(&self, event: &UserEvent, frame: Option<&Arc<str>>);
}

/// Where the users service publishes events.
pub trait EventBus: Send + Sync {
    /// Publishes an event that no write carries (a presence change): every subscriber on this
    /// node has taken it when this returns; other nodes get it soon after.
    fn publish(&self, event: UserEvent);
    /// The event encoded for the store to record with the write it describes, so that other
    /// nodes learn of it if and only if the write commits; `None` when no other node
    /// listens (the default).
    fn encode(&self, event: &UserEvent) -> Option<String> {
        let _ = event;
        None
    }
    /// Hands the event of a committed write (recorded with it when [`Self::encode`] said so)
    /// to this node's subscribers; they have all taken it when this returns.
    fn committed(&self, event: UserEvent);
    /// Adds a subscriber on this node.
    fn subscribe(&self, sink: Arc<dyn EventSink>);
}

/// The in-process bus of a single node.
#[derive(Default)]
pub struct LocalBus {
    sinks: RwLock<Vec<Arc<dyn EventSink>>>,
}

impl LocalBus {
    /// A bus without subscribers.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocalBus {
    /// Hands the event to every subscriber of this node.
    pub fn deliver(&self, event: &UserEvent) {
        let sinks = self.sinks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let frame = event.frame();
        for sink in &sinks {
            sink.deliver(event, frame.as_ref());
        }
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: UserEvent) {
        self.deliver(&event);
    }

    fn committed(&self, event: UserEvent) {
        self.deliver(&event);
    }

    fn subscribe(&self, sink: Arc<dyn EventSink>) {
        self.sinks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Option<String>)>>);

    impl EventSink for Recorder {
        fn deliver(&self, event: &UserEvent, frame: Option<&Arc<str>>) {
            let kind = format!("{event:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or("")
                .to_owned();
            self.0
                .lock()
                .unwrap()
                .push((kind, frame.map(|f| f.to_string())));
        }
    }

    #[test]
    fn every_subscriber_gets_each_event_before_publish_returns() {
        let bus = LocalBus::new();
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        bus.subscribe(a.clone());
        bus.subscribe(b.clone());
        let user = User::new("alice", Timestamp::now());
        bus.publish(UserEvent::Updated { user, online: true });
        bus.publish(UserEvent::TokensRevoked {
            user_id: None,
            before: Timestamp::now(),
        });
        for r in [&a, &b] {
            let got = r.0.lock().unwrap().clone();
            assert_eq!(got.len(), 2);
            let frame: Value = serde_json::from_str(got[0].1.as_deref().unwrap()).unwrap();
            assert_eq!(frame["type"], "user.updated");
            assert_eq!(frame["user"]["online"], true);
            assert_eq!(got[1], ("TokensRevoked".to_owned(), None));
        }
    }

    #[test]
    fn events_read_back_as_written() {
        let mut user = User::new("bob", Timestamp::now());
        user.name = Some("Bob \u{0}".into());
        let events = [
            UserEvent::Deleted {
                user: user.clone(),
                hard: true,
                mark_messages_deleted: false,
            },
            UserEvent::TokensRevoked {
                user_id: None,
                before: Timestamp::now(),
            },
            UserEvent::AppSettingsChanged,
            UserEvent::Custom {
                user_id: "bob".into(),
                event: json!({"type": "friendship_request", "n": [1, {"a": null}]})
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
        ];
        for e in events {
            let back = UserEvent::decode(&e.encode()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
            // Frames are stamped when rendered: the same but for `created_at`.
            let frame = |e: &UserEvent| {
                e.frame().map(|f| {
                    let mut v: Value = serde_json::from_str(&f).unwrap();
                    v.as_object_mut().unwrap().remove("created_at");
                    v
                })
            };
            assert_eq!(frame(&back), frame(&e));
        }
    }
}
