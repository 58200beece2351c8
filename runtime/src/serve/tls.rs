//! The daemon's certificate: the one given (`--tls-cert`, `--tls-key`), or a self-signed one
//! generated for this host into the data directory on first start and reused afterwards.
//! SQL Server's `sp_invoke_external_rest_endpoint` and `CREATE EXTERNAL MODEL` call HTTPS only
//! (TLS 1.2+; FACTS.md), so plain HTTP exists only for loopback development.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ServeError;

/// A certificate and key in PEM files, with the certificate's SHA-256 fingerprint.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the DER certificate, as colon-separated hex (what `openssl x509 -fingerprint
    /// -sha256` and Windows' certificate dialog show).
    pub fingerprint: String,
    /// True when this start generated it.
    pub generated: bool,
}

/// The host's names the self-signed certificate is valid for.
fn host_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    names
}

fn io_error(path: &Path, what: &str, source: std::io::Error) -> ServeError {
    ServeError::Tls { what: format!("{what} {}: {source}", path.display()) }
}

/// The given pair, or the self-signed pair under `data_dir` (generated when absent).
pub fn certificate(given: Option<(PathBuf, PathBuf)>, data_dir: &Path) -> Result<TlsFiles, ServeError> {
    if let Some((cert, key)) = given {
        let fingerprint = fingerprint_of(&cert)?;
        std::fs::metadata(&key).map_err(|e| io_error(&key, "cannot read the key", e))?;
        return Ok(TlsFiles { cert, key, fingerprint, generated: false });
    }
    let cert = data_dir.join("tls").join("hartonomous-cert.pem");
    let key = data_dir.join("tls").join("hartonomous-key.pem");
    if cert.is_file() && key.is_file() {
        let fingerprint = fingerprint_of(&cert)?;
        return Ok(TlsFiles { cert, key, fingerprint, generated: false });
    }
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "cannot create", e))?;
    let generated = rcgen::generate_simple_self_signed(host_names())
        .map_err(|e| ServeError::Tls { what: format!("generating a self-signed certificate: {e}") })?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem()).map_err(|e| io_error(&cert, "cannot write", e))?;
    let fingerprint = fingerprint_hex(generated.cert.der());
    Ok(TlsFiles { cert, key, fingerprint, generated: true })
}

/// Writes the key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_error(path, "cannot write", e))?;
    file.write_all(bytes).map_err(|e| io_error(path, "cannot write", e))
}

fn fingerprint_of(cert: &Path) -> Result<String, ServeError> {
    let pem = std::fs::read_to_string(cert).map_err(|e| io_error(cert, "cannot read the certificate", e))?;
    let der = pem_first_certificate(&pem).ok_or_else(|| ServeError::Tls {
        what: format!("{} holds no PEM CERTIFICATE block", cert.display()),
    })?;
    Ok(fingerprint_hex(&der))
}

fn pem_first_certificate(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body = pem.split("-----BEGIN CERTIFICATE-----").nth(1)?.split("-----END CERTIFICATE-----").next()?;
    let text: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn fingerprint_hex(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_reused_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = certificate(None, dir.path()).expect("generate");
        assert!(first.generated);
        let second = certificate(None, dir.path()).expect("reuse");
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
        // 32 bytes as colon-separated hex.
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.key).expect("key").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        }
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        let err = certificate(Some((cert, dir.path().join("k.pem"))), dir.path()).expect_err("refused");
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
