//! `clusterbench`: cross-node event latency on a PostgreSQL cluster, printed as JSON and as
//! markdown tables.

use chat_gateway_bench::cluster::{markdown, run_cluster, ClusterArgs};
use clap::Parser;

#[tokio::main]
async fn main() {
    let args = ClusterArgs::parse();
    match run_cluster(&args).await {
        Ok(report) => {
            let json = serde_json::to_string_pretty(&report).expect("report serialises");
            if let Some(out) = &args.out {
                if let Err(e) = std::fs::write(out, format!("{json}\n")) {
                    eprintln!("clusterbench: cannot write {}: {e}", out.display());
                }
            }
            println!("{json}\n\n{}", markdown(&report));
        }
        Err(e) => {
            eprintln!("clusterbench: {e}");
            std::process::exit(1);
        }
    }
}
