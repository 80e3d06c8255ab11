//! User queries against the admin listener: builds a population of users through `POST /users`
//! in batches, then times each kind of `GET /users` query the SDKs send, one at a time.

use crate::admin::drive;
use crate::auth::TokenMinter;
use crate::stats::{micros, LatencySummary};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `loadgen query`.
#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// Admin listener base URL.
    #[arg(long, default_value = "http://127.0.0.1:4601")]
    pub admin: String,
    /// App API key.
    #[arg(long, default_value = "bench-key")]
    pub api_key: String,
    /// App API secret (signs the server token).
    #[arg(long, default_value = "bench-secret")]
    pub secret: String,
    /// Users to create before measuring (0: query what is there).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Users per `POST /users` request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Upsert requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Timed queries of each kind.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Users per team: user `i` is in team `i / team_size` alone (see [`population_user`]).
    #[arg(long, default_value_t = 100)]
    pub team_size: usize,
}

/// The kinds of query timed, in report order: (name, what it asks).
pub const KINDS: [(&str, &str); 6] = [
    ("id", "`{\"id\": <id>}`"),
    ("in100", "`{\"id\": {\"$in\": [100 ids]}}`"),
    (
        "team",
        "`{\"teams\": {\"$contains\": <team>}}`, first page of 30",
    ),
    (
        "autocomplete",
        "`{\"name\": {\"$autocomplete\": <3 letters of a first name>}}`, first page of 30",
    ),
    ("first_page", "no filter, default sort, first page of 30"),
    (
        "deep_page",
        "no filter, default sort, `limit` 100, `offset` 900",
    ),
];

/// Timings of one kind of query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryKindReport {
    /// One of [`KINDS`].
    pub kind: String,
    /// Requests answered with a 2xx.
    pub ok: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Users in the answers, summed (a check that the query found something).
    pub users_returned: usize,
    /// Latency of one request.
    pub latency: LatencySummary,
}

/// The JSON report of `loadgen query`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryReport {
    /// Always `"query"`.
    pub mode: String,
    /// Users created.
    pub users: usize,
    /// Seconds spent creating them.
    pub populate_secs: f64,
    /// Failed upsert batches.
    pub populate_failed: usize,
    /// Per kind of query.
    pub kinds: Vec<QueryKindReport>,
    /// The first failure in full, if any.
    pub first_error: Option<String>,
}

const FIRST: [&str; 20] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Katherine",
    "Linus",
    "Margaret",
    "Niklaus",
    "Ken",
    "Dennis",
    "Radia",
    "Tim",
    "Leslie",
    "Sophie",
    "Guido",
    "Hedy",
];
const LAST: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Johnson",
    "Torvalds",
];

/// The user document of population member `index`: a first and last name from short lists
/// (so a first-name prefix matches about one user in 20) and one team of `team_size` users.
pub fn population_user(index: usize, team_size: usize) -> Value {
    let color = ["red", "green", "blue"][index % 3];
    json!({
        "id": format!("q{index}"),
        "name": format!("{} {} {index}", FIRST[index % FIRST.len()], LAST[(index / 7) % LAST.len()]),
        "teams": [format!("team-{}", index / team_size.max(1))],
        "color": color,
        "score": index % 1000,
    })
}

/// A small deterministic generator (xorshift), so both servers get the same queries.
struct Picks(u64);

impl Picks {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn payload(kind: &str, users: usize, team_size: usize, picks: &mut Picks) -> Value {
    let id = |p: &mut Picks| format!("q{}", p.below(users));
    match kind {
        "id" => json!({"filter_conditions": {"id": id(picks)}}),
        "in100" => {
            let ids: Vec<String> = (0..100).map(|_| id(picks)).collect();
            json!({"filter_conditions": {"id": {"$in": ids}}, "limit": 100})
        }
        "team" => {
            let team = format!("team-{}", picks.below(users.div_ceil(team_size.max(1))));
            json!({"filter_conditions": {"teams": {"$contains": team}}, "limit": 30})
        }
        "autocomplete" => {
            let first = FIRST[picks.below(FIRST.len())];
            let prefix: String = first.chars().take(3).collect();
            json!({"filter_conditions": {"name": {"$autocomplete": prefix}}, "limit": 30})
        }
        "first_page" => json!({"filter_conditions": {}, "limit": 30}),
        _ => json!({"filter_conditions": {}, "limit": 100, "offset": 900}),
    }
}

/// Creates the population, then times every kind of query in turn.
pub async fn run_query(args: &QueryArgs) -> QueryReport {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("HTTP client");
    let token: Arc<str> = TokenMinter::new(&args.secret).server_token().into();
    let base = args.admin.trim_end_matches('/').to_owned();
    let users_url: Arc<str> = format!("{base}/users?api_key={}", args.api_key).into();
    let batch = args.batch.max(1);
    let (total, team_size) = (args.users, args.team_size);

    let started = Instant::now();
    let (_, populate_failed, _, _, mut first_error) = {
        let (client, token, url) = (client.clone(), token.clone(), users_url.clone());
        drive(total.div_ceil(batch), args.concurrency, move |b| {
            let mut users = serde_json::Map::new();
            for index in b * batch..((b + 1) * batch).min(total) {
                users.insert(format!("q{index}"), population_user(index, team_size));
            }
            let request = client.post(&*url).json(&json!({ "users": users }));
            let token = token.clone();
            async move {
                let response = request
                    .header("Authorization", &*token)
                    .header("stream-auth-type", "jwt")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status().is_success() {
                    true => Ok(()),
                    false => Err(format!("upsert: HTTP {}", response.status())),
                }
            }
        })
        .await
    };
    let populate_secs = started.elapsed().as_secs_f64();

    let mut kinds = Vec::new();
    let mut picks = Picks(0x9E37_79B9_7F4A_7C15);
    for (kind, _) in KINDS {
        let mut report = QueryKindReport {
            kind: kind.into(),
            ..Default::default()
        };
        let mut latencies = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let body = payload(kind, total.max(1), team_size, &mut picks);
            let request = client
                .get(&*users_url)
                .query(&[("payload", body.to_string())])
                .header("Authorization", &*token)
                .header("stream-auth-type", "jwt");
            let t0 = Instant::now();
            let outcome = async {
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let answer: Value = response.json().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{kind}: HTTP {status}: {answer}"));
                }
                Ok(answer["users"].as_array().map_or(0, Vec::len))
            }
            .await;
            let us = micros(t0.elapsed());
            match outcome {
                Ok(n) => {
                    report.ok += 1;
                    report.users_returned += n;
                    latencies.push(us);
                }
                Err(e) => {
                    report.failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        report.latency = LatencySummary::from_micros(&mut latencies);
        kinds.push(report);
    }
    QueryReport {
        mode: "query".into(),
        users: total,
        populate_secs,
        populate_failed,
        kinds,
        first_error,
    }
}
