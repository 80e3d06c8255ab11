//! `sledbase`: raw sled write throughput for the admin-write comparison; prints a JSON report.

use chat_gateway_bench::sledbase::{run_sledbase, SledArgs};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Raw sled baseline: batch upserts and partial updates with flush")]
struct Cli {
    #[command(flatten)]
    args: SledArgs,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run_sledbase(&cli.args).await {
        Ok(report) => println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        ),
        Err(e) => {
            eprintln!("sledbase: {e}");
            std::process::exit(1);
        }
    }
}
