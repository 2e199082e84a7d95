//! Webhooks: what happens in rooms, POSTed to each configured URL as LiveKit posts its events,
//! so that `livekit-server-sdk`'s `WebhookReceiver` (and its Python and Go twins) validate them:
//! `Content-Type: application/webhook+json`, the body LiveKit's event JSON (lowerCamelCase
//! names), `Authorization` a JWT signed with an API key whose `sha256` claim is the body's
//! SHA-256 in base64. docs/webhooks.md lists every event.
//!
//! Each URL has its own bounded queue and one task that delivers its events in order: a
//! receiver that hangs, is slow or fails delays only its own events, never a room, a join or
//! another receiver. A failed delivery is tried again with backoff for a bounded time, then
//! dropped with a log line and a count on `/metrics`; so is an event that finds its queue full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::auth::Keys;

/// Where events go and how hard the server tries.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Each URL gets every event.
    pub urls: Vec<String>,
    /// The API key whose secret signs the events (`None`: the first key, by name).
    pub api_key: Option<String>,
    /// Events waiting for one URL; past it new events for that URL are dropped.
    pub queue: usize,
    /// How long one event is tried before it is dropped.
    pub retry_for: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            api_key: None,
            queue: 1000,
            retry_for: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// First wait before an event is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Counts of what became of events, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct HookStats {
    pub delivered: AtomicU64,
    /// Attempts that failed (each retried event counts once per failure).
    pub failed_attempts: AtomicU64,
    /// Given up after the retry time.
    pub dropped_failing: AtomicU64,
    /// Found its URL's queue full.
    pub dropped_full: AtomicU64,
}

/// The sending side: cheap to clone; does nothing when no URL is configured.
#[derive(Clone, Default)]
pub(crate) struct Webhooks {
    targets: Arc<Vec<mpsc::Sender<Arc<String>>>>,
    pub(crate) stats: Arc<HookStats>,
}

/// Whether `config` can be started with `keys` (every URL `http(s)://`, a key to sign with).
pub fn check(config: &WebhookConfig, keys: &Keys) -> Result<(), String> {
    if config.urls.is_empty() {
        return Ok(());
    }
    signing_key(config, keys)?;
    for url in &config.urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("webhook URL {url:?} is not http:// or https://"));
        }
    }
    Ok(())
}

fn signing_key(config: &WebhookConfig, keys: &Keys) -> Result<(String, String), String> {
    let key = match &config.api_key {
        Some(k) => k.clone(),
        None => keys
            .names()
            .into_iter()
            .next()
            .ok_or("webhooks are signed with an API key, and the server has none")?,
    };
    let secret = keys
        .secret(&key)
        .ok_or_else(|| format!("webhooks: no API key {key:?}"))?
        .to_string();
    Ok((key, secret))
}

impl Webhooks {
    /// Starts one delivery task per URL (in the current tokio runtime). Fails when there is no
    /// key to sign with or a URL is not `http(s)://`.
    pub(crate) fn start(config: &WebhookConfig, keys: &Keys) -> Result<Webhooks, String> {
        let stats = Arc::new(HookStats::default());
        if config.urls.is_empty() {
            return Ok(Webhooks {
                targets: Arc::default(),
                stats,
            });
        }
        check(config, keys)?;
        let (key, secret) = signing_key(config, keys)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhooks: {e}"))?;
        let mut targets = Vec::new();
        for url in &config.urls {
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            let target = Target {
                url: url.clone(),
                key: key.clone(),
                secret: secret.clone(),
                client: client.clone(),
                retry_for: config.retry_for,
                stats: stats.clone(),
            };
            tokio::spawn(target.run(rx));
            targets.push(tx);
        }
        Ok(Webhooks {
            targets: Arc::new(targets),
            stats,
        })
    }

    /// Whether any URL listens (events are built only then).
    pub(crate) fn on(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Queues `event` (its fields in snake_case, as the server API writes them) for every URL,
    /// never waiting.
    pub(crate) fn send(&self, name: &str, fields: Vec<(&str, Value)>) {
        if !self.on() {
            return;
        }
        let mut body = Map::new();
        body.insert("event".into(), json!(name));
        for (k, v) in fields {
            body.insert(k.into(), camel(v));
        }
        body.insert("id".into(), json!(format!("EV_{}", event_id())));
        body.insert("createdAt".into(), json!(unix_secs().to_string()));
        let body = Arc::new(Value::Object(body).to_string());
        for tx in self.targets.iter() {
            if tx.try_send(body.clone()).is_err() {
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    event = name,
                    "webhook dropped: its receiver's queue is full"
                );
            }
        }
    }
}

/// One URL's delivery task.
struct Target {
    url: String,
    key: String,
    secret: String,
    client: reqwest::Client,
    retry_for: Duration,
    stats: Arc<HookStats>,
}

impl Target {
    async fn run(self, mut rx: mpsc::Receiver<Arc<String>>) {
        while let Some(body) = rx.recv().await {
            let give_up = Instant::now() + self.retry_for;
            let mut backoff = FIRST_BACKOFF;
            loop {
                match self.post(&body).await {
                    Ok(()) => {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(why) => {
                        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                        if Instant::now() + backoff > give_up {
                            self.stats.dropped_failing.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                url = self.url,
                                "webhook dropped after {:?} of failures: {why}",
                                self.retry_for
                            );
                            break;
                        }
                        tracing::debug!(url = self.url, "webhook failed, trying again: {why}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    async fn post(&self, body: &str) -> Result<(), String> {
        let token = sign(&self.key, &self.secret, body)?;
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/webhook+json")
            .header(reqwest::header::AUTHORIZATION, token)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// The `Authorization` value of a webhook: a JWT of the key whose `sha256` claim is the body's
/// SHA-256, valid for five minutes.
fn sign(key: &str, secret: &str, body: &str) -> Result<String, String> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
    let now = unix_secs();
    let claims = json!({
        "iss": key,
        "nbf": now.saturating_sub(1),
        "exp": now + 300,
        "sha256": base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
    });
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key =
        jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A unique event id: a random prefix for this process and a counter.
fn event_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: Mutex<Option<String>> = Mutex::new(None);
    let mut prefix = PREFIX.lock().unwrap_or_else(|e| e.into_inner());
    let p = prefix.get_or_insert_with(|| {
        sori_turn::credentials::random_secret()
            .map(|s| {
                s.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(8)
                    .collect()
            })
            .unwrap_or_default()
    });
    format!("{p}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `value` with every object key in lowerCamelCase (`num_participants` → `numParticipants`),
/// as protobuf JSON names LiveKit's event fields.
fn camel(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (camel_name(&k), camel(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel).collect()),
        other => other,
    }
}

fn camel_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_lower_camel_case_at_every_depth() {
        let v = json!({"num_participants": 2, "tracks": [{"mime_type": "x"}], "sid": "s"});
        assert_eq!(
            camel(v),
            json!({"numParticipants": 2, "tracks": [{"mimeType": "x"}], "sid": "s"})
        );
    }

    #[test]
    fn the_signature_carries_the_body_digest() {
        let token = sign("APIk", "secret-secret-secret-secret-0000", "{\"a\":1}").unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_required_spec_claims(&["exp"]);
        let key =
            jsonwebtoken::DecodingKey::from_secret(b"secret-secret-secret-secret-0000").unwrap();
        let claims = jsonwebtoken::decode::<Value>(&token, &key, &v)
            .unwrap()
            .claims;
        assert_eq!(claims["iss"], "APIk");
        // sha256('{"a":1}'), base64.
        assert_eq!(
            claims["sha256"],
            "AVq9f1zFei3ZS3WQ8ErYCEJzkF7jPsXOvq5iJ2qX+GI="
        );
    }
}
