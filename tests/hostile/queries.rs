//! Expensive queries (issue 11, item 3): a filter's conditions are bounded (an anonymous
//! query with 255 `$autocomplete` conditions took 18 s of CPU).

use serde_json::{json, Value};

use crate::common::{encode, Api, TestServer};
use crate::{assert_envelope, assert_serving, send_bytes, Side};

/// `GET /users` with `payload` on a side.
async fn query(api: &Api, side: Side, payload: &Value) -> crate::Reply {
    let path = format!("/users?payload={}", encode(&payload.to_string()));
    send_bytes(api, side, "GET", &path, Vec::new(), "").await
}

#[tokio::test]
async fn a_filter_with_too_many_conditions_is_refused_with_code_4() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let autocompletes = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| json!({"name": {"$autocomplete": "zz"}}))
            .collect()
    };
    // The reported query: 255 conditions, anonymous, within the query-string limit.
    let payload = json!({"filter_conditions": {"$or": autocompletes(255)}});
    assert!(encode(&payload.to_string()).len() < 16 * 1024);
    for side in [Side::Anonymous, Side::User, Side::Admin] {
        let reply = query(&server, side, &payload).await;
        assert_envelope(&format!("{side:?}: 255 conditions"), &reply, 400, &[4]);
        let message = reply.2["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("QueryUsers failed with error: \""),
            "{message}"
        );
    }
    // The same spread over `$and`, `$or` and `$nor`, and nested.
    let spread = json!({"filter_conditions": {"$and": [
        {"$or": autocompletes(12)}, {"$nor": autocompletes(12)},
        {"$and": [{"$or": autocompletes(12)}]}]}});
    assert_envelope(
        "36 conditions spread out",
        &query(&server, Side::Anonymous, &spread).await,
        400,
        &[4],
    );
    // A long `$autocomplete` operand.
    let long = json!({"filter_conditions": {"name": {"$autocomplete": "a".repeat(256)}}});
    assert_envelope(
        "a 256-byte $autocomplete",
        &query(&server, Side::Anonymous, &long).await,
        400,
        &[4],
    );
    // Within the bounds, the same kinds of query are answered.
    let fine = json!({"filter_conditions": {"$or": autocompletes(31)}});
    let (status, _, body) = query(&server, Side::Anonymous, &fine).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let fine = json!({"filter_conditions": {"id": {"$in": ids}}});
    let (status, _, body) = query(&server, Side::Anonymous, &fine).await;
    assert_eq!(status, 200, "{body}");
    assert_serving(&server).await;
}
