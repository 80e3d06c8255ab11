//! User queries: the filter language of `GET /users` (`$eq`, `$in`, `$and`, ...), its sort
//! and paging, parsed once and evaluated against users' wire form.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::model::user::User;
use crate::protocol::{ApiError, Timestamp};

/// Largest page.
pub const MAX_LIMIT: usize = 100;
/// Default page size.
pub const DEFAULT_LIMIT: usize = 30;
/// Largest offset.
pub const MAX_OFFSET: usize = 1000;
/// Most sort entries.
pub const MAX_SORT: usize = 5;
/// Deepest nesting of `$and`/`$or`/`$nor` a filter may use.
pub const MAX_DEPTH: usize = 8;
/// Most conditions in one filter: each field operator counts one, and so does each
/// `$and`/`$or`/`$nor` and each empty sub-filter `{}`. Every condition is evaluated against
/// every stored user, so this bounds a query's CPU cost per user.
pub const MAX_CONDITIONS: usize = 32;
/// Most values in one `$in` or `$nin` list.
pub const MAX_IN_VALUES: usize = 1000;
/// Longest `$autocomplete` operand, in bytes.
pub const MAX_AUTOCOMPLETE_BYTES: usize = 255;
/// How much of a string field `$autocomplete` and `$contains` read: the largest custom data
/// a user may carry, so every field that fits the user bounds is read whole.
pub const MAX_SCANNED_BYTES: usize = crate::model::bounds::MAX_CUSTOM_BYTES;

/// A parsed query.
#[derive(Debug, Clone)]
pub struct UserQuery {
    /// What users must match.
    pub filter: Filter,
    /// Sort keys: field and direction (1 ascending, -1 descending).
    pub sort: Vec<(String, i8)>,
    /// Page size.
    pub limit: usize,
    /// Users skipped.
    pub offset: usize,
    /// Whether deactivated users are returned.
    pub include_deactivated: bool,
    /// Largest page, in bytes of the stored users (`limits.max_query_response_bytes`, set
    /// by the service; unbounded as parsed).
    pub max_answer_bytes: usize,
    /// Who is online, for filters and sorts on `online` (set by the service from presence;
    /// as parsed, nobody is).
    pub online: OnlineCheck,
    /// Invisible users count as offline (for every caller but the server).
    pub invisible_offline: bool,
}

/// Whether a user (by id) is online.
type IsOnline = dyn Fn(&str) -> bool + Send + Sync;

/// Tells whether a user is online, as presence knows it when the query runs.
#[derive(Clone, Default)]
pub struct OnlineCheck(Option<std::sync::Arc<IsOnline>>);

impl OnlineCheck {
    /// A check asking `f`.
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }

    /// Whether `user_id` is online.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.0.as_ref().is_some_and(|f| f(user_id))
    }
}

impl std::fmt::Debug for OnlineCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnlineCheck(presence)"
        } else {
            "OnlineCheck(none)"
        })
    }
}

/// A filter expression.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every sub-filter matches.
    And(Vec<Filter>),
    /// At least one matches.
    Or(Vec<Filter>),
    /// None matches.
    Nor(Vec<Filter>),
    /// A condition on one field.
    Field {
        /// The field (dotted paths reach into objects).
        field: String,
        /// The operator.
        op: Op,
        /// The operand.
        value: Value,
    },
}

/// Field operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal (or, for an array field, containing).
    Eq,
    /// Not equal.
    Ne,
    /// One of.
    In,
    /// None of.
    Nin,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less or equal.
    Lte,
    /// Field present (operand true) or absent (false).
    Exists,
    /// A word of the field starts with the operand.
    Autocomplete,
    /// The array field contains the operand.
    Contains,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "$eq" => Self::Eq,
            "$ne" => Self::Ne,
            "$in" => Self::In,
            "$nin" => Self::Nin,
            "$gt" => Self::Gt,
            "$gte" => Self::Gte,
            "$lt" => Self::Lt,
            "$lte" => Self::Lte,
            "$exists" => Self::Exists,
            "$autocomplete" => Self::Autocomplete,
            "$contains" => Self::Contains,
            _ => return None,
        })
    }
}

/// Paging by id beside `filter_conditions` (`id_gt`, `id_gte`, `id_lt`, `id_lte`): each one
/// given is one more condition on `id`, ANDed with the filter.
fn with_id_paging(filter: Filter, payload: &Map<String, Value>) -> Result<Filter, ApiError> {
    let mut conditions = Vec::new();
    for (key, op) in [
        ("id_gt", Op::Gt),
        ("id_gte", Op::Gte),
        ("id_lt", Op::Lt),
        ("id_lte", Op::Lte),
    ] {
        match payload.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if !id.is_empty() => conditions.push(Filter::Field {
                field: "id".into(),
                op,
                value: Value::String(id.clone()),
            }),
            Some(Value::String(_)) => {}
            Some(_) => return Err(ApiError::input(format!("{key} must be a user id"))),
        }
    }
    if conditions.is_empty() {
        return Ok(filter);
    }
    conditions.insert(0, filter);
    Ok(Filter::And(conditions))
}

impl UserQuery {
    /// Parses the query payload the SDKs send.
    pub fn parse(payload: &Value) -> Result<Self, ApiError> {
        let obj = payload
            .as_object()
            .ok_or_else(|| ApiError::input("payload must be a JSON object"))?;
        let filter = match obj.get("filter_conditions") {
            None | Some(Value::Null) => Filter::And(Vec::new()),
            Some(Value::Object(m)) => parse_filter(m, 0, &mut 0)?,
            Some(_) => return Err(ApiError::input("filter_conditions must be an object")),
        };
        let filter = with_id_paging(filter, obj)?;
        let sort = parse_sort(obj.get("sort"))?;
        let limit = match obj.get("limit") {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(v) => match v.as_u64() {
                Some(0) => DEFAULT_LIMIT,
                Some(n) if n as usize <= MAX_LIMIT => n as usize,
                _ => {
                    return Err(ApiError::input(format!(
                        "limit must be a number between 0 and {MAX_LIMIT}"
                    )))
                }
            },
        };
        let offset = match obj.get("offset") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(n) if n as usize <= MAX_OFFSET => n as usize,
                _ => {
                    return Err(ApiError::input(format!(
                        "offset must be a number between 0 and {MAX_OFFSET}"
                    )))
                }
            },
        };
        let include_deactivated = obj
            .get("include_deactivated_users")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            filter,
            sort,
            limit,
            offset,
            include_deactivated,
            max_answer_bytes: usize::MAX,
            online: OnlineCheck::default(),
            invisible_offline: false,
        })
    }

    /// Whether the filter or the sort reads `online` (only then does a query need to know
    /// who is online while it runs; the page's own `online` values are read afterwards).
    pub fn reads_online(&self) -> bool {
        fn in_filter(f: &Filter) -> bool {
            match f {
                Filter::And(fs) | Filter::Or(fs) | Filter::Nor(fs) => fs.iter().any(in_filter),
                Filter::Field { field, .. } => field == "online",
            }
        }
        in_filter(&self.filter) || self.sort.iter().any(|(field, _)| field == "online")
    }

    /// Whether a stored user belongs in the result before paging.
    pub fn admits(&self, user: &User) -> bool {
        self.admit(user).is_some()
    }

    /// The sort keys of a stored user that belongs in the result (before paging), or
    /// `None`. A scan keeps these and the id, not the user, so its memory does not grow with
    /// the size of the users it matches.
    pub fn admit(&self, user: &User) -> Option<SortKeys> {
        if user.deleted_at.is_some() {
            return None;
        }
        if user.deactivated_at.is_some() && !self.include_deactivated {
            return None;
        }
        let online = self.online.is_online(&user.id) && !(self.invisible_offline && user.invisible);
        let mut wire = user.to_wire(online);
        // Filterable by the back end; clients may not name it (`HIDDEN_FIELDS`).
        wire.insert(
            "shadow_banned".into(),
            Value::Bool(user.shadow_banned_at(crate::protocol::Timestamp::now())),
        );
        if !self.filter.matches(&wire) {
            return None;
        }
        Some(SortKeys(
            self.sort
                .iter()
                .map(|(field, _)| lookup(&wire, field).cloned())
                .collect(),
        ))
    }

    /// Orders matched items by their sort keys, then by id, and cuts the page.
    pub fn page<T>(&self, mut matched: Vec<(SortKeys, String, T)>) -> Vec<(String, T)> {
        matched.sort_by(|(a, ida, _), (b, idb, _)| {
            for ((_, dir), (ka, kb)) in self.sort.iter().zip(a.0.iter().zip(&b.0)) {
                let ord = compare_values(ka.as_ref(), kb.as_ref());
                let ord = if *dir < 0 { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            ida.cmp(idb)
        });
        matched
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .map(|(_, id, item)| (id, item))
            .collect()
    }

    /// Sorts the users that match and cuts the page (in memory; stores use [`Self::admit`]
    /// and [`Self::page`]).
    pub fn sort_and_page(&self, users: Vec<User>) -> Vec<User> {
        let keyed = users
            .into_iter()
            .filter_map(|u| Some((self.admit(&u)?, u.id.clone(), u)))
            .collect();
        self.page(keyed).into_iter().map(|(_, u)| u).collect()
    }
}

/// The values of a user's sort fields, in the order of the query's `sort`.
#[derive(Debug, Clone)]
pub struct SortKeys(Vec<Option<Value>>);

fn parse_sort(v: Option<&Value>) -> Result<Vec<(String, i8)>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(default_sort());
    };
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::input("sort must be a list"))?;
    if arr.len() > MAX_SORT {
        return Err(ApiError::input(format!(
            "sort accepts at most {MAX_SORT} fields"
        )));
    }
    let mut out = Vec::new();
    for entry in arr {
        let field = entry
            .get("field")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| ApiError::input("sort entries need a field"))?;
        let dir = match entry.get("direction").and_then(Value::as_i64) {
            None | Some(1) => 1,
            Some(-1) => -1,
            Some(_) => return Err(ApiError::input("sort direction must be 1 or -1")),
        };
        out.push((field.to_owned(), dir));
    }
    if out.is_empty() {
        out = default_sort();
    }
    Ok(out)
}

/// The order without `sort`: `created_at` descending, then `id` descending.
fn default_sort() -> Vec<(String, i8)> {
    vec![("created_at".into(), -1), ("id".into(), -1)]
}

/// Counts one more condition against [`MAX_CONDITIONS`].
fn count_condition(conditions: &mut usize) -> Result<(), ApiError> {
    *conditions += 1;
    if *conditions > MAX_CONDITIONS {
        return Err(ApiError::input(format!(
            "filter_conditions may hold at most {MAX_CONDITIONS} conditions"
        )));
    }
    Ok(())
}

/// Parses one filter object `depth` levels below the top, counting its conditions into
/// `conditions`.
fn parse_filter(
    m: &Map<String, Value>,
    depth: usize,
    conditions: &mut usize,
) -> Result<Filter, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::input(format!(
            "filter_conditions is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    if m.is_empty() && depth > 0 {
        count_condition(conditions)?;
    }
    let mut all = Vec::new();
    for (key, value) in m {
        match key.as_str() {
            "$and" | "$or" | "$nor" => {
                count_condition(conditions)?;
                let arr = value
                    .as_array()
                    .ok_or_else(|| ApiError::input(format!("{key} needs a list of filters")))?;
                let mut subs = Vec::with_capacity(arr.len());
                for sub in arr {
                    let sub = sub
                        .as_object()
                        .ok_or_else(|| ApiError::input(format!("{key} needs a list of filters")))?;
                    subs.push(parse_filter(sub, depth + 1, conditions)?);
                }
                all.push(match key.as_str() {
                    "$and" => Filter::And(subs),
                    "$or" => Filter::Or(subs),
                    _ => Filter::Nor(subs),
                });
            }
            k if k.starts_with('$') => {
                return Err(ApiError::input(format!("unknown filter operator {k}")))
            }
            field => match value {
                Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, operand) in ops {
                        let op = Op::parse(op).ok_or_else(|| {
                            ApiError::input(format!("unknown operator {op} on field {field}"))
                        })?;
                        count_condition(conditions)?;
                        check_operand(field, op, operand)?;
                        all.push(Filter::Field {
                            field: field.to_owned(),
                            op,
                            value: prepared_operand(op, operand),
                        });
                    }
                }
                _ => {
                    count_condition(conditions)?;
                    all.push(Filter::Field {
                        field: field.to_owned(),
                        op: Op::Eq,
                        value: value.clone(),
                    })
                }
            },
        }
    }
    Ok(if all.len() == 1 {
        all.pop().expect("one")
    } else {
        Filter::And(all)
    })
}

fn check_operand(field: &str, op: Op, operand: &Value) -> Result<(), ApiError> {
    let ok = match op {
        Op::In | Op::Nin => operand.is_array(),
        Op::Exists => operand.is_boolean(),
        Op::Autocomplete => operand.is_string(),
        _ => true,
    };
    if !ok {
        return Err(ApiError::input(format!(
            "invalid operand for {op:?} on field {field}"
        )));
    }
    match (op, operand) {
        (Op::In | Op::Nin, Value::Array(list)) if list.len() > MAX_IN_VALUES => {
            Err(ApiError::input(format!(
                "{} on field {field} has {} values, the maximum is {MAX_IN_VALUES}",
                op_name(op),
                list.len()
            )))
        }
        (Op::Autocomplete, Value::String(s)) if s.len() > MAX_AUTOCOMPLETE_BYTES => {
            Err(ApiError::input(format!(
                "$autocomplete on field {field} is {} bytes long, the maximum is \
                 {MAX_AUTOCOMPLETE_BYTES}",
                s.len()
            )))
        }
        _ => Ok(()),
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Nin => "$nin",
        _ => "$in",
    }
}

/// The operand as evaluation wants it: an `$autocomplete` prefix is lowercased once here
/// rather than once per user.
fn prepared_operand(op: Op, operand: &Value) -> Value {
    match (op, operand) {
        (Op::Autocomplete, Value::String(s)) => Value::String(s.to_lowercase()),
        _ => operand.clone(),
    }
}

impl Filter {
    /// Evaluates the filter against a user's wire form.
    pub fn matches(&self, user: &Map<String, Value>) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(user)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(user)),
            Filter::Nor(fs) => !fs.iter().any(|f| f.matches(user)),
            Filter::Field { field, op, value } => field_matches(lookup(user, field), *op, value),
        }
    }
}

fn lookup<'a>(user: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    if let Some(v) = user.get(field) {
        return Some(v);
    }
    let mut parts = field.split('.');
    let mut cur = user.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(items), scalar) if !scalar.is_array() => items.iter().any(|i| i == scalar),
        _ => compare_values(Some(a), Some(b)) == Ordering::Equal && is_time_pair(a, b),
    }
}

fn is_time_pair(a: &Value, b: &Value) -> bool {
    matches!((a, b), (Value::String(x), Value::String(y))
        if Timestamp::parse(x).is_some() && Timestamp::parse(y).is_some())
}

fn field_matches(field: Option<&Value>, op: Op, operand: &Value) -> bool {
    match op {
        Op::Exists => field.is_some_and(|v| !v.is_null()) == operand.as_bool().unwrap_or(true),
        Op::Eq => field.is_some_and(|v| equal(v, operand)),
        Op::Ne => !field.is_some_and(|v| equal(v, operand)),
        Op::In => {
            let list = operand.as_array().map(Vec::as_slice).unwrap_or(&[]);
            field.is_some_and(|v| list.iter().any(|o| equal(v, o)))
        }
        Op::Nin => {
            let list = operand.as_array().map(Vec::as_slice).unwrap_or(&[]);
            !field.is_some_and(|v| list.iter().any(|o| equal(v, o)))
        }
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            let Some(v) = field.filter(|v| comparable(v, operand)) else {
                return false;
            };
            let ord = compare_values(Some(v), Some(operand));
            match op {
                Op::Gt => ord == Ordering::Greater,
                Op::Gte => ord != Ordering::Less,
                Op::Lt => ord == Ordering::Less,
                _ => ord != Ordering::Greater,
            }
        }
        Op::Autocomplete => {
            let prefix = operand.as_str().unwrap_or_default();
            field
                .and_then(Value::as_str)
                .is_some_and(|text| autocompletes(scan_window(text), prefix))
        }
        Op::Contains => match field {
            Some(Value::Array(items)) => items.iter().any(|i| i == operand),
            Some(Value::String(s)) => operand.as_str().is_some_and(|o| scan_window(s).contains(o)),
            _ => false,
        },
    }
}

/// The part of a string field that text operators (`$autocomplete`, `$contains` on a string)
/// look at: its first [`MAX_SCANNED_BYTES`], cut at a character boundary. Every string a user
/// can store now is shorter; the cut bounds the cost of each condition on users stored before
/// the size bounds, whose fields may be megabytes long.
pub fn scan_window(text: &str) -> &str {
    if text.len() <= MAX_SCANNED_BYTES {
        return text;
    }
    let mut end = MAX_SCANNED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `text`, or one of its words, starts with `prefix` (already lowercase), ignoring
/// case, without building a lowercased copy of `text`.
fn autocompletes(text: &str, prefix: &str) -> bool {
    starts_with_lowercase(text, prefix)
        || text
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| !w.is_empty() && starts_with_lowercase(w, prefix))
}

fn starts_with_lowercase(text: &str, prefix: &str) -> bool {
    let mut lowered = text.chars().flat_map(char::to_lowercase);
    prefix.chars().all(|p| lowered.next() == Some(p))
}

fn comparable(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_))
    )
}

fn rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Bool(_)) => 1,
        Some(Value::Number(_)) => 2,
        Some(Value::String(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Object(_)) => 5,
    }
}

fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => {
            match (Timestamp::parse(x), Timestamp::parse(y)) {
                (Some(tx), Some(ty)) => tx.cmp(&ty),
                _ => x.cmp(y),
            }
        }
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_queries_on_online_need_presence_while_they_run() {
        let q = |v: Value| UserQuery::parse(&v).unwrap().reads_online();
        assert!(!q(json!({"filter_conditions": {"id": "a"}})));
        assert!(q(json!({"filter_conditions": {"online": true}})));
        assert!(q(
            json!({"filter_conditions": {"$or": [{"id": "a"}, {"$and": [{"online": false}]}]}})
        ));
        assert!(q(
            json!({"filter_conditions": {}, "sort": [{"field": "online", "direction": -1}]})
        ));
    }

    fn user(id: &str, extra: Value) -> User {
        let mut u = User::new(id, Timestamp::now());
        let mut fields = extra.as_object().unwrap().clone();
        fields.insert("id".into(), json!(id));
        u.replace_settable(&fields).unwrap();
        u
    }

    #[test]
    fn operators() {
        let u = user(
            "alice",
            json!({"name":"Alice Smith","teams":["red"],"age":30}),
        );
        let q = |f: Value| {
            UserQuery::parse(&json!({ "filter_conditions": f }))
                .unwrap()
                .admits(&u)
        };
        assert!(q(json!({"id":"alice"})));
        assert!(q(json!({"id":{"$in":["bob","alice"]}})));
        assert!(!q(json!({"id":{"$nin":["alice"]}})));
        assert!(q(json!({"age":{"$gte":30,"$lt":31}})));
        assert!(q(json!({"name":{"$autocomplete":"smi"}})));
        assert!(q(json!({"teams":{"$contains":"red"}})));
        assert!(q(json!({"$or":[{"id":"x"},{"role":"user"}]})));
        assert!(!q(json!({"$nor":[{"role":"user"}]})));
        assert!(q(json!({"missing":{"$exists":false}})));
        assert!(UserQuery::parse(&json!({"filter_conditions":{"id":{"$bad":1}}})).is_err());
        assert!(UserQuery::parse(&json!({"limit":101})).is_err());
        assert!(UserQuery::parse(&json!({"offset":1001})).is_err());
    }

    fn parses(filter: Value) -> bool {
        UserQuery::parse(&json!({ "filter_conditions": filter })).is_ok()
    }

    #[test]
    fn conditions_are_bounded_across_and_or_nor() {
        let leaves = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({ format!("f{i}"): {"$autocomplete": "a"} }))
                .collect()
        };
        // `$or` itself counts as one.
        assert!(parses(json!({"$or": leaves(MAX_CONDITIONS - 1)})));
        assert!(!parses(json!({"$or": leaves(MAX_CONDITIONS)})));
        // Spread over several operators, nesting levels and fields, they add up.
        let half = MAX_CONDITIONS / 2;
        assert!(!parses(
            json!({"$and": [{"$or": leaves(half)}, {"$nor": leaves(half)}]})
        ));
        let many_fields: Map<String, Value> = (0..=MAX_CONDITIONS)
            .map(|i| (format!("f{i}"), json!(i)))
            .collect();
        assert!(!parses(Value::Object(many_fields)));
        // Empty sub-filters count too, so they cannot multiply evaluation work.
        assert!(!parses(json!({"$or": vec![json!({}); MAX_CONDITIONS]})));
    }

    #[test]
    fn depth_in_lists_and_autocomplete_are_bounded() {
        let mut nested = json!({"id": "a"});
        for _ in 0..MAX_DEPTH {
            nested = json!({ "$and": [nested] });
        }
        assert!(parses(nested.clone()));
        assert!(!parses(json!({ "$and": [nested] })));
        let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("u{i}")).collect() };
        assert!(parses(json!({"id": {"$in": ids(MAX_IN_VALUES)}})));
        assert!(!parses(json!({"id": {"$in": ids(MAX_IN_VALUES + 1)}})));
        assert!(!parses(json!({"id": {"$nin": ids(MAX_IN_VALUES + 1)}})));
        let word = "a".repeat(MAX_AUTOCOMPLETE_BYTES);
        assert!(parses(json!({"name": {"$autocomplete": word}})));
        let word = "a".repeat(MAX_AUTOCOMPLETE_BYTES + 1);
        assert!(!parses(json!({"name": {"$autocomplete": word}})));
    }

    #[test]
    fn text_operators_read_a_bounded_window_of_legacy_fields() {
        let mut u = user("old", json!({}));
        let long = format!("{} Tail", "é".repeat(MAX_SCANNED_BYTES));
        u.name = Some(long);
        let q = |f: Value| {
            UserQuery::parse(&json!({ "filter_conditions": f }))
                .unwrap()
                .admits(&u)
        };
        assert!(q(json!({"name": {"$autocomplete": "éé"}})));
        assert!(
            !q(json!({"name": {"$autocomplete": "tail"}})),
            "beyond the window"
        );
        assert!(
            !q(json!({"name": {"$contains": "Tail"}})),
            "beyond the window"
        );
    }

    #[test]
    fn autocomplete_is_case_insensitive_both_ways() {
        let u = user("bob", json!({"name": "Zoë Ängström"}));
        let q = |f: Value| {
            UserQuery::parse(&json!({ "filter_conditions": f }))
                .unwrap()
                .admits(&u)
        };
        assert!(q(json!({"name": {"$autocomplete": "ÄNG"}})));
        assert!(q(json!({"name": {"$autocomplete": "zo"}})));
        assert!(!q(json!({"name": {"$autocomplete": "str"}})));
    }
}
