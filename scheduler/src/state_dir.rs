//! The scheduler's state directory: its catalog store (and later its warehouse), kept
//! private to the user running it and claimed by one scheduler at a time.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use quiver_core::{QuiverError, Result};

/// A claimed state directory; the claim lasts as long as this value (or the process).
#[derive(Debug)]
pub(crate) struct StateDir {
    path: PathBuf,
    /// Holds an exclusive lock: a second scheduler on the same directory is refused
    /// rather than interleaving its catalog writes with ours.
    _lock: File,
}

impl StateDir {
    pub(crate) fn claim(path: &Path) -> Result<Self> {
        let failed = |what: &str, error: std::io::Error| {
            QuiverError::Config(format!(
                "state directory {}: cannot {what}: {error}",
                path.display()
            ))
        };
        std::fs::create_dir_all(path).map_err(|e| failed("create it", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed("restrict its permissions", e))?;
        let lock_path = path.join("scheduler.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| failed("create its lock file", e))?;
        lock.try_lock()
            .map_err(|_| QuiverError::StateDirInUse(path.to_path_buf()))?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The default warehouse of managed tables.
    pub(crate) fn warehouse_path(&self) -> PathBuf {
        self.path.join("warehouse")
    }

    /// The embedded catalog store's file.
    pub(crate) fn catalog_path(&self) -> PathBuf {
        self.path.join("catalog.sqlite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_a_directory_in_use_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateDir::claim(&state).unwrap();
        let error = StateDir::claim(&state).unwrap_err();
        assert!(error.to_string().contains("in use by another"), "{error}");
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(first);
        assert!(StateDir::claim(&state).is_ok());
    }
}
