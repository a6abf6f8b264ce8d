//! TLS material: the cluster CA and the serving certificate, generated on first start into the
//! certificate directory when none are given, and the admin kubeconfig written for the user.
//!
//! Files in the certificate directory: `ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key`,
//! `apiserver.sans` (the names the serving certificate was made for; a change of names makes a
//! new serving certificate from the same CA) and `tokens.csv` (the generated admin token).
//! Keys are written mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: no {what} found")]
    Missing { path: String, what: &'static str },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.display().to_string(), source }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io(path))?;
    f.write_all(contents).map_err(io(path))
}

fn validity(params: &mut CertificateParams, years: i32) {
    let year = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).year() as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The serving certificate chain and key, plus the CA clients should trust.
pub struct ServingMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca_pem: String,
}

/// Where TLS material comes from.
pub enum TlsSource {
    /// Use these files as given (`--tls-cert-file`, `--tls-private-key-file`).
    Files { cert: PathBuf, key: PathBuf },
    /// Generate (once) into the certificate directory.
    Generated { cert_dir: PathBuf, sans: Vec<String> },
}

pub fn load_or_generate(source: &TlsSource) -> Result<ServingMaterial, CertError> {
    match source {
        TlsSource::Files { cert, key } => {
            let cert_pem = std::fs::read(cert).map_err(io(cert))?;
            let key_pem = std::fs::read(key).map_err(io(key))?;
            let chain = parse_certs(cert, &cert_pem)?;
            let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
                .map_err(io(key))?
                .ok_or(CertError::Missing { path: key.display().to_string(), what: "private key" })?;
            // Clients trust the last certificate of the chain (the issuer, or the cert itself).
            let ca_pem = pem_of(chain.last().expect("parse_certs returns at least one"));
            Ok(ServingMaterial { chain, key: key_der, ca_pem })
        }
        TlsSource::Generated { cert_dir, sans } => generate(cert_dir, sans),
    }
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &pem[..]).collect::<Result<_, _>>().map_err(io(path))?;
    if certs.is_empty() {
        return Err(CertError::Missing { path: path.display().to_string(), what: "certificate" });
    }
    Ok(certs)
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn generate(dir: &Path, sans: &[String]) -> Result<ServingMaterial, CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !ca_crt.exists() || !ca_key.exists() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kubernetes-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 10);
        let cert = params.self_signed(&key)?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_crt, cert.pem()).map_err(io(&ca_crt))?;
    }
    let ca_pem = std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;

    let (crt, key, sans_file) = (dir.join("apiserver.crt"), dir.join("apiserver.key"), dir.join("apiserver.sans"));
    let wanted = sans.join("\n");
    let current = std::fs::read_to_string(&sans_file).unwrap_or_default();
    if !crt.exists() || !key.exists() || current != wanted {
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem)?)?;
        let serving_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for s in sans {
            params.subject_alt_names.push(match s.parse::<IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(s.clone().try_into()?),
            });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, 2);
        let cert = params.signed_by(&serving_key, &issuer)?;
        write_private(&key, serving_key.serialize_pem().as_bytes())?;
        std::fs::write(&crt, cert.pem()).map_err(io(&crt))?;
        std::fs::write(&sans_file, &wanted).map_err(io(&sans_file))?;
    }
    let material = load_or_generate(&TlsSource::Files { cert: crt, key })?;
    Ok(ServingMaterial { ca_pem, ..material })
}

/// The client certificate the apiserver shows kubelets (`apiserver-kubelet-client.crt/.key` in
/// the certificate directory, signed by the cluster CA), generated once.
pub fn ensure_kubelet_client_cert(dir: &Path) -> Result<(PathBuf, PathBuf), CertError> {
    let (crt, key) = (dir.join("apiserver-kubelet-client.crt"), dir.join("apiserver-kubelet-client.key"));
    if crt.exists() && key.exists() {
        return Ok((crt, key));
    }
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ca_pem = std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem)?)?;
    let client_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver-kubelet-client");
    dn.push(DnType::OrganizationName, "system:masters");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 2);
    let cert = params.signed_by(&client_key, &issuer)?;
    write_private(&key, client_key.serialize_pem().as_bytes())?;
    std::fs::write(&crt, cert.pem()).map_err(io(&crt))?;
    Ok((crt, key))
}

pub fn server_config(material: &ServingMaterial) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Returns the admin token in `path`, writing a new token file with a fresh admin token first if
/// the file does not exist.
pub fn ensure_token_file(path: &Path) -> Result<(), CertError> {
    if path.exists() {
        return Ok(());
    }
    use rand::Rng;
    let token: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    write_private(path, format!("{token},admin,admin,\"system:masters\"\n").as_bytes())
}

/// Writes a kubeconfig for `server` that trusts `ca_pem` and authenticates with `token`.
pub fn write_kubeconfig(path: &Path, cluster: &str, server: &str, ca_pem: &str, token: &str) -> Result<(), CertError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: admin@{cluster}\n  context:\n    cluster: {cluster}\n    user: admin\ncurrent-context: admin@{cluster}\n"
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_is_reused_and_serving_cert_follows_the_names() {
        let dir = std::env::temp_dir().join(format!("certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = TlsSource::Generated { cert_dir: dir.clone(), sans: vec!["localhost".into(), "127.0.0.1".into()] };
        let first = load_or_generate(&src).expect("generates");
        let again = load_or_generate(&src).expect("loads");
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(first.chain, again.chain, "same names: same certificate");
        let more = TlsSource::Generated { cert_dir: dir.clone(), sans: vec!["localhost".into(), "10.0.0.1".into()] };
        let changed = load_or_generate(&more).expect("regenerates");
        assert_eq!(changed.ca_pem, first.ca_pem, "the CA stays");
        assert_ne!(changed.chain, first.chain);
        server_config(&changed).expect("rustls accepts it");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
