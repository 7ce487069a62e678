//! `[cluster] store` / `--cluster-store`: which coordination store, parsed
//! and checked before anything connects.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In this process only: a single replica (the default).
    Memory,
    /// A libpq-style URL of the control database, reached directly.
    Postgres(String),
    /// etcd members as `http://host:port`.
    Etcd(Vec<String>),
}

impl StoreUrl {
    pub fn parse(text: &str) -> Result<StoreUrl, String> {
        let text = text.trim();
        if text == "memory" {
            return Ok(StoreUrl::Memory);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            text.parse::<tokio_postgres::Config>()
                .map_err(|e| format!("not a valid postgres:// URL: {e}"))?;
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("etcd://") {
            let mut endpoints = Vec::new();
            if rest.contains('@') {
                return Err(
                    "etcd://: user names and passwords are not supported; members as HOST:PORT"
                        .to_string(),
                );
            }
            for member in rest.trim_end_matches('/').split(',') {
                let (host, port) = member
                    .rsplit_once(':')
                    .ok_or_else(|| format!("etcd member {member:?} is not HOST:PORT"))?;
                if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(format!("etcd member {member:?} is not HOST:PORT"));
                }
                endpoints.push(format!("http://{host}:{port}"));
            }
            return Ok(StoreUrl::Etcd(endpoints));
        }
        Err(format!(
            "{:?}: expected \"memory\", \"postgres://USER@HOST:PORT/DB\" or \"etcd://HOST:PORT[,HOST:PORT]\"",
            without_password(text)
        ))
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, StoreUrl::Memory)
    }
}

/// Never shows a password.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Postgres(url) => f.write_str(&without_password(url)),
            StoreUrl::Etcd(endpoints) => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`, and
/// a `password=` parameter the same way.
pub fn without_password(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        // libpq and tokio-postgres end the user info at the first '@',
        // whatever comes before it ('/' and '?' may be in a password):
        // so must this, or a password with a '/' would be shown.
        if let Some(at) = out[auth_start..].find('@') {
            let userinfo = &out[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(auth_start + colon + 1..auth_start + at, "***");
            }
        }
    }
    if let Some(i) = out.find("password=") {
        let end = out[i..].find(['&', ' ']).map_or(out.len(), |j| i + j);
        out.replace_range(i + "password=".len()..end, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(StoreUrl::parse("memory").unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap(),
            StoreUrl::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://10.0.0.2:2379".into()
            ])
        );
        assert!(matches!(
            StoreUrl::parse("postgres://u@127.0.0.1:5432/control").unwrap(),
            StoreUrl::Postgres(_)
        ));
    }

    #[test]
    fn a_malformed_url_is_refused_with_what_was_expected() {
        for bad in [
            "",
            "mysql://x",
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://host:99999",
            "postgres://u@h:notaport/db",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn a_password_is_never_shown() {
        let url = StoreUrl::parse("postgres://admin:s3cret@db:5432/control").unwrap();
        assert_eq!(url.to_string(), "postgres://admin:***@db:5432/control");
        assert_eq!(
            without_password("postgres://u@db/control?password=s3cret&sslmode=disable"),
            "postgres://u@db/control?password=***&sslmode=disable"
        );
        // A base64 password with a '/': the user info ends at the '@'.
        let url = StoreUrl::parse("postgres://pgbaton:Zm9v/YmFy@db/control").unwrap();
        assert_eq!(url.to_string(), "postgres://pgbaton:***@db/control");
        let e = StoreUrl::parse("postgress://u:s3cret@db/control").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = StoreUrl::parse("etcd://root:s3cret@h:2379").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
