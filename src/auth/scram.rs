//! Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres speaks it:
//! no channel binding offered, the SCRAM user name ignored in favour of the
//! startup packet's `user`, secrets in pg_authid's format.
//!
//! Passwords are used as raw bytes; Postgres applies SASLprep first, which is
//! the identity for ASCII passwords (src/common/saslprep.c).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Postgres' default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    Nonce,
    #[error("password authentication failed")]
    BadProof,
}

/// What a server stores to check a password: pg_authid's
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredSecret(***)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256 and one output block.
/// The iteration count most of `secrets` have (the default when there are
/// none): what a mock secret uses, so its first message looks like theirs.
pub fn usual_iterations<'a>(secrets: impl Iterator<Item = &'a StoredSecret>) -> u32 {
    let mut counts: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for s in secrets {
        *counts.entry(s.iterations).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(iterations, n)| (n, std::cmp::Reverse(iterations)))
        .map_or(DEFAULT_ITERATIONS, |(iterations, _)| iterations)
}

fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(password).expect("HMAC takes keys of any length");
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = m.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

impl StoredSecret {
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> StoredSecret {
        let salted = hi(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        StoredSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A secret with a fresh random salt, computed once at startup so that
    /// each login does not pay the key derivation.
    pub fn generate(password: &[u8]) -> StoredSecret {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        StoredSecret::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A secret no password matches, for a user pgbaton does not know: the
    /// exchange runs against it and fails like a wrong password, so a
    /// stranger cannot tell unknown users from known ones (Postgres does
    /// the same, with `scram_mock_salt`). The salt is derived from the
    /// user name and a per-process nonce, so it is the same on every try,
    /// as a real user's is; `iterations` should be what most real users'
    /// secrets have.
    pub fn mock(user: &[u8], nonce: &[u8; 32], iterations: u32) -> StoredSecret {
        let salt = hmac(nonce, user);
        StoredSecret {
            iterations,
            salt: salt[..16].to_vec(),
            stored_key: hmac(nonce, &[user, b"\0stored"].concat()),
            server_key: hmac(nonce, &[user, b"\0server"].concat()),
        }
    }

    pub fn parse(s: &str) -> Option<StoredSecret> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        Some(StoredSecret {
            iterations,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    pub fn to_pg_string(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// One exchange, after the client-first message.
#[derive(Debug)]
pub struct ServerExchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl ServerExchange {
    /// Reads the client-first message and returns the exchange plus the
    /// server-first message to send.
    pub fn start(client_first: &[u8], secret: &StoredSecret) -> Result<ServerExchange, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let gs2_header = format!("{flag},,");
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("missing client nonce"))?;
        if bare.split(',').any(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let mut server_nonce = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&secret.salt),
            secret.iterations
        );
        Ok(ServerExchange {
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            gs2_header,
        })
    }

    pub fn server_first(&self) -> &[u8] {
        self.server_first.as_bytes()
    }

    /// Checks the client-final message; on success returns the server-final
    /// message (`v=<signature>`).
    pub fn finish(
        &self,
        client_final: &[u8],
        secret: &StoredSecret,
    ) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding"))?;
        if B64.decode(cbind).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("bad proof encoding"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&secret.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        // Constant-time comparison: a timing leak would reveal StoredKey bytes.
        let diff = computed
            .iter()
            .zip(secret.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    #[test]
    fn mock_secrets_use_the_usual_iteration_count() {
        let with = |i| StoredSecret::from_password(b"p", b"salt", i);
        assert_eq!(usual_iterations([].iter()), DEFAULT_ITERATIONS);
        let secrets = [with(4096), with(10000), with(10000)];
        assert_eq!(usual_iterations(secrets.iter()), 10000);
        let m = StoredSecret::mock(b"nobody", &[7; 32], 10000);
        assert_eq!(m.iterations, 10000);
        assert_eq!(m.salt, StoredSecret::mock(b"nobody", &[7; 32], 10000).salt);
    }

    fn exchange(client_password: &[u8], secret: &StoredSecret) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(client_password, ChannelBinding::unsupported());
        let ex = ServerExchange::start(client.message(), secret)?;
        client.update(ex.server_first()).unwrap();
        let server_final = ex.finish(client.message(), secret)?;
        client
            .finish(&server_final)
            .map_err(|_| ScramError::BadProof)
    }

    #[test]
    fn accepts_the_right_password() {
        let secret = StoredSecret::generate(b"s3cret");
        exchange(b"s3cret", &secret).unwrap();
    }

    #[test]
    fn refuses_a_wrong_password() {
        let secret = StoredSecret::generate(b"s3cret");
        assert_eq!(exchange(b"nope", &secret), Err(ScramError::BadProof));
    }

    #[test]
    fn parses_pg_authid_format() {
        let s = StoredSecret::from_password(b"pw", b"0123456789abcdef", 4096);
        let text = s.to_pg_string();
        assert_eq!(StoredSecret::parse(&text), Some(s.clone()));
        exchange(b"pw", &StoredSecret::parse(&text).unwrap()).unwrap();
        assert!(StoredSecret::parse("md5abc").is_none());
        assert!(StoredSecret::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_none());
    }

    #[test]
    fn matches_a_secret_postgres_made() {
        // `CREATE ROLE r PASSWORD 'foobar'` on PG 15 with a known salt gives the
        // same keys as our derivation: check our Hi() against RFC 7677's vector.
        // RFC 7677 §3: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let s = StoredSecret::from_password(b"pencil", &salt, 4096);
        let salted = hi(b"pencil", &salt, 4096);
        let server_key = hmac(&salted, b"Server Key");
        assert_eq!(s.server_key, server_key);
        // The server signature in the RFC example proves the ServerKey.
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            B64.encode(hmac(&s.server_key, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn refuses_malformed_messages() {
        let secret = StoredSecret::generate(b"x");
        assert!(ServerExchange::start(b"", &secret).is_err());
        assert!(ServerExchange::start(b"p=tls-server-end-point,,n=,r=abc", &secret).is_err());
        assert!(ServerExchange::start(b"n,,n=,", &secret).is_err());
        assert!(ServerExchange::start(b"\xff", &secret).is_err());
        let ex = ServerExchange::start(b"n,,n=,r=abc", &secret).unwrap();
        assert!(ex.finish(b"c=biws,r=wrong,p=AAAA", &secret).is_err());
        assert!(ex.finish(b"garbage", &secret).is_err());
    }
}
