//! The command line: `--help` documents every setting with its environment variable and
//! default; `token` refuses ids the gateway would refuse, honours `--expires-in` for server
//! tokens, and never creates credentials; the first-start hint names a command that works.

use std::time::Duration;

use chat_gateway::config::keys::{env_name, Keys};
use serde_json::Value;

use crate::bin::{gateway, run, Served};
use crate::common::{random_secret, API_KEY};

#[tokio::test]
async fn help_lists_every_setting_with_its_variable_and_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = gateway(dir.path());
    command.arg("--help");
    let help = run(command).await;
    assert!(help.status.success(), "{help:?}");
    let text = help.stdout;
    let keys = Keys::known();
    let settings: Vec<&str> = keys.settings().collect();
    assert!(settings.len() > 40, "{settings:?}");
    for key in settings {
        assert!(
            text.contains(&format!("\n  {key} = ")),
            "{key} missing:\n{text}"
        );
        assert!(text.contains(&env_name(key)), "{key}: no variable");
    }
    for line in [
        "  public_addr = \"127.0.0.1:4600\"\n      env: CHAT_GATEWAY_PUBLIC_ADDR\n",
        "  limits.max_connections_per_user = 50\n      env: \
         CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS_PER_USER\n",
        "  store.kind = \"sled\"\n      env: CHAT_GATEWAY_STORE__KIND\n",
        "  log_format = \"text\"\n",
        "--log-format <FORMAT>",
        "CHAT_GATEWAY_CONFIG",
        "RUST_LOG",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(!dir.path().join("data").exists());
}

/// `token ARGS` with the given credentials in the environment.
async fn token(dir: &std::path::Path, secret: &str, args: &[&str]) -> crate::bin::Run {
    let mut command = gateway(dir);
    command
        .arg("token")
        .args(args)
        .env("CHAT_GATEWAY_API_KEY", API_KEY)
        .env("CHAT_GATEWAY_API_SECRET", secret);
    run(command).await
}

/// The claims of a JWT.
fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn token_refuses_ids_the_gateway_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = random_secret();
    for bad in ["", "a b", "ünï", &"x".repeat(256)] {
        let out = token(dir.path(), &secret, &["--user-id", bad]).await;
        assert!(!out.status.success(), "{bad:?}: {out:?}");
        assert_eq!(out.stdout, "", "{bad:?}: a token was printed");
        assert!(out.stderr.contains("is not a valid user id"), "{out:?}");
    }
    let out = token(dir.path(), &secret, &["--user-id", "alice@x_1-2"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(claims(out.stdout.trim())["user_id"], "alice@x_1-2");
    let out = token(
        dir.path(),
        &secret,
        &["--user-id", "a", "--expires-in", "0"],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
}

#[tokio::test]
async fn server_tokens_honour_expires_in_at_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = random_secret();
    let served = Served::start(dir.path(), API_KEY, &secret, &[], &[]).await;
    let short = token(dir.path(), &secret, &["--server", "--expires-in", "2"]).await;
    assert!(short.status.success(), "{short:?}");
    let short = short.stdout.trim().to_owned();
    let claims = claims(&short);
    assert_eq!(claims["server"], true);
    let exp = claims["exp"].as_i64().expect("an exp claim");
    assert!((exp - crate::now() - 2).abs() <= 1, "exp {exp}");
    let creds = crate::common::Creds {
        token: Some(short),
        ..served.server_creds()
    };
    let (status, _, body) = served
        .admin_with(reqwest::Method::GET, "/app", None, &creds)
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reply = served
        .admin_with(reqwest::Method::GET, "/app", None, &creds)
        .await;
    crate::common::assert_error(&reply, 401, 40, None);
    assert!(served.terminate().await.success());
}

#[tokio::test]
async fn token_never_creates_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = gateway(dir.path());
    command.args(["token", "--server"]);
    let out = run(command).await;
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.to_lowercase().contains("start the gateway once"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("credentials.json"), "{}", out.stderr);
    assert!(!dir.path().join("data").exists(), "token wrote a data dir");
}

#[tokio::test]
async fn the_first_start_hint_names_a_command_that_mints_working_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (public, admin) = (crate::common::free_port(), crate::common::free_port());
    let log = dir.path().join("stderr");
    let child = gateway(dir.path())
        .env("CHAT_GATEWAY_PUBLIC_ADDR", format!("127.0.0.1:{public}"))
        .env("CHAT_GATEWAY_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("CHAT_GATEWAY_STORE__BALLAST_BYTES", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("starts");
    let mut child = crate::bin::KillOnDrop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("chat-gateway serving") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        assert!(matches!(child.0.try_wait(), Ok(None)), "exited: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The test binary is a cargo build: the hint says `cargo run --`, whose arguments after
    // `--` reach this same binary (or, built outside a `target` dir, names the binary).
    let hint = text
        .lines()
        .find(|l| l.starts_with("Mint tokens with"))
        .unwrap_or_else(|| panic!("no hint:\n{text}"));
    let by_path = format!("`{} token --server`", env!("CARGO_BIN_EXE_chat-gateway"));
    assert!(
        hint.contains("`cargo run -- token --server`") || hint.contains(&by_path),
        "{hint}"
    );
    let key_line = text
        .lines()
        .find(|l| l.starts_with("API key: "))
        .expect("key");
    let key = key_line.trim_start_matches("API key: ").to_owned();
    let mut command = gateway(dir.path());
    command.args(["token", "--server"]);
    let minted = run(command).await;
    assert!(minted.status.success(), "{minted:?}");
    let http = reqwest::Client::new();
    let status = http
        .get(format!("http://127.0.0.1:{admin}/app?api_key={key}"))
        .header("Authorization", minted.stdout.trim())
        .header("stream-auth-type", "jwt")
        .send()
        .await
        .expect("admin answers")
        .status();
    assert_eq!(status, 200);
}
