//! What the gateway refuses to start with, and how it says so: empty credentials in
//! `credentials.json` (a token signed with the empty secret would verify, a server token
//! included); config keys and `CHAT_GATEWAY_*` variables that name no setting; addresses in
//! use or not in the form expected; a data dir another process holds. Each refusal names the
//! key, path or address and what to do, and comes before anything is written.

use crate::bin::{gateway, run};
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

/// A fresh scratch directory; the gateway's default data dir `./data` falls inside it.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[track_caller]
fn assert_refused(run: &crate::bin::Run, dir: &std::path::Path, wanted: &[&str]) {
    assert!(!run.status.success(), "started: {run:?}");
    for text in wanted {
        assert!(run.stderr.contains(text), "no {text:?} in:\n{}", run.stderr);
    }
    // Refused before any side effect: no data dir, so no credentials either.
    assert!(
        !dir.join("data").exists(),
        "a refused start wrote {}",
        dir.join("data").display()
    );
}

#[tokio::test]
async fn unknown_keys_in_the_config_file_stop_the_start_with_the_nearest_setting() {
    let dir = scratch();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        "public_adr = \"127.0.0.1:0\"\nmax_connections = 5\n[limits]\nmax_conections = 10\n\
         [limit]\nidle_timeout_secs = 5\n",
    )
    .expect("config file");
    let mut command = gateway(dir.path());
    command.arg("--config").arg(&file);
    let run = run(command).await;
    assert_refused(
        &run,
        dir.path(),
        &[
            "unknown key `public_adr`",
            "did you mean `public_addr`?",
            "unknown key `limits.max_conections`",
            "did you mean `limits.max_connections`?",
            "unknown key `max_connections`",
            "unknown key `limit.idle_timeout_secs`",
            "did you mean `limits.idle_timeout_secs`?",
            "gateway.toml",
        ],
    );
}

#[tokio::test]
async fn unknown_environment_variables_stop_the_start_with_the_nearest_setting() {
    let dir = scratch();
    let mut command = gateway(dir.path());
    command
        .env("CHAT_GATEWAY_PUBLIC_ADRR", "127.0.0.1:0")
        .env("CHAT_GATEWAY_LIMITS_MAX_CONNECTIONS", "10")
        .env("CHAT_GATEWAY_STORE", "sled");
    let run = run(command).await;
    assert_refused(
        &run,
        dir.path(),
        &[
            "CHAT_GATEWAY_PUBLIC_ADRR: did you mean CHAT_GATEWAY_PUBLIC_ADDR?",
            "CHAT_GATEWAY_LIMITS_MAX_CONNECTIONS: did you mean \
             CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS?",
            "CHAT_GATEWAY_STORE: `store` is a section",
        ],
    );
}

#[tokio::test]
async fn variables_of_the_scripts_and_tests_are_not_settings_and_not_refused() {
    let dir = scratch();
    let served = crate::bin::Served::start(
        dir.path(),
        crate::common::API_KEY,
        &crate::common::random_secret(),
        &[],
        &[
            ("CHAT_GATEWAY_TEST_PG_URL", "postgres://u@127.0.0.1:1/x"),
            ("CHAT_GATEWAY_BIN", "/nonexistent/chat-gateway"),
            ("CHAT_GATEWAY_LOG", "info"),
            ("CHAT_GATEWAY_LIMITS__MAX_CONNECTIONS", "100"),
        ],
    )
    .await;
    assert!(served.stderr().contains("chat-gateway serving"));
    assert!(served.terminate().await.success());
}

#[tokio::test]
async fn an_address_in_use_is_named_with_its_setting_before_credentials_are_written() {
    let dir = scratch();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut command = gateway(dir.path());
    command
        .env("CHAT_GATEWAY_PUBLIC_ADDR", "127.0.0.1:0")
        .env("CHAT_GATEWAY_ADMIN_ADDR", &addr);
    let run = run(command).await;
    assert_refused(
        &run,
        dir.path(),
        &[
            &format!("cannot listen on {addr} (admin_addr)"),
            "CHAT_GATEWAY_ADMIN_ADDR",
            "free address",
        ],
    );
}

#[tokio::test]
async fn a_host_name_as_address_is_refused_with_the_form_expected() {
    let dir = scratch();
    let mut command = gateway(dir.path());
    command.env("CHAT_GATEWAY_PUBLIC_ADDR", "localhost:4600");
    let run = run(command).await;
    assert_refused(
        &run,
        dir.path(),
        &[
            "public_addr = \"localhost:4600\" (from CHAT_GATEWAY_PUBLIC_ADDR)",
            "127.0.0.1:4600",
            "0.0.0.0:4600",
        ],
    );
}

#[tokio::test]
async fn a_second_instance_on_the_data_dir_is_told_it_is_in_use() {
    let dir = scratch();
    let secret = crate::common::random_secret();
    let first =
        crate::bin::Served::start(dir.path(), crate::common::API_KEY, &secret, &[], &[]).await;
    let mut second = gateway(dir.path());
    second
        .env("CHAT_GATEWAY_PUBLIC_ADDR", "127.0.0.1:0")
        .env("CHAT_GATEWAY_ADMIN_ADDR", "127.0.0.1:0")
        .env("CHAT_GATEWAY_DATA_DIR", dir.path().join("data"));
    // No credentials configured for the second: it must not generate them in a data dir it
    // is then refused.
    let run = run(second).await;
    assert!(!run.status.success(), "{run:?}");
    let data = dir.path().join("data");
    let wanted = format!("data dir {} is in use by another process", data.display());
    assert!(run.stderr.contains(&wanted), "{}", run.stderr);
    assert!(!run.stderr.contains("Os {"), "{}", run.stderr);
    assert!(
        !data.join("credentials.json").exists(),
        "credentials written by a refused start"
    );
    assert!(first.terminate().await.success());
}

#[tokio::test]
async fn credential_failures_name_the_path_and_what_to_do() {
    // The data dir under a regular file.
    let dir = scratch();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("file");
    let mut command = gateway(dir.path());
    command.env("CHAT_GATEWAY_DATA_DIR", file.join("data"));
    let out = run(command).await;
    assert!(!out.status.success());
    let named = file.join("data").display().to_string();
    assert!(out.stderr.contains(&named), "{}", out.stderr);
    assert!(out.stderr.contains("is a file"), "{}", out.stderr);
    assert!(
        out.stderr.contains("CHAT_GATEWAY_DATA_DIR"),
        "{}",
        out.stderr
    );

    // credentials.json a dangling link: it cannot be read, nor written over.
    let dir = scratch();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::os::unix::fs::symlink(dir.path().join("gone"), data.join("credentials.json"))
        .expect("symlink");
    let mut command = gateway(dir.path());
    command.env("CHAT_GATEWAY_DATA_DIR", &data);
    let run = run(command).await;
    assert!(!run.status.success());
    let named = format!("cannot write {}", data.join("credentials.json").display());
    assert!(run.stderr.contains(&named), "{}", run.stderr);
    assert!(run.stderr.contains("remove it"), "{}", run.stderr);
}
