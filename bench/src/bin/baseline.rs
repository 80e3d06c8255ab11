//! `baseline`: the minimal `/connect` WebSocket server the gateway is measured against.

use chat_gateway_bench::baseline::{run, BaselineConfig};
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Minimal WebSocket server doing the gateway's /connect job")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4610")]
    addr: SocketAddr,
    /// App secret the user tokens are signed with.
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Send a server health.check on each connection this often (0: never).
    #[arg(long, default_value_t = 30)]
    health_check_secs: u64,
    /// Initial WebSocket read buffer per connection, bytes.
    #[arg(long, default_value_t = chat_gateway_bench::baseline::DEFAULT_READ_BUFFER)]
    read_buffer: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.addr).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
    let config = BaselineConfig {
        secret: cli.secret,
        read_buffer: cli.read_buffer,
        health_check: (cli.health_check_secs > 0)
            .then(|| Duration::from_secs(cli.health_check_secs)),
    };
    run(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
