//! The typed configuration: built-in defaults (`config/sori.toml`), an optional TOML file,
//! then environment variables and flags.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sori_kurento::KurentoConfig;
use sori_net::sori_sfu::{SfuConfig, VideoCodec};
use sori_net::TcpConfig;
use sori_signal::auth::Keys;
use sori_signal::protocol::RoomMode;
use sori_signal::{Limits, SignalConfig};
use sori_turn::{AllocationLimits, IpPrefix};

/// The built-in configuration, also the commented sample.
pub const DEFAULT_TOML: &str = include_str!("../../../config/sori.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthSection,
    pub limits: LimitsSection,
    pub media: MediaSection,
    pub kurento: KurentoSection,
    pub recording: RecordingSection,
    pub turn: TurnSection,
    pub log: LogConfig,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Empty: a random secret per start (embedded server only).
    pub secret: String,
    pub realm: String,
    pub relay_ports: String,
    pub credential_ttl_secs: u64,
    /// Allocations one username may hold at once; 0: no cap.
    pub allocations_per_username: usize,
    /// Allocations one client IP address may hold at once; 0: no cap.
    pub allocations_per_ip: usize,
    pub allow: Vec<String>,
    pub external: Vec<String>,
    /// TCP address of TURN over TLS; used only when `tls_cert` and `tls_key` are set.
    pub tls_listen: SocketAddr,
    /// PEM certificate chain; empty: no TLS.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Host name of the `turns:` URL; empty: the advertised IP.
    pub tls_host: String,
}

impl std::fmt::Debug for TurnSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSection")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("secret", &if self.secret.is_empty() { "" } else { "<set>" })
            .field("realm", &self.realm)
            .field("relay_ports", &self.relay_ports)
            .field("credential_ttl_secs", &self.credential_ttl_secs)
            .field("allocations_per_username", &self.allocations_per_username)
            .field("allocations_per_ip", &self.allocations_per_ip)
            .field("allow", &self.allow)
            .field("external", &self.external)
            .field("tls_listen", &self.tls_listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_host", &self.tls_host)
            .finish()
    }
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
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The host of the `turns:` URL; `None`: the advertised IP.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    pub dir: String,
    /// Room recordings one room may start in an hour; 0: any number.
    pub starts_per_room_per_hour: u32,
    /// GiB the directory may hold before room recordings are refused; 0: no quota.
    pub quota_gib: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KurentoSection {
    pub listen: SocketAddr,
    pub path: String,
    pub access_token: String,
    pub allowed_origins: Vec<String>,
    pub gc_period_secs: u64,
    pub max_objects_per_session: usize,
    pub max_recorders_per_session: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub room_mode: RoomModeName,
    pub ice_servers: Vec<String>,
    pub idle_timeout_secs: u64,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpAddr>,
    pub metrics_token: String,
    /// A separate address for `/metrics` alone (empty: none).
    #[serde(deserialize_with = "optional_addr")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// API key → secret.
    pub keys: BTreeMap<String, String>,
    pub dev: bool,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach the output of --print-config or a log.
        f.debug_struct("AuthSection")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("dev", &self.dev)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub participants_per_room: usize,
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
    pub send_queue: usize,
    pub mlines_per_sdp: usize,
    pub header_timeout_secs: u64,
}

/// Shortest API secret accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    pub rtc_port: u16,
    /// ICE-TCP on or off.
    pub tcp: bool,
    /// 0: the same number as `rtc_port`.
    pub tcp_port: u16,
    pub bind_ip: IpAddr,
    /// Empty string: auto-detect.
    /// Empty: auto-detect. One address, several comma-separated, or a list.
    #[serde(deserialize_with = "ip_list")]
    pub advertise_ip: Vec<IpAddr>,
    pub ice_timeout_secs: u64,
    pub keyframe_request_interval_ms: u64,
    pub keyframe_request_on_start_interval_ms: u64,
    pub rtx_history_ms: u64,
    pub video_codecs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(serde::de::Error::custom)
}

fn ip_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_string).collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// The defaults, overlaid with `file` when given.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = DEFAULT_TOML
            .parse()
            .expect("the built-in configuration is valid TOML");
        let mut origin = "built-in configuration".to_string();
        if let Some(path) = file {
            origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: origin.clone(),
                source,
            })?;
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Invalid {
                        path: origin.clone(),
                        message: e.to_string(),
                    })?;
            merge(&mut merged, overlay);
        }
        let config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    path: origin.clone(),
                    message: e.to_string(),
                })?;
        config
            .sfu()
            .and_then(|_| config.keys().map(|_| ()))
            .and_then(|_| config.kurento())
            .and_then(|_| config.turn())
            .and_then(|_| config.recordings_quota().map(|_| ()))
            .map_err(|message| ConfigError::Invalid {
                path: origin,
                message,
            })?;
        Ok(config)
    }

    /// The API keys, checked.
    pub fn keys(&self) -> Result<Keys, String> {
        for (key, secret) in &self.auth.keys {
            if key.trim().is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("auth.keys: {key:?} is not a usable API key name"));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "auth.keys: the secret of {key} has {} characters; give at least {MIN_SECRET_LEN}",
                    secret.len()
                ));
            }
        }
        Ok(Keys::new(
            self.auth.keys.iter().map(|(k, s)| (k.clone(), s.clone())),
        ))
    }

    /// The session server's limits.
    pub fn limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            participants_per_room: l.participants_per_room.max(1),
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
            send_queue: l.send_queue.max(16),
            mlines_per_sdp: l.mlines_per_sdp.max(2),
            header_timeout: Duration::from_secs(l.header_timeout_secs.max(1)),
        }
    }

    /// The recordings directory's quota in bytes (`None`: no quota), checked.
    pub fn recordings_quota(&self) -> Result<Option<u64>, String> {
        let gib = self.recording.quota_gib;
        if !gib.is_finite() || gib < 0.0 {
            return Err(format!(
                "recording.quota_gib: {gib} must be a number of GiB, or 0 for no quota"
            ));
        }
        Ok((gib > 0.0).then(|| (gib * f64::from(1u32 << 30)) as u64))
    }

    /// The session server's settings.
    pub fn signal(&self) -> SignalConfig {
        let keys = self.keys().unwrap_or_default();
        SignalConfig {
            anonymous: keys.is_empty() || self.auth.dev,
            keys,
            limits: self.limits(),
            allowed_origins: self.server.allowed_origins.clone(),
            trusted_proxies: self.server.trusted_proxies.clone(),
            metrics_token: {
                let t = self.server.metrics_token.trim();
                (!t.is_empty()).then(|| t.to_string())
            },
            default_mode: self.server.room_mode.into(),
            ice_servers: self.server.ice_servers.clone(),
            turn: None,
            turn_monitor: None,
            idle_timeout: Duration::from_secs(self.server.idle_timeout_secs.max(5)),
            recordings_dir: {
                let dir = self.recording.dir.trim();
                (!dir.is_empty()).then(|| std::path::PathBuf::from(dir))
            },
            recording_starts_per_hour: self.recording.starts_per_room_per_hour,
            recordings_quota: self.recordings_quota().unwrap_or_default(),
        }
    }

    /// The control API's settings.
    pub fn kurento(&self) -> Result<KurentoConfig, String> {
        let path = self.kurento.path.trim();
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!(
                "kurento.path: {path:?} must start with / and hold no query"
            ));
        }
        let token = self.kurento.access_token.trim();
        Ok(KurentoConfig {
            path: path.to_string(),
            access_token: (!token.is_empty()).then(|| token.to_string()),
            allowed_origins: self.kurento.allowed_origins.clone(),
            gc_period: Duration::from_secs(self.kurento.gc_period_secs.max(1)),
            max_objects_per_session: self.kurento.max_objects_per_session,
            max_recorders_per_session: self.kurento.max_recorders_per_session,
            recordings_dir: {
                let dir = self.recording.dir.trim();
                (!dir.is_empty()).then(|| std::path::PathBuf::from(dir))
            },
            ..KurentoConfig::default()
        })
    }

    /// The TURN settings, checked.
    pub fn turn(&self) -> Result<TurnPlan, String> {
        let t = &self.turn;
        let ttl = Duration::from_secs(t.credential_ttl_secs);
        if t.credential_ttl_secs < 60 {
            return Err("turn.credential_ttl_secs: give at least 60 seconds".into());
        }
        let secret = t.secret.trim();
        if !t.external.is_empty() {
            for url in &t.external {
                if !["stun:", "turn:", "turns:"]
                    .iter()
                    .any(|p| url.starts_with(p))
                {
                    return Err(format!(
                        "turn.external: {url:?} is not a stun:, turn: or turns: URL"
                    ));
                }
            }
            if secret.is_empty() {
                return Err(
                    "turn.external needs turn.secret (the static-auth-secret those \
                            servers check credentials with)"
                        .into(),
                );
            }
            return Ok(TurnPlan::External {
                urls: t.external.clone(),
                secret: secret.to_string(),
                ttl,
            });
        }
        if !t.enabled {
            return Ok(TurnPlan::Off);
        }
        let relay_ports = t
            .relay_ports
            .split_once('-')
            .and_then(|(a, b)| Some(a.trim().parse::<u16>().ok()?..=b.trim().parse::<u16>().ok()?))
            .filter(|r| *r.start() > 0 && !r.is_empty())
            .ok_or_else(|| {
                format!(
                    "turn.relay_ports: {:?} must be LOW-HIGH, e.g. 49152-65535",
                    t.relay_ports
                )
            })?;
        let allow = t
            .allow
            .iter()
            .map(|p| {
                p.parse::<IpPrefix>()
                    .map_err(|e| format!("turn.allow: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if t.realm.trim().is_empty() {
            return Err("turn.realm: must not be empty".into());
        }
        Ok(TurnPlan::Embedded {
            listen: t.listen,
            secret: (!secret.is_empty()).then(|| secret.to_string()),
            realm: t.realm.trim().to_string(),
            relay_ports,
            allow,
            ttl,
            tls: self.turn_tls()?,
            limits: AllocationLimits {
                per_username: t.allocations_per_username,
                per_ip: t.allocations_per_ip,
            },
        })
    }

    /// TURN over TLS, when both a certificate and a key are configured.
    fn turn_tls(&self) -> Result<Option<TlsPlan>, String> {
        let t = &self.turn;
        let (cert, key, host) = (t.tls_cert.trim(), t.tls_key.trim(), t.tls_host.trim());
        match (cert.is_empty(), key.is_empty()) {
            (true, true) if host.is_empty() => return Ok(None),
            (true, true) => {
                return Err(
                    "turn.tls_host is set but turn.tls_cert and turn.tls_key are not: \
                            TURN over TLS needs a certificate"
                        .into(),
                )
            }
            (false, true) => {
                return Err(
                    "turn.tls_cert is set but turn.tls_key is not: TURN over TLS \
                            needs both (PEM files)"
                        .into(),
                )
            }
            (true, false) => {
                return Err(
                    "turn.tls_key is set but turn.tls_cert is not: TURN over TLS \
                            needs both (PEM files)"
                        .into(),
                )
            }
            (false, false) => {}
        }
        if t.tls_listen.port() != 0 && t.tls_listen == t.listen {
            return Err(format!(
                "turn.tls_listen: {} is TURN's TCP address already (turn.listen); \
                 give TLS a port of its own, e.g. 5349",
                t.tls_listen
            ));
        }
        let host = (!host.is_empty()).then(|| host.to_string());
        if let Some(h) = &host {
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
        Ok(Some(TlsPlan {
            listen: t.tls_listen,
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            host,
        }))
    }

    /// The media core's settings.
    pub fn sfu(&self) -> Result<SfuConfig, String> {
        let mut video_codecs = Vec::new();
        for name in &self.media.video_codecs {
            let codec = VideoCodec::from_name(name).ok_or_else(|| {
                format!("media.video_codecs: unknown codec {name:?} (use vp8, vp9, h264)")
            })?;
            video_codecs.push(codec);
        }
        if video_codecs.is_empty() {
            return Err("media.video_codecs: name at least one codec".into());
        }
        Ok(SfuConfig {
            candidates: Vec::new(),
            tcp_candidates: Vec::new(),
            ice_timeout: Duration::from_secs(self.media.ice_timeout_secs.max(1)),
            keyframe_request_interval: Duration::from_millis(
                self.media.keyframe_request_interval_ms,
            ),
            keyframe_request_on_start_interval: Duration::from_millis(
                self.media.keyframe_request_on_start_interval_ms,
            ),
            rtx_history: Duration::from_millis(self.media.rtx_history_ms),
            video_codecs,
        })
    }
}

impl Config {
    /// The ICE-TCP listener's settings, or `None` when it is off.
    pub fn tcp(&self) -> Option<TcpConfig> {
        self.media.tcp.then(|| TcpConfig {
            port: (self.media.tcp_port != 0).then_some(self.media.tcp_port),
            ..TcpConfig::default()
        })
    }
}

/// Overlays `top` onto `base`, table by table.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.media.rtc_port, 40000);
        assert_eq!(
            c.tcp().unwrap().port,
            None,
            "ICE-TCP on the rtc port's number"
        );
        assert!(c.media.advertise_ip.is_empty());
        assert_eq!(c.server.room_mode, RoomModeName::Sfu);
        assert!(c.server.ice_servers.is_empty());
        assert_eq!(
            c.turn().unwrap(),
            TurnPlan::Embedded {
                listen: "0.0.0.0:3478".parse().unwrap(),
                secret: None,
                realm: "sori".into(),
                relay_ports: 49152..=65535,
                allow: Vec::new(),
                ttl: Duration::from_secs(7200),
                tls: None,
                limits: AllocationLimits::default(),
            }
        );
        assert_eq!(c.turn.tls_listen, "0.0.0.0:5349".parse().unwrap());
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.kurento.listen, "127.0.0.1:8888".parse().unwrap());
        assert_eq!(c.kurento().unwrap().path, "/kurento");
        assert_eq!(c.kurento().unwrap().access_token, None);
        assert!(c.kurento().unwrap().allowed_origins.is_empty());
        let k = c.kurento().unwrap();
        let d = KurentoConfig::default();
        assert_eq!(
            (k.max_objects_per_session, k.max_recorders_per_session),
            (d.max_objects_per_session, d.max_recorders_per_session)
        );
        assert_eq!(c.signal().recording_starts_per_hour, 20);
        assert_eq!(c.signal().recordings_quota, Some(10 << 30));
        assert_eq!(
            c.sfu().unwrap().video_codecs,
            vec![VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264]
        );
    }

    #[test]
    fn a_file_overrides_only_what_it_names_and_errors_are_clear() {
        let dir = std::env::temp_dir().join(format!("sori-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[media]\nrtc_port = 5000\nadvertise_ip = \"192.0.2.7\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&good)).unwrap();
        assert_eq!(c.media.rtc_port, 5000);
        assert_eq!(
            c.media.advertise_ip,
            ["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.media.ice_timeout_secs, 15);
        assert!(c.tcp().is_some());

        let tcp = dir.join("tcp.toml");
        std::fs::write(&tcp, "[media]\ntcp_port = 443\n").unwrap();
        assert_eq!(
            Config::load(Some(&tcp)).unwrap().tcp().unwrap().port,
            Some(443)
        );
        std::fs::write(&tcp, "[media]\ntcp = false\n").unwrap();
        assert!(Config::load(Some(&tcp)).unwrap().tcp().is_none());
        std::fs::write(&tcp, "[media]\ntcp = \"no\"\n").unwrap();
        let e = Config::load(Some(&tcp)).unwrap_err().to_string();
        assert!(e.contains("tcp"), "{e}");

        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[media]\nrtc_prot = 5000\n").unwrap();
        let e = Config::load(Some(&typo)).unwrap_err().to_string();
        assert!(e.contains("rtc_prot"), "{e}");

        let codec = dir.join("codec.toml");
        std::fs::write(&codec, "[media]\nvideo_codecs = [\"av2\"]\n").unwrap();
        let e = Config::load(Some(&codec)).unwrap_err().to_string();
        assert!(e.contains("unknown codec \"av2\""), "{e}");

        for (text, message) in [
            ("[turn]\nrelay_ports = \"9-2\"\n", "turn.relay_ports"),
            ("[turn]\nallow = [\"10.0.0.0/40\"]\n", "turn.allow"),
            (
                "[turn]\nexternal = [\"turn:t.example.org\"]\n",
                "needs turn.secret",
            ),
            (
                "[turn]\nexternal = [\"http://x\"]\nsecret = \"s\"\n",
                "not a stun:",
            ),
            ("[turn]\ncredential_ttl_secs = 5\n", "at least 60"),
            ("[recording]\nquota_gib = -1.0\n", "recording.quota_gib"),
            (
                "[turn]\ntls_cert = \"/etc/sori/cert.pem\"\n",
                "turn.tls_cert is set but turn.tls_key is not",
            ),
            (
                "[turn]\ntls_key = \"/etc/sori/key.pem\"\n",
                "turn.tls_key is set but turn.tls_cert is not",
            ),
            (
                "[turn]\ntls_host = \"turn.example.org\"\n",
                "turn.tls_host is set but",
            ),
            (
                "[turn]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_host = \"a b\"\n",
                "turn.tls_host",
            ),
            (
                "[turn]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_listen = \"0.0.0.0:3478\"\n",
                "turn.tls_listen",
            ),
        ] {
            let bad = dir.join("turn.toml");
            std::fs::write(&bad, text).unwrap();
            let e = Config::load(Some(&bad)).unwrap_err().to_string();
            assert!(e.contains(message), "{text}: {e}");
        }
        let caps = dir.join("caps.toml");
        std::fs::write(
            &caps,
            "[turn]\nallocations_per_username = 3\nallocations_per_ip = 0\n",
        )
        .unwrap();
        let TurnPlan::Embedded { limits, .. } = Config::load(Some(&caps)).unwrap().turn().unwrap()
        else {
            panic!("the embedded server is planned");
        };
        assert_eq!(
            limits,
            AllocationLimits {
                per_username: 3,
                per_ip: 0
            }
        );
        let tls = dir.join("tls.toml");
        std::fs::write(
            &tls,
            "[turn]\ntls_cert = \"/etc/sori/cert.pem\"\ntls_key = \"/etc/sori/key.pem\"\n\
             tls_host = \"turn.example.org\"\n",
        )
        .unwrap();
        let TurnPlan::Embedded {
            tls: Some(plan), ..
        } = Config::load(Some(&tls)).unwrap().turn().unwrap()
        else {
            panic!("TLS is planned");
        };
        assert_eq!(
            plan,
            TlsPlan {
                listen: "0.0.0.0:5349".parse().unwrap(),
                cert: "/etc/sori/cert.pem".into(),
                key: "/etc/sori/key.pem".into(),
                host: Some("turn.example.org".into()),
            }
        );

        let external = dir.join("external.toml");
        std::fs::write(
            &external,
            "[turn]\nsecret = \"s\"\nexternal = [\"turn:t.example.org:3478\"]\n",
        )
        .unwrap();
        assert!(matches!(
            Config::load(Some(&external)).unwrap().turn().unwrap(),
            TurnPlan::External { .. }
        ));

        let e = Config::load(Some(&dir.join("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
