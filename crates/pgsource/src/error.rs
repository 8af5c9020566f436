//! The errors of the PostgreSQL source. Each message names the problem and,
//! where there is one, the fix.

/// A failure of a PostgreSQL backup, restore or drill.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection string could not be parsed.
    #[error(
        "invalid connection string {input:?}: {reason} (use a URL such as postgresql://user@host:5432/db or key=value pairs such as \"host=/run/postgresql dbname=app\")"
    )]
    BadConnString {
        /// What was given (with any password removed).
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Host, port, user and database, without the password.
        target: String,
        /// The cause, with a hint where one helps.
        reason: String,
    },
    /// A statement failed.
    #[error("{context}: {message}")]
    Query {
        /// What was being done.
        context: String,
        /// The server's (or the client's) error, see [`describe`].
        message: String,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
    },
    /// A PostgreSQL client program (pg_dump, pg_restore) is missing, too old or failed.
    #[error("{0}")]
    Tool(String),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] cairn_repo::Error),
    /// A local I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot is not a PostgreSQL backup, or its manifest is unusable.
    #[error("{0}")]
    Manifest(String),
    /// The restored data does not match what the backup recorded.
    #[error("{0}")]
    Mismatch(String),
    /// Invalid options.
    #[error("{0}")]
    Invalid(String),
    /// The roles a restore drill needs are missing on its server, and were
    /// not (or could not be) created.
    #[error(
        "the snapshot's objects belong to or are granted to roles the drill server lacks: {}{}",
        roles.join(", "),
        match reason {
            Some(r) => format!(" (creating them failed: {r}; create them as a role with CREATEROLE: {})", create_sql(roles)),
            None => format!(" (create them: {})", create_sql(roles)),
        }
    )]
    MissingRoles {
        /// The missing roles.
        roles: Vec<String>,
        /// Why creating them failed, when the drill tried.
        reason: Option<String>,
    },
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failed statement, with what was being done.
    pub fn query(context: impl Into<String>, source: tokio_postgres::Error) -> Error {
        let code = source.code().map(|c| c.code().to_owned());
        Error::Query { context: context.into(), message: describe(&source), code }
    }

    /// A local I/O error, with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

/// The server's message of a database error (`ERROR: ...` text, with detail
/// and hint), else the client's description.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        source = cause.source();
    }
    s
}

fn create_sql(roles: &[String]) -> String {
    roles
        .iter()
        .map(|r| format!("CREATE ROLE {} NOLOGIN;", crate::connect::quote_ident(r)))
        .collect::<Vec<_>>()
        .join(" ")
}
