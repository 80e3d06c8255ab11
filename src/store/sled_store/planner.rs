//! The query planner: which users a query reads. It never decides what matches — every user it
//! reads is checked against the whole filter, as a scan would — only where to look.
//!
//! Rules, in order:
//! 1. The conditions an index serves yield candidate ids: `id` `$eq` / `$in` (the primary
//!    tree), `role` `$eq` / `$in`, `teams` `$eq` / `$in` / `$contains`, `banned: true`,
//!    `name` `$eq` / `$autocomplete`, and `$eq` / `$gt` / `$gte` / `$lt` / `$lte` /
//!    `$exists: true` on `created_at`, `updated_at`, `last_active`, `deactivated_at`,
//!    `deleted_at` (with timestamp operands). Of an `$and`, the most selective served
//!    condition is used (each is read only until it exceeds the best so far); an `$or` is
//!    served when every branch is, by the union. Anything else (`$ne`, `$nin`, `$nor`,
//!    `$exists: false`, custom fields, operands an index cannot compare exactly) is left to
//!    the check of each candidate.
//! 2. A sort on `created_at` (then, optionally, `id`) — the default — walks the `created_at`
//!    index in order and stops once `offset + limit` users match, instead of sorting: over
//!    every user when no condition is served, or over the candidates when they are many.
//! 3. Few candidates are read and sorted in memory; without candidates and without a
//!    walkable sort, every user is read (a scan).

use std::collections::BTreeSet;

use serde_json::Value;

use super::indexes::{self, string_exact, string_prefix, text_key, text_prefix, time_prefix};
use super::sled_error;
use crate::model::query::{Filter, Op, UserQuery};
use crate::protocol::Timestamp;
use crate::store::StoreError;

/// The planner's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerLimits {
    /// Most candidates an index condition may yield before it counts as not selective
    /// (default 20,000).
    pub max_candidates: usize,
    /// Above this many candidates a walkable sort walks the `created_at` index rather than
    /// reading and sorting every candidate (default 1,000).
    pub walk_above: usize,
}

impl Default for PlannerLimits {
    fn default() -> Self {
        Self {
            max_candidates: 20_000,
            walk_above: 1_000,
        }
    }
}

/// How a query reads users.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Read these users (ids that may not exist) and sort them in memory.
    Candidates(BTreeSet<String>),
    /// Walk the `created_at` index in sort order, reading only users in `only` if given.
    Walk {
        /// `created_at` descending.
        descending: bool,
        /// Ties on `created_at` by id descending.
        ids_descending: bool,
        /// The candidates, when a condition yielded some.
        only: Option<BTreeSet<String>>,
    },
    /// Read every user.
    Scan,
}

/// Chooses how to answer `query` from the index tree.
pub fn plan(
    query: &UserQuery,
    index: &sled::Tree,
    limits: PlannerLimits,
) -> Result<Plan, StoreError> {
    let candidates = serve(&query.filter, index, limits.max_candidates)?;
    let walk = walk_order(&query.sort);
    Ok(match (candidates, walk) {
        (Some(ids), Some((descending, ids_descending))) if ids.len() > limits.walk_above => {
            Plan::Walk {
                descending,
                ids_descending,
                only: Some(ids),
            }
        }
        (Some(ids), _) => Plan::Candidates(ids),
        (None, Some((descending, ids_descending))) => Plan::Walk {
            descending,
            ids_descending,
            only: None,
        },
        (None, None) => Plan::Scan,
    })
}

/// `(created_at descending, ties by id descending)` when the sort is one the `created_at`
/// index gives in order.
fn walk_order(sort: &[(String, i8)]) -> Option<(bool, bool)> {
    match sort {
        [(f, d)] if f == "created_at" => Some((*d < 0, false)),
        [(f, d), (g, e)] if f == "created_at" && g == "id" => Some((*d < 0, *e < 0)),
        _ => None,
    }
}

/// A string operand an index compares exactly: the filter's equality treats two strings that
/// both parse as timestamps as equal instants, which no string index can answer.
fn plain_str(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| Timestamp::parse(s).is_none())
}

/// All plain strings, or `None`.
fn plain_strs(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(plain_str).collect()
}

/// The candidate ids of a filter, or `None` when no index serves it or it yields more than
/// `cap` ids.
fn serve(
    filter: &Filter,
    index: &sled::Tree,
    cap: usize,
) -> Result<Option<BTreeSet<String>>, StoreError> {
    match filter {
        Filter::And(subs) => {
            let mut best: Option<BTreeSet<String>> = None;
            for sub in subs {
                let cap = best.as_ref().map_or(cap, |b| b.len().saturating_sub(1));
                if let Some(ids) = serve(sub, index, cap)? {
                    best = Some(ids);
                }
                if best.as_ref().is_some_and(BTreeSet::is_empty) {
                    break;
                }
            }
            Ok(best)
        }
        Filter::Or(subs) => {
            let mut all = BTreeSet::new();
            for sub in subs {
                match serve(sub, index, cap)? {
                    Some(ids) => all.extend(ids),
                    None => return Ok(None),
                }
                if all.len() > cap {
                    return Ok(None);
                }
            }
            Ok(Some(all))
        }
        Filter::Nor(_) => Ok(None),
        Filter::Field { field, op, value } => serve_field(field, *op, value, index, cap),
    }
}

/// What one condition on one field reads.
enum Lookup {
    /// These ids.
    Ids(Vec<String>),
    /// Entries under each prefix.
    Prefixes(Vec<Vec<u8>>),
    /// Entries in `[from, to)`.
    Range(Vec<u8>, Vec<u8>),
}

fn lookup_of(field: &str, op: Op, value: &Value) -> Option<Lookup> {
    use Lookup::*;
    let exact = |tag: u8, values: Vec<&str>| {
        Prefixes(values.into_iter().map(|s| string_exact(tag, s)).collect())
    };
    Some(match (field, op) {
        ("id", Op::Eq) => Ids(vec![plain_str(value)?.to_owned()]),
        ("id", Op::In) => Ids(plain_strs(value)?.into_iter().map(str::to_owned).collect()),
        ("role", Op::Eq) => exact(indexes::ROLE, vec![plain_str(value)?]),
        ("role", Op::In) => exact(indexes::ROLE, plain_strs(value)?),
        ("teams", Op::Eq | Op::Contains) => exact(indexes::TEAM, vec![plain_str(value)?]),
        ("teams", Op::In) => exact(indexes::TEAM, plain_strs(value)?),
        // `b1` is every user with an open ban record, a superset of those it holds on now;
        // an expired ban is still `b1`, so `banned: false` cannot be served.
        ("banned", Op::Eq) if value.as_bool()? => Prefixes(vec![vec![indexes::BANNED, 1]]),
        ("name", Op::Eq) => {
            let text = text_key(plain_str(value)?);
            Prefixes(vec![string_exact(indexes::NAME, &text)])
        }
        ("name", Op::Autocomplete) => {
            // Already lowercased by the parser; every name starts with "".
            let prefix = text_prefix(value.as_str().filter(|s| !s.is_empty())?);
            Prefixes(vec![string_prefix(indexes::NAME, prefix)])
        }
        (field, op) => {
            let tag = indexes::time_tag(field)?;
            let whole = || Range(vec![tag], vec![tag + 1]);
            if op == Op::Exists {
                return value.as_bool().filter(|b| *b).map(|_| whole());
            }
            let at = Timestamp::parse(value.as_str()?)?;
            let point = time_prefix(tag, at);
            let mut after = point.clone();
            after.push(0xFF); // past every id at this instant (ids are ASCII)
            match op {
                Op::Eq => Range(point, after),
                Op::Gt | Op::Gte => Range(point, vec![tag + 1]),
                Op::Lt | Op::Lte => Range(vec![tag], after),
                _ => return None,
            }
        }
    })
}

fn serve_field(
    field: &str,
    op: Op,
    value: &Value,
    index: &sled::Tree,
    cap: usize,
) -> Result<Option<BTreeSet<String>>, StoreError> {
    let Some(lookup) = lookup_of(field, op, value) else {
        return Ok(None);
    };
    let mut ids = BTreeSet::new();
    let mut add = |key: &[u8]| -> Result<bool, StoreError> {
        ids.insert(indexes::id_of(key)?.to_owned());
        Ok(ids.len() <= cap)
    };
    match lookup {
        Lookup::Ids(list) => {
            if list.len() > cap {
                return Ok(None);
            }
            return Ok(Some(list.into_iter().collect()));
        }
        Lookup::Prefixes(prefixes) => {
            for prefix in prefixes {
                for key in index.scan_prefix(prefix).keys() {
                    if !add(&key.map_err(sled_error)?)? {
                        return Ok(None);
                    }
                }
            }
        }
        Lookup::Range(from, to) => {
            for key in index.range(from..to).keys() {
                if !add(&key.map_err(sled_error)?)? {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(ids))
}
