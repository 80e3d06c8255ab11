//! The harness against its own baseline server, in process: connects, refusals, holds.

use chat_gateway_bench::auth::TokenMinter;
use chat_gateway_bench::baseline::{run, BaselineConfig};
use chat_gateway_bench::client::{self, ConnectError, Target};
use chat_gateway_bench::loadgen::{connect_phase, ConnectArgs};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpListener;

async fn start_baseline(
    health_check: Option<Duration>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = BaselineConfig {
        secret: "s3cret".into(),
        health_check,
        read_buffer: 4096,
    };
    tokio::spawn(run(listener, config, async move {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx)
}

fn args(addr: SocketAddr, conns: usize) -> ConnectArgs {
    ConnectArgs {
        addr,
        api_key: "k".into(),
        secret: "s3cret".into(),
        conns,
        user_prefix: "t".into(),
        first_index: 0,
        concurrency: 8,
        sources_first: Ipv4Addr::new(127, 0, 0, 2),
        sources_count: 4,
        timeout_secs: 10,
        hold_secs: 1,
        wait_stdin: false,
        ping_secs: 0,
        procs: 1,
        reconnect: false,
        raw: true,
    }
}

#[tokio::test]
async fn connects_holds_and_counts_health_checks() {
    let (addr, _stop) = start_baseline(Some(Duration::from_millis(300))).await;
    let args = args(addr, 40);
    let holding = connect_phase(&args).await;
    assert_eq!(holding.ready_line(), r#"READY {"connected":40,"failed":0}"#);
    let report = holding.hold_and_finish(&args).await;
    assert_eq!(report.connected, 40);
    assert_eq!(report.upgrade_latency.count, 40);
    assert_eq!(report.upgrade_us.as_ref().map(Vec::len), Some(40));
    assert_eq!(report.dropped_during_hold, 0);
    assert!(report.frames_during_hold >= 40, "{report:?}");
}

#[tokio::test]
async fn a_token_for_another_secret_is_refused_with_code_43() {
    let (addr, _stop) = start_baseline(None).await;
    let target = Target {
        addr,
        api_key: "k".into(),
        minter: TokenMinter::new("wrong"),
    };
    let request = target.request("alice", 1);
    match client::connect(&target, &request, None, Duration::from_secs(5)).await {
        Err(ConnectError::Refused { code, .. }) => assert_eq!(code, 43),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected with a bad token"),
    }
}
