//! Passwords read from a file or printed by a command, held in memory that
//! is wiped on drop.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A password held in memory that is wiped on drop.
pub type Password = Zeroizing<Vec<u8>>;

/// Why a password could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the password file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's first line is empty.
    #[error("the password file {} is empty", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A generated password's file cannot be created or written.
    #[error("cannot create the password file {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command cannot be started.
    #[error("cannot run the password command {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command failed or printed nothing.
    #[error("the password command {command:?} {problem}")]
    Command {
        /// The command.
        command: String,
        /// `failed (exit status: 1)`, `printed nothing`.
        problem: String,
    },
}

/// Drops one trailing line ending, as `echo pw > file` adds one.
fn strip_newline(mut v: Vec<u8>) -> Vec<u8> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    v
}

/// The first line of `path` (so a file may carry a comment line after it).
pub fn from_file(path: &Path) -> Result<Password, SecretError> {
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read { path: path.to_owned(), source })?;
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default().to_vec();
    let pw = Zeroizing::new(strip_newline(first).into_iter().filter(|&b| b != b'\r').collect::<Vec<u8>>());
    if pw.is_empty() {
        return Err(SecretError::EmptyFile { path: path.to_owned() });
    }
    Ok(pw)
}

/// What `sh -c command` prints, without its trailing line ending; its
/// stderr goes to ours.
pub fn from_command(command: &str) -> Result<Password, SecretError> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| SecretError::Spawn { command: command.to_owned(), source })?;
    if !out.status.success() {
        return Err(SecretError::Command { command: command.to_owned(), problem: format!("failed ({})", out.status) });
    }
    let pw = Zeroizing::new(strip_newline(out.stdout));
    if pw.is_empty() {
        return Err(SecretError::Command { command: command.to_owned(), problem: "printed nothing".into() });
    }
    Ok(pw)
}

/// Generates a password with [`cairn_repo::generate_password`] into `path`:
/// its directory is created (0700) if missing, the file is created new
/// (never overwritten) with mode 0600 and synced before the password is
/// returned, so a repository is never protected by a password that exists
/// nowhere. Keys made with it skip Argon2id (FORMAT.md §4.4).
pub fn generate_into(path: &Path) -> Result<Password, SecretError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let create = |source| SecretError::Create { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(create)?;
    }
    let password = cairn_repo::generate_password();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(create)?;
    file.write_all(format!("{}\n", password.as_str()).as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)?;
    Ok(Zeroizing::new(password.as_bytes().to_vec()))
}
