//! `queryBannedUsers`: the payload (`filter_conditions` on `user_id`, `banned_by_id`,
//! `reason`, `shadow`, `created_at`, `channel_cid`; a sort on `created_at`; `limit` and
//! `offset`), and the user query that finds the users a ban holds on.

use serde_json::{json, Map, Value};

use crate::model::moderation::Ban;
use crate::model::query::UserQuery;
use crate::model::user::validate_id;
use crate::protocol::{ApiError, Timestamp};

/// One condition on a ban.
#[derive(Debug, Clone)]
enum Condition {
    /// `user_id` among these.
    UserIn(Vec<String>),
    /// `banned_by_id` among these.
    ByIn(Vec<String>),
    /// `reason` equal to this.
    Reason(String),
    /// `reason` starting with this, ignoring case (`$autocomplete`).
    ReasonPrefix(String),
    /// `shadow` equal to this.
    Shadow(bool),
    /// `created_at` compared with an instant: `$gt`, `$gte`, `$lt`, `$lte`.
    Created(&'static str, Timestamp),
    /// `channel_cid`: bans here are app-wide, never of a channel.
    Channel,
}

/// A decoded `queryBannedUsers` payload.
#[derive(Debug, Clone)]
pub struct BannedQuery {
    conditions: Vec<Condition>,
    /// Oldest first (`created_at` ascending) instead of newest first.
    pub ascending: bool,
    /// Bans per page (1 to 100, default 25).
    pub limit: usize,
    /// Bans skipped (at most 1000).
    pub offset: usize,
}

fn input(msg: impl Into<String>) -> ApiError {
    ApiError::input(msg)
}

/// `"x"`, `{"$eq": "x"}` or `{"$in": ["x", ...]}` as a list of strings.
fn strings(field: &str, v: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        input(format!(
            "{field} must be a string, {{\"$eq\": …}} or {{\"$in\": […]}}"
        ))
    };
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Object(m) if m.len() == 1 => match m.iter().next() {
            Some((op, Value::String(s))) if op == "$eq" => Ok(vec![s.clone()]),
            Some((op, Value::Array(list))) if op == "$in" && list.len() <= 1000 => list
                .iter()
                .map(|x| x.as_str().map(str::to_owned).ok_or_else(bad))
                .collect(),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

impl BannedQuery {
    /// Users the store returns per page while looking for bans.
    pub const PAGE: usize = 100;
    /// Most banned users looked at (the store pages to an offset of 1000).
    pub const MAX_SCANNED: usize = 1100;

    /// Decodes a payload.
    pub fn parse(payload: &Value) -> Result<Self, ApiError> {
        let mut conditions = Vec::new();
        match payload.get("filter_conditions") {
            None | Some(Value::Null) => {}
            Some(Value::Object(filter)) => {
                for (field, v) in filter {
                    conditions.push(Self::condition(field, v)?);
                }
            }
            Some(_) => return Err(input("filter_conditions must be an object")),
        }
        let ascending = match payload.get("sort") {
            None | Some(Value::Null) => false,
            Some(Value::Array(sort)) if sort.is_empty() => false,
            Some(Value::Array(sort)) if sort.len() == 1 => {
                let field = sort[0].get("field").and_then(Value::as_str);
                let direction = sort[0].get("direction").and_then(Value::as_i64);
                match (field, direction) {
                    (Some("created_at"), Some(1)) => true,
                    (Some("created_at"), Some(-1) | None) => false,
                    _ => return Err(input("bans can be sorted by created_at only")),
                }
            }
            Some(_) => return Err(input("bans can be sorted by created_at only")),
        };
        let number = |key: &str, default: u64, max: u64| -> Result<usize, ApiError> {
            match payload.get(key) {
                None | Some(Value::Null) => Ok(default as usize),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n <= max)
                    .map(|n| n as usize)
                    .ok_or_else(|| input(format!("{key} must be a number from 0 to {max}"))),
            }
        };
        let limit = number("limit", 25, 100)?.max(1);
        let offset = number("offset", 0, 1000)?;
        Ok(Self {
            conditions,
            ascending,
            limit,
            offset,
        })
    }

    fn condition(field: &str, v: &Value) -> Result<Condition, ApiError> {
        Ok(match field {
            "user_id" => {
                let ids = strings(field, v)?;
                for id in &ids {
                    validate_id(id)?;
                }
                Condition::UserIn(ids)
            }
            "banned_by_id" => Condition::ByIn(strings(field, v)?),
            "reason" => match v.get("$autocomplete").and_then(Value::as_str) {
                Some(prefix) => Condition::ReasonPrefix(prefix.to_lowercase()),
                None => match strings(field, v)?.as_slice() {
                    [one] => Condition::Reason(one.clone()),
                    _ => return Err(input("reason takes a string, $eq or $autocomplete")),
                },
            },
            "shadow" => Condition::Shadow(
                v.as_bool()
                    .or_else(|| v.get("$eq").and_then(Value::as_bool))
                    .ok_or_else(|| input("shadow must be a boolean"))?,
            ),
            "created_at" => {
                let m = v
                    .as_object()
                    .filter(|m| m.len() == 1)
                    .ok_or_else(|| input("created_at takes one of $gt, $gte, $lt, $lte"))?;
                let (op, at) = m.iter().next().expect("one entry");
                let op = match op.as_str() {
                    "$gt" => "$gt",
                    "$gte" => "$gte",
                    "$lt" => "$lt",
                    "$lte" => "$lte",
                    _ => return Err(input("created_at takes one of $gt, $gte, $lt, $lte")),
                };
                let at = at
                    .as_str()
                    .and_then(Timestamp::parse)
                    .ok_or_else(|| input("created_at must be compared with a timestamp"))?;
                Condition::Created(op, at)
            }
            "channel_cid" => Condition::Channel,
            other => {
                return Err(input(format!(
                    "bans cannot be filtered on {other}: user_id, banned_by_id, reason, shadow, \
                     created_at and channel_cid can"
                )))
            }
        })
    }

    /// The user query for one page of the users a ban holds on (at `offset`), narrowed to
    /// the `user_id` condition when there is one.
    pub fn users_page(&self, offset: usize) -> Result<UserQuery, ApiError> {
        let mut filter = vec![json!({"$or": [{"banned": true}, {"shadow_banned": true}]})];
        for c in &self.conditions {
            if let Condition::UserIn(ids) = c {
                filter.push(json!({"id": {"$in": ids}}));
            }
        }
        let mut payload = Map::new();
        payload.insert("filter_conditions".into(), json!({ "$and": filter }));
        payload.insert("sort".into(), json!([{"field": "id", "direction": 1}]));
        payload.insert("limit".into(), json!(Self::PAGE));
        payload.insert("offset".into(), json!(offset));
        payload.insert("include_deactivated_users".into(), json!(true));
        UserQuery::parse(&Value::Object(payload))
    }

    /// Whether the ban of `user_id` meets every condition.
    pub fn admits(&self, user_id: &str, ban: &Ban) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::UserIn(ids) => ids.iter().any(|id| id == user_id),
            Condition::ByIn(ids) => ban.banned_by_id.as_ref().is_some_and(|by| ids.contains(by)),
            Condition::Reason(r) => ban.reason.as_deref() == Some(r.as_str()),
            Condition::ReasonPrefix(p) => ban
                .reason
                .as_ref()
                .is_some_and(|r| r.to_lowercase().starts_with(p.as_str())),
            Condition::Shadow(s) => ban.shadow == *s,
            Condition::Created(op, at) => match *op {
                "$gt" => ban.created_at > *at,
                "$gte" => ban.created_at >= *at,
                "$lt" => ban.created_at < *at,
                _ => ban.created_at <= *at,
            },
            Condition::Channel => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(reason: &str, shadow: bool) -> Ban {
        Ban {
            created_at: Timestamp::now(),
            expires: None,
            reason: Some(reason.into()),
            shadow,
            banned_by_id: Some("mod".into()),
        }
    }

    #[test]
    fn filters_and_paging() {
        let q = BannedQuery::parse(&json!({
            "filter_conditions": {"user_id": {"$in": ["a", "b"]}, "reason": {"$autocomplete": "SP"},
                                  "banned_by_id": "mod"},
            "sort": [{"field": "created_at", "direction": 1}], "limit": 5, "offset": 1
        }))
        .unwrap();
        assert!(q.ascending && q.limit == 5 && q.offset == 1);
        assert!(q.admits("a", &ban("spam", false)));
        assert!(!q.admits("c", &ban("spam", false)));
        assert!(!q.admits("a", &ban("abuse", false)));
        let shadow = BannedQuery::parse(&json!({"filter_conditions": {"shadow": true}})).unwrap();
        assert!(shadow.admits("x", &ban("r", true)) && !shadow.admits("x", &ban("r", false)));
        for bad in [
            json!({"filter_conditions": {"role": "admin"}}),
            json!({"sort": [{"field": "name", "direction": 1}]}),
            json!({"limit": 1000}),
        ] {
            assert!(BannedQuery::parse(&bad).is_err(), "{bad}");
        }
        assert!(q.users_page(0).is_ok());
    }
}
