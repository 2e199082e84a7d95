//! The typed configuration. Three layers, each a TOML table in the same shape: the built-in
//! defaults (`config/sori.toml`), an optional file, and the command line's settings (flags and
//! `SORI_…` variables, see `flags.rs`). They are merged, then parsed into [`Config`] and
//! checked once; everything after that reads checked, typed values.

#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sori_kurento::KurentoConfig;
use sori_net::TcpConfig;
use sori_sfu::{SfuConfig, VideoCodec};
use sori_signal::auth::Keys;
use sori_signal::protocol::RoomMode;
use sori_signal::{Limits, SignalConfig};
use sori_turn::{AllocationLimits, IpPrefix};

pub use values::{PortRange, Secret};

/// The built-in configuration, also the commented sample.
pub const DEFAULT_TOML: &str = include_str!("../../../../config/sori.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthSection,
    pub limits: LimitsSection,
    pub media: MediaSection,
    pub kurento: KurentoSection,
    pub cluster: ClusterSection,
    pub recording: RecordingSection,
    pub rooms: RoomsSection,
    pub webhooks: WebhooksSection,
    pub turn: TurnSection,
    pub tls: TlsSection,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    #[serde(deserialize_with = "values::optional")]
    pub cert: Option<PathBuf>,
    #[serde(deserialize_with = "values::optional")]
    pub key: Option<PathBuf>,
    #[serde(deserialize_with = "values::optional")]
    pub domain: Option<String>,
    #[serde(deserialize_with = "values::optional")]
    pub acme_email: Option<String>,
    pub acme_directory: String,
    #[serde(deserialize_with = "values::optional")]
    pub acme_ca_root: Option<PathBuf>,
    pub acme_cache: PathBuf,
    #[serde(deserialize_with = "values::optional")]
    pub http_listen: Option<SocketAddr>,
}

/// How the web listener speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsPlanWeb {
    /// Plain HTTP.
    Off,
    /// HTTPS from PEM files, re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// HTTPS with a certificate from an ACME CA.
    Acme(AcmePlan),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmePlan {
    pub domain: String,
    pub email: Option<String>,
    pub directory: String,
    pub ca_root: Option<PathBuf>,
    pub cache: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsSection {
    #[serde(rename = "empty_timeout_secs", deserialize_with = "values::secs")]
    pub empty_timeout: Duration,
    #[serde(rename = "departure_timeout_secs", deserialize_with = "values::secs")]
    pub departure_timeout: Duration,
    /// 0: no limit.
    pub last_n: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    pub urls: Vec<String>,
    /// `None` (empty in the file): the first key by name.
    #[serde(deserialize_with = "values::optional")]
    pub api_key: Option<String>,
    pub queue: usize,
    #[serde(rename = "retry_secs", deserialize_with = "values::secs")]
    pub retry: Duration,
    #[serde(rename = "timeout_secs", deserialize_with = "values::secs")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub room_mode: RoomModeName,
    pub ice_servers: Vec<String>,
    #[serde(rename = "idle_timeout_secs", deserialize_with = "values::secs")]
    pub idle_timeout: Duration,
    #[serde(rename = "resume_grace_secs", deserialize_with = "values::secs")]
    pub resume_grace: Duration,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpAddr>,
    #[serde(deserialize_with = "values::optional")]
    pub metrics_token: Option<Secret>,
    /// A separate address for `/metrics` alone.
    #[serde(deserialize_with = "values::optional")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// API key → secret.
    pub keys: BTreeMap<String, Secret>,
    pub dev: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub participants_per_room: usize,
    pub viewers_per_room: usize,
    pub rooms: usize,
    pub connections: usize,
    pub connections_per_ip: usize,
    pub joins_per_sec: f64,
    pub joins_burst: f64,
    pub chat_per_sec: f64,
    pub chat_burst: f64,
    pub offers_per_sec: f64,
    pub offers_burst: f64,
    pub mutes_per_sec: f64,
    pub mutes_burst: f64,
    pub relays_per_sec: f64,
    pub relays_burst: f64,
    pub views_per_sec: f64,
    pub views_burst: f64,
    pub send_queue: usize,
    pub mlines_per_sdp: usize,
    #[serde(rename = "header_timeout_secs", deserialize_with = "values::secs")]
    pub header_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    pub rtc_port: u16,
    /// ICE-TCP on or off.
    pub tcp: bool,
    /// `None` (0 in the file): the same number as `rtc_port`.
    #[serde(deserialize_with = "values::nonzero_port")]
    pub tcp_port: Option<u16>,
    /// 0: one per available core.
    pub workers: usize,
    pub bind_ip: IpAddr,
    /// Empty: auto-detect.
    #[serde(deserialize_with = "values::ip_list")]
    pub advertise_ip: Vec<IpAddr>,
    #[serde(rename = "ice_timeout_secs", deserialize_with = "values::secs")]
    pub ice_timeout: Duration,
    #[serde(
        rename = "keyframe_request_interval_ms",
        deserialize_with = "values::millis"
    )]
    pub keyframe_request_interval: Duration,
    #[serde(
        rename = "keyframe_request_on_start_interval_ms",
        deserialize_with = "values::millis"
    )]
    pub keyframe_request_on_start_interval: Duration,
    #[serde(rename = "rtx_history_ms", deserialize_with = "values::millis")]
    pub rtx_history: Duration,
    /// 0: bandwidth estimation off.
    pub initial_estimate_kbps: u64,
    /// 0: every audio packet forwarded, silent ones too.
    pub silence_dbov: u8,
    #[serde(deserialize_with = "values::codecs")]
    pub video_codecs: Vec<VideoCodec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KurentoSection {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "values::ws_path")]
    pub path: String,
    #[serde(deserialize_with = "values::optional")]
    pub access_token: Option<Secret>,
    pub allowed_origins: Vec<String>,
    #[serde(rename = "gc_period_secs", deserialize_with = "values::secs")]
    pub gc_period: Duration,
    pub max_objects_per_session: usize,
    pub max_recorders_per_session: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The Redis URL (it may carry a password).
    #[serde(deserialize_with = "values::optional")]
    pub redis: Option<Secret>,
    #[serde(deserialize_with = "values::node_id")]
    pub node_id: String,
    pub capacity: u32,
    #[serde(deserialize_with = "values::optional")]
    pub node_url: Option<String>,
    #[serde(rename = "drain_timeout_secs", deserialize_with = "values::secs")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// `None` (empty in the file): recording is off.
    #[serde(deserialize_with = "values::optional")]
    pub dir: Option<PathBuf>,
    /// Room recordings one room may start in an hour; 0: any number.
    pub starts_per_room_per_hour: u32,
    /// Bytes the directory may hold before room recordings are refused; `None`: no quota.
    #[serde(rename = "quota_gib", deserialize_with = "values::gib")]
    pub quota: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// `None`: a random secret per start (embedded server only).
    #[serde(deserialize_with = "values::optional")]
    pub secret: Option<Secret>,
    pub realm: String,
    pub relay_ports: PortRange,
    #[serde(rename = "credential_ttl_secs", deserialize_with = "values::secs")]
    pub credential_ttl: Duration,
    /// Allocations one username may hold at once; 0: no cap.
    pub allocations_per_username: usize,
    /// Allocations one client IP address may hold at once; 0: no cap.
    pub allocations_per_ip: usize,
    #[serde(deserialize_with = "values::parsed_list")]
    pub allow: Vec<IpPrefix>,
    pub external: Vec<String>,
    /// TCP address of TURN over TLS; used only when `tls_cert` and `tls_key` are set.
    pub tls_listen: SocketAddr,
    /// PEM certificate chain; `None`: no TLS.
    #[serde(deserialize_with = "values::optional")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(deserialize_with = "values::optional")]
    pub tls_key: Option<PathBuf>,
    /// Host name of the `turns:` URL; `None`: the advertised IP.
    #[serde(deserialize_with = "values::optional")]
    pub tls_host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RoomModeName {
    Sfu,
    P2p,
    Auto,
}

impl From<RoomModeName> for RoomMode {
    fn from(m: RoomModeName) -> Self {
        match m {
            RoomModeName::Sfu => RoomMode::Sfu,
            RoomModeName::P2p => RoomMode::P2p,
            RoomModeName::Auto => RoomMode::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// What the TURN settings ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnPlan {
    /// No TURN server is handed to browsers.
    Off,
    /// Sori's own TURN server; `secret` is `None` when one is to be generated.
    Embedded {
        listen: SocketAddr,
        secret: Option<String>,
        realm: String,
        relay_ports: RangeInclusive<u16>,
        allow: Vec<IpPrefix>,
        ttl: Duration,
        /// TURN over TLS, when a certificate is configured.
        tls: Option<TlsPlan>,
        /// Caps on the allocations one username and one client address hold.
        limits: AllocationLimits,
    },
    /// TURN servers run elsewhere (coturn with `use-auth-secret`) sharing `secret`.
    External {
        urls: Vec<String>,
        secret: String,
        ttl: Duration,
    },
}

/// TURN over TLS: where, with which certificate, under which name.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPlan {
    pub listen: SocketAddr,
    /// PEM files of TURN's own; `None`: the web listener's certificate (files or ACME).
    pub files: Option<(PathBuf, PathBuf)>,
    /// The host of the `turns:` URL; `None`: the advertised IP.
    pub host: Option<String>,
}

/// Shortest API secret accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A setting is malformed or inconsistent; `file` names the file when one was given.
    #[error("{}{message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        file: Option<String>,
        message: String,
    },
}

impl Config {
    /// The defaults, overlaid with `file` when given, then with `settings` (the command line's,
    /// in the file's shape); parsed and checked.
    pub fn load(file: Option<&Path>, settings: toml::Table) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = DEFAULT_TOML
            .parse()
            .expect("the built-in configuration is valid TOML");
        let shown = file.map(|path| path.display().to_string());
        let invalid = |message: String| ConfigError::Invalid {
            file: shown.clone(),
            message,
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let overlay: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
            merge(&mut merged, overlay);
        }
        merge(&mut merged, settings);
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(name_the_setting(&e)))?;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    /// What a type cannot say: API keys, at least one codec, consistent TURN settings.
    fn check(&self) -> Result<(), String> {
        for (key, secret) in &self.auth.keys {
            if key.trim().is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("auth.keys: {key:?} is not a usable API key name"));
            }
            let len = secret.expose().len();
            if len < MIN_SECRET_LEN {
                return Err(format!(
                    "auth.keys: the secret of {key} has {len} characters; give at least {MIN_SECRET_LEN}"
                ));
            }
        }
        if self.media.video_codecs.is_empty() {
            return Err("media.video_codecs: name at least one codec".into());
        }
        sori_signal::webhooks::check(&self.webhook_config(), &self.keys())
            .map_err(|e| format!("webhooks: {e}"))?;
        self.check_tls()?;
        self.check_turn()
    }

    /// HTTPS from files or from ACME, not both; files come in pairs; a domain is a DNS name.
    fn check_tls(&self) -> Result<(), String> {
        let t = &self.tls;
        match (&t.cert, &t.key) {
            (Some(_), None) => {
                return Err("tls.cert is set but tls.key is not: give the certificate's key".into())
            }
            (None, Some(_)) => {
                return Err("tls.key is set but tls.cert is not: give the certificate too".into())
            }
            (Some(_), Some(_)) if t.domain.is_some() => {
                return Err(
                    "tls.domain and tls.cert are both set: either Sori gets the certificate \
                     (ACME) or it reads yours, not both"
                        .into(),
                )
            }
            _ => {}
        }
        if let Some(d) = &t.domain {
            let valid = d.len() <= 253
                && d.contains('.')
                && d.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid || d.parse::<std::net::IpAddr>().is_ok() {
                return Err(format!("tls.domain: {d:?} is not a DNS name"));
            }
            let dir = &t.acme_directory;
            if !dir.starts_with("https://") {
                return Err(format!(
                    "tls.acme_directory: {dir:?} is not an https:// URL"
                ));
            }
        }
        if t.http_listen.is_some() && self.web_tls() == TlsPlanWeb::Off {
            return Err(
                "tls.http_listen redirects to HTTPS, but HTTPS is off: give tls.cert and \
                 tls.key, or tls.domain"
                    .into(),
            );
        }
        Ok(())
    }

    /// How the web listener speaks: plain HTTP, HTTPS from files, or HTTPS by ACME.
    pub fn web_tls(&self) -> TlsPlanWeb {
        let t = &self.tls;
        if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
            return TlsPlanWeb::Files {
                cert: cert.clone(),
                key: key.clone(),
            };
        }
        match &t.domain {
            Some(domain) => TlsPlanWeb::Acme(AcmePlan {
                domain: domain.to_ascii_lowercase(),
                email: t.acme_email.clone(),
                directory: t.acme_directory.clone(),
                ca_root: t.acme_ca_root.clone(),
                cache: t.acme_cache.clone(),
            }),
            None => TlsPlanWeb::Off,
        }
    }

    fn check_turn(&self) -> Result<(), String> {
        let t = &self.turn;
        if t.credential_ttl < Duration::from_secs(60) {
            return Err("turn.credential_ttl_secs: give at least 60 seconds".into());
        }
        if !t.external.is_empty() {
            if let Some(url) = t.external.iter().find(|url| {
                !["stun:", "turn:", "turns:"]
                    .iter()
                    .any(|p| url.starts_with(p))
            }) {
                return Err(format!(
                    "turn.external: {url:?} is not a stun:, turn: or turns: URL"
                ));
            }
            if t.secret.is_none() {
                return Err(
                    "turn.external needs turn.secret (the static-auth-secret those \
                            servers check credentials with)"
                        .into(),
                );
            }
            return Ok(());
        }
        if !t.enabled {
            return Ok(());
        }
        if t.realm.trim().is_empty() {
            return Err("turn.realm: must not be empty".into());
        }
        self.check_turn_tls()
    }

    /// TURN over TLS needs a certificate and its key, both or neither.
    fn check_turn_tls(&self) -> Result<(), String> {
        let t = &self.turn;
        match (&t.tls_cert, &t.tls_key) {
            (None, None) if t.tls_host.is_none() => return Ok(()),
            // TURN over TLS with the web listener's certificate.
            (None, None) if self.web_tls() != TlsPlanWeb::Off => {}
            (None, None) => {
                return Err(
                    "turn.tls_host is set but turn.tls_cert and turn.tls_key are not: \
                            TURN over TLS needs a certificate"
                        .into(),
                )
            }
            (Some(_), None) => {
                return Err(
                    "turn.tls_cert is set but turn.tls_key is not: TURN over TLS \
                            needs both (PEM files)"
                        .into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "turn.tls_key is set but turn.tls_cert is not: TURN over TLS \
                            needs both (PEM files)"
                        .into(),
                )
            }
            (Some(_), Some(_)) => {}
        }
        if t.tls_listen.port() != 0 && t.tls_listen == t.listen {
            return Err(format!(
                "turn.tls_listen: {} is TURN's TCP address already (turn.listen); \
                 give TLS a port of its own, e.g. 5349",
                t.tls_listen
            ));
        }
        if let Some(h) = &t.tls_host {
            let name = h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !name && h.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "turn.tls_host: {h:?} is neither a host name nor an IP address"
                ));
            }
        }
        Ok(())
    }

    /// The API keys.
    pub fn keys(&self) -> Keys {
        Keys::new(
            self.auth
                .keys
                .iter()
                .map(|(k, s)| (k.clone(), s.expose().to_string())),
        )
    }

    /// The session server's limits.
    pub fn limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            participants_per_room: l.participants_per_room.max(1),
            viewers_per_room: l.viewers_per_room,
            rooms: l.rooms.max(1),
            connections: l.connections.max(1),
            connections_per_ip: l.connections_per_ip.max(1),
            joins_per_sec: l.joins_per_sec,
            joins_burst: l.joins_burst,
            chat_per_sec: l.chat_per_sec,
            chat_burst: l.chat_burst,
            offers_per_sec: l.offers_per_sec,
            offers_burst: l.offers_burst,
            mutes_per_sec: l.mutes_per_sec,
            mutes_burst: l.mutes_burst,
            relays_per_sec: l.relays_per_sec,
            relays_burst: l.relays_burst,
            views_per_sec: l.views_per_sec,
            views_burst: l.views_burst,
            send_queue: l.send_queue.max(16),
            mlines_per_sdp: l.mlines_per_sdp.max(2),
            header_timeout: l.header_timeout.max(Duration::from_secs(1)),
        }
    }

    /// The session server's settings.
    pub fn signal(&self) -> SignalConfig {
        let keys = self.keys();
        SignalConfig {
            anonymous: keys.is_empty() || self.auth.dev,
            keys,
            limits: self.limits(),
            allowed_origins: self.server.allowed_origins.clone(),
            trusted_proxies: self.server.trusted_proxies.clone(),
            metrics_token: self
                .server
                .metrics_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            default_mode: self.server.room_mode.into(),
            ice_servers: self.server.ice_servers.clone(),
            turn: None,
            turn_monitor: None,
            idle_timeout: self.server.idle_timeout.max(Duration::from_secs(5)),
            resume_grace: self.server.resume_grace,
            recordings_dir: self.recording.dir.clone(),
            recording_starts_per_hour: self.recording.starts_per_room_per_hour,
            recordings_quota: self.recording.quota,
            room_timeouts: sori_signal::RoomTimeouts {
                empty: self.rooms.empty_timeout,
                departure: self.rooms.departure_timeout,
            },
            last_n: (self.rooms.last_n > 0).then_some(self.rooms.last_n),
            webhooks: self.webhook_config(),
        }
    }

    fn webhook_config(&self) -> sori_signal::WebhookConfig {
        let w = &self.webhooks;
        sori_signal::WebhookConfig {
            urls: w.urls.clone(),
            api_key: w.api_key.clone(),
            queue: w.queue.max(1),
            retry_for: w.retry,
            timeout: w.timeout.max(Duration::from_secs(1)),
        }
    }

    /// The control API's settings.
    pub fn kurento(&self) -> KurentoConfig {
        let k = &self.kurento;
        KurentoConfig {
            path: k.path.clone(),
            access_token: k.access_token.as_ref().map(|t| t.expose().to_string()),
            allowed_origins: k.allowed_origins.clone(),
            gc_period: k.gc_period.max(Duration::from_secs(1)),
            max_objects_per_session: k.max_objects_per_session,
            max_recorders_per_session: k.max_recorders_per_session,
            recordings_dir: self.recording.dir.clone(),
            ..KurentoConfig::default()
        }
    }

    /// What the TURN settings ask for.
    pub fn turn(&self) -> TurnPlan {
        let t = &self.turn;
        let secret = t.secret.as_ref().map(|s| s.expose().to_string());
        if !t.external.is_empty() {
            return TurnPlan::External {
                urls: t.external.clone(),
                // `check_turn` refused external servers without a secret.
                secret: secret.unwrap_or_default(),
                ttl: t.credential_ttl,
            };
        }
        if !t.enabled {
            return TurnPlan::Off;
        }
        TurnPlan::Embedded {
            listen: t.listen,
            secret,
            realm: t.realm.trim().to_string(),
            relay_ports: t.relay_ports.range(),
            allow: t.allow.clone(),
            ttl: t.credential_ttl,
            tls: match (&t.tls_cert, &t.tls_key) {
                (Some(cert), Some(key)) => Some(TlsPlan {
                    listen: t.tls_listen,
                    files: Some((cert.clone(), key.clone())),
                    host: t.tls_host.clone(),
                }),
                // A host alone: the web listener's certificate, for that name.
                (None, None) if t.tls_host.is_some() && self.web_tls() != TlsPlanWeb::Off => {
                    Some(TlsPlan {
                        listen: t.tls_listen,
                        files: None,
                        host: t.tls_host.clone(),
                    })
                }
                _ => None,
            },
            limits: AllocationLimits {
                per_username: t.allocations_per_username,
                per_ip: t.allocations_per_ip,
            },
        }
    }

    /// The media core's settings.
    pub fn sfu(&self) -> SfuConfig {
        let m = &self.media;
        SfuConfig {
            candidates: Vec::new(),
            tcp_candidates: Vec::new(),
            ice_timeout: m.ice_timeout.max(Duration::from_secs(1)),
            ice_stall: SfuConfig::default().ice_stall,
            keyframe_request_interval: m.keyframe_request_interval,
            keyframe_request_on_start_interval: m.keyframe_request_on_start_interval,
            rtx_history: m.rtx_history,
            video_codecs: m.video_codecs.clone(),
            initial_estimate: (m.initial_estimate_kbps > 0)
                .then(|| m.initial_estimate_kbps.saturating_mul(1000)),
            first_id: SfuConfig::default().first_id,
            level_interval: SfuConfig::default().level_interval,
            silence_dbov: (m.silence_dbov > 0).then_some(m.silence_dbov),
        }
    }

    /// How many media workers run: the configured number, or one per available core.
    pub fn media_workers(&self) -> usize {
        match self.media.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The ICE-TCP listener's settings, or `None` when it is off.
    pub fn tcp(&self) -> Option<TcpConfig> {
        self.media.tcp.then(|| TcpConfig {
            port: self.media.tcp_port,
            ..TcpConfig::default()
        })
    }
}

/// A parse error of the merged table reads "message\nin `section.key`": this puts the setting
/// first, as the other errors do.
fn name_the_setting(e: &toml::de::Error) -> String {
    let text = e.to_string();
    match text.trim_end().rsplit_once("\nin `") {
        Some((message, key)) => format!("{}: {message}", key.trim_end_matches('`')),
        None => text.trim_end().to_string(),
    }
}

/// Overlays `top` onto `base`, table by table.
pub fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}
