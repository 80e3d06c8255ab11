//! One serde configuration tree: documented defaults (`config/default.toml`), an optional TOML
//! file, environment overrides, validation, and credentials generated on first start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::auth::Secret;

pub mod help;
pub mod keys;

pub use help::settings_help;

/// The defaults, compiled in so the binary runs with no files around it.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Every setting.
#[derive(Clone, Serialize, Deserialize)]
pub struct Config {
    /// Public listener address.
    pub public_addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Base URL back ends reach the admin listener at, for export links (empty: the
    /// listener's own address).
    pub admin_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// API key (empty: generated).
    pub api_key: String,
    /// API secret (empty: generated). Never logged.
    pub api_secret: String,
    /// Default tracing filter.
    pub log: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Seconds between the `info` summaries of connects, refusals and closes (0: none).
    pub log_summary_secs: u64,
    /// Limits.
    pub limits: Limits,
    /// CORS.
    pub cors: Cors,
    /// The data volume.
    pub store: StoreConfig,
    /// Stream's per-endpoint rate limits.
    pub rate_limits: RateLimitsConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("public_addr", &self.public_addr)
            .field("admin_addr", &self.admin_addr)
            .field("data_dir", &self.data_dir)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("log_summary_secs", &self.log_summary_secs)
            .field("limits", &self.limits)
            .field("cors", &self.cors)
            .field("store", &self.store)
            .field("rate_limits", &self.rate_limits)
            .finish()
    }
}

/// The form of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, coloured on a terminal.
    Text,
    /// For machines: one JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is not a log format: use text or json")),
        }
    }
}

/// Limits on everything a client controls (see `config/default.toml` for each meaning).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub body_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_connections_per_ip: usize,
    pub max_anonymous_connections: usize,
    pub handshake_timeout_secs: u64,
    pub admin_header_timeout_secs: u64,
    pub admin_keepalive_timeout_secs: u64,
    pub admin_max_sockets: usize,
    pub health_check_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub read_buffer_bytes: usize,
    pub outbound_queue_frames: usize,
    pub admin_feed_frames: usize,
    pub max_write_buffer_bytes: usize,
    pub max_connect_frame_bytes: usize,
    pub write_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub requests_per_minute: u32,
    pub connects_per_second_per_ip: u32,
    pub guests_per_minute_per_ip: u32,
    pub guests_per_minute: u32,
    pub max_query_response_bytes: usize,
}

/// Rate limits as Stream counts them: per endpoint and platform for the app, per endpoint and
/// platform for each user (see `config/default.toml` and `crate::ratelimit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitsConfig {
    /// Whether the per-endpoint limits apply (the per-caller `limits.requests_per_minute`
    /// always does).
    pub enabled: bool,
    /// Requests per minute one user (or one address, without a user token) may make to one
    /// endpoint from one platform. Server-side calls are not subject to it.
    pub user_per_minute: u32,
    /// The per-second share of an app limit is its per-minute limit divided by this (Stream:
    /// 30); 0 applies no per-second limit.
    pub per_second_divisor: u32,
    /// Requests per minute per platform for the whole app, by Stream's endpoint name.
    pub endpoints: std::collections::BTreeMap<String, u32>,
}

/// Browser access to the public listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cors {
    /// Allowed origins; `"*"` allows any.
    pub allowed_origins: Vec<String>,
}

/// Which store backs the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// sled, embedded in the data dir: the zero-setup default.
    Sled,
    /// PostgreSQL at `store.postgres_url`: a database several nodes can share.
    Postgres,
}

/// The store and how it guards its data volume (see `config/default.toml` for each meaning).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Which store.
    pub kind: StoreKind,
    /// PostgreSQL connection URL (kind `postgres`). Its password is never logged.
    pub postgres_url: String,
    /// Connections in the PostgreSQL pool.
    pub postgres_pool_size: usize,
    /// Milliseconds to open one PostgreSQL connection.
    pub postgres_connect_timeout_ms: u64,
    /// Milliseconds one store call (and each statement) may take on PostgreSQL.
    pub postgres_call_timeout_ms: u64,
    /// Free bytes the data volume keeps; below it writes are refused (0: never refused).
    pub min_free_bytes: u64,
    /// Milliseconds between measurements of the free space.
    pub space_check_interval_ms: u64,
    /// Size of the ballast file kept in the data dir (0: none).
    pub ballast_bytes: u64,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("postgres_url", &redact_url(&self.postgres_url))
            .field("postgres_pool_size", &self.postgres_pool_size)
            .field(
                "postgres_connect_timeout_ms",
                &self.postgres_connect_timeout_ms,
            )
            .field("postgres_call_timeout_ms", &self.postgres_call_timeout_ms)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("space_check_interval_ms", &self.space_check_interval_ms)
            .field("ballast_bytes", &self.ballast_bytes)
            .finish()
    }
}

impl StoreConfig {
    /// The PostgreSQL connection options these settings give.
    pub fn postgres_options(&self) -> crate::store::PgOptions {
        crate::store::PgOptions {
            url: self.postgres_url.clone(),
            pool_size: self.postgres_pool_size,
            connect_timeout: std::time::Duration::from_millis(self.postgres_connect_timeout_ms),
            call_timeout: std::time::Duration::from_millis(self.postgres_call_timeout_ms),
        }
    }
}

/// A connection URL with its password (URL or `password=` form) replaced, for logs.
fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:<redacted>@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=<redacted>"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not be read or parsed.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range.
    #[error("configuration: {0}")]
    Invalid(String),
    /// Keys or variables that name no setting, one per line.
    #[error("configuration: {0}")]
    Unknown(String),
    /// Credentials file problem: what was being done, on which path, and what to do.
    #[error("credentials: {0}")]
    Credentials(String),
}

impl Config {
    /// Defaults, then the file named by `CHAT_GATEWAY_CONFIG` (or `file`), then the environment.
    /// A key of the file or a `CHAT_GATEWAY_*` variable that names no setting is an error.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let keys = keys::Keys::known();
        let mut fig = Figment::from(Toml::string(DEFAULTS));
        let env_file = std::env::var_os("CHAT_GATEWAY_CONFIG").map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(env_file) {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist or is not a file: pass an existing TOML file \
                     with --config (or CHAT_GATEWAY_CONFIG), or none for the defaults",
                    path.display()
                )));
            }
            keys.check_file(&path)?;
            fig = fig.merge(Toml::file(path));
        }
        keys.check_env(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()))?;
        // The exempt variables (CHAT_GATEWAY_CONFIG, those of tests and scripts) stay out.
        let known = keys.clone();
        fig = fig.merge(
            Env::prefixed(keys::ENV_PREFIX)
                .filter(move |k| {
                    known.is_setting(&k.as_str().to_ascii_lowercase().replace("__", "."))
                })
                .split("__"),
        );
        for key in ["public_addr", "admin_addr"] {
            check_address(&fig, key)?;
        }
        let config: Config = fig.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults only, with overrides applied by the caller (tests).
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .expect("compiled-in defaults parse")
    }

    /// Checks values that would make the gateway misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::telemetry::filter(&self.log).map_err(|e| {
            ConfigError::Invalid(format!(
                "log = \"{}\" is not a tracing filter ({e}): use a level (error, warn, info, \
                 debug, trace) or directives such as \"info,chat_gateway::gateway=debug\"",
                self.log
            ))
        })?;
        let l = &self.limits;
        let positive = [
            ("max_body_bytes", l.max_body_bytes),
            ("max_header_bytes", l.max_header_bytes),
            ("max_connections", l.max_connections),
            ("max_connections_per_user", l.max_connections_per_user),
            ("max_connections_per_ip", l.max_connections_per_ip),
            ("max_anonymous_connections", l.max_anonymous_connections),
            ("max_frame_bytes", l.max_frame_bytes),
            ("max_message_bytes", l.max_message_bytes),
            ("read_buffer_bytes", l.read_buffer_bytes),
            ("outbound_queue_frames", l.outbound_queue_frames),
            ("admin_feed_frames", l.admin_feed_frames),
            ("max_write_buffer_bytes", l.max_write_buffer_bytes),
            ("max_connect_frame_bytes", l.max_connect_frame_bytes),
            ("handshake_timeout_secs", l.handshake_timeout_secs as usize),
            ("body_timeout_secs", l.body_timeout_secs as usize),
            (
                "admin_header_timeout_secs",
                l.admin_header_timeout_secs as usize,
            ),
            (
                "admin_keepalive_timeout_secs",
                l.admin_keepalive_timeout_secs as usize,
            ),
            ("admin_max_sockets", l.admin_max_sockets),
            (
                "health_check_interval_secs",
                l.health_check_interval_secs as usize,
            ),
            ("idle_timeout_secs", l.idle_timeout_secs as usize),
            ("write_timeout_secs", l.write_timeout_secs as usize),
            ("requests_per_minute", l.requests_per_minute as usize),
            (
                "connects_per_second_per_ip",
                l.connects_per_second_per_ip as usize,
            ),
            (
                "guests_per_minute_per_ip",
                l.guests_per_minute_per_ip as usize,
            ),
            ("guests_per_minute", l.guests_per_minute as usize),
            ("max_query_response_bytes", l.max_query_response_bytes),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} must be positive"
                )));
            }
        }
        if l.max_frame_bytes > l.max_message_bytes {
            return Err(ConfigError::Invalid(
                "limits.max_frame_bytes must not exceed limits.max_message_bytes".into(),
            ));
        }
        if l.max_connect_frame_bytes > l.max_write_buffer_bytes {
            return Err(ConfigError::Invalid(
                "limits.max_connect_frame_bytes must not exceed limits.max_write_buffer_bytes"
                    .into(),
            ));
        }
        crate::ratelimit::validate(&self.rate_limits).map_err(ConfigError::Invalid)?;
        if self.store.space_check_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "store.space_check_interval_ms must be positive".into(),
            ));
        }
        if self.store.kind == StoreKind::Postgres {
            if self.store.postgres_url.is_empty() {
                return Err(ConfigError::Invalid(
                    "store.kind = \"postgres\" needs store.postgres_url".into(),
                ));
            }
            crate::store::postgres::parse_url(&self.store.postgres_url)
                .map_err(|e| ConfigError::Invalid(format!("store.postgres_url: {e}")))?;
            let s = &self.store;
            for (name, v) in [
                ("postgres_pool_size", s.postgres_pool_size as u64),
                ("postgres_connect_timeout_ms", s.postgres_connect_timeout_ms),
                ("postgres_call_timeout_ms", s.postgres_call_timeout_ms),
            ] {
                if v == 0 {
                    return Err(ConfigError::Invalid(format!(
                        "store.{name} must be positive"
                    )));
                }
            }
        }
        if self.api_key.is_empty() != self.api_secret.is_empty() {
            return Err(ConfigError::Invalid(
                "set both api_key and api_secret, or neither".into(),
            ));
        }
        Ok(())
    }

    /// The credentials to run with: configured ones, or those stored in the data dir, or new
    /// ones generated and stored there (mode 0600). The bool says whether they were generated.
    pub fn credentials(&self) -> Result<(String, Secret, bool), ConfigError> {
        if let Some((key, secret)) = self.existing_credentials()? {
            return Ok((key, secret, false));
        }
        let path = self.credentials_path();
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| credentials_io("create the data dir", &self.data_dir, &e))?;
        let key = random_text(12);
        let secret = random_text(48);
        let body = serde_json::to_string_pretty(&StoredCredentials {
            api_key: key.clone(),
            api_secret: secret.clone(),
        })
        .expect("credentials encode");
        write_private(&path, body.as_bytes()).map_err(|e| credentials_io("write", &path, &e))?;
        Ok((key, Secret::new(secret), true))
    }

    /// Where generated credentials are stored.
    pub fn credentials_path(&self) -> PathBuf {
        self.data_dir.join("credentials.json")
    }

    /// The configured credentials, else those stored in the data dir; `None` when there are
    /// neither (nothing is written).
    pub fn existing_credentials(&self) -> Result<Option<(String, Secret)>, ConfigError> {
        if !self.api_key.is_empty() {
            return Ok(Some((self.api_key.clone(), Secret::new(&self.api_secret))));
        }
        let path = self.credentials_path();
        let found = path
            .try_exists()
            .map_err(|e| credentials_io("look for", &path, &e))?;
        if !found {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| credentials_io("read", &path, &e))?;
        let stored: StoredCredentials = serde_json::from_str(&text)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        // An empty secret would let anyone sign tokens, server tokens included.
        if stored.api_key.is_empty() || stored.api_secret.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{}: api_key and api_secret must not be empty",
                path.display()
            )));
        }
        Ok(Some((stored.api_key, Secret::new(stored.api_secret))))
    }
}

/// A failed file operation on the credentials, with the path and what to do about it.
fn credentials_io(action: &str, path: &Path, e: &std::io::Error) -> ConfigError {
    use std::io::ErrorKind;
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            "the user running the gateway may not do that: give it write access to the data \
             dir, or set data_dir (CHAT_GATEWAY_DATA_DIR) to a directory it owns"
        }
        ErrorKind::AlreadyExists => {
            "something is there that could not be read as credentials (a dangling link, or a \
             gateway starting on the same data dir at the same moment): remove it, or start again"
        }
        ErrorKind::NotADirectory => {
            "a part of the path is a file, not a directory: set data_dir (CHAT_GATEWAY_DATA_DIR) \
             to a directory"
        }
        _ => "check the data dir (data_dir, CHAT_GATEWAY_DATA_DIR)",
    };
    ConfigError::Credentials(format!("cannot {action} {}: {e}; {hint}", path.display()))
}

/// A listener address that is not an IP address and port (`localhost:4600`, `:4600`), named
/// with where it came from and the form expected, before extraction turns it into a bare
/// "invalid socket address syntax".
fn check_address(fig: &Figment, key: &str) -> Result<(), ConfigError> {
    let Ok(value) = fig.find_value(key) else {
        return Ok(());
    };
    let Some(text) = value.as_str() else {
        return Ok(());
    };
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let from = match fig.find_metadata(key) {
        Some(m) if m.name.contains("environment") => format!(" (from {})", keys::env_name(key)),
        Some(m) => match &m.source {
            Some(source) => format!(" (in {source})"),
            None => String::new(),
        },
        None => String::new(),
    };
    let port = key_port(key);
    Err(ConfigError::Invalid(format!(
        "{key} = \"{text}\"{from} is not an address to listen on: give an IP address and a \
         port, such as 127.0.0.1:{port} (this machine only), 0.0.0.0:{port} (every IPv4 \
         interface) or [::]:{port}; host names such as localhost are not resolved"
    )))
}

/// The default port of a listener setting, for examples in messages.
fn key_port(key: &str) -> u16 {
    let defaults = Config::defaults();
    match key {
        "admin_addr" => defaults.admin_addr.port(),
        _ => defaults.public_addr.port(),
    }
}

#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    api_key: String,
    api_secret: String,
}

fn random_text(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric
        .sample_string(&mut rand::rng(), len)
        .to_lowercase()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stored_credentials_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::defaults();
        c.data_dir = dir.path().to_path_buf();
        for body in [
            r#"{"api_key":"","api_secret":""}"#,
            r#"{"api_key":"k","api_secret":""}"#,
            r#"{"api_key":"","api_secret":"s"}"#,
        ] {
            std::fs::write(dir.path().join("credentials.json"), body).unwrap();
            let err = c.credentials().expect_err(body);
            assert!(err.to_string().contains("must not be empty"), "{err}");
        }
    }

    #[test]
    fn a_host_name_as_listener_address_says_the_form_expected() {
        let fig = Figment::from(Toml::string(DEFAULTS))
            .merge(Toml::string("public_addr = \"localhost:4600\""));
        let err = check_address(&fig, "public_addr").unwrap_err().to_string();
        assert!(
            err.contains("\"localhost:4600\"") && err.contains("127.0.0.1:4600"),
            "{err}"
        );
        check_address(&fig, "admin_addr").unwrap();
    }

    #[test]
    fn an_invalid_log_filter_is_refused() {
        let mut c = Config::defaults();
        c.log = "inof".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("log = \"inof\""), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_secret_is_redacted() {
        let mut c = Config::defaults();
        c.validate().unwrap();
        assert_eq!(c.public_addr.port(), 4600);
        assert_eq!(c.admin_addr.port(), 4601);
        c.api_key = "k".into();
        c.api_secret = "very-secret-value".into();
        assert!(!format!("{c:?}").contains("very-secret-value"));
    }

    #[test]
    fn the_store_kind_defaults_to_sled_and_refuses_what_it_does_not_know() {
        assert_eq!(Config::defaults().store.kind, StoreKind::Sled);
        let with = |toml: &str| {
            Figment::from(Toml::string(DEFAULTS))
                .merge(Toml::string(toml))
                .extract::<Config>()
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            with("[store]\nkind = \"sled\"").unwrap().store.kind,
            StoreKind::Sled
        );
        let err = with("[store]\nkind = \"mongo\"").unwrap_err();
        assert!(err.contains("mongo") && err.contains("kind"), "{err}");
    }

    #[test]
    fn the_postgres_kind_needs_a_valid_url_and_hides_its_password() {
        let mut c = Config::defaults();
        c.store.kind = StoreKind::Postgres;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.postgres_url"), "{err}");
        c.store.postgres_url = "postgres://u@h:notaport/db".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.postgres_url"), "{err}");
        c.store.postgres_url = "postgres://gw:hunter2@db.internal:5432/chat".into();
        c.validate().unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("gw:<redacted>@db.internal:5432/chat"),
            "{shown}"
        );
        assert_eq!(
            redact_url("host=h user=u password=hunter2"),
            "host=h user=u password=<redacted>"
        );
    }
}
