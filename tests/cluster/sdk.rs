//! The official JS SDK (`stream-chat`, installed in `tests/sdk/js` by `scripts/js-deps.sh`)
//! as a client of the cluster: one Node process running `tests/sdk/js/cluster/driver.js`,
//! told what to do by JSON commands on its stdin, reporting answers, every event its clients
//! dispatch and every close of their sockets as JSON lines on its stdout.
//!
//! Missing Node.js or a missing SDK install fails the test that needs them, saying what to
//! run: these tests are never skipped.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use crate::common::Api;
use crate::harness::Node;

/// Where the SDK suite's package (and its `node_modules`) lives.
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/js");

/// How long the driver may take to load the SDK, and a command to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// Milliseconds since the epoch: the clock the driver stamps its lines with (`at`).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// The driver process. Dropping it closes its stdin (it exits) and kills it.
pub struct Sdk {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Lines read while waiting for something else, not yet claimed.
    pending: VecDeque<Value>,
    next_id: u64,
}

impl Sdk {
    /// Starts the driver with `api`'s key and secret (every node of a cluster shares them) and
    /// waits until it has loaded the SDK.
    pub async fn start(api: &Api) -> Self {
        let installed = Path::new(JS_DIR).join("node_modules/stream-chat/package.json");
        assert!(
            installed.is_file(),
            "the official JS SDK is not installed (no {}): run scripts/js-deps.sh, which \
             scripts/test.sh runs before cargo test",
            installed.display()
        );
        let mut child = Command::new("node")
            .arg(Path::new(JS_DIR).join("cluster/driver.js"))
            .current_dir(JS_DIR)
            .env("GATEWAY_API_KEY", &api.api_key)
            .env("GATEWAY_API_SECRET", api.secret.expose())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run node ({e}): the cluster tests drive the official JS SDK with \
                     Node.js 20 or newer; install it (Debian: nodejs npm) and run \
                     scripts/js-deps.sh"
                )
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut sdk = Self {
            _child: child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pending: VecDeque::new(),
            next_id: 0,
        };
        let ready = sdk
            .expect("the driver's ready line", ANSWER_WITHIN, |l| {
                l["ready"] == true
            })
            .await;
        println!(
            "JS SDK stream-chat {} on node {}",
            ready["sdk"].as_str().unwrap_or("?"),
            ready["node"].as_str().unwrap_or("?")
        );
        sdk
    }

    /// Sends command `op` with `args` (an object) and returns its answer: `Ok(value)` or
    /// `Err(error)` as the SDK reported it.
    pub async fn call(&mut self, op: &str, args: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = args;
        command["id"] = json!(id);
        command["op"] = json!(op);
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("the driver reads its stdin");
        let answer = self
            .expect(&format!("the answer to {command}"), ANSWER_WITHIN, |l| {
                l["id"] == id
            })
            .await;
        match answer.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(answer["ok"].clone()),
        }
    }

    /// Like [`Sdk::call`]; a failure fails the test.
    pub async fn ok(&mut self, op: &str, args: Value) -> Value {
        let what = format!("{op} {args}");
        self.call(op, args)
            .await
            .unwrap_or_else(|e| panic!("the JS SDK failed {what}: {e}"))
    }

    /// Connects client `name` to `node`'s public listener (or any `url` in front of it) as
    /// `user`; returns the first health check's `connection_id` and `me`.
    /// The SDK's own report that it is online is claimed here, so that a later
    /// `connection.changed` is one of a reconnect.
    pub async fn connect(&mut self, name: &str, url: &str, user: Value) -> Value {
        let first = self
            .ok("connect", json!({"client": name, "url": url, "user": user}))
            .await;
        self.event(name, "connection.changed", ANSWER_WITHIN, |e| {
            e["online"] == true
        })
        .await;
        first
    }

    /// The server-side SDK on `node`'s admin listener calls `method(...args)`.
    pub async fn server(&mut self, node: &Node, method: &str, args: Value) -> Value {
        self.ok(
            "server",
            json!({"url": node.admin_url, "method": method, "args": args}),
        )
        .await
    }

    /// Waits for client `name` to dispatch an event of `kind` that `matches`; returns the
    /// line (`event` and `at`).
    pub async fn event(
        &mut self,
        name: &str,
        kind: &str,
        limit: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        self.expect(&format!("{kind} at client {name}"), limit, |l| {
            l["client"] == name && l["event"]["type"] == kind && matches(&l["event"])
        })
        .await
    }

    /// Waits for client `name`'s socket to close; returns the line (`closed` and `at`).
    pub async fn closed(&mut self, name: &str, limit: Duration) -> Value {
        self.expect(&format!("a close of client {name}'s socket"), limit, |l| {
            l["client"] == name && l.get("closed").is_some()
        })
        .await
    }

    /// How many times client `name`'s SDK has opened its socket again since it connected,
    /// counting the attempts reported within `linger` from now.
    pub async fn reconnects(&mut self, name: &str, linger: Duration) -> usize {
        let deadline = Instant::now() + linger;
        while let Some(line) = self.read_line(deadline).await {
            self.pending.push_back(line);
        }
        self.pending
            .iter()
            .filter(|l| l["client"] == name && l.get("connecting").is_some())
            .count()
    }

    /// The unclaimed events of client `name` that `matches`.
    pub fn unclaimed_events(&self, name: &str, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.pending
            .iter()
            .filter(|l| l["client"] == name && l.get("event").is_some() && matches(&l["event"]))
            .cloned()
            .collect()
    }

    /// The first line, unclaimed or still to come within `limit`, that `matches`.
    async fn expect(
        &mut self,
        what: &str,
        limit: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(at) = self.pending.iter().position(&matches) {
            return self.pending.remove(at).expect("position is in range");
        }
        let deadline = Instant::now() + limit;
        loop {
            match self.read_line(deadline).await {
                Some(line) if matches(&line) => return line,
                Some(line) => self.pending.push_back(line),
                None => panic!(
                    "no {what} from the JS SDK within {limit:?}; unclaimed lines: {:#?}",
                    self.pending
                ),
            }
        }
    }

    /// The next line, or `None` once `deadline` passes. The driver ending is a failure.
    async fn read_line(&mut self, deadline: Instant) -> Option<Value> {
        match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
            Err(_) => None,
            Ok(Ok(Some(line))) => Some(serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("the JS SDK driver wrote a line that is not JSON ({e}): {line}")
            })),
            Ok(Ok(None)) => panic!("the JS SDK driver exited (its errors are above)"),
            Ok(Err(e)) => panic!("reading the JS SDK driver's output: {e}"),
        }
    }
}
