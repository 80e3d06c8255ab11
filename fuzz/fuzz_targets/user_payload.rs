//! A user object as upsert, guest creation and connect receive it: id extraction, settable
//! field validation, and the full replace. Whatever validation accepts must encode, decode as
//! the store reads it, and render on the wire.
#![no_main]

use chat_gateway::protocol::Timestamp;
use chat_gateway::store::StoredUser;
use chat_gateway::model::user::{user_id_of, validate_id, SettableFields, User};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if validate_id(s).is_ok() {
            assert!(!s.is_empty() && s.len() <= 255 && s.is_ascii());
        }
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(id) = user_id_of(&fields) {
        assert!(validate_id(&id).is_ok());
    }
    let parsed = SettableFields::parse(&fields);
    let mut user = User::new("fuzz", Timestamp::now());
    let replaced = user.replace_settable(&fields);
    assert_eq!(parsed.is_ok(), replaced.is_ok());
    if replaced.is_ok() {
        let stored = StoredUser { version: 1, user };
        let bytes = serde_json::to_vec(&stored).expect("a valid user encodes");
        let back: StoredUser = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("an accepted user must decode from the store: {e}"));
        let _ = back.user.to_me(true);
    }
});
