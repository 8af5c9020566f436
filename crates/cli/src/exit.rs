//! Exit codes and the one-line error message.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | failure (including a wrong password or a corrupt object) |
//! | 2 | invalid command line |
//! | 3 | a backup or restore finished, but some entries could not be read or written; `find` skipped a snapshot it could not read |
//! | 10 | the repository does not exist |
//! | 12 | skipped: the storage credentials are write-only and the command needs to read |
//! | 75 | `cairn run`: another run of the job holds its lock |
//! | 141 | stopped because the reader of the output went away (`cairn snapshots \| head`), as if killed by SIGPIPE |

use cairn_repo::Error;

/// Any failure.
pub const FAILURE: u8 = 1;
/// Finished, but some files could not be read (backup) or written (restore).
pub const INCOMPLETE: u8 = 3;
/// The command needs to read, and the credentials are write-only.
pub const WRITE_ONLY: u8 = 12;
/// Stopped because stdout was closed (128 + SIGPIPE).
pub const BROKEN_PIPE: u8 = 141;
/// No repository at the location.
pub const REPOSITORY_NOT_FOUND: u8 = 10;

/// Invalid command line.
pub const USAGE: u8 = 2;

/// A command line that makes no sense, found after clap parsed it (options
/// that exclude each other, a value only the command can judge): exit 2,
/// like clap's own errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Returns early with a [`Usage`] error.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::Usage(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// The exit code for an error.
pub fn code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some() {
        return USAGE;
    }
    match e.downcast_ref::<Error>() {
        Some(Error::RepositoryNotFound { .. }) => REPOSITORY_NOT_FOUND,
        Some(Error::WriteOnly { .. }) => WRITE_ONLY,
        _ => FAILURE,
    }
}

/// Whether the error is stdout having been closed by its reader (and not,
/// say, a child process that stopped reading what cairn sent it: that is
/// an error to report).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) && stdout_closed()
}

/// Whether stdout is a pipe whose reading end has been closed.
fn stdout_closed() -> bool {
    let mut fd = nix::libc::pollfd { fd: 1, events: nix::libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd and a zero timeout: poll only reports the
    // descriptor's state.
    let ready = unsafe { nix::libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & nix::libc::POLLERR != 0
}

/// The error and its causes on one line.
pub fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        // thiserror messages often embed their source already; skip repeats.
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    if let Some(hint) = hint(e) {
        parts.push(hint.to_owned());
    }
    parts.join(": ").replace('\n', " ")
}

/// What to run next, for the errors where the library cannot say it (it
/// knows no command names).
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    match e.downcast_ref::<cairn_pgsource::Error>() {
        Some(cairn_pgsource::Error::Connect { .. }) => {
            return Some("the connection string is -d/--dbname (a postgresql:// URL or key=value pairs)");
        }
        Some(cairn_pgsource::Error::MissingRoles { reason: None, .. }) => {
            return Some("or leave out --no-create-roles: the drill then creates them NOLOGIN and drops them after");
        }
        _ => {}
    }
    match e.downcast_ref::<Error>()? {
        Error::RepositoryNotFound { .. } => Some("run `cairn init` to create one there"),
        Error::DamagedForPrune(_) => {
            Some("run `cairn check`, then `cairn repair index` and `cairn repair snapshots`, and prune again")
        }
        Error::PathNotInSnapshot(_) => Some("see `cairn ls` for what it holds"),
        Error::NoSnapshot { filtered: true } => Some("check the --host, --tag and --path filters"),
        _ => None,
    }
}
