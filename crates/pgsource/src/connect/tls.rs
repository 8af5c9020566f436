//! TLS as libpq sets it up: the mode (`sslmode`), the roots that check the
//! server (`sslrootcert`), and the client's certificate and key (`sslcert`,
//! `sslkey`), with libpq's defaults under `~/.postgresql/` and its refusal
//! of a private key that others may read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, Result};

/// How strictly the server's certificate is checked (`sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `disable`: no TLS.
    Disable,
    /// `allow`, `prefer`: TLS when the server offers it, no certificate check.
    Prefer,
    /// `require`: TLS required, no certificate check.
    Require,
    /// `verify-ca`: TLS required, the certificate must chain to a trusted root.
    VerifyCa,
    /// `verify-full`: as `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

impl TlsMode {
    /// Reads an `sslmode` value.
    pub fn parse(text: &str) -> Option<TlsMode> {
        Some(match text {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// The files of a TLS setup, as given (`None`: libpq's default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `sslrootcert` / `PGSSLROOTCERT`; `system` means the system's roots.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` / `PGSSLCERT`.
    pub cert: Option<PathBuf>,
    /// `sslkey` / `PGSSLKEY`.
    pub key: Option<PathBuf>,
}

/// The files libpq would use: the given ones, else under `home/.postgresql/`
/// (`root.crt` for the verifying modes; `postgresql.crt` and
/// `postgresql.key`, only when the certificate exists). A client
/// certificate without its key is an error, as in libpq.
pub fn resolve(mode: TlsMode, given: &TlsFiles, home: Option<&Path>) -> Result<TlsFiles> {
    let dot = home.map(|h| h.join(".postgresql"));
    let root_cert = if mode.verifies() {
        given.root_cert.clone().or_else(|| dot.as_ref().map(|d| d.join("root.crt")).filter(|p| p.exists()))
    } else {
        None
    };
    let cert = match &given.cert {
        Some(c) => Some(c.clone()),
        None => dot.as_ref().map(|d| d.join("postgresql.crt")).filter(|p| p.exists()),
    };
    let key = match (&cert, &given.key) {
        (None, _) => None,
        (Some(_), Some(k)) => Some(k.clone()),
        (Some(c), None) => {
            let default = dot.as_ref().map(|d| d.join("postgresql.key")).filter(|p| p.exists());
            Some(default.ok_or_else(|| {
                Error::Invalid(format!(
                    "the client certificate {} has no private key: name it with sslkey= or PGSSLKEY \
                     (libpq's default is ~/.postgresql/postgresql.key)",
                    c.display()
                ))
            })?)
        }
    };
    Ok(TlsFiles { root_cert, cert, key })
}

/// Whether a private key file's mode lets others read it, by libpq's rule:
/// a key owned by the user must have no group or other access; one owned
/// by root may be readable by its group (mode 0640).
pub fn key_too_open(mode: u32, owned_by_root: bool) -> bool {
    if owned_by_root { mode & 0o037 != 0 } else { mode & 0o077 != 0 }
}

/// The rustls configuration for `mode` with resolved `files`.
pub fn client_config(mode: TlsMode, files: &TlsFiles) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("cannot set up TLS: {e}")))?;
    let chain = if mode.verifies() {
        let roots = Arc::new(load_roots(files.root_cert.as_deref())?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Error::Invalid(format!("cannot set up TLS certificate checks: {e}")))?;
        Some(webpki)
    } else {
        // libpq's prefer/require: encrypted, server not authenticated.
        None
    };
    let verifier = Arc::new(Verify { chain, check_name: mode == TlsMode::VerifyFull, provider });
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = load_client_identity(cert, key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::Invalid(format!(
                    "the client certificate {} does not go with the key {}: {e}",
                    cert.display(),
                    key_display(files)
                ))
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn key_display(files: &TlsFiles) -> String {
    files.key.as_ref().map(|k| k.display().to_string()).unwrap_or_default()
}

fn load_roots(file: Option<&Path>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match file {
        Some(path) if path != Path::new("system") => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::io(
                    format!(
                        "cannot read the root certificate {} (name another with sslrootcert= or PGSSLROOTCERT, \
                         or use sslmode=require to skip the server's certificate check)",
                        path.display()
                    ),
                    e,
                )
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| Error::Invalid(format!("{} is not a PEM certificate file: {e}", path.display())))?;
                roots.add(cert).map_err(|e| Error::Invalid(format!("bad certificate in {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Invalid(format!("{} holds no PEM certificate", path.display())));
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

fn load_client_identity(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let pem = std::fs::read(cert)
        .map_err(|e| Error::io(format!("cannot read the client certificate {}", cert.display()), e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("{} is not a PEM certificate file: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Invalid(format!("{} holds no PEM certificate", cert.display())));
    }
    let meta =
        std::fs::metadata(key).map_err(|e| Error::io(format!("cannot read the client key {}", key.display()), e))?;
    {
        use std::os::unix::fs::MetadataExt;
        if meta.is_file() && key_too_open(meta.mode(), meta.uid() == 0) {
            return Err(Error::Invalid(format!(
                "the private key {} may be read by others (mode {:o}): chmod 600 it, as libpq requires",
                key.display(),
                meta.mode() & 0o777
            )));
        }
    }
    let bytes =
        std::fs::read(key).map_err(|e| Error::io(format!("cannot read the client key {}", key.display()), e))?;
    let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        Error::Invalid(format!(
            "{} is not a PEM private key (PKCS#8, PKCS#1 or SEC1; an encrypted key must be decrypted first): {e}",
            key.display()
        ))
    })?;
    Ok((chain, key_der))
}

/// The server certificate check of every `sslmode`. verify-ca and
/// verify-full check the chain (`chain`); a certificate valid for another
/// name passes only under verify-ca. prefer and require check nothing
/// (libpq's behaviour). Handshake signatures are verified in every mode, so
/// the session key is the server's.
#[derive(Debug)]
struct Verify {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_sslmode() {
        assert_eq!(TlsMode::parse("verify-ca"), Some(TlsMode::VerifyCa));
        assert_eq!(TlsMode::parse("verify-full"), Some(TlsMode::VerifyFull));
        assert_eq!(TlsMode::parse("allow"), Some(TlsMode::Prefer));
        assert_eq!(TlsMode::parse("Require"), None);
    }

    #[test]
    fn key_modes_follow_libpq() {
        assert!(!key_too_open(0o600, false));
        assert!(!key_too_open(0o400, false));
        assert!(key_too_open(0o640, false));
        assert!(key_too_open(0o604, false));
        assert!(!key_too_open(0o640, true));
        assert!(key_too_open(0o660, true));
        assert!(key_too_open(0o644, true));
    }

    #[test]
    fn defaults_come_from_dot_postgresql() {
        let home = tempfile::tempdir().unwrap();
        let dot = home.path().join(".postgresql");
        let none = resolve(TlsMode::VerifyFull, &TlsFiles::default(), Some(home.path())).unwrap();
        assert_eq!(none, TlsFiles::default(), "no files, no defaults");
        std::fs::create_dir(&dot).unwrap();
        for f in ["root.crt", "postgresql.crt"] {
            std::fs::write(dot.join(f), "x").unwrap();
        }
        let err = resolve(TlsMode::Require, &TlsFiles::default(), Some(home.path())).unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");
        std::fs::write(dot.join("postgresql.key"), "x").unwrap();
        let r = resolve(TlsMode::Require, &TlsFiles::default(), Some(home.path())).unwrap();
        assert_eq!(r.root_cert, None, "roots only matter when verifying");
        assert_eq!(r.cert, Some(dot.join("postgresql.crt")));
        assert_eq!(r.key, Some(dot.join("postgresql.key")));
        let given = TlsFiles { root_cert: Some("/r".into()), cert: Some("/c".into()), key: Some("/k".into()) };
        assert_eq!(resolve(TlsMode::VerifyCa, &given, Some(home.path())).unwrap(), given);
        let r = resolve(TlsMode::VerifyCa, &TlsFiles::default(), Some(home.path())).unwrap();
        assert_eq!(r.root_cert, Some(dot.join("root.crt")));
    }
}
