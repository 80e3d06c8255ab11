//! §2.3: `revoke_tokens_issued_before` on users (partial update) and on the app (`PATCH
//! /app`). The stored values are checked over HTTP; their effect on user tokens is checked
//! against the users service itself, driven through the same admin dispatch table the REST
//! routes use (user tokens are only accepted on the public listener).

use std::sync::Arc;

use chat_gateway::admin::ops::{dispatch, OpRequest};
use chat_gateway::auth::{Identity, Secret};
use chat_gateway::events::{EventBus, LocalBus};
use chat_gateway::hub::Hub;
use chat_gateway::presence::LocalPresence;
use chat_gateway::protocol::{ErrorCode, Timestamp};
use chat_gateway::store::SledStore;
use chat_gateway::users::UsersService;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::{fetch, partial, upsert_ok};

const FORMATS: [&str; 4] = [
    "2024-01-01T00:00:00.000Z",
    "2024-01-01T00:00:00+00:00",
    "2024-01-01T00:00:00",
    "2024-01-01T02:00:00+02:00",
];
/// 2024-01-01T00:00:00Z.
const CUTOFF: i64 = 1_704_067_200;

#[tokio::test]
async fn user_revocation_is_stored_in_any_of_the_formats() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "alice"})]).await;
    for input in FORMATS {
        let (status, _, body) = partial(
            &srv,
            json!([{"id": "alice", "set": {"revoke_tokens_issued_before": input}}]),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["users"]["alice"]["revoke_tokens_issued_before"], "2024-01-01T00:00:00.000000Z",
            "input {input}"
        );
        assert_eq!(
            fetch(&srv, "alice").await.unwrap()["revoke_tokens_issued_before"],
            "2024-01-01T00:00:00.000000Z"
        );
    }
    let (status, _, body) = partial(
        &srv,
        json!([{"id": "alice", "set": {"revoke_tokens_issued_before": null}}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["users"]["alice"].get("revoke_tokens_issued_before"),
        None
    );
    let reply = partial(
        &srv,
        json!([{"id": "alice", "set": {"revoke_tokens_issued_before": "soon"}}]),
    )
    .await;
    assert_error(&reply, 400, 4, None);
    // An upsert can't set it (server-owned) and doesn't clear it either.
    partial(
        &srv,
        json!([{"id": "alice", "set": {"revoke_tokens_issued_before": FORMATS[0]}}]),
    )
    .await;
    upsert_ok(
        &srv,
        &[json!({"id": "alice", "revoke_tokens_issued_before": "2030-01-01T00:00:00Z"})],
    )
    .await;
    assert_eq!(
        fetch(&srv, "alice").await.unwrap()["revoke_tokens_issued_before"],
        "2024-01-01T00:00:00.000000Z"
    );
    srv.stop().await;
}

struct Service {
    svc: UsersService,
    secret: Secret,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let hub = Arc::new(Hub::new(100, 10, 16));
        let bus = Arc::new(LocalBus::new());
        bus.subscribe(hub.clone());
        let presence = Arc::new(LocalPresence::new(hub));
        let secret = Secret::new("revocation-secret");
        let svc = UsersService::new(store, bus, presence, "k".into(), secret.clone())
            .await
            .unwrap();
        Self {
            svc,
            secret,
            _dir: dir,
        }
    }

    async fn op(&self, op: &str, body: Value) {
        let req = OpRequest {
            body,
            ..OpRequest::default()
        };
        dispatch(&self.svc, op, req).await.unwrap();
    }

    fn token(&self, user_id: &str, iat: Option<i64>) -> String {
        let mut claims = json!({"user_id": user_id});
        if let Some(iat) = iat {
            claims["iat"] = json!(iat);
        }
        let key = EncodingKey::from_secret(self.secret.expose().as_bytes());
        encode(&Header::default(), &claims, &key).unwrap()
    }

    /// Whether the token is accepted; panics on any refusal other than revocation.
    async fn accepted(&self, token: &str) -> bool {
        match self.svc.authenticate(token).await {
            Ok(Identity::User(_)) => true,
            Ok(other) => panic!("unexpected identity {other:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::TokenExpired, "{e}");
                assert_eq!(
                    e.message(),
                    "This token has been revoked, please generate a new token"
                );
                false
            }
        }
    }
}

#[tokio::test]
async fn user_revocation_refuses_older_tokens_and_tokens_without_iat() {
    let s = Service::new().await;
    s.op(
        "upsertUsers",
        json!({"users": {"alice": {"id": "alice"}, "bob": {"id": "bob"}}}),
    )
    .await;
    let no_iat = s.token("alice", None);
    let before = s.token("alice", Some(CUTOFF - 1));
    let after = s.token("alice", Some(CUTOFF + 1));
    let bob = s.token("bob", None);
    assert!(s.accepted(&no_iat).await);
    assert!(s.accepted(&before).await);
    for input in FORMATS {
        s.op(
            "partialUpdateUsers",
            json!({"users": [{"id": "alice", "set": {"revoke_tokens_issued_before": input}}]}),
        )
        .await;
        assert!(
            !s.accepted(&no_iat).await,
            "{input}: a token without iat is revoked"
        );
        assert!(
            !s.accepted(&before).await,
            "{input}: an older token is revoked"
        );
        assert!(
            s.accepted(&after).await,
            "{input}: a newer token is accepted"
        );
        assert!(
            s.accepted(&bob).await,
            "{input}: other users are not affected"
        );
    }
    // `null` lifts it; so does unset.
    s.op(
        "partialUpdateUsers",
        json!({"users": [{"id": "alice", "set": {"revoke_tokens_issued_before": null}}]}),
    )
    .await;
    assert!(s.accepted(&no_iat).await);
    assert!(s.accepted(&before).await);
    s.op(
        "partialUpdateUsers",
        json!({"users": [{"id": "alice", "set": {"revoke_tokens_issued_before": FORMATS[0]}}]}),
    )
    .await;
    assert!(!s.accepted(&before).await);
    s.op(
        "partialUpdateUsers",
        json!({"users": [{"id": "alice", "unset": ["revoke_tokens_issued_before"]}]}),
    )
    .await;
    assert!(s.accepted(&before).await);
}

#[tokio::test]
async fn app_revocation_refuses_every_older_user_token() {
    let s = Service::new().await;
    let alice_no_iat = s.token("alice", None);
    let alice_before = s.token("alice", Some(CUTOFF - 1));
    let alice_after = s.token("alice", Some(CUTOFF + 1));
    let stranger = s.token("not-stored", Some(CUTOFF - 100));
    for input in FORMATS {
        s.op("updateApp", json!({"revoke_tokens_issued_before": input}))
            .await;
        assert!(!s.accepted(&alice_no_iat).await, "{input}");
        assert!(!s.accepted(&alice_before).await, "{input}");
        assert!(!s.accepted(&stranger).await, "{input}");
        assert!(s.accepted(&alice_after).await, "{input}");
        let server = chat_gateway::auth::server_token(&s.secret);
        assert_eq!(s.svc.authenticate(&server).await.unwrap(), Identity::Server);
    }
    s.op("updateApp", json!({"revoke_tokens_issued_before": null}))
        .await;
    assert!(s.accepted(&alice_no_iat).await);
    assert!(s.accepted(&alice_before).await);
    // Revoking "now" refuses tokens issued a moment ago.
    let just_now = s.token("alice", Some(Timestamp::now().unix() - 2));
    s.op(
        "updateApp",
        json!({"revoke_tokens_issued_before": Timestamp::now().to_wire()}),
    )
    .await;
    assert!(!s.accepted(&just_now).await);
}
