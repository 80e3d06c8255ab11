//! Runs a query's plan: finds the ids of the page (reading and checking only the users the
//! plan names), then reads the page's users within the answer's size bound.

use std::collections::BTreeSet;

use super::planner::{self, Plan};
use super::{indexes, sled_error, Inner};
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::store::StoreError;

/// The page of users `query` asks for, exactly as a scan of every user would answer it.
pub fn run(inner: &Inner, query: &UserQuery) -> Result<Vec<User>, StoreError> {
    let ids = match planner::plan(query, &inner.index, inner.limits)? {
        Plan::Candidates(ids) => sorted(inner, query, ids.iter().map(|id| Ok(id.clone())))?,
        Plan::Scan => sorted(
            inner,
            query,
            inner.users.iter().keys().map(|k| {
                let k = k.map_err(sled_error)?;
                String::from_utf8(k.to_vec()).map_err(|_| StoreError::Corrupt("user id".into()))
            }),
        )?,
        Plan::Walk {
            descending,
            ids_descending,
            only,
        } => walk(inner, query, descending, ids_descending, only.as_ref())?,
    };
    // Then read the page's users again, within the answer's size bound. One changed or
    // deleted meanwhile keeps its place or is left out.
    let mut page = Vec::new();
    let mut bytes_read = 0usize;
    for id in ids {
        let Some(bytes) = inner.users.get(id.as_bytes()).map_err(sled_error)? else {
            continue;
        };
        bytes_read = bytes_read.saturating_add(bytes.len());
        if bytes_read > query.max_answer_bytes {
            return Err(StoreError::AnswerTooLarge(query.max_answer_bytes));
        }
        let user = inner.decode_user(&bytes)?.user;
        if query.admits(&user) {
            page.push(user);
        }
    }
    Ok(page)
}

/// The user `id` if it is stored and matches.
fn admitted(inner: &Inner, query: &UserQuery, id: &str) -> Result<Option<User>, StoreError> {
    let Some(bytes) = inner.users.get(id.as_bytes()).map_err(sled_error)? else {
        return Ok(None);
    };
    let user = inner.decode_user(&bytes)?.user;
    Ok(query.admits(&user).then_some(user))
}

/// Reads each user of `ids`, keeps the sort keys and ids of the matches (not the users:
/// users stored before the size bounds may be megabytes each), sorts and cuts the page.
fn sorted(
    inner: &Inner,
    query: &UserQuery,
    ids: impl Iterator<Item = Result<String, StoreError>>,
) -> Result<Vec<String>, StoreError> {
    let mut matched = Vec::new();
    for id in ids {
        let id = id?;
        let Some(bytes) = inner.users.get(id.as_bytes()).map_err(sled_error)? else {
            continue;
        };
        let user = inner.decode_user(&bytes)?.user;
        if let Some(keys) = query.admit(&user) {
            matched.push((keys, user.id, ()));
        }
    }
    Ok(query.page(matched).into_iter().map(|(id, ())| id).collect())
}

/// Walks the `created_at` index in the query's order until `offset + limit` users match,
/// reading only the users in `only` when given. Users created at the same instant are
/// gathered and put in the order of the sort's tie-break (id) before they count.
fn walk(
    inner: &Inner,
    query: &UserQuery,
    descending: bool,
    ids_descending: bool,
    only: Option<&BTreeSet<String>>,
) -> Result<Vec<String>, StoreError> {
    let tag = indexes::time_tag("created_at").expect("created_at is indexed");
    let range = inner.index.range(vec![tag]..vec![tag + 1]).keys();
    let mut keys: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = if descending {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let wanted = query.offset + query.limit;
    let mut matched: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut group: Vec<String> = Vec::new();
    let mut group_at: Option<Vec<u8>> = None;
    let mut flush =
        |group: &mut Vec<String>, matched: &mut Vec<String>| -> Result<(), StoreError> {
            group.sort();
            if ids_descending {
                group.reverse();
            }
            for id in group.drain(..) {
                if matched.len() >= wanted {
                    break;
                }
                // A user whose creation time changed during the walk may be met twice.
                if seen.insert(id.clone()) && admitted(inner, query, &id)?.is_some() {
                    matched.push(id);
                }
            }
            Ok(())
        };
    loop {
        let next = keys.next().transpose().map_err(sled_error)?;
        let at = next.as_ref().map(|k| k[..k.len().min(17)].to_vec());
        if at != group_at {
            flush(&mut group, &mut matched)?;
            if matched.len() >= wanted {
                break;
            }
            group_at = at;
        }
        let Some(key) = next else { break };
        let id = indexes::id_of(&key)?;
        if only.is_none_or(|only| only.contains(id)) {
            group.push(id.to_owned());
        }
    }
    Ok(matched.into_iter().skip(query.offset).collect())
}
