//! Group commit for sled: one thread makes the log durable for every writer waiting at that
//! moment, so concurrent writers share a flush.
//!
//! Why not `Tree::flush_async` per writer: in sled 0.34 each call parks one of sled's few I/O
//! pool threads until the log is stable, and the write that would make it stable needs a pool
//! thread too — with enough concurrent writers every thread waits and the process deadlocks.
//! A single flusher thread never holds more than one pool thread.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::sled_store::sled_error;
use super::StoreError;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the flusher thread; dropping it stops the thread and waits for it, so the
/// database is closed (and its directory lock released) when the store is dropped.
pub struct GroupCommit {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || run(db, rx))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let stopped = || StoreError::Backend("the flusher thread has stopped".to_owned());
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(done_tx)
            .map_err(|_| stopped())?;
        done_rx.await.map_err(|_| stopped())?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: sled::Db, rx: mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let started = Instant::now();
        let result = db.flush().map(|_| ()).map_err(sled_error);
        metrics::histogram!("store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("store_flush_group_size").record(waiters.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, "store flush failed");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
