//! The `GET /users` payload: filter, sort and paging parsed, then evaluated against users.
#![no_main]

use chat_gateway::protocol::Timestamp;
use chat_gateway::model::user::User;
use chat_gateway::model::query::{UserQuery, MAX_LIMIT, MAX_OFFSET};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn users() -> Vec<User> {
    let samples = [
        json!({"id": "alice", "name": "Alice Smith", "teams": ["red", "blue"], "age": 30,
               "nested": {"x": [1, 2, {"y": null}]}}),
        json!({"id": "bob", "role": "admin", "tags": ["a"], "age": 30.5, "flag": true}),
        json!({"id": "carol", "name": "2024-01-01T00:00:00Z", "invisible": true}),
    ];
    samples
        .iter()
        .map(|s| {
            let fields = s.as_object().expect("object");
            let mut u = User::new(fields["id"].as_str().expect("id"), Timestamp::now());
            u.replace_settable(fields).expect("sample user is valid");
            u
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(query) = UserQuery::parse(&payload) else {
        return;
    };
    assert!(query.limit <= MAX_LIMIT && query.offset <= MAX_OFFSET);
    let all = users();
    let matched: Vec<User> = all.into_iter().filter(|u| query.admits(u)).collect();
    let page = query.sort_and_page(matched);
    assert!(page.len() <= query.limit);
});
