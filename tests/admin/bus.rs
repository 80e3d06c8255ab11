//! The users service driven without sockets: its writes and connection reports go through the
//! in-process event bus and presence, and a recording subscriber sees what it published.

use std::sync::{Arc, Mutex};

use chat_gateway::admin::ops::{dispatch, OpRequest};
use chat_gateway::auth::Secret;
use chat_gateway::events::{EventBus, EventSink, LocalBus, UserEvent};
use chat_gateway::hub::Hub;
use chat_gateway::model::user::User;
use chat_gateway::presence::LocalPresence;
use chat_gateway::protocol::Timestamp;
use chat_gateway::store::SledStore;
use chat_gateway::users::UsersService;
use serde_json::{json, Value};

/// Keeps every event published, with its frame.
#[derive(Default)]
struct Recorder(Mutex<Vec<(UserEvent, Option<Value>)>>);

impl EventSink for Recorder {
    fn deliver(&self, event: &UserEvent, frame: Option<&Arc<str>>) {
        let frame = frame.map(|f| serde_json::from_str(f).expect("frames are JSON"));
        self.0.lock().unwrap().push((event.clone(), frame));
    }
}

impl Recorder {
    fn take(&self) -> Vec<(UserEvent, Option<Value>)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Harness {
    svc: UsersService,
    events: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let hub = Arc::new(Hub::new(100, 10, 16));
        let bus = Arc::new(LocalBus::new());
        let events = Arc::new(Recorder::default());
        bus.subscribe(events.clone());
        let presence = Arc::new(LocalPresence::new(hub));
        let svc = UsersService::new(store, bus, presence, "k".into(), Secret::new("s"))
            .await
            .unwrap();
        Self {
            svc,
            events,
            _dir: dir,
        }
    }

    async fn op(&self, op: &str, id: Option<&str>, body: Value) {
        let req = OpRequest {
            body,
            id: id.map(str::to_owned),
            ..OpRequest::default()
        };
        dispatch(&self.svc, op, req).await.unwrap();
    }
}

#[tokio::test]
async fn writes_publish_typed_events_with_their_frames() {
    let h = Harness::new().await;
    h.op(
        "upsertUsers",
        None,
        json!({"users": {"ann": {"id": "ann", "name": "Ann"}}}),
    )
    .await;
    let got = h.events.take();
    assert_eq!(got.len(), 1);
    match &got[0] {
        (UserEvent::Updated { user, online }, Some(frame)) => {
            assert_eq!(user.name.as_deref(), Some("Ann"));
            assert!(!online);
            assert_eq!(frame["type"], "user.updated");
            assert_eq!(frame["user"]["name"], "Ann");
        }
        other => panic!("expected user.updated, got {other:?}"),
    }

    h.op("deactivateUser", Some("ann"), json!({})).await;
    let got = h.events.take();
    assert!(
        matches!(&got[..], [(UserEvent::Deactivated { user, .. }, Some(f))]
            if user.deactivated_at.is_some() && f["type"] == "user.deactivated"),
        "{got:?}"
    );

    let cutoff = Timestamp::now().to_wire();
    h.op(
        "updateApp",
        None,
        json!({"revoke_tokens_issued_before": cutoff}),
    )
    .await;
    let got = h.events.take();
    assert!(
        got.iter().any(
            |(e, frame)| matches!(e, UserEvent::TokensRevoked { user_id: None, .. })
                && frame.is_none()
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn connection_reports_become_presence_events_except_for_invisible_users() {
    let h = Harness::new().await;
    let now = Timestamp::now();
    let bob = User::new("bob", now);
    h.svc.connection_opened(&bob, true, false, now).await;
    h.svc.connection_closed("bob", true).await;
    let got = h.events.take();
    let presence: Vec<(bool, Value)> = got
        .into_iter()
        .filter_map(|(e, f)| match e {
            UserEvent::PresenceChanged { online, .. } => Some((online, f.unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(presence.len(), 2, "{presence:?}");
    assert!(presence[0].0 && !presence[1].0);
    assert_eq!(presence[0].1["type"], "user.presence.changed");
    assert_eq!(presence[1].1["user"]["online"], false);

    // A second connection of the same user is not a presence change; neither is an
    // invisible user's coming and going.
    h.svc.connection_opened(&bob, false, true, now).await;
    h.op(
        "upsertUsers",
        None,
        json!({"users": {"ghost": {"id": "ghost", "invisible": true}}}),
    )
    .await;
    let mut ghost = User::new("ghost", now);
    ghost.invisible = true;
    h.svc.connection_opened(&ghost, true, false, now).await;
    h.svc.connection_closed("ghost", true).await;
    let got = h.events.take();
    assert!(
        !got.iter()
            .any(|(e, _)| matches!(e, UserEvent::PresenceChanged { .. })),
        "{got:?}"
    );
}

/// Two services over one store — two nodes sharing a database — patching the app settings
/// at once: each save is conditional on the version it read, so no patch is lost.
#[tokio::test]
async fn two_services_on_one_store_lose_no_settings_update() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn chat_gateway::store::Store> =
        Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let hub = Arc::new(Hub::new(100, 10, 16));
        let bus = Arc::new(LocalBus::new());
        let presence = Arc::new(LocalPresence::new(hub));
        let svc = UsersService::new(store.clone(), bus, presence, "k".into(), Secret::new("s"))
            .await
            .unwrap();
        nodes.push(Arc::new(svc));
    }
    let patches: Vec<_> = (0..40)
        .map(|i| {
            let svc = nodes[i % 2].clone();
            tokio::spawn(async move {
                let req = OpRequest {
                    body: json!({ format!("key_{i}"): i }),
                    ..OpRequest::default()
                };
                dispatch(&svc, "updateApp", req).await.unwrap();
            })
        })
        .collect();
    for p in patches {
        p.await.unwrap();
    }
    let saved = store.app_settings().await.unwrap().settings;
    for i in 0..40 {
        assert_eq!(
            saved.get(&format!("key_{i}")),
            Some(&json!(i)),
            "key_{i} lost"
        );
    }
}
