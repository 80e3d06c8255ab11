//! The `chat-gateway` binary: parses the command line, loads the configuration and calls into
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use chat_gateway::{app, auth, config::Config, telemetry};

#[derive(Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "Self-hosted realtime chat gateway"
)]
struct Cli {
    /// TOML configuration file (also CHAT_GATEWAY_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve both listeners (the default).
    Serve,
    /// Print a token signed with the configured or stored secret.
    Token {
        /// Mint a user token for this id.
        #[arg(long, conflicts_with = "server", required_unless_present = "server")]
        user_id: Option<String>,
        /// Seconds until the user token expires (no expiry by default).
        #[arg(long, requires = "user_id")]
        expires_in: Option<i64>,
        /// Mint a server token for the admin listener.
        #[arg(long)]
        server: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token {
            user_id,
            expires_in,
            server,
        } => token(&config, user_id, expires_in, server),
        Command::Serve => serve(config),
    }
}

fn token(
    config: &Config,
    user_id: Option<String>,
    expires_in: Option<i64>,
    server: bool,
) -> ExitCode {
    let (_, secret, generated) = match config.credentials() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if generated {
        eprintln!("generated new credentials in {}", config.data_dir.display());
    }
    let token = match (server, user_id) {
        (true, _) => auth::server_token(&secret),
        (false, Some(id)) => auth::user_token(&id, expires_in, &secret),
        (false, None) => unreachable!("clap requires --user-id or --server"),
    };
    println!("{token}");
    ExitCode::SUCCESS
}

/// Binds a listener with a deep accept queue: a burst of connects then waits in the kernel
/// rather than having its handshakes dropped and retried seconds later (tokio's `bind` asks
/// for 1024; the kernel caps the request at `net.core.somaxconn`).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

fn serve(config: Config) -> ExitCode {
    telemetry::init_tracing(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chat-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (api_key, secret, generated) = config.credentials()?;
        if generated {
            println!(
                "Generated API credentials in {}/credentials.json (mode 0600).\n\
                 API key: {api_key}\n\
                 Mint tokens with `chat-gateway token --server` (admin) or \
                 `chat-gateway token --user-id ID` (users).",
                config.data_dir.display()
            );
        } else {
            tracing::info!(api_key = %api_key, "using configured API key");
        }
        let public = listen(config.public_addr)?;
        let admin = listen(config.admin_addr)?;
        app::run(
            config,
            api_key,
            secret,
            public,
            admin,
            app::termination_signal(),
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat-gateway stopped");
            eprintln!("chat-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
