//! Admin REST writes against the admin listener: batch upserts and single-user partial updates.

use crate::auth::TokenMinter;
use crate::stats::{micros, Throughput};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `loadgen admin`.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Admin listener base URL.
    #[arg(long, default_value = "http://127.0.0.1:4601")]
    pub admin: String,
    /// App API key.
    #[arg(long, default_value = "bench-key")]
    pub api_key: String,
    /// App API secret (signs the server token).
    #[arg(long, default_value = "bench-secret")]
    pub secret: String,
    /// Users to upsert.
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Users per `POST /users` request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Single-user `PATCH /users` requests after the upserts.
    #[arg(long, default_value_t = 5_000)]
    pub partial: usize,
    /// User ids are `<prefix><index>`.
    #[arg(long, default_value = "a")]
    pub user_prefix: String,
}

/// The JSON report of `loadgen admin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminReport {
    /// Always `"admin"`.
    pub mode: String,
    /// Users per upsert request.
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// `POST /users` batches: items are users.
    pub upsert: Throughput,
    /// Single-user `PATCH /users`: items are updates.
    pub partial: Throughput,
    /// The first failure in full, if any.
    pub first_error: Option<String>,
}

/// The user document both the gateway run and the sled baseline write for user `index`.
pub fn user_payload(id: &str, index: usize) -> Value {
    let color = ["red", "green", "blue"][index % 3];
    json!({
        "id": id,
        "name": format!("Bench User {index}"),
        "image": format!("http://img.invalid/{index}.png"),
        "language": "en",
        "color": color,
        "score": index % 1000,
    })
}

/// Sends `request` with the server token; `Err` holds a description of a non-2xx or failed call.
async fn send(request: reqwest::RequestBuilder, token: &str) -> Result<(), String> {
    let response = request
        .header("Authorization", token)
        .header("stream-auth-type", "jwt")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

/// Runs `jobs` jobs with `concurrency` workers; returns (ok, failed, latencies, wall secs, first error).
pub(crate) async fn drive<F, Fut>(
    jobs: usize,
    concurrency: usize,
    job: F,
) -> (usize, usize, Vec<u64>, f64, Option<String>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let results = Arc::new(Mutex::new((
        0usize,
        0usize,
        Vec::with_capacity(jobs),
        None::<String>,
    )));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, job, results) = (next.clone(), job.clone(), results.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        break;
                    }
                    let t0 = Instant::now();
                    let outcome = job(i).await;
                    let us = micros(t0.elapsed());
                    let mut r = results.lock().expect("results lock");
                    match outcome {
                        Ok(()) => {
                            r.0 += 1;
                            r.2.push(us);
                        }
                        Err(e) => {
                            r.1 += 1;
                            r.3.get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (ok, failed, latencies, first_error) =
        std::mem::take(&mut *results.lock().expect("results lock"));
    (ok, failed, latencies, secs, first_error)
}

/// Runs the upserts, then the partial updates, and reports both.
pub async fn run_admin(args: &AdminArgs) -> AdminReport {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    let token: Arc<str> = TokenMinter::new(&args.secret).server_token().into();
    let base = args.admin.trim_end_matches('/').to_owned();
    let users_url: Arc<str> = format!("{base}/users?api_key={}", args.api_key).into();
    let batch = args.batch.max(1);
    let batches = args.users.div_ceil(batch);
    let (total_users, prefix) = (args.users, args.user_prefix.clone());

    let upsert = {
        let (client, token, url, prefix) = (
            client.clone(),
            token.clone(),
            users_url.clone(),
            prefix.clone(),
        );
        drive(batches, args.concurrency, move |b| {
            let mut users = serde_json::Map::new();
            for index in b * batch..((b + 1) * batch).min(total_users) {
                let id = format!("{prefix}{index}");
                users.insert(id.clone(), user_payload(&id, index));
            }
            let request = client.post(&*url).json(&json!({ "users": users }));
            let token = token.clone();
            async move { send(request, &token).await }
        })
        .await
    };
    let partial = {
        let (client, token, url) = (client.clone(), token.clone(), users_url.clone());
        let population = total_users.max(1);
        drive(args.partial, args.concurrency, move |j| {
            let id = format!("{prefix}{}", j % population);
            let body = json!({"users": [{"id": id, "set": {"n": j}}]});
            let request = client.patch(&*url).json(&body);
            let token = token.clone();
            async move { send(request, &token).await }
        })
        .await
    };
    let (ok, failed, mut lat, secs, err_a) = upsert;
    // Items are users written: full batches, except a short last one.
    let upsert = Throughput::new(ok, failed, (ok * batch).min(total_users), secs, &mut lat);
    let (pok, pfailed, mut plat, psecs, err_b) = partial;
    let partial = Throughput::new(pok, pfailed, pok, psecs, &mut plat);
    AdminReport {
        mode: "admin".into(),
        batch,
        concurrency: args.concurrency,
        upsert,
        partial,
        first_error: err_a.or(err_b),
    }
}
