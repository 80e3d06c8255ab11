//! `benchrun`: runs the benchmark scenarios against the gateway and the baselines.

use chat_gateway_bench::run::{run, RunArgs};
use clap::Parser;

#[tokio::main]
async fn main() {
    let code = run(RunArgs::parse()).await;
    std::process::exit(code);
}
