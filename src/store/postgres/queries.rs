//! User queries on PostgreSQL. For now the filter and the sort run in Rust, with the same
//! evaluation as sled ([`UserQuery::admit`] and [`UserQuery::page`]), over every user row
//! streamed from the table: correct for every query the model accepts, linear in the number
//! of users. Pushing filters and sorts into SQL (indexed columns) is a later step.

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;

use super::pg_error;
use super::users::stored_user;
use crate::model::query::UserQuery;
use crate::model::user::User;
use crate::store::StoreError;

/// Users matching a query, never soft-deleted ones; a page whose documents add up to more
/// than `query.max_answer_bytes` is refused before its documents are read.
pub async fn query_users(
    client: &tokio_postgres::Client,
    query: &UserQuery,
) -> Result<Vec<User>, StoreError> {
    // Keep the sort keys and ids of the matches, not the users (see the sled store).
    let no_params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let rows = client
        .query_raw("SELECT version, doc, last_active FROM users", no_params)
        .await
        .map_err(pg_error)?;
    pin_mut!(rows);
    let mut matched = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(pg_error)? {
        let user = stored_user(row.get(0), row.get(1), row.get(2))?.user;
        if let Some(keys) = query.admit(&user) {
            matched.push((keys, user.id, ()));
        }
    }
    let page: Vec<String> = query.page(matched).into_iter().map(|(id, ())| id).collect();
    if page.is_empty() {
        return Ok(Vec::new());
    }
    // Sizes first, in page order: refuse an oversized page without reading it.
    let sizes = client
        .query(
            "SELECT id, octet_length(doc)::bigint FROM users WHERE id = ANY($1)",
            &[&page],
        )
        .await
        .map_err(pg_error)?;
    let size_of = |id: &str| -> i64 {
        sizes
            .iter()
            .find(|r| r.get::<_, &str>(0) == id)
            .map(|r| r.get(1))
            .unwrap_or(0)
    };
    let mut total = 0usize;
    for id in &page {
        total = total.saturating_add(size_of(id).max(0) as usize);
        if total > query.max_answer_bytes {
            return Err(StoreError::AnswerTooLarge(query.max_answer_bytes));
        }
    }
    // Then the page's users again: one changed or deleted meanwhile keeps its place or is
    // left out.
    let rows = client
        .query(
            "SELECT id, version, doc, last_active FROM users WHERE id = ANY($1)",
            &[&page],
        )
        .await
        .map_err(pg_error)?;
    let mut users = Vec::with_capacity(page.len());
    for id in &page {
        let Some(row) = rows.iter().find(|r| r.get::<_, &str>(0) == id) else {
            continue;
        };
        let user = stored_user(row.get(1), row.get(2), row.get(3))?.user;
        if query.admits(&user) {
            users.push(user);
        }
    }
    Ok(users)
}
