//! Partial updates: `set` and `unset` with dotted paths into nested objects, and the rules
//! on which keys may be used.

use serde_json::{Map, Value};

use crate::model::user::{MAX_VALUE_DEPTH, SERVER_OWNED_FIELDS};
use crate::protocol::ApiError;

/// A validated partial update of one user.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// Paths to set, in the order given.
    pub set: Vec<(String, Value)>,
    /// Paths to remove.
    pub unset: Vec<String>,
}

/// Most segments a dotted path may have. Applying a path recurses once per segment, and the
/// value it builds must stay within [`MAX_VALUE_DEPTH`] for the store to read it back.
pub const MAX_PATH_SEGMENTS: usize = MAX_VALUE_DEPTH;

/// Checks one path: no empty segment, no whitespace, at most [`MAX_PATH_SEGMENTS`] segments.
pub fn validate_path(path: &str) -> Result<(), ApiError> {
    let bad = path.is_empty()
        || path.starts_with('.')
        || path.ends_with('.')
        || path.contains("..")
        || path.chars().any(char::is_whitespace);
    if bad {
        let shown = shown(path);
        return Err(
            ApiError::input(format!("invalid key '{shown}'")).with_field(shown, "invalid key")
        );
    }
    if path.split('.').count() > MAX_PATH_SEGMENTS {
        return Err(ApiError::input(format!(
            "key '{}' has more than {MAX_PATH_SEGMENTS} segments",
            shown(path)
        )));
    }
    Ok(())
}

/// A path as error messages echo it: at most 64 characters.
fn shown(path: &str) -> &str {
    path.char_indices()
        .nth(64)
        .map_or(path, |(i, _)| &path[..i])
}

fn root(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

fn overlaps(a: &str, b: &str) -> bool {
    a == b
        || a.strip_prefix(b).is_some_and(|r| r.starts_with('.'))
        || b.strip_prefix(a).is_some_and(|r| r.starts_with('.'))
}

impl Patch {
    /// Parses and validates `set` / `unset`. Server-owned fields other than those in
    /// `allowed_server_fields` are refused.
    pub fn parse(
        set: Option<&Value>,
        unset: Option<&Value>,
        allowed_server_fields: &[&str],
    ) -> Result<Self, ApiError> {
        let mut patch = Patch::default();
        match set {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    patch.set.push((k.clone(), v.clone()));
                }
            }
            Some(_) => return Err(ApiError::input("set must be an object")),
        }
        match unset {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let k = item
                        .as_str()
                        .ok_or_else(|| ApiError::input("unset must be a list of strings"))?;
                    patch.unset.push(k.to_owned());
                }
            }
            Some(_) => return Err(ApiError::input("unset must be a list of strings")),
        }
        if patch.set.is_empty() && patch.unset.is_empty() {
            return Err(ApiError::input("set or unset must be given"));
        }
        let all = patch
            .set
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(patch.unset.iter().map(String::as_str));
        for path in all {
            validate_path(path)?;
            let top = root(path);
            if top == "id" || top == "created_at" {
                return Err(ApiError::input(format!("{top} cannot be set or unset")));
            }
            if SERVER_OWNED_FIELDS.contains(&top) && !allowed_server_fields.contains(&top) {
                return Err(ApiError::input(format!("{top} is a read-only field")));
            }
        }
        for (s, _) in &patch.set {
            if let Some(u) = patch.unset.iter().find(|u| overlaps(s, u)) {
                return Err(ApiError::input(format!(
                    "'{s}' and '{u}' cannot be both set and unset"
                )));
            }
        }
        Ok(patch)
    }

    /// Takes out a top-level `set` entry (for fields the service handles itself).
    pub fn take_set(&mut self, key: &str) -> Option<Value> {
        let idx = self.set.iter().position(|(k, _)| k == key)?;
        Some(self.set.remove(idx).1)
    }

    /// Whether the patch unsets a top-level key.
    pub fn take_unset(&mut self, key: &str) -> bool {
        let before = self.unset.len();
        self.unset.retain(|k| k != key);
        before != self.unset.len()
    }

    /// Whether the patch touches a top-level field.
    pub fn touches(&self, top: &str) -> bool {
        self.set.iter().any(|(k, _)| root(k) == top) || self.unset.iter().any(|k| root(k) == top)
    }

    /// Applies the patch to a flat user object.
    pub fn apply(&self, target: &mut Map<String, Value>) {
        for (path, value) in &self.set {
            match (target.get_mut(path.as_str()), value) {
                // A set of a whole merged field adds to what is stored.
                (Some(Value::Object(stored)), Value::Object(given))
                    if MERGED_ON_SET.contains(&path.as_str()) =>
                {
                    for (k, v) in given {
                        stored.insert(k.clone(), v.clone());
                    }
                }
                _ => set_path(target, path, value.clone()),
            }
        }
        for path in &self.unset {
            unset_path(target, path);
        }
    }
}

/// Fields whose `set` merges into the stored object instead of replacing it: Stream keeps
/// `privacy_settings.typing_indicators` when a partial update sets only `read_receipts`.
pub const MERGED_ON_SET: &[&str] = &["privacy_settings"];

fn set_path(target: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            target.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let slot = target
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                set_path(inner, rest, value);
            }
        }
    }
}

fn unset_path(target: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            target.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(inner)) = target.get_mut(head) {
                unset_path(inner, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_set_and_unset() {
        let mut m = json!({"a":{"b":1,"c":2},"color":"red"})
            .as_object()
            .unwrap()
            .clone();
        let p = Patch::parse(
            Some(&json!({"a.d.e":3,"x":1})),
            Some(&json!(["a.b", "color"])),
            &[],
        )
        .unwrap();
        p.apply(&mut m);
        assert_eq!(Value::Object(m), json!({"a":{"c":2,"d":{"e":3}},"x":1}));
    }

    #[test]
    fn invalid_keys() {
        for k in ["a..b", ".a", "a.", "a b", "a\tb", ""] {
            assert!(
                Patch::parse(Some(&json!({ k: 1 })), None, &[]).is_err(),
                "{k}"
            );
        }
        assert!(Patch::parse(Some(&json!({"a.b":1})), Some(&json!(["a"])), &[]).is_err());
        assert!(Patch::parse(Some(&json!({"a":1})), Some(&json!(["a"])), &[]).is_err());
        assert!(Patch::parse(Some(&json!({"id":"x"})), None, &[]).is_err());
        assert!(Patch::parse(None, Some(&json!(["created_at"])), &[]).is_err());
        assert!(Patch::parse(Some(&json!({"ab":1})), Some(&json!(["a"])), &[]).is_ok());
    }

    /// Regression: a dotted key of 100k segments overflowed the stack while being applied
    /// and aborted the whole gateway (one `PATCH /users`, from any user on their own user).
    #[test]
    fn long_paths_are_refused_before_they_are_applied() {
        let long = vec!["a"; 100_000].join(".");
        for (set, unset) in [
            (Some(json!({ &long: 1 })), None),
            (None, Some(json!([&long]))),
        ] {
            let err = Patch::parse(set.as_ref(), unset.as_ref(), &[]).unwrap_err();
            assert_eq!(err.code, crate::protocol::ErrorCode::InputError);
            assert!(err.detail.len() < 200, "the key is not echoed whole");
        }
        let longest = vec!["a"; MAX_PATH_SEGMENTS].join(".");
        let p = Patch::parse(Some(&json!({ &longest: 1 })), None, &[]).unwrap();
        let mut m = Map::new();
        p.apply(&mut m);
        let user = json!({"id": "a", "a": m["a"]});
        let mut u = crate::model::user::User::new("a", crate::protocol::Timestamp::now());
        u.replace_settable(user.as_object().unwrap()).unwrap();
    }
}
