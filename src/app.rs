//! Builds the shared state, serves both listeners, and owns shutdown: stop accepting, close
//! every WebSocket with 1001, wait for them with a deadline, flush the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::feed::AdminFeed;
use crate::admin::AdminState;
use crate::auth::Secret;
use crate::cluster::Cluster;
use crate::config::{Config, StoreKind};
use crate::events::{EventBus, LocalBus};
use crate::gateway::GatewayState;
use crate::http::{BodyLimit, BodyTimeout};
use crate::hub::Hub;
use crate::presence::{LocalPresence, Presence};
use crate::ratelimit::middleware::ListenerLimits;
use crate::ratelimit::RateLimits;
use crate::store::{Ballast, GuardedStore, PostgresStore, SledStore, SpaceGuard, Store};
use crate::users::{SettingsWatch, UsersService};

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration or credentials.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Socket trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A start-up step failed; the message names the path or address and what to do.
    #[error("{0}")]
    Startup(String),
    /// The users service could not start.
    #[error("users service: {0}")]
    Service(#[from] crate::protocol::ApiError),
}

/// How often the PostgreSQL store checks that the database answers, for `/healthz`.
const POSTGRES_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Opens the store `store.kind` names, ready to serve (its background upkeep started).
/// The data volume guard is sled's: PostgreSQL guards its own disk.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    match config.store.kind {
        StoreKind::Sled => open_sled_store(config),
        StoreKind::Postgres => Ok(Arc::new(open_postgres(config).await?)),
    }
}

fn open_sled_store(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    let guarded = open_sled(config)?;
    guarded.spawn_watch(Duration::from_millis(config.store.space_check_interval_ms));
    Ok(guarded)
}

async fn open_postgres(config: &Config) -> Result<PostgresStore, AppError> {
    let store = PostgresStore::open(&config.store.postgres_options()).await?;
    store.spawn_probe(POSTGRES_PROBE_INTERVAL);
    Ok(store)
}

/// What the users service runs on: the store, the bus and presence — of a single node on
/// sled, of a cluster node on PostgreSQL.
struct Backbone {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    presence: Arc<dyn Presence>,
    cluster: Option<Cluster>,
}

async fn backbone(
    config: &Config,
    hub: &Arc<Hub>,
    local: Arc<LocalBus>,
) -> Result<Backbone, AppError> {
    match config.store.kind {
        StoreKind::Sled => Ok(Backbone {
            store: open_sled_store(config)?,
            bus: local,
            presence: Arc::new(LocalPresence::new(hub.clone())),
            cluster: None,
        }),
        StoreKind::Postgres => {
            let store = open_postgres(config).await?;
            let cluster = Cluster::start(
                store.clone(),
                config.store.postgres_options(),
                hub.clone(),
                local,
                config.limits.max_connections_per_user,
            )
            .await?;
            Ok(Backbone {
                store: Arc::new(store),
                bus: cluster.bus.clone(),
                presence: cluster.presence.clone(),
                cluster: Some(cluster),
            })
        }
    }
}

/// Opens the embedded store in the configured data dir, behind the data volume guard.
fn open_sled(config: &Config) -> Result<Arc<GuardedStore>, AppError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        AppError::Startup(format!(
            "cannot create the data dir {}: {e}; create it for the user running the gateway, \
             or set data_dir (CHAT_GATEWAY_DATA_DIR) to a directory it may write",
            config.data_dir.display()
        ))
    })?;
    let space = SpaceGuard::new(
        &config.data_dir,
        config.store.min_free_bytes,
        Duration::from_millis(config.store.space_check_interval_ms),
    );
    let db = config.data_dir.join("db");
    let opener = Arc::new(
        move || -> Result<Arc<dyn Store>, crate::store::StoreError> {
            Ok(Arc::new(SledStore::open(&db)?))
        },
    );
    let ballast = Ballast::new(&config.data_dir, config.store.ballast_bytes);
    Ok(Arc::new(GuardedStore::open(opener, space, ballast)?))
}

/// Serves the gateway on two bound listeners until `shutdown` resolves.
pub async fn run(
    config: Config,
    api_key: String,
    secret: Secret,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    if secret.is_empty() || api_key.is_empty() {
        return Err(crate::config::ConfigError::Invalid(
            "the API key and secret must not be empty".into(),
        )
        .into());
    }
    if secret.is_short() {
        tracing::warn!(
            bytes = secret.expose().len(),
            recommended = crate::auth::MIN_SECRET_BYTES,
            "the API secret is short: tokens signed with it can be forged by guessing it"
        );
    }
    let limits = &config.limits;
    let hub = Arc::new(
        Hub::new(
            limits.max_connections,
            limits.max_connections_per_user,
            limits.outbound_queue_frames,
        )
        .with_max_anonymous(limits.max_anonymous_connections),
    );
    let local = Arc::new(LocalBus::new());
    local.subscribe(hub.clone());
    let feed = Arc::new(AdminFeed::new(limits.admin_feed_frames));
    local.subscribe(feed.clone());
    let Backbone {
        store,
        bus,
        presence,
        cluster,
    } = backbone(&config, &hub, local.clone()).await?;
    let mut svc = UsersService::new(store.clone(), bus, presence, api_key, secret.clone())
        .await?
        .with_max_answer_bytes(limits.max_query_response_bytes);
    if cluster.is_some() {
        svc = svc.with_shared_settings();
    }
    let svc = Arc::new(svc);
    if cluster.is_some() {
        // Another node's settings save reaches this one as an event.
        local.subscribe(SettingsWatch::new(&svc));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    if config.log_summary_secs > 0 {
        let hub = hub.clone();
        crate::telemetry::tally::spawn_summary(
            Duration::from_secs(config.log_summary_secs),
            move || hub.live_connections(),
            stop_rx.clone(),
        );
    }

    let rate_limits = Arc::new(RateLimits::new(&config, svc.api_key(), secret.clone()));
    let admin_state = AdminState {
        svc: svc.clone(),
        rate_limits: rate_limits.clone(),
        feed,
        base_url: if config.admin_url.is_empty() {
            format!("http://{}", admin.local_addr()?)
        } else {
            config.admin_url.trim_end_matches('/').to_owned()
        },
        write_timeout: Duration::from_secs(limits.write_timeout_secs),
        metrics: crate::telemetry::metrics_handle(),
        stop: stop_rx.clone(),
    };
    let body_limit = axum::Extension(BodyLimit(limits.max_body_bytes));
    let body_timeout = axum::Extension(BodyTimeout(Duration::from_secs(limits.body_timeout_secs)));
    let header_limit =
        axum::middleware::from_fn_with_state(limits.max_header_bytes, crate::http::limit_headers);
    let admin_router = crate::admin::router(admin_state)
        .layer(body_limit)
        .layer(body_timeout)
        .layer(header_limit.clone());
    let gateway_state = GatewayState::new(svc.clone(), hub.clone(), &config, stop_rx.clone());
    crate::gateway::spawn_liveness(
        hub.clone(),
        gateway_state.clock.clone(),
        Duration::from_secs(limits.health_check_interval_secs),
        Duration::from_secs(limits.idle_timeout_secs),
    );
    let public_router = crate::gateway::router(
        gateway_state,
        ListenerLimits {
            limits: rate_limits,
            admin: false,
        },
        &config.cors,
    )
    .layer(body_limit)
    .layer(body_timeout)
    .layer(header_limit);

    tracing::info!(
        public = %public.local_addr()?,
        admin = %admin.local_addr()?,
        data_dir = %config.data_dir.display(),
        "chat-gateway serving"
    );
    let budgets = crate::serve::descriptor_budget()
        .map(|available| crate::serve::Budgets::split(available, limits.admin_max_sockets));
    if let Some(budgets) = budgets {
        tracing::info!(
            public = budgets.public,
            admin = budgets.admin,
            "descriptor budgets of the listeners"
        );
        if budgets.public <= limits.max_connections {
            tracing::warn!(
                budget = budgets.public,
                max_connections = limits.max_connections,
                "the descriptor limit allows fewer sockets than limits.max_connections"
            );
        }
    }
    let handshake_timeout = Duration::from_secs(limits.handshake_timeout_secs);
    let public_limits = crate::serve::ServeLimits {
        name: "public",
        first_request_timeout: handshake_timeout,
        header_timeout: handshake_timeout,
        max_sockets: budgets.map(|b| b.public),
    };
    let public_task = tokio::spawn(crate::serve::serve_http1(
        public,
        public_router,
        public_limits,
        stop_rx.clone(),
    ));
    // Back ends hold keep-alive sessions: a new connection has `admin_header_timeout_secs` for
    // its first request, an idle one `admin_keepalive_timeout_secs` for its next.
    let admin_limits = crate::serve::ServeLimits {
        name: "admin",
        first_request_timeout: Duration::from_secs(limits.admin_header_timeout_secs),
        header_timeout: Duration::from_secs(limits.admin_keepalive_timeout_secs),
        max_sockets: budgets.map(|b| b.admin),
    };
    let admin_task = tokio::spawn(crate::serve::serve_http1(
        admin,
        admin_router,
        admin_limits,
        stop_rx.clone(),
    ));

    shutdown.await;
    tracing::info!("shutting down: closing connections");
    let _ = stop_tx.send(true);
    hub.close_all("server shutting down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limits.shutdown_grace_secs);
    while hub.live_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tokio::time::timeout_at(deadline, async {
        let _ = public_task.await;
        let _ = admin_task.await;
    })
    .await;
    if let Some(cluster) = &cluster {
        cluster.leave().await;
    }
    store.flush().await?;
    tracing::info!(left = hub.live_connections(), "stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
