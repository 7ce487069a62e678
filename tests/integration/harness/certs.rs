//! TLS material for tests: a throwaway CA (rcgen) that issues certificates
//! for `localhost` and 127.0.0.1, written as PEM files into a temp dir that
//! is removed on drop, and the installation of a certificate into a local
//! Postgres data dir.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The names every test certificate is issued for: a client connecting to
/// either may verify the host name (libpq and rustls both check IP SANs).
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A temporary directory, removed with everything in it on drop. Its name
/// (`pgbaton-tlstest-<pid>-<n>`) is not one localpg's stale-dir cleanup
/// treats as its own.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "pgbaton-tlstest-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temp dir for certificates");
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A self-signed certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid names");
        params.distinguished_name = dn("pgbaton test server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// PEM files in a temp dir: `ca.crt` (the issuing CA), `server.crt` and
/// `server.key` (for [`SERVER_NAMES`]).
pub struct TestCerts {
    pub dir: TempDir,
    pub ca: Ca,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let dir = TempDir::new();
        let ca = Ca::new("pgbaton test CA");
        let issued = ca.issue(&SERVER_NAMES);
        let ca_file = dir.join("ca.crt");
        let cert_file = dir.join("server.crt");
        let key_file = dir.join("server.key");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        std::fs::write(&cert_file, &issued.cert_pem).unwrap();
        write_private(&key_file, &issued.key_pem);
        TestCerts {
            dir,
            ca,
            ca_file,
            cert_file,
            key_file,
        }
    }

    pub fn tls_files(&self) -> pgbaton::config::TlsFiles {
        pgbaton::config::TlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }
}

fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Writes a certificate issued by `ca` and its key into `data_dir`, owned by
/// the data dir's owner (the server's OS user) with the key at mode 0600, as
/// Postgres insists. Returns the absolute paths (cert, key).
pub fn install_in_data_dir(ca: &Ca, data_dir: &Path) -> (PathBuf, PathBuf) {
    let meta = std::fs::metadata(data_dir).expect("data dir metadata");
    let (uid, gid) = (meta.uid(), meta.gid());
    let issued = ca.issue(&SERVER_NAMES);
    let cert = data_dir.join("pgbaton-test-server.crt");
    let key = data_dir.join("pgbaton-test-server.key");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&key, &issued.key_pem);
    for f in [&cert, &key] {
        std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown to the server's user");
    }
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    (abs(cert), abs(key))
}
