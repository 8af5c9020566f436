//! Connecting to PostgreSQL the way libpq does: a URL
//! (`postgresql://user@host:5432/db?sslmode=require`), key=value pairs
//! (`host=/run/postgresql dbname=app`), or nothing, with the `PG*`
//! environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
//! PGSSLMODE) filling in what the string leaves out.
//!
//! TLS follows `sslmode`: `disable` never encrypts; `prefer` (the default)
//! and `require` encrypt without authenticating the server, as libpq does;
//! `verify-ca` and `verify-full` check the certificate against
//! `sslrootcert` / `PGSSLROOTCERT` / `~/.postgresql/root.crt`, else the
//! system's roots (both also check the host name: rustls always does).
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
use std::sync::Arc;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};

mod pgpass;
mod service;

/// How strictly the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, no certificate check.
    Prefer,
    /// TLS required, no certificate check.
    Require,
    /// TLS required, certificate and host name checked.
    Verify,
}

/// Where and how to connect: a parsed connection string merged with the
/// environment.
#[derive(Clone)]
pub struct ConnSpec {
    config: Config,
    tls: TlsMode,
    /// `sslmode` as libpq spells it, for child processes.
    sslmode: String,
    root_cert: Option<PathBuf>,
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
        // tokio-postgres knows disable/prefer/require only: read the
        // verifying modes ourselves and let it negotiate TLS as `require`.
        let mut sslmode = None;
        let mut root_cert = None;
        let mut cleaned = text.clone();
        for mode in ["verify-full", "verify-ca", "require", "prefer", "disable", "allow"] {
            if text.contains(&format!("sslmode={mode}")) {
                sslmode = Some(mode.to_owned());
                if mode.starts_with("verify") {
                    cleaned = cleaned.replace(&format!("sslmode={mode}"), "sslmode=require");
                }
                if mode == "allow" {
                    cleaned = cleaned.replace("sslmode=allow", "sslmode=prefer");
                }
            }
        }
        // `service=NAME` is libpq's, not tokio-postgres's: take it out.
        let mut service_name = None;
        if let Some(pos) = cleaned.find("service=") {
            let rest = &cleaned[pos + "service=".len()..];
            let end = rest.find([' ', '&']).unwrap_or(rest.len());
            service_name = Some(rest[..end].trim_matches('\'').to_owned());
            let removed = format!("service={}", &rest[..end]);
            cleaned = cleaned.replace(&removed, "").replace("?&", "?").replace("&&", "&");
            cleaned = cleaned.trim_end_matches(['?', '&']).trim().to_owned();
        }
        let service = match service_name.or_else(|| env("PGSERVICE")) {
            Some(name) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                service::lookup(&name, &service::files(env("PGSERVICEFILE"), env("PGSYSCONFDIR"), home))?
            }
            None => Vec::new(),
        };
        let from_service = |key: &str| service.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        for (key, _) in &service {
            if !["host", "hostaddr", "port", "user", "dbname", "password", "sslmode", "sslrootcert", "application_name"]
                .contains(&key.as_str())
            {
                tracing::warn!("service parameter {key} is not used by cairn's own connections");
            }
        }
        // The TLS mode is set on the config below, whatever the string says.
        sslmode = sslmode.or_else(|| from_service("sslmode"));
        for key in ["sslrootcert="] {
            if let Some(pos) = cleaned.find(key) {
                let rest = &cleaned[pos + key.len()..];
                let end = rest.find([' ', '&']).unwrap_or(rest.len());
                root_cert = Some(PathBuf::from(&rest[..end]));
                let removed = format!("{key}{}", &rest[..end]);
                cleaned = cleaned.replace(&removed, "").replace("?&", "?").replace("&&", "&");
                cleaned = cleaned.trim_end_matches(['?', '&']).to_owned();
            }
        }
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
        let sslmode = match sslmode.or_else(|| env("PGSSLMODE")) {
            Some(m) => m,
            None => "prefer".to_owned(),
        };
        let tls = match sslmode.as_str() {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" | "verify-full" => TlsMode::Verify,
            other => {
                return Err(Error::BadConnString {
                    input: format!("sslmode={other}"),
                    reason: "use disable, allow, prefer, require, verify-ca or verify-full".into(),
                });
            }
        };
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify => SslMode::Require,
        });
        let root_cert = root_cert
            .or_else(|| from_service("sslrootcert").map(PathBuf::from))
            .or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
        Ok(ConnSpec { config, tls, sslmode, root_cert, password_from_file })
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
        if let Some(root) = &self.root_cert {
            vars.push(("PGSSLROOTCERT".to_owned(), root.display().to_string()));
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
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Invalid(format!("cannot set up TLS: {e}")))?;
        if self.tls != TlsMode::Verify {
            // libpq's prefer/require: encrypted, server not authenticated.
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        let default_root = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql/root.crt"));
        let file = self.root_cert.clone().or(default_root.filter(|p| p.exists()));
        match file {
            Some(path) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| Error::io(format!("cannot read the root certificate {}", path.display()), e))?;
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: rustls::pki_types::CertificateDer<'static> = cert.map_err(|e| {
                        Error::Invalid(format!("{} is not a PEM certificate file: {e}", path.display()))
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| Error::Invalid(format!("bad certificate in {}: {e}", path.display())))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        let mut reason = crate::error::describe(e);
        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
        let hint = match code.as_str() {
            "28P01" => " (check the password: PGPASSWORD, the URL, or password= in the connection string)",
            "28000" => " (the server's pg_hba.conf does not let this role in from here, or the role does not exist)",
            "3D000" => " (create the database, or name another in the connection string)",
            _ if e.as_db_error().is_none() && !reason.contains("TLS") => {
                " (is the server running and accepting connections there? check the host and port: the connection string, PGHOST, PGPORT)"
            }
            _ => "",
        };
        reason.push_str(hint);
        Error::Connect { target: self.display(), reason }
    }
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

/// The certificate check of `sslmode=prefer/require`: none (libpq's
/// behaviour); signatures are still verified, so the session key is the
/// server's.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
        assert_eq!(s.tls(), TlsMode::Verify);
        assert_eq!(s.with_dbname("other").dbname(), "other");
        let s = ConnSpec::parse(Some("host=/tmp/x port=1 user=bob mydb")).map(|_| ());
        assert!(s.is_err());
        let s = ConnSpec::parse(Some("host=/tmp/x port=1 user=bob sslmode=require")).unwrap();
        assert_eq!(s.tls(), TlsMode::Require);
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
