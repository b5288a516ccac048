//! The executor's own directory for spilled shuffle output and operator spill files.
//!
//! Several executors may share one base directory (the default one under the system's
//! temporary directory, or a `--work-dir` given to more than one). Each owns
//! `<base>/<executor_id>/` and holds an exclusive lock on `<base>/<executor_id>.lock` for
//! as long as its process lives. An executor that was killed cannot clean up after itself,
//! but its lock dies with it: the next executor to start on the same base finds the lock
//! free and deletes what was left.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use quiver_core::{QuiverError, Result};
use tracing::{info, warn};

const LOCK_SUFFIX: &str = ".lock";

/// A claimed directory; the claim lasts until [`WorkDir::remove`] or the process ends.
#[derive(Debug)]
pub(crate) struct WorkDir {
    path: PathBuf,
    lock_path: PathBuf,
    /// Holds the lock; closing it (process exit included) releases the claim.
    _lock: File,
}

impl WorkDir {
    /// Claims `<base>/<executor_id>/`, after deleting what dead executors left in `base`.
    pub(crate) fn claim(base: &Path, executor_id: &str) -> Result<Self> {
        let context = |what: &str, path: &Path, error: std::io::Error| {
            QuiverError::Config(format!(
                "executor work directory: cannot {what} {}: {error}",
                path.display()
            ))
        };
        std::fs::create_dir_all(base).map_err(|e| context("create", base, e))?;
        let lock_path = base.join(format!("{executor_id}{LOCK_SUFFIX}"));
        let lock = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| context("create", &lock_path, e))?;
        // Nobody else holds a fresh lock file for long (a sweeping neighbour at most).
        lock.lock().map_err(|e| context("lock", &lock_path, e))?;
        let path = base.join(executor_id);
        std::fs::create_dir_all(&path).map_err(|e| context("create", &path, e))?;
        let removed = sweep_abandoned(base, executor_id);
        if removed > 0 {
            info!(
                base = %base.display(),
                directories = removed,
                "deleted work directories of executors that are no longer running"
            );
        }
        Ok(Self {
            path,
            lock_path,
            _lock: lock,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the directory and gives up the claim (graceful shutdown).
    pub(crate) fn remove(self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), %error, "could not delete the work directory");
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Deletes the directories of executors whose lock is free (their process is gone).
/// Directories without a lock file are left alone: they are not known to be ours.
fn sweep_abandoned(base: &Path, own_id: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_suffix(LOCK_SUFFIX)) else {
            continue;
        };
        if owner == own_id || owner.is_empty() {
            continue;
        }
        let lock_path = entry.path();
        let Ok(lock) = OpenOptions::new().write(true).open(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // its executor is alive
        }
        let dir = base.join(owner);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                warn!(path = %dir.display(), %error, "could not delete an abandoned work directory");
                continue;
            }
        }
        // Removed while still held, so no executor can mistake it for a live claim.
        let _ = std::fs::remove_file(&lock_path);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_executors_directory_is_deleted_and_a_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let live = WorkDir::claim(base.path(), "exec-live").unwrap();
        std::fs::write(live.path().join("output.arrow"), b"live").unwrap();

        // What a killed executor leaves: its directory and a lock file nobody holds.
        let dead = base.path().join("exec-dead");
        std::fs::create_dir_all(dead.join("job")).unwrap();
        std::fs::write(dead.join("job/stage1-map0-out0.arrow"), b"stale").unwrap();
        std::fs::write(base.path().join("exec-dead.lock"), b"").unwrap();
        // Not ours: no lock file beside it.
        std::fs::create_dir_all(base.path().join("unrelated")).unwrap();

        let next = WorkDir::claim(base.path(), "exec-next").unwrap();
        assert!(!dead.exists(), "the dead executor's files are deleted");
        assert!(!base.path().join("exec-dead.lock").exists());
        assert!(
            live.path().join("output.arrow").exists(),
            "a live claim is kept"
        );
        assert!(base.path().join("unrelated").exists());

        next.remove();
        assert!(!base.path().join("exec-next").exists());
        assert!(!base.path().join("exec-next.lock").exists());
        live.remove();
    }
}
