//! Child processes of the runner: `loadgen` (one-shot or held in the background) and `sledbase`.

use crate::loadgen::{ConnectArgs, ConnectReport};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A `loadgen connect` whose connections are open and held until [`Held::finish`].
pub struct Held {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Connections opened.
    pub connected: usize,
    /// Attempts that failed.
    pub failed: usize,
}

/// Longest any child may run before it is killed and the scenario fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(900);

/// Starts `loadgen connect` with `--wait-stdin` and returns once its connect phase is over.
pub async fn connect_and_hold(loadgen: &Path, args: &ConnectArgs) -> Result<Held, String> {
    let mut args = args.clone();
    args.wait_stdin = true;
    args.raw = false;
    let mut child = Command::new(loadgen)
        .arg("connect")
        .args(args.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start loadgen: {e}"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(CHILD_DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("READY ") {
                return serde_json::from_str::<serde_json::Value>(rest).ok();
            }
        }
        None
    })
    .await;
    match ready {
        Ok(Some(v)) => Ok(Held {
            child,
            lines,
            connected: v["connected"].as_u64().unwrap_or(0) as usize,
            failed: v["failed"].as_u64().unwrap_or(0) as usize,
        }),
        Ok(None) => Err("loadgen ended before its connect phase finished".into()),
        Err(_) => {
            let _ = child.kill().await;
            Err("loadgen's connect phase did not finish in time".into())
        }
    }
}

impl Held {
    /// Closes the connections and returns loadgen's report.
    pub async fn finish(mut self) -> Result<ConnectReport, String> {
        drop(self.child.stdin.take());
        let mut report = None;
        while let Ok(Some(line)) = self.lines.next_line().await {
            if let Ok(parsed) = serde_json::from_str::<ConnectReport>(&line) {
                report = Some(parsed);
            }
        }
        let _ = self.child.wait().await;
        report.ok_or_else(|| "loadgen printed no report".into())
    }
}

/// Runs a child to completion (killed after a deadline) and parses the last JSON line it printed.
pub async fn run_json<T: DeserializeOwned>(program: &Path, args: &[String]) -> Result<T, String> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let output = tokio::time::timeout(CHILD_DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "{} did not finish within {CHILD_DEADLINE:?} (hung?)",
                program.display()
            )
        })?
        .map_err(|e| format!("{} failed: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last).map_err(|e| {
        format!(
            "{} ({}) printed no report: {e}",
            program.display(),
            output.status
        )
    })
}
