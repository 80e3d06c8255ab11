//! What the gateway refuses to start with: empty credentials in `credentials.json` (a token
//! signed with the empty secret would verify, a server token included).

use crate::common::ProcessServer;

#[tokio::test]
async fn empty_stored_credentials_stop_the_gateway_at_start() {
    for body in [
        r#"{"api_key":"","api_secret":""}"#,
        r#"{"api_key":"key","api_secret":""}"#,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join("credentials.json"), body).expect("credentials");
        // No configured key or secret: the stored ones are used.
        let log = dir.path().join("gateway.log");
        let mut server = ProcessServer::spawn(&data, &log, "", "", &[]);
        let exit = server
            .wait_serving()
            .await
            .expect_err("the gateway must not serve with an empty secret");
        assert!(!exit.success(), "{body}: exited with {exit}");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains("must not be empty"),
            "{body}: the log does not say why:\n{text}"
        );
    }
}
