//! The outbox: events recorded in the transaction of the write they describe, and the
//! notification that tells the other nodes where to read them.
//!
//! A notification carries no event, only `"<node> <first seq> <last seq>"`: a frame can be
//! larger than `NOTIFY`'s 8000 bytes, so the listening nodes read the rows. Both the rows and
//! the notification belong to the write's transaction: they exist only if it commits, and it
//! cannot commit without them. Sequence numbers are taken before commit, so transactions
//! commit out of order; readers go by the notified range (and, after missing notifications,
//! by time with a margin), never by "greater than the last seen".

use deadpool_postgres::GenericClient;

use super::pg_error;
use crate::store::StoreError;

/// The `LISTEN` channel of the outbox.
pub const CHANNEL: &str = "chat_gateway_events";

/// Records `events` from `node` and notifies their range, in the caller's transaction (or
/// as one statement on its own).
pub async fn record(
    client: &impl GenericClient,
    node: &str,
    events: &[String],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare_cached(
            "WITH added AS (
                 INSERT INTO outbox (node, event)
                 SELECT $1, e FROM unnest($2::text[]) WITH ORDINALITY AS u (e, n) ORDER BY n
                 RETURNING seq
             )
             SELECT pg_notify($3, $1 || ' ' || min(seq) || ' ' || max(seq)) FROM added",
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(&stmt, &[&node, &events, &CHANNEL])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// What one notification says: who wrote, and the range of sequence numbers to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The writing node.
    pub node: String,
    /// The first sequence number of the write's events.
    pub first: i64,
    /// The last.
    pub last: i64,
}

impl Notice {
    /// Parses a notification payload.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let node = parts.next()?.to_owned();
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        (parts.next().is_none() && first <= last).then_some(Self { node, first, last })
    }
}

/// One recorded event.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its sequence number.
    pub seq: i64,
    /// The node that wrote it.
    pub node: String,
    /// The event as its bus encoded it.
    pub event: String,
}

fn recorded(row: &tokio_postgres::Row) -> Recorded {
    Recorded {
        seq: row.get(0),
        node: row.get(1),
        event: row.get(2),
    }
}

/// The events of a notified range written by its node, in order.
pub async fn read_range(
    client: &impl GenericClient,
    notice: &Notice,
) -> Result<Vec<Recorded>, StoreError> {
    let rows = client
        .query(
            "SELECT seq, node, event FROM outbox
             WHERE seq BETWEEN $1 AND $2 AND node = $3 ORDER BY seq",
            &[&notice.first, &notice.last, &notice.node],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(recorded).collect())
}

/// The events other nodes than `me` recorded since `since_ms` (database clock, Unix ms), in
/// order: what a listener replays after its connection was down.
pub async fn read_since(
    client: &impl GenericClient,
    me: &str,
    since_ms: i64,
) -> Result<Vec<Recorded>, StoreError> {
    let rows = client
        .query(
            "SELECT seq, node, event FROM outbox
             WHERE at >= to_timestamp($1::double precision / 1000) AND node <> $2
             ORDER BY seq",
            &[&(since_ms as f64), &me],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(recorded).collect())
}

/// Deletes events older than `keep_secs`; returns how many.
pub async fn prune(client: &impl GenericClient, keep_secs: i64) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM outbox WHERE at < now() - make_interval(secs => $1::double precision)",
            &[&(keep_secs as f64)],
        )
        .await
        .map_err(pg_error)
}

#[cfg(test)]
mod tests {
    use super::Notice;

    #[test]
    fn notices_parse_and_refuse_garbage() {
        assert_eq!(
            Notice::parse("n1 4 9"),
            Some(Notice {
                node: "n1".into(),
                first: 4,
                last: 9
            })
        );
        assert_eq!(Notice::parse("n1 9 4"), None);
        assert_eq!(Notice::parse("n1 4"), None);
        assert_eq!(Notice::parse("n1 4 9 10"), None);
        assert_eq!(Notice::parse("n1 x 9"), None);
    }
}
