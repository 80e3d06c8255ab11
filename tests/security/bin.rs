//! The real binary run the way an operator runs it: in a scratch directory, with only the
//! environment the test gives it (no inherited `CHAT_GATEWAY_*` or `RUST_LOG`), its stdout
//! and stderr kept apart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, Api};

/// How long a command that should end by itself may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// The binary, run in `cwd` with an empty environment but `PATH`.
pub fn gateway(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .stdin(Stdio::null());
    command
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Run {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// Runs `command` to its end (killed, and the test failed, past 20 s).
pub async fn run(mut command: Command) -> Run {
    let out = tempfile::tempdir().expect("tempdir");
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = command
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {DEADLINE:?}; stderr:\n{}",
                read(&stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Run {
        status,
        stdout: read(&stdout),
        stderr: read(&stderr),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A serving gateway with configured credentials on fresh ports, its streams in files.
pub struct Served {
    api: Api,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl std::ops::Deref for Served {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Served {
    /// Starts `gateway(dir) args` with these credentials, data dir `dir/data` and `env`, and
    /// waits until it serves.
    pub async fn start(
        dir: &Path,
        key: &str,
        secret: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let public = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
        let mut command = gateway(dir);
        command
            .args(args)
            .env("CHAT_GATEWAY_PUBLIC_ADDR", &public)
            .env("CHAT_GATEWAY_ADMIN_ADDR", &admin)
            .env("CHAT_GATEWAY_DATA_DIR", dir.join("data"))
            .env("CHAT_GATEWAY_API_KEY", key)
            .env("CHAT_GATEWAY_API_SECRET", secret)
            .env("CHAT_GATEWAY_STORE__BALLAST_BYTES", "0")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = command.spawn().expect("the binary starts");
        let api = Api::new(
            public.parse().expect("address"),
            admin.parse().expect("address"),
            key,
            secret,
        );
        // Built first, so that a start that times out still kills the process.
        let mut served = Self {
            api: api.clone(),
            child: Some(child),
            stdout,
            stderr,
        };
        let stderr = served.stderr.clone();
        let child = served.child.as_mut().expect("running");
        api.wait_healthy(|| {
            let alive = matches!(child.try_wait(), Ok(None));
            assert!(alive, "exited; stderr:\n{}", read(&stderr));
            alive
        })
        .await;
        served
    }

    /// Everything on stdout so far.
    pub fn stdout(&self) -> String {
        read(&self.stdout)
    }

    /// Everything on stderr so far.
    pub fn stderr(&self) -> String {
        read(&self.stderr)
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed when the test ends, however it ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
