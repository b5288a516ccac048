//! The users file (`quiver scheduler --users-file PATH`): one `name:hash` line per user,
//! the hash an Argon2id PHC string, `#` comments. `quiver passwd` writes entries; no
//! password ever sits on a command line or in the file.

use std::io::Write;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::QuiverError;

/// One user of the users file.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedUser {
    pub user: String,
    /// Argon2id, as a PHC string (`$argon2id$v=19$...`).
    pub hash: String,
}

impl std::fmt::Debug for HashedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashedUser({}, ..)", self.user)
    }
}

impl HashedUser {
    /// `user` with a fresh salt and the Argon2id hash of `password`.
    pub fn new(user: &str, password: &str) -> Result<Self, QuiverError> {
        check_user_name(user)?;
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| QuiverError::Config(format!("making a salt: {e}")))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| QuiverError::Config(format!("hashing the password: {e}")))?
            .to_string();
        Ok(Self {
            user: user.to_string(),
            hash,
        })
    }

    /// Whether `password` is this user's.
    pub fn verify(&self, password: &str) -> bool {
        PasswordHash::new(&self.hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    }
}

fn check_user_name(user: &str) -> Result<(), QuiverError> {
    if user.is_empty() || user.contains([':', '\n', '#']) || user.trim() != user {
        return Err(QuiverError::Config(format!(
            "`{user}` is not a user name: it must be non-empty, without `:`, `#`, line \
             breaks or surrounding spaces"
        )));
    }
    Ok(())
}

/// The users of the file at `path`; a line that is not `name:hash` is an error naming
/// its line number.
pub fn read_users_file(path: &Path) -> Result<Vec<HashedUser>, QuiverError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        QuiverError::Config(format!("reading the users file {}: {e}", path.display()))
    })?;
    let mut users = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once(':').and_then(|(user, hash)| {
            PasswordHash::new(hash).ok()?;
            Some(HashedUser {
                user: user.to_string(),
                hash: hash.to_string(),
            })
        });
        match parsed {
            Some(user) => users.push(user),
            None => {
                return Err(QuiverError::Config(format!(
                    "{} line {}: expected `name:$argon2id$...` (write entries with `quiver \
                     passwd`)",
                    path.display(),
                    number + 1
                )));
            }
        }
    }
    Ok(users)
}

/// Adds `entry` to the file at `path` (created readable by its owner only), replacing
/// the user's earlier entry.
pub fn write_user(path: &Path, entry: &HashedUser) -> Result<(), QuiverError> {
    let mut lines: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|line| line.split_once(':').map(|(u, _)| u) != Some(entry.user.as_str()))
            .map(str::to_string)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(QuiverError::Config(format!(
                "reading the users file {}: {e}",
                path.display()
            )));
        }
    };
    lines.push(format!("{}:{}", entry.user, entry.hash));
    let staged = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&staged).and_then(|mut file| {
        file.write_all((lines.join("\n") + "\n").as_bytes())?;
        file.sync_all()
    });
    written
        .and_then(|_| std::fs::rename(&staged, path))
        .map_err(|e| QuiverError::Config(format!("writing the users file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password_and_entries_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        write_user(&path, &HashedUser::new("alice", "first").unwrap()).unwrap();
        write_user(&path, &HashedUser::new("bob", "builder").unwrap()).unwrap();
        write_user(&path, &HashedUser::new("alice", "second").unwrap()).unwrap();
        let users = read_users_file(&path).unwrap();
        assert_eq!(users.len(), 2);
        let alice = users.iter().find(|u| u.user == "alice").unwrap();
        assert!(alice.verify("second"));
        assert!(!alice.verify("first"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("second") && !text.contains("builder"));
        assert!(HashedUser::new("a:b", "x").is_err());
    }

    #[test]
    fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# users\nalice:plaintext\n").unwrap();
        let error = read_users_file(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }
}
