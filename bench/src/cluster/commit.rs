//! PostgreSQL commit latency measured straight through the client: small committed INSERTs
//! one at a time, alone and with a `NOTIFY` in the same transaction (what a gateway write
//! adds to wake the other nodes).

use crate::stats::{micros, LatencySummary};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tokio_postgres::NoTls;

/// Latencies of one-row transactions, from sending the first statement to the commit's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitReport {
    /// `INSERT` of one small row in autocommit.
    pub insert: LatencySummary,
    /// `BEGIN; INSERT …; NOTIFY …; COMMIT` sent as one round trip.
    pub insert_notify: LatencySummary,
}

/// Runs `samples` commits of each kind, alternating, in a scratch table of the database at `url`.
pub async fn measure_commits(url: &str, samples: usize) -> Result<CommitReport, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("commit probe cannot reach PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    let err = |e: tokio_postgres::Error| format!("commit probe: {e}");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_commit \
             (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)",
        )
        .await
        .map_err(err)?;
    let insert = client
        .prepare("INSERT INTO bench_commit (body) VALUES ($1)")
        .await
        .map_err(err)?;
    let (mut plain_us, mut notify_us) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let body = format!("{{\"id\":\"probe{i}\",\"n\":{i}}}");
        let t0 = Instant::now();
        client.execute(&insert, &[&body]).await.map_err(err)?;
        plain_us.push(micros(t0.elapsed()));

        // The simple-query protocol sends the whole transaction in one round trip.
        let t0 = Instant::now();
        client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO bench_commit (body) VALUES ('{body}'); \
                 NOTIFY bench_commit, '{i}'; COMMIT"
            ))
            .await
            .map_err(err)?;
        notify_us.push(micros(t0.elapsed()));
    }
    Ok(CommitReport {
        insert: LatencySummary::from_micros(&mut plain_us),
        insert_notify: LatencySummary::from_micros(&mut notify_us),
    })
}
