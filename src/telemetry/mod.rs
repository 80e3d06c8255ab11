//! Tracing and metrics set-up, done once per process.

pub mod escape;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Installs the tracing subscriber (RUST_LOG, else `default_filter`). Safe to call twice.
///
/// Fields carry client-supplied text (ids, keys, refusal reasons), so every line goes through
/// [`escape::EscapingMakeWriter`]; colours are off, as their escape bytes would be escaped.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(escape::EscapingMakeWriter(std::io::stdout))
        .try_init();
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}
