//! Clears what an interrupted sled snapshot leaves behind, before sled opens.
//!
//! sled 0.34 writes a snapshot as `snap.<lsn>.generating`, then renames it to `snap.<lsn>`.
//! A write cut short — ENOSPC while sled opens on a full volume, or a crash — leaves the
//! `.generating` file, and every later open takes it for the newest snapshot (it sorts after
//! the complete one) and fails with "Read corrupted data", even once space is back. The data
//! is intact (the complete snapshot and the log); only that file is bad, and it is never
//! valid, so it is removed. It is done under sled's own directory lock, so a running instance
//! never loses a snapshot it is writing.

use std::path::Path;
use std::time::{Duration, Instant};

use fs2::FileExt;

/// How long an open waits for an instance that is closing (in this process or a previous
/// one) to release the database: sled's background threads let go of the lock a moment after
/// the last handle is dropped.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Removes the unfinished snapshots of the database in `dir`; returns how many. Waits up to
/// [`RELEASE_WAIT`] for an instance that is closing to release the database; does nothing
/// when there is no database yet or another instance keeps holding it (sled's open then says
/// so).
pub fn remove_unfinished(dir: &Path) -> std::io::Result<usize> {
    // sled's lock: an exclusive flock on the `db` file, released when the file closes.
    let Ok(lock) = std::fs::File::open(dir.join("db")) else {
        return Ok(0);
    };
    let deadline = Instant::now() + RELEASE_WAIT;
    while lock.try_lock_exclusive().is_err() {
        if Instant::now() >= deadline {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            tracing::warn!(file = %entry.path().display(),
                "removed an unfinished sled snapshot an interrupted write left behind");
            removed += 1;
        }
    }
    drop(lock);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed sled database in `dir` with one key, reopened once so it holds a snapshot.
    fn database(dir: &Path) {
        for _ in 0..2 {
            let db = sled::open(dir).unwrap();
            db.insert("k", "v").unwrap();
            db.flush().unwrap();
        }
    }

    fn snapshots(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap."))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_unfinished_snapshot_no_longer_stops_sled_from_opening() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        database(&dir);
        let complete = snapshots(&dir);
        assert_eq!(complete.len(), 1, "{complete:?}");
        // What an open that ran out of space while writing its snapshot leaves.
        std::fs::write(dir.join("snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
        let refused = sled::open(&dir).map(|_| ());
        assert!(
            refused.is_err(),
            "sled 0.34 takes it for the newest snapshot"
        );
        assert_eq!(remove_unfinished(&dir).unwrap(), 1);
        assert_eq!(snapshots(&dir), complete);
        let db = sled::open(&dir).unwrap();
        assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn nothing_is_removed_while_an_instance_holds_the_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        database(&dir);
        let _db = sled::open(&dir).unwrap();
        std::fs::write(dir.join("snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
        assert_eq!(remove_unfinished(&dir).unwrap(), 0);
        assert_eq!(remove_unfinished(&tmp.path().join("none")).unwrap(), 0);
    }
}
