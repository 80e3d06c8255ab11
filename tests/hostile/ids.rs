//! Odd ids in paths: traversal, empty, too long, non-ASCII, percent-encoded slashes, invalid
//! UTF-8, NUL. Every route with an id refuses them in the envelope.

use serde_json::Value;

use crate::common::TestServer;
use crate::{assert_envelope, assert_serving, raw_http, raw_request, send_bytes, Side};

/// Odd ids as they appear in the request target (already percent-encoded where needed).
fn odd_ids() -> Vec<(&'static str, String)> {
    vec![
        ("encoded traversal", "..%2Fx".into()),
        ("encoded slash", "a%2Fb".into()),
        ("encoded backslash", "a%5Cb".into()),
        ("dot-dot", "..".into()),
        ("256 bytes", "a".repeat(256)),
        ("non-ASCII", "%C3%A9l%C3%A8ve".into()),
        ("invalid UTF-8", "%FF%FE".into()),
        ("NUL", "a%00b".into()),
        ("space", "a%20b".into()),
        ("broken escape", "a%zzb".into()),
    ]
}

#[tokio::test]
async fn odd_user_ids_are_refused_on_every_id_route() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let routes = [
        ("DELETE", "/users/{}"),
        ("POST", "/users/{}/deactivate"),
        ("POST", "/users/{}/reactivate"),
        ("GET", "/users/{}/export"),
    ];
    for (method, template) in routes {
        for (what, id) in odd_ids() {
            let target = template.replace("{}", &id);
            let url = server.admin_url.clone();
            let request = raw_request(&server, method, &target, "Content-Length: 0\r\n");
            let (status, body) = tokio::task::spawn_blocking(move || raw_http(&url, &request))
                .await
                .expect("raw request");
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let what = format!("{method} {target} ({what})");
            // "." segments are not normalised: `..` reaches the handler and is an invalid id.
            assert!(
                (status, body["code"].as_i64()) == (400, Some(4))
                    || (status, body["code"].as_i64()) == (404, Some(16)),
                "{what}: {status} {body}"
            );
            assert_eq!(body["StatusCode"], status, "{what}: {body}");
        }
    }
    // An empty id does not match the route: 404 in the envelope.
    let reply = send_bytes(&server, Side::Admin, "DELETE", "/users/", Vec::new(), "").await;
    assert_envelope("empty id", &reply, 404, &[16]);
    // Task and export ids that are not ids at all are simply not found.
    for (what, id) in odd_ids() {
        for path in [format!("/tasks/{id}"), format!("/exports/users/{id}.json")] {
            let url = server.admin_url.clone();
            let request = raw_request(&server, "GET", &path, "");
            let (status, body) = tokio::task::spawn_blocking(move || raw_http(&url, &request))
                .await
                .expect("raw request");
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(
                matches!(
                    (status, body["code"].as_i64()),
                    (404, Some(16)) | (400, Some(4))
                ),
                "GET {path} ({what}): {status} {body}"
            );
        }
    }
    assert_serving(&server).await;
}

/// Odd ids inside bodies: the same rules as in paths (code 4), on both listeners.
#[tokio::test]
async fn odd_ids_in_bodies_are_refused() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let ids = ["../x", "", "a/b", "é", "a b", "\u{0}", &"a".repeat(256)];
    for id in ids {
        let bodies = [
            (
                Side::Admin,
                "POST",
                "/users",
                serde_json::json!({"users": {id: {"id": id}}}),
            ),
            (
                Side::Admin,
                "PATCH",
                "/users",
                serde_json::json!({"users": [{"id": id, "set": {"a": 1}}]}),
            ),
            (
                Side::Admin,
                "POST",
                "/users/delete",
                serde_json::json!({"user_ids": [id]}),
            ),
            (
                Side::Admin,
                "POST",
                "/guest",
                serde_json::json!({"user": {"id": id}}),
            ),
            (
                Side::Anonymous,
                "POST",
                "/guest",
                serde_json::json!({"user": {"id": id}}),
            ),
        ];
        for (side, method, path, body) in bodies {
            let bytes = serde_json::to_vec(&body).expect("encodes");
            let reply = send_bytes(&server, side, method, path, bytes, "").await;
            assert_envelope(
                &format!("{side:?} {method} {path} id {id:?}"),
                &reply,
                400,
                &[4],
            );
        }
    }
    assert_serving(&server).await;
}
