//! A ballast file of reserved space beside the database. sled writes when it opens (it zeroes
//! the rest of its last log segment, up to 512 KiB, and may write a snapshot), so on a volume
//! something else filled to the last byte it cannot open. Deleting the ballast gives it that
//! room: the gateway starts and serves reads instead of refusing to start. The ballast is
//! made again once the volume has room.
//!
//! Its bytes are random, not zeros, so a compressing filesystem really stores them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rand::RngCore;

use super::space::SpaceGuard;

/// The ballast file of one data dir.
pub struct Ballast {
    path: PathBuf,
    size: u64,
    warned: AtomicBool,
}

impl Ballast {
    /// The ballast `<dir>/ballast` of `size` bytes (0: none).
    pub fn new(dir: &Path, size: u64) -> Self {
        Self {
            path: dir.join("ballast"),
            size,
            warned: AtomicBool::new(false),
        }
    }

    /// Makes the file if it is missing and the volume has room for it on top of what writes
    /// need (the guard's resume level), so making it never starts refusing writes.
    pub fn keep(&self, space: &SpaceGuard) {
        if self.size == 0 || self.is_present() {
            return;
        }
        space.measure();
        if space.is_low() || space.free() < space.resume_at().saturating_add(self.size) {
            return;
        }
        match self.make() {
            Ok(()) => {
                self.warned.store(false, Ordering::Relaxed);
                tracing::info!(bytes = self.size, path = %self.path.display(), "ballast file made");
            }
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, path = %self.path.display(),
                        "cannot make the ballast file; retrying while there is room");
                }
            }
        }
        space.measure();
    }

    /// Bytes it holds when present.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the file is there at its full size.
    pub fn is_present(&self) -> bool {
        self.size > 0 && std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.size)
    }

    /// Writes the file (again) unless it is present; a failed attempt leaves no file behind.
    pub fn make(&self) -> std::io::Result<()> {
        if self.size == 0 || self.is_present() {
            return Ok(());
        }
        let written = self.write();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        written
    }

    fn write(&self) -> std::io::Result<()> {
        let mut chunk = vec![0u8; 64 * 1024];
        rand::rng().fill_bytes(&mut chunk);
        let mut file = std::fs::File::create(&self.path)?;
        let mut left = self.size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    }

    /// Deletes the file, giving its space back; `true` if there was one.
    pub fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_released_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let b = Ballast::new(dir.path(), 100_000);
        assert!(!b.is_present());
        b.make().unwrap();
        assert!(b.is_present());
        assert_eq!(
            std::fs::metadata(dir.path().join("ballast")).unwrap().len(),
            100_000
        );
        assert!(b.release());
        assert!(!b.is_present());
        assert!(!b.release());
        b.make().unwrap();
        assert!(b.is_present());
    }

    #[test]
    fn a_short_file_is_made_whole_and_size_zero_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ballast"), b"short").unwrap();
        let b = Ballast::new(dir.path(), 70_000);
        assert!(!b.is_present());
        b.make().unwrap();
        assert!(b.is_present());
        let none = Ballast::new(&dir.path().join("elsewhere"), 0);
        none.make().unwrap();
        assert!(!none.is_present());
    }
}
