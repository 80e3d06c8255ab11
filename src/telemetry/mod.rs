//! Tracing and metrics set-up, done once per process: log lines on stderr, as text (coloured
//! only on a terminal) or JSON, behind a filter checked before anything starts.

pub mod escape;
pub mod tally;

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Crates whose debug output is noise to an operator (sled logs its page cache, with tree
/// names as byte arrays): kept at `warn` unless the filter names them.
const QUIET: &[&str] = &["sled"];

/// Bare words a filter may hold besides levels: targets that name a crate of the gateway's.
const KNOWN_TARGETS: &[&str] = &[
    "chat_gateway",
    "sled",
    "hyper",
    "hyper_util",
    "axum",
    "tower_http",
    "tokio_postgres",
    "tungstenite",
    "tokio_tungstenite",
];

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Parses a filter (RUST_LOG syntax), strictly: a directive that does not parse, or a bare
/// word that is neither a level nor a known target (`inof`, which would silence every
/// line), is an error. Quiet crates get `warn` unless `spec` names them.
pub fn filter(spec: &str) -> Result<EnvFilter, String> {
    for directive in spec.split(',').map(str::trim) {
        let bare = !directive.is_empty()
            && !directive.contains(['=', '[', ':'])
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            && !matches!(directive, "0" | "1" | "2" | "3" | "4" | "5");
        if bare && !KNOWN_TARGETS.contains(&directive) {
            return Err(format!(
                "`{directive}` is neither a level ({}) nor target=level",
                LEVELS.join(", ")
            ));
        }
    }
    let mut parsed = EnvFilter::builder()
        .parse(spec)
        .map_err(|e| e.to_string())?;
    for target in QUIET {
        if !spec.contains(target) {
            parsed = parsed.add_directive(format!("{target}=warn").parse().expect("a directive"));
        }
    }
    Ok(parsed)
}

/// Installs the tracing subscriber: RUST_LOG when set, else `default_filter`; an invalid
/// filter is an error. Lines go to stderr; `Err` also if a subscriber is already installed.
///
/// Fields carry client-supplied text (ids, keys, refusal reasons). In text form every value
/// is escaped as it is formatted and every line again as it is written (colour codes aside),
/// so neither can start a forged line or drive a terminal; JSON escapes them itself.
pub fn init_tracing(default_filter: &str, format: LogFormat) -> Result<(), String> {
    let env_filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => filter(&spec).map_err(|e| {
            format!(
                "RUST_LOG=\"{spec}\" is not a tracing filter ({e}): use a level (error, warn, \
                 info, debug, trace) or directives such as \"info,chat_gateway::gateway=debug\", \
                 or unset it to use the `log` setting"
            )
        })?,
        _ => filter(default_filter).map_err(|e| format!("log = \"{default_filter}\": {e}"))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    let installed = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal();
            builder
                .with_target(false)
                .with_ansi(colour)
                .fmt_fields(escaped_fields())
                .with_writer(escape::EscapingMakeWriter::new(std::io::stderr, colour))
                .try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    installed.map_err(|e| format!("tracing: {e}"))
}

/// The default `name=value` fields, each value escaped as it is formatted.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = escape::escape_text(&format!("{value:?}"), false);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn filters_are_parsed_strictly() {
        for ok in [
            "info",
            "DEBUG",
            "warn,chat_gateway=debug",
            "chat_gateway::gateway=trace",
            "chat_gateway",
            "sled=debug",
            "3",
        ] {
            filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["inof", "info,chat_gateway=verbose", "debug,=info["] {
            assert!(filter(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sled_is_quiet_unless_named() {
        assert!(filter("debug").unwrap().to_string().contains("sled=warn"));
        assert!(!filter("debug,sled=debug")
            .unwrap()
            .to_string()
            .contains("sled=warn"));
    }
}
