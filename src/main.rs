//! The `chat-gateway` binary: parses the command line, loads the configuration and calls into
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use chat_gateway::config::{Config, LogFormat};
use chat_gateway::{app, auth, config, model, startup, telemetry};

#[derive(Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "Self-hosted realtime chat gateway",
    after_help = "`--help` lists every setting with its environment variable and default."
)]
struct Cli {
    /// TOML configuration file, read on top of the defaults.
    #[arg(long, global = true, env = "CHAT_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines on stderr as `text` or `json` (wins over the `log_format` setting).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve both listeners (the default).
    Serve,
    /// Print a token signed with the configured or stored secret (never creates one).
    Token {
        /// Mint a user token for this id (a-z, A-Z, 0-9, @, _ and -, at most 255 bytes).
        #[arg(long, conflicts_with = "server", required_unless_present = "server")]
        user_id: Option<String>,
        /// Seconds until the token expires (no expiry by default).
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<i64>,
        /// Mint a server token for the admin listener.
        #[arg(long)]
        server: bool,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command()
        .after_long_help(config::settings_help())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token {
            user_id,
            expires_in,
            server,
        } => token(&config, user_id, expires_in, server),
        Command::Serve => serve(config),
    }
}

/// A start-up error, printed plainly (exit status 2).
fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("chat-gateway: {e}");
    ExitCode::from(2)
}

fn token(
    config: &Config,
    user_id: Option<String>,
    expires_in: Option<i64>,
    server: bool,
) -> ExitCode {
    if let Some(secs) = expires_in {
        if secs <= 0 {
            return fail(format!(
                "--expires-in {secs}: give a positive number of seconds"
            ));
        }
    }
    if let Some(id) = &user_id {
        if let Err(e) = model::user::validate_id(id) {
            return fail(format!("--user-id: {}", e.detail));
        }
    }
    let secret = match config.existing_credentials() {
        Ok(Some((_, secret))) => secret,
        Ok(None) => {
            return fail(format!(
                "no credentials: {} does not exist and api_key / api_secret are not set. Start \
                 the gateway once (`{} serve`), which generates them there, or set \
                 CHAT_GATEWAY_API_KEY and CHAT_GATEWAY_API_SECRET to the ones the gateway uses",
                config.credentials_path().display(),
                startup::invocation()
            ))
        }
        Err(e) => return fail(e),
    };
    let token = match (server, user_id) {
        (true, _) => auth::server_token_expiring(&secret, expires_in),
        (false, Some(id)) => auth::user_token(&id, expires_in, &secret),
        (false, None) => unreachable!("clap requires --user-id or --server"),
    };
    println!("{token}");
    ExitCode::SUCCESS
}

fn serve(config: Config) -> ExitCode {
    if let Err(e) = telemetry::init_tracing(&config.log, config.log_format) {
        return fail(e);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    // Everything that can be refused is checked before the first write: the listeners are
    // bound before credentials are generated.
    let started = runtime.block_on(async {
        let (public, admin) = startup::bind_listeners(&config)?;
        startup::check_data_dir(&config)?;
        let (api_key, secret, generated) = config.credentials()?;
        Ok::<_, app::AppError>((public, admin, api_key, secret, generated))
    });
    let (public, admin, api_key, secret, generated) = match started {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if generated {
        eprintln!("{}", startup::first_start_hint(&config, &api_key));
    } else {
        tracing::info!(api_key = %api_key, "using configured API key");
    }
    let format = config.log_format;
    let result = runtime.block_on(app::run(
        config,
        api_key,
        secret,
        public,
        admin,
        app::termination_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Text lines go where the plain message goes; JSON consumers get it as a line.
            if format == LogFormat::Json {
                tracing::error!(error = %e, "chat-gateway stopped");
            }
            fail(e)
        }
    }
}
