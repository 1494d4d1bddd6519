//! First-start credentials: a CA, a serving certificate signed by it, an admin bearer
//! token, and the kubeconfig that ties them together. Everything is written once under
//! the data dir and reused on later starts; the serving certificate is re-issued when the
//! names it must cover change.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use base64::Engine;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// The credentials the API server serves with.
pub struct Pki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// The admin bearer token (never logged).
    pub admin_token: String,
}

const CA_NAME: &str = "berth-ca";

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_opt(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Loads the credentials under `dir`, creating what is missing. `names` are the DNS names
/// and IP addresses the serving certificate must cover.
pub fn ensure(dir: &Path, names: &[String]) -> Result<Pki, Error> {
    let pki_dir = dir.join("pki");
    fs::create_dir_all(&pki_dir).map_err(io_err(&pki_dir))?;
    fs::set_permissions(&pki_dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&pki_dir))?;

    let (ca_key_path, ca_cert_path) = (pki_dir.join("ca.key"), pki_dir.join("ca.crt"));
    let (ca_key, ca_cert_pem) = match (read_opt(&ca_key_path)?, read_opt(&ca_cert_path)?) {
        (Some(key), Some(cert)) => (KeyPair::from_pem(&key)?, cert),
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?.pem();
            write_private(&ca_key_path, &key.serialize_pem())?;
            write_private(&ca_cert_path, &cert)?;
            (key, cert)
        }
    };

    let (key_path, cert_path, names_path) =
        (pki_dir.join("apiserver.key"), pki_dir.join("apiserver.crt"), pki_dir.join("apiserver.names"));
    let wanted_names = names.join("\n");
    let (server_key_pem, server_cert_pem) = match (read_opt(&key_path)?, read_opt(&cert_path)?, read_opt(&names_path)?)
    {
        (Some(key), Some(cert), Some(n)) if n == wanted_names => (key, cert),
        _ => {
            let issuer = Issuer::new(ca_params()?, &ca_key);
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.to_vec())?;
            params.distinguished_name.push(DnType::CommonName, "berth-apiserver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2124, 1, 1);
            let cert = params.signed_by(&key, &issuer)?.pem();
            write_private(&key_path, &key.serialize_pem())?;
            write_private(&cert_path, &cert)?;
            write_private(&names_path, &wanted_names)?;
            (key.serialize_pem(), cert)
        }
    };

    let token_path = pki_dir.join("admin.token");
    let admin_token = match read_opt(&token_path)? {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            write_private(&token_path, &token)?;
            token
        }
    };
    Ok(Pki { ca_cert_pem, server_cert_pem, server_key_pem, admin_token })
}

/// Writes `DIR/kubeconfig` pointing at `server` (an `https://` URL) with the admin token.
pub fn write_kubeconfig(dir: &Path, server: &str, pki: &Pki) -> Result<PathBuf, Error> {
    let ca = base64::engine::general_purpose::STANDARD.encode(pki.ca_cert_pem.as_bytes());
    let contents = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: admin\n    namespace: default\ncurrent-context: berth\npreferences: {{}}\n",
        token = pki.admin_token
    );
    let path = dir.join("kubeconfig");
    write_private(&path, &contents)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses() {
        let dir = tempfile_dir();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let a = ensure(&dir, &names).expect("first");
        let b = ensure(&dir, &names).expect("second");
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        let c = ensure(&dir, &["localhost".to_owned()]).expect("renamed");
        assert_eq!(a.ca_cert_pem, c.ca_cert_pem);
        assert_ne!(a.server_cert_pem, c.server_cert_pem);
        let mode = fs::metadata(dir.join("pki/ca.key")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-pki-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
