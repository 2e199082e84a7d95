//! The certificate of `--domain`, obtained and renewed from an ACME CA (RFC 8555; Let's Encrypt
//! by default) with instant-acme: the account key and the certificate are kept in the cache
//! directory; a certificate is renewed when a third of its lifetime is left (30 days of Let's
//! Encrypt's 90), or at once on SIGHUP; a failed attempt is tried again after 1 minute,
//! doubling up to an hour. The challenge is TLS-ALPN-01 on the HTTPS listener (RFC 8737), or
//! HTTP-01 on the plain-HTTP listener when there is one (the CA asks on port 80: that
//! listener's port, or one forwarded to it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::config::AcmePlan;
use crate::tls::CertStore;

/// Which challenge proves the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A certificate presented on the HTTPS listener to the `acme-tls/1` protocol.
    TlsAlpn01,
    /// A file under `/.well-known/acme-challenge/` on the plain-HTTP listener.
    Http01,
}

/// The first wait after a failed attempt; doubled after each further one.
const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// The longest sleep between checks of the certificate's age.
const CHECK_MAX: Duration = Duration::from_secs(3600);

const ACCOUNT_FILE: &str = "account.json";

pub struct Acme {
    plan: AcmePlan,
    store: Arc<CertStore>,
    challenge: Challenge,
}

impl Acme {
    /// Makes the cache directory (readable by the owner only: it holds private keys).
    pub fn new(
        plan: AcmePlan,
        store: Arc<CertStore>,
        challenge: Challenge,
    ) -> Result<Acme, String> {
        create_private_dir(&plan.cache)
            .map_err(|e| format!("tls.acme_cache {}: {e}", plan.cache.display()))?;
        Ok(Acme {
            plan,
            store,
            challenge,
        })
    }

    fn cert_path(&self) -> PathBuf {
        self.plan
            .cache
            .join(format!("{}.crt.pem", self.plan.domain))
    }

    fn key_path(&self) -> PathBuf {
        self.plan
            .cache
            .join(format!("{}.key.pem", self.plan.domain))
    }

    /// Keeps the certificate current until the process ends.
    pub async fn run(self) {
        let mut validity = match self.load_cached() {
            Ok(Some(v)) => {
                tracing::info!(domain = %self.plan.domain, days_left = days_left(v.1), "ACME: certificate from the cache in use");
                Some(v)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "ACME: the cached certificate is not usable, getting a new one: {e}"
                );
                None
            }
        };
        let mut hangup = crate::tls::hangups();
        let mut forced = false;
        let mut failures = 0u32;
        loop {
            let due = validity.map(|(from, to)| renew_at(from, to));
            if forced || due.is_none_or(|t| SystemTime::now() >= t) {
                forced = false;
                tracing::info!(domain = %self.plan.domain, directory = %self.plan.directory, challenge = ?self.challenge, "ACME: ordering a certificate");
                match self.obtain().await {
                    Ok(v) => {
                        tracing::info!(domain = %self.plan.domain, days_left = days_left(v.1), "ACME: new certificate in use");
                        validity = Some(v);
                        failures = 0;
                    }
                    Err(e) => {
                        self.store.clear_challenges();
                        let wait = RETRY_FIRST
                            .saturating_mul(1 << failures.min(6))
                            .min(RETRY_MAX);
                        failures += 1;
                        tracing::error!(domain = %self.plan.domain, "ACME: no certificate ({e}); trying again in {}s", wait.as_secs());
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = hangup.recv() => forced = true,
                        }
                        continue;
                    }
                }
            }
            let until_due = validity
                .map(|(from, to)| renew_at(from, to))
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(until_due.min(CHECK_MAX)) => {}
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: renewing the certificate now");
                    forced = true;
                }
            }
        }
    }

    /// The cached certificate, put in use if it is for the domain and not expired; its
    /// validity.
    fn load_cached(&self) -> Result<Option<(SystemTime, SystemTime)>, String> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.exists() {
            return Ok(None);
        }
        let certified =
            sori_turn::tls::load_certified_key(&cert, &key).map_err(|e| e.to_string())?;
        let (from, to) = validity(&certified.cert[0])?;
        if to <= SystemTime::now() {
            return Err(format!("{} expired", cert.display()));
        }
        self.store.set(certified);
        Ok(Some((from, to)))
    }

    /// One order, from account to certificate; the certificate goes in use and in the cache.
    async fn obtain(&self) -> Result<(SystemTime, SystemTime), String> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(self.plan.domain.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut authorizations = order.authorizations();
        while let Some(result) = authorizations.next().await {
            let mut authz = result.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let kind = match self.challenge {
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                Challenge::Http01 => ChallengeType::Http01,
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
            let key_authorization = challenge.key_authorization();
            match self.challenge {
                Challenge::TlsAlpn01 => {
                    let cert = alpn_certificate(&self.plan.domain, key_authorization.digest())?;
                    self.store.add_alpn_challenge(&self.plan.domain, cert);
                }
                Challenge::Http01 => self
                    .store
                    .add_http_challenge(&challenge.token, key_authorization.as_str().to_string()),
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let retries = RetryPolicy::default().timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| format!("waiting for the CA's validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("the order is {status:?}, not ready"));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let cert_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        self.store.clear_challenges();
        let certified =
            sori_turn::tls::certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
                .map_err(|e| format!("the CA's certificate: {e}"))?;
        let validity = validity(&certified.cert[0])?;
        // Key first: a crash between the two leaves a certificate whose key does not match,
        // which the next start reports and replaces.
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.cert_path(), cert_pem.as_bytes())?;
        self.store.set(certified);
        Ok(validity)
    }

    /// The account from the cache, or a new one (then cached).
    async fn account(&self) -> Result<Account, String> {
        let builder = || match &self.plan.ca_root {
            Some(root) => Account::builder_with_root(root)
                .map_err(|e| format!("tls.acme_ca_root {}: {e}", root.display())),
            None => Account::builder().map_err(|e| format!("HTTP client: {e}")),
        };
        let path = self.plan.cache.join(ACCOUNT_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<AccountCredentials>(&text) {
                Ok(credentials) => {
                    return builder()?
                        .from_credentials(credentials)
                        .await
                        .map_err(|e| format!("account from {}: {e}", path.display()))
                }
                Err(e) => tracing::warn!(
                    "ACME: {} is not an account ({e}); making a new one",
                    path.display()
                ),
            }
        }
        let contact = self.plan.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.plan.directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("new account at {}: {e}", self.plan.directory))?;
        let text = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
        write_private(&path, text.as_bytes())?;
        tracing::info!(directory = %self.plan.directory, "ACME: account created");
        Ok(account)
    }
}

/// When a certificate valid from `from` to `to` is renewed: with a third of its lifetime left.
fn renew_at(from: SystemTime, to: SystemTime) -> SystemTime {
    let life = to.duration_since(from).unwrap_or_default();
    to - life / 3
}

/// A certificate's validity period.
fn validity(der: &[u8]) -> Result<(SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("certificate not readable: {e}"))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

/// The self-signed certificate of a TLS-ALPN-01 challenge: the domain, and the SHA-256 of the
/// key authorization in the `acmeIdentifier` extension (RFC 8737).
fn alpn_certificate(
    domain: &str,
    digest: impl AsRef<[u8]>,
) -> Result<Arc<sori_turn::rustls::sign::CertifiedKey>, String> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .map_err(|e| format!("challenge certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    // Not through `CertifiedKey::from_der`: its check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension.
    let provider = sori_turn::rustls::crypto::aws_lc_rs::default_provider();
    let der = sori_turn::rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("challenge key: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(sori_turn::rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// Whole days until `t`.
fn days_left(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs()
        / 86_400
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a file only its owner reads, replacing the old one in one step.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        #[cfg(not(unix))]
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_with_a_third_of_its_life_left() {
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let to = from + Duration::from_secs(90 * 86_400);
        assert_eq!(renew_at(from, to), from + Duration::from_secs(60 * 86_400));
    }

    #[test]
    fn the_alpn_challenge_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let ck = alpn_certificate("sori.test", digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(sori.test)"]);
        // id-pe-acmeIdentifier, critical, an OCTET STRING of the digest.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
    }
}
