//! Partial updates: `{"set": {...}, "unset": [...]}` parsed with the server's rights and
//! applied to a user. Whatever is accepted must leave a user the store can read back.
#![no_main]

use chat_gateway::protocol::Timestamp;
use chat_gateway::store::StoredUser;
use chat_gateway::model::user::User;
use chat_gateway::users::patch::Patch;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(patch) = Patch::parse(
        body.get("set"),
        body.get("unset"),
        &["revoke_tokens_issued_before"],
    ) else {
        return;
    };
    for (path, _) in &patch.set {
        assert!(!path.is_empty() && !path.contains(".."));
    }
    let mut user = User::new("fuzz", Timestamp::now());
    let start = json!({"id": "fuzz", "name": "Fuzz", "a": {"b": 1}, "color": "red"});
    user.replace_settable(start.as_object().expect("object"))
        .expect("the starting user is valid");
    let mut fields = user.settable_fields();
    patch.apply(&mut fields);
    for path in &patch.unset {
        if !path.contains('.') {
            assert!(!fields.contains_key(path.as_str()), "unset {path} stayed");
        }
    }
    if user.replace_settable(&fields).is_ok() {
        let stored = StoredUser { version: 2, user };
        let bytes = serde_json::to_vec(&stored).expect("a valid user encodes");
        serde_json::from_slice::<StoredUser>(&bytes)
            .unwrap_or_else(|e| panic!("a patched user must decode from the store: {e}"));
    }
});
