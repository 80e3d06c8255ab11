//! Secondary indexes of the users for queries: the values of the fields the SDKs filter and
//! sort on, each pointing at the user id, kept in the same transaction as the user (and as
//! its activity record, for `last_active`).
//!
//! Tree `field_value_userid`: tag ‖ value ‖ user id → empty, where the tag names the field
//! and the value is encoded so that sled's byte order is the query's order:
//! - timestamps — `c` `created_at`, `u` `updated_at`, `l` `last_active`, `d`
//!   `deactivated_at`, `x` `deleted_at`: 16 bytes, nanoseconds since the epoch as an i128
//!   with its sign bit flipped, big-endian; `last_active` at the start of its hour (schema 6).
//! - `b` `banned`: one byte, 1 when the user's record holds an open ban (expired or not), else 0.
//! - strings — `r` `role`, `t` each of `teams`, `n` `name`: the string with `0x00` escaped
//!   as `0x00 0xFF`, then `0x00 0x00`. For `name` the entries are the lowercased text and each
//!   lowercased word of it (as `$autocomplete` reads them), each cut at [`MAX_TEXT_KEY`]
//!   bytes; a longer operand is looked up by its first [`MAX_TEXT_KEY`] bytes.
//!
//! Every entry is derived from the user's wire form, the object filters are evaluated on, with
//! `last_active` as the store returns it (the later of the user's and its activity record).
//! Soft-deleted users are left out: a query never returns them. An index only ever narrows
//! the users a query reads; each candidate is then checked against the whole filter, so an
//! entry may be coarser than the condition (a cut text, an inclusive range) but never miss a
//! user that matches.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sled::transaction::TransactionalTree;

use super::{sled_error, TxResult};
use crate::model::query::scan_window;
use crate::model::user::User;
use crate::protocol::Timestamp;
use crate::store::StoreError;

/// The index tree.
pub const TREE: &str = "field_value_userid";

/// Longest text entry of `name`, in bytes.
pub const MAX_TEXT_KEY: usize = 64;

/// Indexed timestamp fields and their tags.
pub const TIME_FIELDS: [(&str, u8); 5] = [
    ("created_at", b'c'),
    ("updated_at", b'u'),
    ("last_active", b'l'),
    ("deactivated_at", b'd'),
    ("deleted_at", b'x'),
];

/// Tag of `banned`.
pub const BANNED: u8 = b'b';
/// Tag of `role`.
pub const ROLE: u8 = b'r';
/// Tag of each team in `teams`.
pub const TEAM: u8 = b't';
/// Tag of the texts and words of `name`.
pub const NAME: u8 = b'n';

/// The tag of an indexed timestamp field.
pub fn time_tag(field: &str) -> Option<u8> {
    TIME_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, tag)| *tag)
}

/// The order-preserving encoding of a timestamp.
pub fn encode_time(t: Timestamp) -> [u8; 16] {
    let nanos = t.0.unix_timestamp_nanos();
    ((nanos as u128) ^ (1u128 << 127)).to_be_bytes()
}

/// `tag ‖ encoded time`: the prefix of every entry of a field at that instant — for
/// `last_active`, at the start of its hour (see [`activity_hour`]).
pub fn time_prefix(tag: u8, t: Timestamp) -> Vec<u8> {
    let t = if tag == LAST_ACTIVE {
        activity_hour(t)
    } else {
        t
    };
    let mut k = vec![tag];
    k.extend_from_slice(&encode_time(t));
    k
}

/// Tag of `last_active`.
pub const LAST_ACTIVE: u8 = b'l';

/// The start of the hour of `t`: `last_active` entries are kept by the hour, so that the
/// activity a connect and a disconnect record within one hour moves no entry (a touch is then
/// one write). Lookups are as coarse, and every candidate is checked against the filter.
pub fn activity_hour(t: Timestamp) -> Timestamp {
    let secs = t.0.unix_timestamp();
    let hour = secs - secs.rem_euclid(3600);
    time::OffsetDateTime::from_unix_timestamp(hour).map_or(t, Timestamp)
}

/// The escaped form of a string value, without its terminator: a prefix of every longer
/// value's escaped form, so prefix searches work on it.
pub fn string_prefix(tag: u8, s: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + s.len());
    k.push(tag);
    for &b in s.as_bytes() {
        k.push(b);
        if b == 0 {
            k.push(0xFF);
        }
    }
    k
}

/// The prefix of every entry of exactly this string value.
pub fn string_exact(tag: u8, s: &str) -> Vec<u8> {
    let mut k = string_prefix(tag, s);
    k.extend_from_slice(&[0, 0]);
    k
}

/// `s` lowercased as `$autocomplete` compares (character by character), cut at
/// [`MAX_TEXT_KEY`] bytes on a character boundary.
pub fn text_key(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if out.len() + c.len_utf8() > MAX_TEXT_KEY {
            break;
        }
        out.push(c);
    }
    out
}

/// An `$autocomplete` operand (already lowercase) cut as the entries are.
pub fn text_prefix(lowered: &str) -> &str {
    let mut end = lowered.len().min(MAX_TEXT_KEY);
    while !lowered.is_char_boundary(end) {
        end -= 1;
    }
    &lowered[..end]
}

/// The user id at the end of an index key.
pub fn id_of(key: &[u8]) -> Result<&str, StoreError> {
    let start = match key.first() {
        Some(b'c' | b'u' | b'l' | b'd' | b'x') => 17,
        Some(b'b') => 2,
        Some(_) => {
            // A string value: find the `0x00 0x00` terminator past the escapes.
            let mut i = 1;
            loop {
                match (key.get(i), key.get(i + 1)) {
                    (Some(0), Some(0)) => break i + 2,
                    (Some(0), Some(_)) => i += 2,
                    (Some(_), _) => i += 1,
                    (None, _) => return Err(StoreError::Corrupt("query index key".into())),
                }
            }
        }
        None => return Err(StoreError::Corrupt("empty query index key".into())),
    };
    key.get(start..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .ok_or_else(|| StoreError::Corrupt("query index key".into()))
}

fn with_id(mut prefix: Vec<u8>, id: &str) -> Vec<u8> {
    prefix.extend_from_slice(id.as_bytes());
    prefix
}

fn time_of(wire: &Map<String, Value>, field: &str) -> Option<Timestamp> {
    wire.get(field)?.as_str().and_then(Timestamp::parse)
}

fn strings_of(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The index entries of a user as the store returns it; none for a soft-deleted user.
pub fn entries(user: &User) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    if user.deleted_at.is_some() {
        return keys;
    }
    let id = user.id.as_str();
    let wire = user.to_wire(false);
    for (field, tag) in TIME_FIELDS {
        if let Some(t) = time_of(&wire, field) {
            keys.insert(with_id(time_prefix(tag, t), id));
        }
    }
    // The record's ban, not the wire's `banned`: whether a ban still holds changes with
    // time, and an entry must be the same when it is removed as when it was written. So `b1`
    // holds every user with an open ban record, expired or not (the planner serves only
    // `banned: true` from it), and `b0` the others.
    let open_ban = user.ban.as_ref().is_some_and(|b| !b.shadow);
    keys.insert(with_id(vec![BANNED, u8::from(open_ban)], id));
    for role in strings_of(wire.get("role")) {
        keys.insert(with_id(string_exact(ROLE, role), id));
    }
    for team in strings_of(wire.get("teams")) {
        keys.insert(with_id(string_exact(TEAM, team), id));
    }
    if let Some(Value::String(name)) = wire.get("name") {
        let text = scan_window(name);
        keys.insert(with_id(string_exact(NAME, &text_key(text)), id));
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if !word.is_empty() {
                keys.insert(with_id(string_exact(NAME, &text_key(word)), id));
            }
        }
    }
    keys
}

/// The `last_active` entry of user `id` at `t`, as [`entries`] makes it.
pub fn last_active_key(t: Timestamp, id: &str) -> Vec<u8> {
    with_id(time_prefix(LAST_ACTIVE, t), id)
}

/// Whether a touch from activity `old` to `new` leaves the `last_active` entry where it is,
/// whatever the user's own `last_active`: `new` is not earlier and in the same hour.
pub fn touch_keeps_entry(old: Timestamp, new: Timestamp) -> bool {
    old <= new && activity_hour(old) == activity_hour(new)
}

/// Moves a user's entries from its `old` state to its `new` one (either absent), inside the
/// transaction that writes the user.
pub fn update(tree: &TransactionalTree, old: Option<&User>, new: Option<&User>) -> TxResult<()> {
    let old = old.map(entries).unwrap_or_default();
    let new = new.map(entries).unwrap_or_default();
    for key in old.difference(&new) {
        tree.remove(key.as_slice())?;
    }
    for key in new.difference(&old) {
        tree.insert(key.as_slice(), &[])?;
    }
    Ok(())
}

/// Rebuilds the index from `userid_user` and `userid_lastactive`. Idempotent (it starts by
/// clearing the tree); run before the store serves.
pub fn rebuild(db: &sled::Db) -> Result<(), StoreError> {
    let users = db.open_tree("userid_user").map_err(sled_error)?;
    let last_active = db.open_tree("userid_lastactive").map_err(sled_error)?;
    let tree = db.open_tree(TREE).map_err(sled_error)?;
    tree.clear().map_err(sled_error)?;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    for item in users.iter() {
        let (id, bytes) = item.map_err(sled_error)?;
        let activity = last_active.get(&id).map_err(sled_error)?;
        let user = super::decode_stored(&bytes, activity.as_deref())?.user;
        for key in entries(&user) {
            batch.insert(key, &[]);
            pending += 1;
        }
        if pending >= 10_000 {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(sled_error)?;
            pending = 0;
        }
    }
    tree.apply_batch(batch).map_err(sled_error)?;
    tracing::info!(entries = tree.len(), "query index rebuilt");
    Ok(())
}
