//! Logs: client-supplied text reaches log lines (a refused connect logs its reason, which
//! names the offending key) — a key carrying a newline and escape bytes must not start a
//! forged log entry nor reach the terminal raw. Lines go to stderr, coloured only on a
//! terminal, as JSON on request; a filter that does not parse stops the start; sled is quiet
//! at debug; `info` sums connections up per interval; the secret and tokens never appear.

use serde_json::{json, Value};

use crate::bin::{gateway, run, Served};
use crate::common::{random_secret, ProcessServer, API_KEY};
use crate::ws::{connect_url, expect_refusal, uid};

#[tokio::test]
async fn a_key_with_newlines_and_escape_bytes_cannot_forge_a_log_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each refusal is logged at debug (info has the per-interval summary).
    let data = dir.path().join("data");
    let log = dir.path().join("gateway.log");
    let mut server = ProcessServer::spawn(
        &data,
        &log,
        API_KEY,
        &random_secret(),
        &[("RUST_LOG", "debug")],
    );
    server.wait_serving().await.expect("serving");
    let id = uid("logs");
    // A value nested past the bound is refused, and the refusal names its key.
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = Value::Array(vec![deep]);
    }
    let key = "x\n2099-01-01T00:00:00Z  INFO forged: admin access granted\r\u{1b}[2J\u{2028}end";
    let url = connect_url(
        &server,
        &id,
        json!({"id": &id, key: deep}),
        &server.user_token(&id),
        "jwt",
    );
    expect_refusal(&url, 4).await;
    // The line is written before the socket closes; give the writer a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = server.log();
    let refused = log
        .lines()
        .find(|l| l.contains("connect refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        refused.contains("x\\n2099-01-01T00:00:00Z  INFO forged"),
        "the key is not escaped in {refused:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2099-01-01")),
        "a forged entry starts a line:\n{log}"
    );
    for raw in ['\r', '\u{1b}', '\u{2028}'] {
        assert!(!log.contains(raw), "{raw:?} written raw:\n{log:?}");
    }
}

/// A user connects; one connect is refused for a bad signature; one for an expired token;
/// a back end calls the admin listener, once with a forged token.
async fn connects_failures_and_admin_calls(api: &crate::common::Api) -> Vec<String> {
    let id = uid("logged");
    let good = api.user_token(&id);
    let (socket, _) = crate::ws::connect_user(api, &id, json!({"id": &id})).await;
    drop(socket);
    let forged = crate::hs256(json!({"user_id": &id}), "not-the-secret-of-this-gateway");
    expect_refusal(
        &connect_url(api, &id, json!({"id": &id}), &forged, "jwt"),
        43,
    )
    .await;
    let expired = chat_gateway::auth::user_token(&id, Some(-60), &api.secret);
    expect_refusal(
        &connect_url(api, &id, json!({"id": &id}), &expired, "jwt"),
        40,
    )
    .await;
    api.admin_ok(reqwest::Method::GET, "/app", None).await;
    let other = uid("logged");
    api.admin_ok(
        reqwest::Method::POST,
        "/users",
        Some(json!({"users": {&other: {"id": &other, "name": "Logged"}}})),
    )
    .await;
    let forged_server = crate::hs256(json!({"server": true}), "guessed-secret-value");
    let creds = crate::common::Creds {
        token: Some(forged_server.clone()),
        ..api.server_creds()
    };
    let (status, _, _) = api
        .admin_with(reqwest::Method::GET, "/app", None, &creds)
        .await;
    assert_eq!(status, 401);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    vec![
        good,
        forged,
        expired,
        forged_server,
        api.server_token.clone(),
    ]
}

#[tokio::test]
async fn logs_go_to_stderr_as_text_without_colour_off_a_terminal_and_name_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = random_secret();
    let served = Served::start(dir.path(), API_KEY, &secret, &[], &[("RUST_LOG", "debug")]).await;
    let tokens = connects_failures_and_admin_calls(&served).await;
    let (stdout, stderr) = (served.stdout(), served.stderr());
    assert!(served.terminate().await.success());
    assert_eq!(stdout, "", "stdout is for command output, not logs");
    assert!(stderr.contains("chat-gateway serving"), "{stderr}");
    assert!(stderr.contains("connect refused"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes off a terminal:\n{stderr}"
    );
    assert_no_secret(&stderr, &secret, &tokens);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_name_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = random_secret();
    let served = Served::start(
        dir.path(),
        API_KEY,
        &secret,
        &["--log-format", "json"],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let tokens = connects_failures_and_admin_calls(&served).await;
    let stderr = served.stderr();
    assert!(served.terminate().await.success());
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["message"] == "chat-gateway serving")
        .unwrap_or_else(|| panic!("no serving line:\n{stderr}"));
    assert_eq!(serving["level"], "INFO");
    assert!(serving["public"].as_str().is_some(), "{serving}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "connect refused" && l["code"] == 43),
        "{stderr}"
    );
    // sled's internals are quiet at debug unless the filter names sled.
    let sled: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("sled")))
        .collect();
    assert!(sled.is_empty(), "sled at debug: {sled:?}");
    assert!(
        lines.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("chat_gateway"))),
        "{stderr}"
    );
    assert_no_secret(&stderr, &secret, &tokens);
}

#[track_caller]
fn assert_no_secret(log: &str, secret: &str, tokens: &[String]) {
    assert!(!log.contains(secret), "the secret is in the log");
    for token in tokens {
        let signature = token.rsplit('.').next().expect("a JWT");
        assert!(
            !log.contains(token.as_str()),
            "a token is in the log: {token}"
        );
        assert!(
            !log.contains(signature),
            "a token's signature is in the log"
        );
    }
}

#[tokio::test]
async fn the_log_is_coloured_on_a_terminal() {
    // `script` (util-linux) gives the gateway a terminal for stderr; `timeout` stops it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = std::process::Command::new("script");
    command.args([
        "-qec",
        &format!(
            "timeout -s TERM 5 {} serve",
            env!("CARGO_BIN_EXE_chat-gateway")
        ),
        "/dev/null",
    ]);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHAT_GATEWAY_PUBLIC_ADDR", "127.0.0.1:0")
        .env("CHAT_GATEWAY_ADMIN_ADDR", "127.0.0.1:0")
        .env("CHAT_GATEWAY_API_KEY", API_KEY)
        .env("CHAT_GATEWAY_API_SECRET", random_secret())
        .env("CHAT_GATEWAY_STORE__BALLAST_BYTES", "0")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null());
    let run = run(command).await;
    assert!(run.stdout.contains("chat-gateway serving"), "{run:?}");
    assert!(
        run.stdout.contains("\u{1b}["),
        "no colour on a terminal: {run:?}"
    );
}

#[tokio::test]
async fn a_filter_that_does_not_parse_stops_the_start() {
    for (var, value, named) in [
        ("CHAT_GATEWAY_LOG", "inof", "log = \"inof\""),
        (
            "RUST_LOG",
            "info,chat_gateway=verbose",
            "RUST_LOG=\"info,chat_gateway=verbose\"",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = gateway(dir.path());
        command.env(var, value);
        let run = run(command).await;
        assert!(!run.status.success(), "{var}={value}: {run:?}");
        assert!(run.stderr.contains(named), "{var}: {}", run.stderr);
        assert!(
            run.stderr.contains("is not a tracing filter"),
            "{}",
            run.stderr
        );
        assert!(!dir.path().join("data").exists(), "{var}: data dir written");
    }
}

#[tokio::test]
async fn info_sums_connections_up_once_an_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Served::start(
        dir.path(),
        API_KEY,
        &random_secret(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info"), ("CHAT_GATEWAY_LOG_SUMMARY_SECS", "1")],
    )
    .await;
    connects_failures_and_admin_calls(&served).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut accepted, mut refused, mut closed) = (0, 0, 0);
    while (accepted, refused, closed) != (1, 2, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "summaries say {accepted} accepted, {refused} refused, {closed} closed:\n{}",
            served.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let summaries: Vec<Value> = served
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "connections")
            .collect();
        let sum = |k: &str| summaries.iter().filter_map(|s| s[k].as_u64()).sum::<u64>();
        (accepted, refused, closed) = (sum("accepted"), sum("refused"), sum("closed"));
        if refused == 2 {
            let codes: Vec<&str> = summaries
                .iter()
                .filter_map(|s| s["refused_by_code"].as_str())
                .collect();
            assert!(codes.iter().any(|c| c.contains("43:1")), "{codes:?}");
        }
    }
    let stderr = served.stderr();
    assert!(
        !stderr.contains("\"connect refused\""),
        "per-connection lines at info"
    );
    assert!(served.terminate().await.success());
}
