//! Result records written under `bench/results/`, one file per scenario, and read back to
//! regenerate the report. Every figure here was measured; summaries are medians over runs.

use serde::{Deserialize, Serialize};

/// When, where and on what the figures were taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    /// RFC 3339 time the scenario started.
    pub date: String,
    /// `git describe --always --dirty` of the tree measured.
    pub commit: String,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical cores.
    pub cores: usize,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Runs per configuration.
    pub runs: usize,
    /// The `--tiny` harness check rather than a real measurement.
    pub tiny: bool,
    /// `/proc/loadavg` when the scenario started: other load on the machine skews figures.
    #[serde(default)]
    pub loadavg_at_start: String,
    /// The baseline's initial WebSocket read buffer, bytes.
    #[serde(default)]
    pub baseline_read_buffer: usize,
}

/// Scenario 1: idle memory per connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryResults {
    /// Context.
    pub meta: Meta,
    /// Connection counts measured.
    pub sizes: Vec<usize>,
    /// Seconds waited before each RSS reading.
    pub settle_secs: f64,
    /// Server health-check interval during the run.
    pub health_check_secs: u64,
    /// Every run.
    pub runs: Vec<MemoryRun>,
    /// Medians per server and size.
    pub summary: Vec<MemorySummary>,
}

/// One idle-memory measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryRun {
    /// `gateway` or `baseline`.
    pub server: String,
    /// Connections asked for.
    pub conns: usize,
    /// Run number (1-based).
    pub run: usize,
    /// Connections opened.
    pub connected: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Server RSS before connecting, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with the connections open and idle, KiB.
    pub rss_after_kib: u64,
    /// `(after - before) * 1024 / connected`.
    pub bytes_per_conn: f64,
    /// Server descriptors open with the connections held.
    pub server_fds: usize,
}

/// Medians of the idle-memory runs for one server and size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemorySummary {
    /// `gateway` or `baseline`.
    pub server: String,
    /// Connections.
    pub conns: usize,
    /// Runs the medians are over.
    pub runs: usize,
    /// Median bytes per connection.
    pub bytes_per_conn: f64,
    /// Median RSS before connecting, KiB.
    pub rss_before_kib: f64,
    /// Median RSS with the connections open, KiB.
    pub rss_after_kib: f64,
}

/// Scenario 2: connect rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectResults {
    /// Context.
    pub meta: Meta,
    /// Connections per pass.
    pub conns: usize,
    /// loadgen processes.
    pub procs: usize,
    /// Handshakes in flight per loadgen process.
    pub concurrency: usize,
    /// Every pass of every run.
    pub runs: Vec<ConnectRun>,
    /// Medians per server and pass.
    pub summary: Vec<ConnectSummary>,
}

/// One pass of connects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectRun {
    /// `gateway` or `baseline`.
    pub server: String,
    /// `new` (users created on connect) or `returning` (same users again).
    pub pass: String,
    /// Run number (1-based).
    pub run: usize,
    /// Connections opened.
    pub connected: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the pass, s.
    pub secs: f64,
    /// Connections per second.
    pub rate_per_s: f64,
    /// Upgrade → first frame, median, ms.
    pub p50_ms: f64,
    /// Upgrade → first frame, 99th percentile, ms.
    pub p99_ms: f64,
    /// Server CPU time (utime + stime) during the pass per connection, µs.
    #[serde(default)]
    pub server_cpu_us_per_conn: f64,
}

/// Medians of the connect passes for one server and pass.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectSummary {
    /// `gateway` or `baseline`.
    pub server: String,
    /// `new` or `returning`.
    pub pass: String,
    /// Runs the medians are over.
    pub runs: usize,
    /// Median connections per second.
    pub rate_per_s: f64,
    /// Median of the per-run p50, ms.
    pub p50_ms: f64,
    /// Median of the per-run p99, ms.
    pub p99_ms: f64,
    /// Median server CPU per connection, µs.
    #[serde(default)]
    pub server_cpu_us_per_conn: f64,
    /// Failed attempts over all runs.
    pub failed: usize,
}

/// Scenario 3: admin writes (and scenario 7, the same on PostgreSQL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminResults {
    /// Context.
    pub meta: Meta,
    /// Users upserted per run.
    pub users: usize,
    /// Users per batch.
    pub batch: usize,
    /// Partial updates per run.
    pub partial: usize,
    /// Requests (transactions) in flight.
    pub concurrency: usize,
    /// How sledbase made its writes durable (scenario 3).
    #[serde(default)]
    pub sled_flush: String,
    /// How pgbase sent its statements (scenario 7).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pgbase: String,
    /// Every run.
    pub runs: Vec<AdminRun>,
    /// Medians per target.
    pub summary: Vec<AdminSummary>,
}

/// One admin-write run against the gateway or raw sled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminRun {
    /// `gateway` or `sledbase` (scenario 3), `gateway-pg` or `pgbase` (scenario 7).
    pub target: String,
    /// Run number (1-based).
    pub run: usize,
    /// Users per second through batch upserts.
    pub upsert_users_per_s: f64,
    /// One batch, median, ms.
    pub upsert_p50_ms: f64,
    /// One batch, 99th percentile, ms.
    pub upsert_p99_ms: f64,
    /// Single-user partial updates per second.
    pub partial_per_s: f64,
    /// One partial update, median, ms.
    pub partial_p50_ms: f64,
    /// One partial update, 99th percentile, ms.
    pub partial_p99_ms: f64,
    /// Failed requests or transactions.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// CPU time of the process doing the writes (gateway server, or sledbase), s.
    #[serde(default)]
    pub cpu_secs: f64,
}

/// Medians of the admin-write runs for one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminSummary {
    /// `gateway` or `sledbase`.
    pub target: String,
    /// Runs the medians are over.
    pub runs: usize,
    /// Median users/s.
    pub upsert_users_per_s: f64,
    /// Median of per-run p50, ms.
    pub upsert_p50_ms: f64,
    /// Median of per-run p99, ms.
    pub upsert_p99_ms: f64,
    /// Median partial updates/s.
    pub partial_per_s: f64,
    /// Median of per-run p50, ms.
    pub partial_p50_ms: f64,
    /// Median of per-run p99, ms.
    pub partial_p99_ms: f64,
    /// Median CPU time of the writing process over the whole workload, s.
    #[serde(default)]
    pub cpu_secs: f64,
    /// Failures over all runs.
    pub failed: usize,
}

/// Scenario 4: event latency with idle connections around.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsResults {
    /// Context.
    pub meta: Meta,
    /// Connections open in total (idle ones plus the watched ones).
    pub conns: usize,
    /// Watched users receiving the updates.
    pub users: usize,
    /// Updates timed per run.
    pub updates: usize,
    /// Deactivations timed per run.
    pub deactivations: usize,
    /// Custom events timed per run (0 in results from before custom events).
    #[serde(default)]
    pub custom_events: usize,
    /// Every run.
    pub runs: Vec<EventsRun>,
    /// Medians over runs.
    pub summary: EventsRun,
}

/// One event-latency run (in the summary: medians of the runs, counts summed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsRun {
    /// Run number (1-based; 0 in the summary).
    pub run: usize,
    /// Idle connections open around the measurement.
    pub idle_connected: usize,
    /// PATCH → `user.updated` on the socket, median, ms.
    pub update_event_p50_ms: f64,
    /// PATCH → `user.updated`, 99th percentile, ms.
    pub update_event_p99_ms: f64,
    /// PATCH → HTTP response, median, ms.
    pub update_http_p50_ms: f64,
    /// PATCH → HTTP response, 99th percentile, ms.
    pub update_http_p99_ms: f64,
    /// custom event → on the socket, median, ms (0 in results from before custom events).
    #[serde(default)]
    pub custom_event_p50_ms: f64,
    /// custom event → on the socket, 99th percentile, ms.
    #[serde(default)]
    pub custom_event_p99_ms: f64,
    /// custom event → HTTP response, median, ms.
    #[serde(default)]
    pub custom_http_p50_ms: f64,
    /// custom event → HTTP response, 99th percentile, ms.
    #[serde(default)]
    pub custom_http_p99_ms: f64,
    /// Custom events without an arrival in time.
    #[serde(default)]
    pub custom_missed: usize,
    /// deactivate → socket closed, median, ms.
    pub deactivate_close_p50_ms: f64,
    /// deactivate → socket closed, 99th percentile, ms.
    pub deactivate_close_p99_ms: f64,
    /// deactivate → HTTP response, median, ms.
    pub deactivate_http_p50_ms: f64,
    /// deactivate → HTTP response, 99th percentile, ms.
    pub deactivate_http_p99_ms: f64,
    /// Updates without an event in time.
    pub update_missed: usize,
    /// Deactivations without a close in time.
    pub deactivate_missed: usize,
    /// Deactivated sockets that got `user.deactivated` before the close.
    pub deactivated_event_seen: usize,
    /// Idle connections the server dropped during the measurement.
    pub idle_dropped: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Scenario 5: idle CPU.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuResults {
    /// Context.
    pub meta: Meta,
    /// Connections held.
    pub conns: usize,
    /// Measurement window, s.
    pub window_secs: f64,
    /// Server health-check interval, s.
    pub health_check_secs: u64,
    /// Every run.
    pub runs: Vec<CpuRun>,
    /// Medians per server.
    pub summary: Vec<CpuSummary>,
}

/// One idle-CPU run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuRun {
    /// `gateway` or `baseline`.
    pub server: String,
    /// Run number (1-based).
    pub run: usize,
    /// Connections open.
    pub connected: usize,
    /// utime + stime over the window, s.
    pub cpu_secs: f64,
    /// `cpu_secs / window` as % of one core.
    pub cpu_pct_one_core: f64,
    /// Server RSS at the end of the window, KiB.
    pub rss_kib: u64,
    /// Text frames per second the clients received while held.
    pub frames_per_s: f64,
    /// Connections the server dropped while held.
    pub dropped: u64,
}

/// Medians of the idle-CPU runs for one server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuSummary {
    /// `gateway` or `baseline`.
    pub server: String,
    /// Runs the medians are over.
    pub runs: usize,
    /// Median % of one core.
    pub cpu_pct_one_core: f64,
    /// Median frames/s received by the clients.
    pub frames_per_s: f64,
    /// Median RSS, KiB.
    pub rss_kib: f64,
}

/// Scenario 6: user queries on stores of several sizes, the gateway before and after a change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryResults {
    /// Context (the commit is the one measured as *after*).
    pub meta: Meta,
    /// What *before* is (`--before-label`), empty when only one binary was measured.
    pub before_label: String,
    /// Users per store.
    pub sizes: Vec<usize>,
    /// Users per upsert batch while building a store.
    pub batch: usize,
    /// Users per team.
    pub team_size: usize,
    /// Every run.
    pub runs: Vec<QueryRun>,
    /// Medians per target, size and kind of query.
    pub summary: Vec<QuerySummary>,
}

/// One store built and queried by one binary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryRun {
    /// `before` or `after`.
    pub target: String,
    /// Users in the store.
    pub users: usize,
    /// Run number (1-based).
    pub run: usize,
    /// Seconds to build the store through the admin API.
    pub populate_secs: f64,
    /// Failed upserts and queries.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Per kind of query.
    pub kinds: Vec<QueryKindRun>,
}

/// Timings of one kind of query in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryKindRun {
    /// The kind (`bench::query::KINDS`).
    pub kind: String,
    /// Queries timed.
    pub samples: usize,
    /// Users in all the answers.
    pub users_returned: usize,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Medians over runs for one target, size and kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuerySummary {
    /// `before` or `after`.
    pub target: String,
    /// Users in the store.
    pub users: usize,
    /// The kind of query, or `populate` for building the store (figures in seconds).
    pub kind: String,
    /// Runs the medians are over.
    pub runs: usize,
    /// Median of the runs' p50, ms (s for `populate`).
    pub p50_ms: f64,
    /// Median of the runs' p99, ms (0 for `populate`).
    pub p99_ms: f64,
}
