//! A small real filesystem for one test's data dir: a tmpfs mounted for the test and unmounted
//! when its guard drops (a panic included), and filler files that take its free space away and
//! give it back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh temporary directory; unmounted on drop.
pub struct Tmpfs {
    mountpoint: tempfile::TempDir,
    fillers: std::sync::atomic::AtomicUsize,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes`. Fails the test, never skips it, when mounting is impossible:
    /// these tests need root and `mount` (CI runs them as root).
    pub fn mount(bytes: u64) -> Self {
        let mountpoint = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(mountpoint.path())
            .output()
            .expect("the mount command runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} ({}): the disk-full tests need root and mount(8); \
             they do not skip",
            mountpoint.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self {
            mountpoint,
            fillers: Default::default(),
        }
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// Bytes available to writers now (`stat -f`: available blocks times block size).
    pub fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "--format=%a %S"])
            .arg(self.path())
            .output()
            .expect("stat runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text
            .split_whitespace()
            .map(|p| p.parse::<u64>().expect("number"));
        let (blocks, size) = (parts.next().expect("blocks"), parts.next().expect("size"));
        blocks * size
    }

    /// Writes a filler file that leaves about `leave` bytes free (0: until the volume is
    /// full).
    pub fn fill(&self, leave: u64) -> Filler {
        let n = self
            .fillers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.path().join(format!("filler-{n}"));
        let mut file = std::fs::File::create(&path).expect("filler file");
        let take = self.free().saturating_sub(leave) / 4096 * 4096;
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut written = 0u64;
        while leave == 0 || written < take {
            let len = if leave == 0 {
                chunk.len()
            } else {
                chunk.len().min((take - written) as usize)
            };
            if len == 0 || file.write_all(&chunk[..len]).is_err() {
                break;
            }
            written += len as u64;
        }
        if leave == 0 {
            // Whatever a 64 KiB write could not take: a byte at a time up to ENOSPC.
            while file.write_all(&[0]).is_ok() {}
        }
        let _ = file.sync_all();
        Filler { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.mountpoint.path();
        let clean = Command::new("umount")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !clean {
            // Still busy (a gateway process not reaped yet): detach it now, freed when idle.
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
    }
}

/// A file taking space on a [`Tmpfs`]; [`Filler::release`] gives the space back.
pub struct Filler {
    path: PathBuf,
}

impl Filler {
    /// Deletes the file.
    pub fn release(self) {
        std::fs::remove_file(&self.path).expect("filler removed");
    }
}
