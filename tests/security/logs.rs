//! Log injection: client-supplied text reaches `info` lines (a refused connect logs its
//! reason, which names the offending key). A key carrying a newline and escape bytes must not
//! start a forged log entry nor reach the terminal raw.

use serde_json::{json, Value};

use crate::common::{random_secret, ProcessServer, API_KEY};
use crate::ws::{connect_url, expect_refusal, uid};

#[tokio::test]
async fn a_key_with_newlines_and_escape_bytes_cannot_forge_a_log_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ProcessServer::start(&dir.path().join("data"), API_KEY, &random_secret()).await;
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
