//! The TLS settings of warren's HTTP clients (webhooks, the management API): rustls with
//! ring, so that no process-wide crypto provider has to be installed first.

use std::sync::Arc;

/// rustls with ring, trusting Mozilla's roots and the certificates of `ca_file` (if any).
pub fn client_config(ca_file: &str) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if !ca_file.is_empty() {
        let certificates = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("cannot read `{ca_file}`: {e}"))?;
        let mut added = 0;
        for certificate in certificates {
            let certificate =
                certificate.map_err(|e| format!("`{ca_file}` is not PEM certificates: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("a certificate of `{ca_file}` is unusable: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("`{ca_file}` holds no certificate"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS version in common with ring: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
