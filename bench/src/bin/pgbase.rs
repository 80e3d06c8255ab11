//! `pgbase`: raw PostgreSQL write throughput for the admin-write comparison; prints a JSON report.

use chat_gateway_bench::pgbase::{run_pgbase, PgArgs};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Raw PostgreSQL baseline: the store's batch upserts and partial updates")]
struct Cli {
    #[command(flatten)]
    args: PgArgs,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run_pgbase(&cli.args).await {
        Ok(report) => println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        ),
        Err(e) => {
            eprintln!("pgbase: {e}");
            std::process::exit(1);
        }
    }
}
