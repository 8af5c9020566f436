//! Connecting to PostgreSQL the way libpq does: a URL
//! (`postgresql://user@host:5432/db?sslmode=require`), key=value pairs
//! (`host=/run/postgresql dbname=app`), or nothing, with the `PG*`
//! environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
//! PGSSLMODE) filling in what the string leaves out.
//!
//! TLS follows `sslmode`: `disable` never encrypts; `prefer` (the default)
//! and `require` encrypt without authenticating the server, as libpq does;
//! `verify-ca` checks that the server's certificate chains to
//! `sslrootcert` / `PGSSLROOTCERT` / `~/.postgresql/root.crt` (else the
//! system's roots), and `verify-full` also that it names the host. A client
//! certificate (`sslcert` / `PGSSLCERT` / `~/.postgresql/postgresql.crt`)
//! and its key (`sslkey` / `PGSSLKEY` / `~/.postgresql/postgresql.key`,
//! which others must not be able to read) are presented when given, for
//! `cert` authentication in pg_hba.conf (`tls` module).
//!
//! A service (`service=NAME` or `PGSERVICE`, from `pg_service.conf`) fills
//! what the string leaves out before the variables do, and a missing
//! password is looked up in `PGPASSFILE` / `~/.pgpass`, as libpq does
//! (`service`, `pgpass` modules).
//!
//! The same settings are handed to `pg_dump` and `pg_restore` as `PG*`
//! environment variables ([`ConnSpec::libpq_env`]), so the password never
//! appears on a command line.

use std::path::PathBuf;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};

mod pgpass;
mod service;
mod tls;

pub use tls::{TlsFiles, TlsMode};

/// Where and how to connect: a parsed connection string merged with the
/// environment.
#[derive(Clone)]
pub struct ConnSpec {
    config: Config,
    tls: TlsMode,
    /// `sslmode` as libpq spells it, for child processes.
    sslmode: String,
    /// The TLS files in use (resolved: libpq's defaults filled in).
    tls_files: TlsFiles,
    /// The password came from the password file, whose lines may differ
    /// per database: look it up again for another database.
    password_from_file: bool,
}

impl std::fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnSpec({})", self.display())
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl ConnSpec {
    /// Parses `input` (a URL, key=value pairs, a bare database name, or
    /// nothing) and fills the gaps from the `PG*` environment variables and
    /// libpq's defaults.
    pub fn parse(input: Option<&str>) -> Result<ConnSpec> {
        let raw = input.map(str::trim).unwrap_or("");
        // A bare word is a database name, as for psql and pg_dump.
        let text = if !raw.is_empty() && !raw.contains('=') && !raw.contains("://") {
            format!("dbname='{}'", raw.replace('\\', "\\\\").replace('\'', "\\'"))
        } else {
            raw.to_owned()
        };
        // libpq's parameters that tokio-postgres does not know (or knows
        // only in part, as sslmode) are taken out before it parses the rest.
        let mut cleaned = text.clone();
        let sslmode = take_param(&mut cleaned, "sslmode");
        let service_name = take_param(&mut cleaned, "service");
        let given_files = TlsFiles {
            root_cert: take_param(&mut cleaned, "sslrootcert").map(PathBuf::from),
            cert: take_param(&mut cleaned, "sslcert").map(PathBuf::from),
            key: take_param(&mut cleaned, "sslkey").map(PathBuf::from),
        };
        let service = match service_name.or_else(|| env("PGSERVICE")) {
            Some(name) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                service::lookup(&name, &service::files(env("PGSERVICEFILE"), env("PGSYSCONFDIR"), home))?
            }
            None => Vec::new(),
        };
        let from_service = |key: &str| service.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        for (key, _) in &service {
            if ![
                "host",
                "hostaddr",
                "port",
                "user",
                "dbname",
                "password",
                "sslmode",
                "sslrootcert",
                "sslcert",
                "sslkey",
                "application_name",
            ]
            .contains(&key.as_str())
            {
                tracing::warn!("service parameter {key} is not used by cairn's own connections");
            }
        }
        // The TLS mode is set on the config below, whatever the string says.
        let sslmode = sslmode.or_else(|| from_service("sslmode"));
        let mut config: Config = cleaned.parse().map_err(|e: tokio_postgres::Error| Error::BadConnString {
            input: redact(raw),
            reason: crate::error::describe(&e),
        })?;
        if config.get_hosts().is_empty() {
            match from_service("host").or_else(|| from_service("hostaddr")).or_else(|| env("PGHOST")) {
                Some(hosts) => {
                    for h in hosts.split(',') {
                        if h.starts_with('/') {
                            config.host_path(h);
                        } else {
                            config.host(h);
                        }
                    }
                }
                None => {
                    // libpq's default on Debian and most packages: the
                    // socket directory, else localhost.
                    let socket_dir = std::path::Path::new("/var/run/postgresql");
                    if socket_dir.is_dir() {
                        config.host_path(socket_dir);
                    } else {
                        config.host("localhost");
                    }
                }
            }
        }
        if config.get_ports().is_empty() {
            let port = match from_service("port").or_else(|| env("PGPORT")) {
                Some(p) => p.parse::<u16>().map_err(|_| Error::BadConnString {
                    input: format!("PGPORT={p}"),
                    reason: "not a port number".into(),
                })?,
                None => 5432,
            };
            config.port(port);
        }
        if config.get_user().is_none() {
            config.user(from_service("user").or_else(|| env("PGUSER")).unwrap_or_else(cairn_repo::username));
        }
        if config.get_dbname().is_none() {
            let db = from_service("dbname")
                .or_else(|| env("PGDATABASE"))
                .unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_owned());
            config.dbname(db);
        }
        let mut password_from_file = false;
        if config.get_password().is_none() {
            if let Some(pw) = from_service("password").or_else(|| env("PGPASSWORD")) {
                config.password(pw);
            } else if let Some(pw) = Self::password_from_file(&config) {
                config.password(pw);
                password_from_file = true;
            }
        }
        if config.get_application_name().is_none() {
            config.application_name(from_service("application_name").unwrap_or_else(|| "cairn".into()));
        }
        let sslmode = sslmode.or_else(|| env("PGSSLMODE")).unwrap_or_else(|| "prefer".to_owned());
        let tls = TlsMode::parse(&sslmode).ok_or_else(|| Error::BadConnString {
            input: format!("sslmode={sslmode}"),
            reason: "use disable, allow, prefer, require, verify-ca or verify-full".into(),
        })?;
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        // The string, then the service, then the variables, as for the other parameters.
        let pick = |given: Option<PathBuf>, key: &str, var: &str| {
            given.or_else(|| from_service(key).map(PathBuf::from)).or_else(|| env(var).map(PathBuf::from))
        };
        let given_files = TlsFiles {
            root_cert: pick(given_files.root_cert, "sslrootcert", "PGSSLROOTCERT"),
            cert: pick(given_files.cert, "sslcert", "PGSSLCERT"),
            key: pick(given_files.key, "sslkey", "PGSSLKEY"),
        };
        let tls_files = if tls == TlsMode::Disable {
            TlsFiles::default()
        } else {
            tls::resolve(tls, &given_files, std::env::var_os("HOME").map(PathBuf::from).as_deref())?
        };
        Ok(ConnSpec { config, tls, sslmode, tls_files, password_from_file })
    }

    /// The password for `config`'s first host, port, database and role in
    /// the password file, as libpq looks it up (a socket is `localhost`).
    fn password_from_file(config: &Config) -> Option<String> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let file = pgpass::default_file(env("PGPASSFILE"), home)?;
        let host = match config.get_hosts().first()? {
            Host::Tcp(name) => name.clone(),
            Host::Unix(_) => "localhost".to_owned(),
        };
        let port = config.get_ports().first()?.to_string();
        let target =
            pgpass::Target { host: &host, port: &port, database: config.get_dbname()?, user: config.get_user()? };
        pgpass::lookup_file(&file, &target)
    }

    /// The database connected to.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// The role connected as.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> ConnSpec {
        let mut other = self.clone();
        other.config.dbname(dbname);
        // A line for this database wins; without one, the first database's
        // password is tried (tokio-postgres cannot unset a password).
        if let Some(pw) = self.password_from_file.then(|| Self::password_from_file(&other.config)).flatten() {
            other.config.password(pw);
        }
        other
    }

    /// The TLS mode.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    fn host_text(&self) -> String {
        self.config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn port_text(&self) -> String {
        self.config.get_ports().iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    }

    /// `user@host:port/dbname`, for messages (never the password).
    pub fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user(), self.host_text(), self.port_text(), self.dbname())
    }

    /// The `PG*` variables that make libpq programs (pg_dump, pg_restore,
    /// psql) connect to the same place as this spec.
    pub fn libpq_env(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("PGHOST".to_owned(), self.host_text()),
            ("PGPORT".to_owned(), self.port_text()),
            ("PGUSER".to_owned(), self.user().to_owned()),
            ("PGDATABASE".to_owned(), self.dbname().to_owned()),
            ("PGSSLMODE".to_owned(), self.sslmode.clone()),
            ("PGAPPNAME".to_owned(), self.config.get_application_name().unwrap_or("cairn").to_owned()),
        ];
        if let Some(pw) = self.config.get_password() {
            vars.push(("PGPASSWORD".to_owned(), String::from_utf8_lossy(pw).into_owned()));
        }
        let files = &self.tls_files;
        for (var, file) in [("PGSSLROOTCERT", &files.root_cert), ("PGSSLCERT", &files.cert), ("PGSSLKEY", &files.key)] {
            if let Some(file) = file {
                vars.push((var.to_owned(), file.display().to_string()));
            }
        }
        vars
    }

    /// Opens a connection; its driver runs on a spawned task.
    pub async fn connect(&self) -> Result<Client> {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
        let (client, connection) = self.config.connect(tls).await.map_err(|e| self.connect_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection ended: {e}");
            }
        });
        Ok(client)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        tls::client_config(self.tls, &self.tls_files)
    }

    /// The TLS files in use: the given ones, or libpq's defaults under
    /// `~/.postgresql/` that exist.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls_files
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        let mut reason = crate::error::describe(e);
        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
        let hint = match code.as_str() {
            "28P01" => " (check the password: PGPASSWORD, the URL, or password= in the connection string)",
            "28000" if reason.contains("certificate") => {
                " (the server wants a client certificate: name it and its key with sslcert= and sslkey=, \
                 or PGSSLCERT and PGSSLKEY; its common name must be the role, or mapped to it in pg_ident.conf)"
            }
            "28000" => " (the server's pg_hba.conf does not let this role in from here, or the role does not exist)",
            "3D000" => " (create the database, or name another in the connection string)",
            _ if reason.contains("certificate") || reason.contains("TLS") || reason.contains("tls") => {
                " (check sslmode, and for verify-ca/verify-full the root certificate (sslrootcert, PGSSLROOTCERT) \
                 and, for verify-full, that the host name is one the server's certificate names)"
            }
            _ if e.as_db_error().is_none() => {
                " (is the server running and accepting connections there? check the host and port: the connection string, PGHOST, PGPORT)"
            }
            _ => "",
        };
        reason.push_str(hint);
        Error::Connect { target: self.display(), reason }
    }
}

/// Takes libpq's parameter `key` out of a connection string (a URL's query,
/// or key=value pairs, quoted or not) and returns its last value.
fn take_param(text: &mut String, key: &str) -> Option<String> {
    if let Some(q) = text.find("://").and_then(|s| text[s..].find('?').map(|q| s + q)) {
        let (base, query) = text.split_at(q + 1);
        let mut value = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some((k, v)) if k == key => {
                    value = Some(percent_decode(v));
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = format!("{base}{}", kept.join("&"));
        *text = rebuilt.trim_end_matches('?').to_owned();
        return value;
    }
    let mut value = None;
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // One pair: name, '=', value (single-quoted with \\ escapes, or up to a space).
        let name_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let Some(after_eq) = rest[name_end..].trim_start().strip_prefix('=') else {
            // Not a pair: left for tokio-postgres to report.
            kept.push(rest);
            break;
        };
        let after_eq = after_eq.trim_start();
        let (parsed, used) = pair_value(after_eq);
        let consumed = rest.len() - after_eq.len() + used;
        if name == key {
            value = Some(parsed);
        } else {
            kept.push(&rest[..consumed]);
        }
        rest = rest[consumed..].trim_start();
    }
    *text = kept.join(" ");
    value
}

/// A key=value value at the start of `s`: its text and the bytes it used.
fn pair_value(s: &str) -> (String, usize) {
    let mut value = String::new();
    let mut chars = s.char_indices().peekable();
    if s.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '\'' => return (value, i + 1),
                c => value.push(c),
            }
        }
        return (value, s.len());
    }
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => return (value, i),
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    value.push(n);
                }
            }
            c => value.push(c),
        }
    }
    (value, s.len())
}

/// `%2F` and friends in a URL's query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes a password from a connection string for messages.
fn redact(input: &str) -> String {
    let mut out = input.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        if let (Some(at), colon) = (rest.find('@'), rest.find(':')) {
            if let Some(c) = colon.filter(|c| *c < at) {
                out = format!("{}{}:***{}", &out[..scheme_end + 3], &rest[..c], &rest[at..]);
            }
        }
    }
    if let Some(pos) = out.find("password=") {
        let rest = &out[pos + 9..];
        let end = rest.find([' ', '&']).unwrap_or(rest.len());
        out = format!("{}password=***{}", &out[..pos], &rest[end..]);
    }
    out
}

/// Quotes an identifier for SQL: always double-quoted, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_pairs_and_names() {
        let s = ConnSpec::parse(Some("postgresql://alice:secret@db.example:6543/app?sslmode=disable")).unwrap();
        assert_eq!(s.display(), "alice@db.example:6543/app");
        assert_eq!(s.tls(), TlsMode::Disable);
        let env = s.libpq_env();
        assert!(env.contains(&("PGPASSWORD".into(), "secret".into())));
        assert!(env.contains(&("PGSSLMODE".into(), "disable".into())));
        let s = ConnSpec::parse(Some("host=/tmp/x port=1 user=bob dbname=d sslmode=verify-full")).unwrap();
        assert_eq!(s.display(), "bob@/tmp/x:1/d");
        assert_eq!(s.tls(), TlsMode::VerifyFull);
        assert_eq!(s.with_dbname("other").dbname(), "other");
        let s = ConnSpec::parse(Some("host=/tmp/x port=1 user=bob mydb")).map(|_| ());
        assert!(s.is_err());
        let s = ConnSpec::parse(Some("host=/tmp/x port=1 user=bob sslmode=require")).unwrap();
        assert_eq!(s.tls(), TlsMode::Require);
    }

    #[test]
    fn takes_libpq_only_parameters_out() {
        let mut t = "host=h sslcert='/a b/c.crt' sslkey=/k\\ x dbname=d".to_owned();
        assert_eq!(take_param(&mut t, "sslcert").as_deref(), Some("/a b/c.crt"));
        assert_eq!(take_param(&mut t, "sslkey").as_deref(), Some("/k x"));
        assert_eq!(take_param(&mut t, "service"), None);
        assert_eq!(t, "host=h dbname=d");
        let mut t = "sslmode = verify-ca".to_owned();
        assert_eq!(take_param(&mut t, "sslmode").as_deref(), Some("verify-ca"));
        assert_eq!(t, "");
        let mut u = "postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt&application_name=x".to_owned();
        assert_eq!(take_param(&mut u, "sslrootcert").as_deref(), Some("/tmp/ca.crt"));
        assert_eq!(take_param(&mut u, "sslmode").as_deref(), Some("verify-full"));
        assert_eq!(u, "postgresql://u@h/db?application_name=x");
        assert_eq!(take_param(&mut u, "application_name").as_deref(), Some("x"));
        assert_eq!(u, "postgresql://u@h/db");
        let mut odd = "%".to_owned();
        assert_eq!(percent_decode(&odd), "%");
        odd.push('4');
        assert_eq!(percent_decode(&odd), "%4");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }

    #[test]
    fn tls_files_come_from_the_string() {
        let s = ConnSpec::parse(Some(
            "host=localhost port=1 user=u dbname=d sslmode=verify-ca sslrootcert=/r.crt sslcert=/c.crt sslkey=/c.key",
        ))
        .unwrap();
        assert_eq!(s.tls(), TlsMode::VerifyCa);
        let files = s.tls_files();
        assert_eq!(files.root_cert.as_deref(), Some(std::path::Path::new("/r.crt")));
        assert_eq!(files.key.as_deref(), Some(std::path::Path::new("/c.key")));
        let env = s.libpq_env();
        assert!(env.contains(&("PGSSLCERT".into(), "/c.crt".into())));
        assert!(env.contains(&("PGSSLKEY".into(), "/c.key".into())));
        assert!(env.contains(&("PGSSLMODE".into(), "verify-ca".into())));
        let s = ConnSpec::parse(Some("host=localhost sslmode=disable sslcert=/c.crt")).unwrap();
        assert_eq!(s.tls_files(), &TlsFiles::default(), "no TLS, no files");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgresql://a:pw@h/db"), "postgresql://a:***@h/db");
        assert_eq!(redact("host=h password=pw user=u"), "host=h password=*** user=u");
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("public", "T"), "\"public\".\"T\"");
    }
}
