//! Property tests of the parsers and rules hostile input reaches first: username
//! normalisation, partial-update paths, the query filter parser, token verification and
//! user validation. They run in CI (a few hundred cases each, seconds); the cargo-fuzz targets
//! in `fuzz/` explore the same functions for longer.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use chat_gateway::auth::{user_token, verify, Identity, Secret, TokenClaims};
use chat_gateway::model::query::{UserQuery, MAX_LIMIT, MAX_OFFSET};
use chat_gateway::model::user::{SettableFields, User, MAX_VALUE_DEPTH};
use chat_gateway::model::username::normalise;
use chat_gateway::protocol::{ErrorCode, Timestamp};
use chat_gateway::store::StoredUser;
use chat_gateway::users::patch::{Patch, MAX_PATH_SEGMENTS};

/// Object keys that hit the parsers' vocabulary often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\$(eq|ne|in|nin|gt|gte|lt|lte|exists|autocomplete|contains|and|or|nor|bad)",
        "[a-z_.]{0,6}",
        prop::sample::select(vec![
            "filter_conditions",
            "sort",
            "limit",
            "offset",
            "field",
            "direction",
            "include_deactivated_users",
            "id",
            "name",
            "teams",
            "role",
            "created_at",
            "set",
            "unset",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Arbitrary JSON, up to 6 levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:00:00(\\.000)?(Z|\\+00:00)?"
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn sample_users() -> Vec<User> {
    [
        json!({"id": "alice", "name": "Alice Smith", "teams": ["red"], "age": 30, "a": {"b": [1, null]}}),
        json!({"id": "bob", "role": "admin", "age": 30.5, "flag": true, "name": "2024-01-01T00:00:00Z"}),
    ]
    .iter()
    .map(|v| {
        let fields = v.as_object().expect("object");
        let mut u = User::new(fields["id"].as_str().expect("id"), Timestamp::now());
        u.replace_settable(fields).expect("valid sample");
        u
    })
    .collect()
}

/// A value nested `levels` arrays deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |v, _| json!([v]))
}

proptest! {
    /// Without combining marks: a mark whose base letter is filtered out can move next to
    /// another mark and be reordered by the next NFKC pass (`"\u{1e008} \u{737}"` normalises
    /// to `"\u{1e008}\u{737}"`, whose own normal form is `"\u{737}\u{1e008}"`); SECURITY.md
    /// lists it under "Left open".
    #[test]
    fn normalise_is_idempotent_and_keeps_only_letters_and_digits(name in "[\\PC&&\\PM]{0,24}") {
        let once = normalise(&name);
        prop_assert_eq!(normalise(&once), once.clone(), "{:?}", name);
        prop_assert!(once.chars().all(char::is_alphanumeric), "{:?} -> {:?}", name, once);
    }

    #[test]
    fn case_spacing_and_punctuation_never_separate_names(
        words in vec("[a-z0-9]{1,6}", 1..4),
        seps in vec(prop::sample::select(vec!["", " ", ".", "-", "_", "!", "\t", "  ", "'"]), 4),
        upper in vec(any::<bool>(), 24),
    ) {
        let plain: String = words.concat();
        let mut dressed = String::new();
        for (i, w) in words.iter().enumerate() {
            dressed.push_str(seps[i % seps.len()]);
            for (j, c) in w.chars().enumerate() {
                if upper[(i * 6 + j) % upper.len()] {
                    dressed.extend(c.to_uppercase());
                } else {
                    dressed.push(c);
                }
            }
        }
        prop_assert_eq!(normalise(&dressed), normalise(&plain));
        prop_assert_eq!(normalise(&plain), plain);
    }

    #[test]
    fn different_letters_or_digits_never_collide(a in "[a-z0-9]{1,12}", b in "[a-z0-9]{1,12}") {
        prop_assume!(a != b);
        prop_assert_ne!(normalise(&a.to_uppercase()), normalise(&format!("{}.", b)));
    }

    #[test]
    fn set_then_unset_roundtrips(
        fields in btree_map("c_[a-z]{1,3}", json_value(), 0..6),
        segments in vec("[a-z]{1,3}", 1..5),
        value in json_value(),
    ) {
        let start: Map<String, Value> = fields.into_iter().collect();
        let path = format!("x_{}", segments.join("."));
        let set = json!({ &path: value.clone() });
        let patch = Patch::parse(Some(&set), None, &[]).expect("a valid path");
        let mut m = start.clone();
        patch.apply(&mut m);
        let mut cur = &Value::Object(m.clone());
        for seg in path.split('.') {
            cur = cur.get(seg).expect("each segment exists after set");
        }
        prop_assert_eq!(cur, &value);
        for (k, v) in &start {
            prop_assert_eq!(m.get(k), Some(v), "set touched {}", k);
        }
        let unset = json!([&path]);
        Patch::parse(None, Some(&unset), &[]).expect("a valid path").apply(&mut m);
        // Unsetting removes the leaf only; a one-segment path leaves exactly the start.
        if !path.contains('.') {
            prop_assert_eq!(&m, &start);
        } else {
            let (parent, leaf) = path.rsplit_once('.').expect("dotted");
            let mut cur = &Value::Object(m.clone());
            for seg in parent.split('.') {
                cur = cur.get(seg).expect("parents stay");
            }
            prop_assert!(cur.get(leaf).is_none());
        }
    }

    #[test]
    fn patch_parse_never_panics_and_accepts_only_valid_paths(
        set in json_value(),
        unset in json_value(),
        long in 0usize..80,
    ) {
        let mut set = set;
        if let Value::Object(m) = &mut set {
            m.insert(vec!["a"; long.max(1)].join("."), json!(1));
        }
        if let Ok(p) = Patch::parse(Some(&set), Some(&unset), &["revoke_tokens_issued_before"]) {
            for path in p.set.iter().map(|(k, _)| k).chain(p.unset.iter()) {
                prop_assert!(!path.is_empty() && !path.starts_with('.') && !path.ends_with('.'));
                prop_assert!(!path.contains("..") && !path.contains(char::is_whitespace));
                prop_assert!(path.split('.').count() <= MAX_PATH_SEGMENTS);
            }
            let mut fields = sample_users()[0].settable_fields();
            p.apply(&mut fields);
        }
    }

    #[test]
    fn filter_parse_never_panics(payload in json_value(), filter in json_value()) {
        let users = sample_users();
        let with_filter = json!({"filter_conditions": filter, "limit": 5});
        for p in [&payload, &with_filter] {
            if let Ok(q) = UserQuery::parse(p) {
                prop_assert!(q.limit <= MAX_LIMIT && q.offset <= MAX_OFFSET);
                let matched: Vec<User> = users.iter().filter(|u| q.admits(u)).cloned().collect();
                prop_assert!(q.sort_and_page(matched).len() <= q.limit);
            }
        }
    }

    #[test]
    fn token_verify_never_panics(token in "\\PC{0,200}", dotted in vec("[A-Za-z0-9_=+/-]{0,40}", 0..5)) {
        let secret = Secret::new("prop-secret");
        for t in [token, dotted.join(".")] {
            for skip in [false, true] {
                if let Ok(Identity::User(TokenClaims { user_id, .. })) = verify(&t, &secret, skip) {
                    prop_assert!(!user_id.is_empty());
                }
            }
        }
    }

    #[test]
    fn tokens_verify_and_any_tampering_is_refused(id in "[a-zA-Z0-9@_-]{1,64}", at in 0usize..200, bit in 0u8..8) {
        let secret = Secret::new("prop-secret");
        let token = user_token(&id, None, &secret);
        prop_assert_eq!(
            verify(&token, &secret, false).expect("a minted token verifies"),
            Identity::User(TokenClaims { user_id: id.clone(), iat: None, guest: false })
        );
        let mut bytes = token.clone().into_bytes();
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(tampered) = String::from_utf8(bytes) {
            if tampered != token {
                let accepted = verify(&tampered, &secret, false);
                // Flipping a base64 bit can land on padding bits that decode to the same
                // bytes; anything else must be refused.
                if let Ok(identity) = accepted {
                    prop_assert_eq!(identity, Identity::User(TokenClaims { user_id: id, iat: None, guest: false }));
                }
            }
        }
        let wrong = Secret::new("another-secret");
        prop_assert_eq!(verify(&token, &wrong, false).unwrap_err().code, ErrorCode::TokenSignature);
    }

    #[test]
    fn accepted_users_are_readable_back_from_the_store(fields in btree_map(key(), json_value(), 0..8), depth in 0usize..130) {
        let mut fields: Map<String, Value> = fields.into_iter().collect();
        fields.insert("deep".into(), nested(depth));
        let mut user = User::new("prop", Timestamp::now());
        let parsed = SettableFields::parse(&fields);
        prop_assert_eq!(parsed.is_ok(), user.replace_settable(&fields).is_ok());
        if depth > MAX_VALUE_DEPTH {
            prop_assert!(parsed.is_err(), "depth {} accepted", depth);
        }
        if parsed.is_ok() {
            let bytes = serde_json::to_vec(&StoredUser { version: 1, user: user.clone() }).expect("encodes");
            let back: StoredUser = serde_json::from_slice(&bytes).expect("an accepted user decodes");
            prop_assert_eq!(back.user, user);
        }
    }
}

/// Regression (found by `accepted_users_are_readable_back_from_the_store`): without
/// serde_json's `float_roundtrip`, a float read back from the store could differ from the
/// acknowledged one in the last bit.
#[test]
fn floats_survive_the_store_exactly() {
    let fields =
        json!({"id": "f", "x": -1.364209624982782e157, "y": [0.1, 2.2250738585072014e-308]});
    let mut user = User::new("f", Timestamp::now());
    user.replace_settable(fields.as_object().expect("object"))
        .expect("valid");
    let bytes = serde_json::to_vec(&StoredUser {
        version: 1,
        user: user.clone(),
    })
    .expect("encodes");
    let back: StoredUser = serde_json::from_slice(&bytes).expect("decodes");
    assert_eq!(back.user.custom, user.custom);
    assert_eq!(back.user.custom["x"], fields["x"]);
}
