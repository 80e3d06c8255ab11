//! `loadgen`: client-side load for the gateway (or the baseline) — idle connections, admin
//! writes, user queries and event latency — each printing one JSON report on stdout.

use chat_gateway_bench::admin::{run_admin, AdminArgs};
use chat_gateway_bench::events::{run_events, EventArgs};
use chat_gateway_bench::loadgen::{run_connect, ConnectArgs};
use chat_gateway_bench::query::{run_query, QueryArgs};
use clap::{Parser, Subcommand};
use std::io::Write;

#[derive(Parser)]
#[command(about = "Load generator speaking the Stream Chat /connect handshake")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N authenticated WebSockets, time the handshakes, hold them idle, report.
    Connect(ConnectArgs),
    /// Upsert users in batches and partially update them over the admin REST API.
    Admin(AdminArgs),
    /// Create users through the admin API, then time each kind of user query.
    Query(QueryArgs),
    /// Time admin writes until the user's socket sees the event (or is closed).
    Events(EventArgs),
}

fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(value).expect("report serialises")
    );
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Connect(args) => {
            let report = run_connect(&args, |ready| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{ready}");
                let _ = out.flush();
            })
            .await;
            print_json(&report);
        }
        Command::Admin(args) => print_json(&run_admin(&args).await),
        Command::Query(args) => print_json(&run_query(&args).await),
        Command::Events(args) => print_json(&run_events(&args).await),
    }
    // Held sockets are dropped with the runtime; no need to wait for their tasks.
    std::process::exit(0);
}
