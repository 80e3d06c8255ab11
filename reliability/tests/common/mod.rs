//! What the crash tests share: the gateway binary they run.

use std::path::PathBuf;

/// `CHAT_GATEWAY_BIN`, or `chat-gateway` in the profile directory this test was built into.
pub fn gateway_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHAT_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("chat-gateway");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --bin chat-gateway` (or `cargo test --workspace`, which builds it) or set CHAT_GATEWAY_BIN",
        bin.display()
    );
    bin
}
