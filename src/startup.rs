//! What the binary does before serving, with errors an operator can act on: binding the two
//! listeners (an address in use says which one, and which setting), refusing a data dir in
//! use by another process, and the first-start hint naming a command that works where the
//! gateway was started from.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::app::AppError;
use crate::config::keys::env_name;
use crate::config::{Config, StoreKind};
use crate::store::sled_store;

/// Binds both listeners; run inside the runtime, before anything is written.
pub fn bind_listeners(config: &Config) -> Result<(TcpListener, TcpListener), AppError> {
    let public = bind("public_addr", config.public_addr)?;
    let admin = bind("admin_addr", config.admin_addr)?;
    Ok((public, admin))
}

/// Refuses a data dir whose database another process has open, before credentials are read
/// or generated there (the store would refuse it later, after writing them).
pub fn check_data_dir(config: &Config) -> Result<(), AppError> {
    let data_dir = &config.data_dir;
    if config.store.kind == StoreKind::Sled && sled_store::is_in_use(data_dir) {
        return Err(AppError::Startup(sled_store::in_use(data_dir)));
    }
    Ok(())
}

/// Binds the listener of setting `key`, naming the address and the setting when it fails.
pub fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    listen(addr).map_err(|e| {
        let var = env_name(key);
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "another process (another chat-gateway?) is listening there: stop it, or set \
                 {key} ({var}) to a free address"
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "it is not an address of this machine: set {key} ({var}) to 127.0.0.1, 0.0.0.0 \
                 or one of this machine's own addresses"
            ),
            io::ErrorKind::PermissionDenied => format!(
                "ports below 1024 need privileges: use a port from 1024 up in {key} ({var}), \
                 and a reverse proxy in front for port 80 or 443"
            ),
            _ => format!("check {key} ({var})"),
        };
        AppError::Startup(format!("cannot listen on {addr} ({key}): {e}; {hint}"))
    })
}

/// Binds a listener with a deep accept queue: a burst of connects then waits in the kernel
/// rather than having its handshakes dropped and retried seconds later (tokio's `bind` asks
/// for 1024; the kernel caps the request at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// How to run this binary again from where it was started: `cargo run --release --` from a
/// cargo build, `chat-gateway` when that is what PATH finds, else the binary's path.
pub fn invocation() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "chat-gateway".into();
    };
    invocation_of(&exe, std::env::var_os("PATH").as_deref())
}

fn invocation_of(exe: &Path, path_var: Option<&std::ffi::OsStr>) -> String {
    let profile_dir = exe.parent().and_then(Path::file_name);
    let in_target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|n| n == "target");
    if in_target {
        if profile_dir.is_some_and(|p| p == "release") {
            return "cargo run --release --".into();
        }
        if profile_dir.is_some_and(|p| p == "debug") {
            return "cargo run --".into();
        }
    }
    let name = exe.file_name().unwrap_or_default();
    let on_path = path_var
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .any(|dir| dir.join(name) == exe);
    if on_path {
        name.to_string_lossy().into_owned()
    } else {
        exe.display().to_string()
    }
}

/// The lines printed when credentials were just generated: where, the key (not the secret),
/// and the commands that mint tokens.
pub fn first_start_hint(config: &Config, api_key: &str) -> String {
    let run = invocation();
    format!(
        "Generated API credentials in {} (mode 0600).\n\
         API key: {api_key}\n\
         Mint tokens with `{run} token --server` (admin) or `{run} token --user-id ID` (users).",
        config.credentials_path().display()
    )
}

#[cfg(test)]
mod tests {
    use super::invocation_of;
    use std::path::Path;

    #[test]
    fn the_hint_names_a_command_that_works_from_where_the_binary_is() {
        let path = Some(std::ffi::OsStr::new("/usr/bin:/usr/local/bin"));
        assert_eq!(
            invocation_of(Path::new("/src/gw/target/release/chat-gateway"), path),
            "cargo run --release --"
        );
        assert_eq!(
            invocation_of(Path::new("/src/gw/target/debug/chat-gateway"), path),
            "cargo run --"
        );
        assert_eq!(
            invocation_of(Path::new("/usr/local/bin/chat-gateway"), path),
            "chat-gateway"
        );
        assert_eq!(
            invocation_of(Path::new("/opt/gw/chat-gateway"), path),
            "/opt/gw/chat-gateway"
        );
    }
}
