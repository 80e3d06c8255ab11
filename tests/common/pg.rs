//! A PostgreSQL server for tests, and a fresh database on it per test ([`TestDb`]).
//!
//! The server is `CHAT_GATEWAY_TEST_PG_URL` when set (scripts/test.sh sets it when a local
//! server answers); otherwise a throwaway one started once per test binary from the installed
//! binaries: `initdb --no-sync` into a temporary folder (as user `postgres` through `runuser`
//! when running as root, since initdb refuses root) and `pg_ctl start` on a free port. Its
//! supervising shell waits on a pipe from this process and stops the server and removes the
//! folder when the pipe closes, i.e. when the test binary exits, however it exits. Never a
//! silent skip: if neither works, the test fails saying why.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use tokio_postgres::NoTls;

/// The environment variable naming the test server.
pub const URL_VAR: &str = "CHAT_GATEWAY_TEST_PG_URL";

/// The throwaway server's supervisor, kept (never dropped) until the process exits.
struct Throwaway {
    _child: Child,
    _stdin: ChildStdin,
}

static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
static THROWAWAY: OnceLock<std::sync::Mutex<Option<Throwaway>>> = OnceLock::new();

/// The URL of an administrative database on the test server (panics with the reason when
/// there is none).
pub fn server_url() -> String {
    SERVER
        .get_or_init(|| match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start_throwaway(),
        })
        .clone()
        .unwrap_or_else(|why| {
            panic!(
                "no PostgreSQL for the tests: set {URL_VAR} to a server's URL (a superuser, \
                 e.g. postgres://postgres@127.0.0.1:5432/postgres), or install PostgreSQL so a \
                 throwaway server can start (scripts/test.sh does both). {why}"
            )
        })
}

/// The folder holding `initdb` and `pg_ctl`: on the PATH, or Debian's newest version.
fn bin_dir() -> Option<String> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(path) = on_path {
        return std::path::Path::new(&path)
            .parent()
            .map(|p| p.display().to_string());
    }
    let mut versions: Vec<(u32, String)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb")
                .exists()
                .then(|| (v, bin.display().to_string()))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Supervises the throwaway server: starts it, says `ready <port>`, waits for its standard
/// input to close, then stops the server and removes its folder.
const SUPERVISOR: &str = r#"
set -e
dir=$(mktemp -d "${TMPDIR:-/tmp}/chat-gateway-pg.XXXXXX")
trap 'pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
initdb --no-sync -A trust -U postgres -E UTF8 -D "$dir/data" >"$dir/initdb.log" 2>&1 \
  || { echo "failed initdb: $(tail -n 5 "$dir/initdb.log")"; exit 1; }
pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
  start >/dev/null 2>&1 || { echo "failed pg_ctl start: $(tail -n 5 "$dir/server.log")"; exit 1; }
echo "ready $dir"
read -r _ || true
"#;

fn start_throwaway() -> Result<String, String> {
    let (url, _dir, server) = spawn_server()?;
    THROWAWAY
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .replace(server);
    Ok(url)
}

/// Whether the tests run as root (the server then runs as user `postgres`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `sh -c script` with the server's binaries on the PATH, as the user the server runs as.
fn as_server_user(bin: &str, script: &str, env: &[(&str, String)]) -> Command {
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"]);
        c.arg(format!("PATH={path}")).arg("TMPDIR=/tmp");
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.args(["sh", "-c", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]).env("PATH", &path);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }
}

/// Starts a throwaway server: its URL, its folder, and its supervisor.
fn spawn_server() -> Result<(String, String, Throwaway), String> {
    let bin = bin_dir().ok_or("no initdb found (on the PATH or under /usr/lib/postgresql)")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    let is_root = is_root();
    let mut command = as_server_user(&bin, SUPERVISOR, &[("PG_PORT", port.to_string())]);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start the throwaway server's supervisor: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("throwaway server: {e}"))?;
    let Some(dir) = line.trim().strip_prefix("ready ").map(str::to_owned) else {
        let _ = child.kill();
        return Err(format!(
            "the throwaway server did not start ({}): {}",
            if is_root {
                "as user postgres"
            } else {
                "as this user"
            },
            line.trim()
        ));
    };
    let stdin = child.stdin.take().expect("piped stdin");
    let server = Throwaway {
        _child: child,
        _stdin: stdin,
    };
    Ok((
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        dir,
        server,
    ))
}

/// A throwaway server of one test's own, which the test may restart (the shared one serves
/// every test of the binary and must stay up). Stopped and removed when dropped.
pub struct OwnServer {
    url: String,
    dir: String,
    bin: String,
    _server: Throwaway,
}

impl OwnServer {
    /// Starts one (panics saying why it cannot).
    pub fn start() -> Self {
        let bin = bin_dir().expect("no initdb found (on the PATH or under /usr/lib/postgresql)");
        let (url, dir, server) = spawn_server().unwrap_or_else(|e| panic!("{e}"));
        Self {
            url,
            dir,
            bin,
            _server: server,
        }
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Restarts it: `fast` (a clean shutdown) or `immediate` (a crash: unlogged tables come
    /// back empty). Returns once it accepts connections again.
    pub fn restart(&self, mode: &str) {
        let script = format!(
            "pg_ctl -D '{dir}/data' -l '{dir}/server.log' -m {mode} -w -t 60 restart",
            dir = self.dir
        );
        let out = as_server_user(&self.bin, &script, &[])
            .output()
            .expect("run pg_ctl restart");
        assert!(
            out.status.success(),
            "pg_ctl restart -m {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops it (`fast`), for an outage; [`Self::start_again`] brings it back.
    pub fn stop(&self) {
        let script = format!("pg_ctl -D '{}/data' -m fast -w stop", self.dir);
        let out = as_server_user(&self.bin, &script, &[])
            .output()
            .expect("run pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop failed");
    }

    /// Starts it again after [`Self::stop`].
    pub fn start_again(&self) {
        let port = self
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("port in url");
        let script = format!(
            "pg_ctl -D '{dir}/data' -l '{dir}/server.log' -w -t 60 \
             -o '-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' start",
            dir = self.dir
        );
        let out = as_server_user(&self.bin, &script, &[])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((b, p)) => (b, Some(p)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match params {
        Some(p) => format!("{host_part}/{db}?{p}"),
        None => format!("{host_part}/{db}"),
    }
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    tokio::spawn(connection);
    client
}

/// A database of its own for one test, dropped (with any connection left) when this is.
pub struct TestDb {
    name: String,
    admin_url: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database with a random name.
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// Creates an empty database with a random name on the server of `admin_url`.
    pub async fn create_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let name = format!("cg_test_{}", uuid::Uuid::new_v4().simple());
        admin_client(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Self {
            name,
            admin_url,
            url,
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a runtime of its own on another thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                admin_client(&admin_url)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://p@127.0.0.1:5432/postgres", "x"),
        "postgres://p@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://p@127.0.0.1:5432", "x"),
        "postgres://p@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://p@h/postgres?connect_timeout=5", "x"),
        "postgresql://p@h/x?connect_timeout=5"
    );
}
