//! The command line's settings. Each flag's serde name is the configuration key it sets
//! (`section.key`): the flags given (or their `SORI_…` variables) become a TOML table in the
//! file's shape, laid over the file in one step by [`settings`]. Flags left out are `None`,
//! `false` or absent, and so leave the file's value alone.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};

use crate::config::{LogFormat, PortRange, RoomModeName};

/// The command line's settings as a table in the configuration file's shape.
pub fn settings(flags: &impl Serialize) -> Result<toml::Table, String> {
    let flat = toml::Table::try_from(flags).map_err(|e| e.to_string())?;
    let mut nested = toml::Table::new();
    for (key, value) in flat {
        let mut path = key.split('.').rev();
        // `split` yields at least one piece.
        let mut value = toml::Value::Table(toml::Table::from_iter([(
            path.next().unwrap_or_default().to_string(),
            value,
        )]));
        for section in path {
            value = toml::Value::Table(toml::Table::from_iter([(section.to_string(), value)]));
        }
        if let toml::Value::Table(t) = value {
            crate::config::merge(&mut nested, t);
        }
    }
    Ok(nested)
}

fn is_false(b: &bool) -> bool {
    !b
}

/// A `--no-…` flag sets its key to false.
fn off<S: Serializer>(_: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(false)
}

/// Settings every command has.
#[derive(Args, Serialize)]
pub struct BaseArgs {
    /// TOML configuration file (overrides the built-in defaults it names).
    #[arg(long, env = "SORI_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log format [default: text]. Log levels come from RUST_LOG (default: info).
    #[arg(long, env = "SORI_LOG_FORMAT", value_enum)]
    #[serde(rename = "log.format")]
    pub log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML-like text and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

/// Settings of the media server.
#[derive(Args, Serialize)]
pub struct MediaFlags {
    /// The one UDP port all media uses [default: 40000; 0 picks a free port].
    #[arg(long, env = "SORI_RTC_PORT", value_name = "PORT")]
    #[serde(rename = "media.rtc_port")]
    rtc_port: Option<u16>,
    /// TCP port for media from browsers whose UDP is blocked (ICE-TCP)
    /// [default: the --rtc-port number].
    #[arg(long, env = "SORI_RTC_TCP_PORT", value_name = "PORT")]
    #[serde(rename = "media.tcp_port")]
    rtc_tcp_port: Option<u16>,
    /// Media workers (threads forwarding media, all on the one port) [default: 0, one per
    /// available core].
    #[arg(long, env = "SORI_MEDIA_WORKERS", value_name = "N")]
    #[serde(rename = "media.workers")]
    media_workers: Option<usize>,
    /// Media over UDP only: no ICE-TCP listener, no TCP candidates.
    #[arg(long, env = "SORI_NO_RTC_TCP")]
    #[serde(
        rename = "media.tcp",
        serialize_with = "off",
        skip_serializing_if = "is_false"
    )]
    no_rtc_tcp: bool,
    /// IP address browsers are told to send media to; repeat (or comma-separate) for several,
    /// IPv4 and IPv6 [default: first non-loopback address].
    #[arg(
        long = "advertise-ip",
        env = "SORI_ADVERTISE_IP",
        value_name = "IP",
        value_delimiter = ','
    )]
    #[serde(rename = "media.advertise_ip")]
    advertise_ip: Option<Vec<IpAddr>>,
    /// Address of the Kurento-protocol control API [default: 127.0.0.1:8888, loopback only].
    #[arg(long, env = "SORI_KURENTO_LISTEN", value_name = "ADDR")]
    #[serde(rename = "kurento.listen")]
    kurento_listen: Option<SocketAddr>,
    /// WebSocket path of the control API [default: /kurento].
    #[arg(long, env = "SORI_KURENTO_PATH", value_name = "PATH")]
    #[serde(rename = "kurento.path")]
    kurento_path: Option<String>,
    /// Directory recordings are written in, and only in [default: ./recordings].
    #[arg(long, env = "SORI_RECORDINGS_DIR", value_name = "DIR")]
    #[serde(rename = "recording.dir")]
    recordings_dir: Option<PathBuf>,
    /// Require ?access_token=TOKEN on control connections [default: none].
    #[arg(
        long,
        env = "SORI_KURENTO_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(rename = "kurento.access_token")]
    kurento_token: Option<String>,
    /// Web origin whose pages may open the control API; repeat for several [default: none,
    /// so browsers are refused; applications, which send no Origin, are not affected].
    #[arg(
        long = "kurento-allow-origin",
        env = "SORI_KURENTO_ALLOW_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(rename = "kurento.allowed_origins")]
    kurento_allow_origins: Option<Vec<String>>,
}

/// Settings of a media node in a cluster.
#[derive(Args, Serialize)]
pub struct ClusterMediaFlags {
    /// Redis of the cluster (redis://[:password@]host:6379/0): this media node announces
    /// itself there for session servers to place rooms on it [default: none, one machine].
    #[arg(long, env = "SORI_REDIS", value_name = "URL", hide_env_values = true)]
    #[serde(rename = "cluster.redis")]
    redis: Option<String>,
    /// This node's name in the cluster [default: the host name and the control port].
    #[arg(long, env = "SORI_NODE_ID", value_name = "ID")]
    #[serde(rename = "cluster.node_id")]
    node_id: Option<String>,
    /// Participants this node takes at most; a full node gets no new rooms [default: 0, no
    /// limit].
    #[arg(long, env = "SORI_CAPACITY", value_name = "N")]
    #[serde(rename = "cluster.capacity")]
    capacity: Option<u32>,
    /// The control API URL session servers reach this node at [default:
    /// ws://<kurento listen address><path>, the first advertised IP for an unspecified one].
    #[arg(long, env = "SORI_NODE_URL", value_name = "URL")]
    #[serde(rename = "cluster.node_url")]
    node_url: Option<String>,
    /// On SIGTERM, the longest this node waits for its participants to move to other nodes
    /// [default: 30].
    #[arg(long, env = "SORI_DRAIN_TIMEOUT", value_name = "SECS")]
    #[serde(rename = "cluster.drain_timeout_secs")]
    drain_timeout: Option<u64>,
}

/// Settings of a session server in a cluster.
#[derive(Args, Serialize)]
pub struct ClusterSignalFlags {
    /// Redis of the cluster (redis://[:password@]host:6379/0): rooms go to the media nodes
    /// announced there, instead of one --media server.
    #[arg(
        long,
        env = "SORI_REDIS",
        value_name = "URL",
        hide_env_values = true,
        conflicts_with = "media_url"
    )]
    #[serde(rename = "cluster.redis")]
    redis: Option<String>,
    /// This session server's name in the cluster [default: the host name and the listening
    /// port].
    #[arg(long, env = "SORI_NODE_ID", value_name = "ID")]
    #[serde(rename = "cluster.node_id")]
    node_id: Option<String>,
    /// The access token the media nodes' control APIs require (their --kurento-token)
    /// [default: none].
    #[arg(
        long,
        env = "SORI_KURENTO_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(rename = "kurento.access_token")]
    kurento_token: Option<String>,
}

/// Settings of the session server.
#[derive(Args, Serialize)]
pub struct SessionFlags {
    /// HTTP/WebSocket address [default: 127.0.0.1:8080, loopback only].
    #[arg(long, env = "SORI_LISTEN", value_name = "ADDR")]
    #[serde(rename = "server.listen")]
    pub listen: Option<SocketAddr>,
    /// Mode of new rooms whose URL names none [default: sfu].
    #[arg(long, env = "SORI_ROOM_MODE", value_enum)]
    #[serde(rename = "server.room_mode")]
    room_mode: Option<RoomModeName>,
    /// ICE server URL for browsers (stun:… or turn:…); repeat for several.
    #[arg(
        long = "ice-server",
        env = "SORI_ICE_SERVERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(rename = "server.ice_servers")]
    ice_servers: Option<Vec<String>>,
    #[command(flatten)]
    #[serde(flatten)]
    auth: AuthFlags,
    /// Accept joins without an access token on a non-loopback address (trying Sori out).
    #[arg(long, env = "SORI_DEV")]
    #[serde(rename = "auth.dev", skip_serializing_if = "is_false")]
    dev: bool,
    /// A web origin (https://app.example.org) whose pages may open /ws besides the server's
    /// own; repeat for several.
    #[arg(
        long = "allow-origin",
        env = "SORI_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(rename = "server.allowed_origins")]
    allowed_origins: Option<Vec<String>>,
    /// A reverse proxy whose X-Forwarded-For names the client; repeat for several.
    #[arg(
        long = "trusted-proxy",
        env = "SORI_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    #[serde(rename = "server.trusted_proxies")]
    trusted_proxies: Option<Vec<IpAddr>>,
    /// Bearer token that opens /metrics to clients not on loopback [default: loopback only].
    #[arg(
        long,
        env = "SORI_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(rename = "server.metrics_token")]
    metrics_token: Option<String>,
    /// A separate address serving /metrics to whoever reaches it (a private interface).
    #[arg(long, env = "SORI_METRICS_LISTEN", value_name = "ADDR")]
    #[serde(rename = "server.metrics_listen")]
    metrics_listen: Option<SocketAddr>,
    /// Room recordings one room may start in an hour; 0: any number [default: 20].
    #[arg(long, env = "SORI_RECORDING_STARTS_PER_HOUR", value_name = "N")]
    #[serde(rename = "recording.starts_per_room_per_hour")]
    recording_starts_per_hour: Option<u32>,
    /// GiB the recordings directory may hold before room recordings are refused; 0: no quota
    /// [default: 10].
    #[arg(long, env = "SORI_RECORDINGS_QUOTA_GIB", value_name = "GIB")]
    #[serde(rename = "recording.quota_gib")]
    recordings_quota_gib: Option<f64>,
    /// A URL that gets a signed POST for every room event (docs/webhooks.md); repeat for
    /// several.
    #[arg(
        long = "webhook",
        env = "SORI_WEBHOOK_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(rename = "webhooks.urls")]
    webhooks: Option<Vec<String>>,
    /// Seconds a room stays open after its last participant left [default: 20].
    #[arg(long, env = "SORI_DEPARTURE_TIMEOUT_SECS", value_name = "SECS")]
    #[serde(rename = "rooms.departure_timeout_secs")]
    departure_timeout_secs: Option<u64>,
    /// Seconds a room created by the server API stays open while nobody joins [default: 300].
    #[arg(long, env = "SORI_EMPTY_TIMEOUT_SECS", value_name = "SECS")]
    #[serde(rename = "rooms.empty_timeout_secs")]
    empty_timeout_secs: Option<u64>,
    /// Each participant receives video from at most N others: those it pinned, screen shares,
    /// then the latest speakers (0: no limit) [default: 0].
    #[arg(long, env = "SORI_LAST_N", value_name = "N")]
    #[serde(rename = "rooms.last_n")]
    last_n: Option<u32>,
    /// PEM certificate chain: --listen serves HTTPS and WSS (with --tls-key; re-read when the
    /// files change) [default: plain HTTP].
    #[arg(long, env = "SORI_TLS_CERT", value_name = "FILE")]
    #[serde(rename = "tls.cert")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SORI_TLS_KEY", value_name = "FILE")]
    #[serde(rename = "tls.key")]
    tls_key: Option<PathBuf>,
    /// Get and renew the certificate for this DNS name from an ACME CA (Let's Encrypt by
    /// default); --listen then serves HTTPS [default: none].
    #[arg(long, env = "SORI_DOMAIN", value_name = "NAME")]
    #[serde(rename = "tls.domain")]
    domain: Option<String>,
    /// Contact address given to the ACME CA (expiry notices) [default: none].
    #[arg(long, env = "SORI_ACME_EMAIL", value_name = "EMAIL")]
    #[serde(rename = "tls.acme_email")]
    acme_email: Option<String>,
    /// Directory URL of the ACME CA [default: Let's Encrypt's].
    #[arg(long, env = "SORI_ACME_DIRECTORY", value_name = "URL")]
    #[serde(rename = "tls.acme_directory")]
    acme_directory: Option<String>,
    /// PEM file of a CA to trust for the ACME directory's own HTTPS (a test CA) [default: the
    /// system's roots].
    #[arg(long, env = "SORI_ACME_CA_ROOT", value_name = "FILE")]
    #[serde(rename = "tls.acme_ca_root")]
    acme_ca_root: Option<PathBuf>,
    /// Directory keeping the ACME account and certificate across restarts [default: acme].
    #[arg(long, env = "SORI_ACME_CACHE", value_name = "DIR")]
    #[serde(rename = "tls.acme_cache")]
    acme_cache: Option<PathBuf>,
    /// A plain-HTTP address that redirects to HTTPS and answers ACME HTTP-01 challenges, e.g.
    /// 0.0.0.0:80 [default: none].
    #[arg(long, env = "SORI_HTTP_LISTEN", value_name = "ADDR")]
    #[serde(rename = "tls.http_listen")]
    http_listen: Option<SocketAddr>,
}

/// One API key, given on the command line or in the environment: an entry of `auth.keys`.
#[derive(Args)]
pub struct AuthFlags {
    /// API key access tokens name in `iss` (with --api-secret) [default: the [auth] keys].
    #[arg(long, env = "SORI_API_KEY", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Secret of --api-key, at least 32 characters.
    #[arg(
        long,
        env = "SORI_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub api_secret: Option<String>,
}

impl Serialize for AuthFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match (&self.api_key, &self.api_secret) {
            (Some(key), Some(secret)) => {
                // A table, not a dotted key: the key's name may hold dots.
                let entry = toml::Value::String(secret.clone());
                map.serialize_entry("auth.keys", &toml::Table::from_iter([(key.clone(), entry)]))?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(S::Error::custom(
                    "--api-key needs --api-secret (or SORI_API_SECRET)",
                ))
            }
            (None, Some(_)) => {
                return Err(S::Error::custom(
                    "--api-secret needs --api-key (or SORI_API_KEY)",
                ))
            }
        }
        map.end()
    }
}

/// Settings of TURN (the embedded server runs in `serve`; `signal` hands out external ones).
#[derive(Args, Serialize)]
pub struct TurnFlags {
    #[command(flatten)]
    #[serde(flatten)]
    choice: TurnChoice,
    /// UDP and TCP address of the embedded TURN server [default: 0.0.0.0:3478].
    #[arg(long, env = "SORI_TURN_LISTEN", value_name = "ADDR")]
    #[serde(rename = "turn.listen")]
    turn_listen: Option<SocketAddr>,
    /// Shared secret TURN credentials are signed with [default: random at each start].
    #[arg(
        long,
        env = "SORI_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    #[serde(rename = "turn.secret")]
    turn_secret: Option<String>,
    /// UDP ports the TURN relay uses, LOW-HIGH [default: 49152-65535].
    #[arg(long, env = "SORI_TURN_RELAY_PORTS", value_name = "LOW-HIGH")]
    #[serde(rename = "turn.relay_ports")]
    turn_relay_ports: Option<PortRange>,
    /// Seconds an issued TURN credential stays valid [default: 7200].
    #[arg(long, env = "SORI_TURN_CREDENTIAL_TTL", value_name = "SECS")]
    #[serde(rename = "turn.credential_ttl_secs")]
    turn_credential_ttl: Option<u64>,
    /// Allocations one TURN credential may hold at once, 0: no cap [default: 8].
    #[arg(long, env = "SORI_TURN_ALLOCATIONS_PER_USERNAME", value_name = "N")]
    #[serde(rename = "turn.allocations_per_username")]
    turn_allocations_per_username: Option<usize>,
    /// Allocations one client IP address may hold at once, 0: no cap [default: 64].
    #[arg(long, env = "SORI_TURN_ALLOCATIONS_PER_IP", value_name = "N")]
    #[serde(rename = "turn.allocations_per_ip")]
    turn_allocations_per_ip: Option<usize>,
    /// A private prefix the relay may reach (e.g. 10.0.0.0/8); repeat for several.
    #[arg(
        long = "turn-allow",
        env = "SORI_TURN_ALLOW",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    #[serde(rename = "turn.allow")]
    turn_allow: Option<Vec<String>>,
    /// TCP address of TURN over TLS, used with --turn-tls-cert [default: 0.0.0.0:5349].
    #[arg(long, env = "SORI_TURN_TLS_LISTEN", value_name = "ADDR")]
    #[serde(rename = "turn.tls_listen")]
    turn_tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TURN over TLS (with --turn-tls-key) [default: no TLS].
    #[arg(long, env = "SORI_TURN_TLS_CERT", value_name = "FILE")]
    #[serde(rename = "turn.tls_cert")]
    turn_tls_cert: Option<PathBuf>,
    /// PEM private key of --turn-tls-cert.
    #[arg(long, env = "SORI_TURN_TLS_KEY", value_name = "FILE")]
    #[serde(rename = "turn.tls_key")]
    turn_tls_key: Option<PathBuf>,
    /// Host name in the turns: URL; must match the certificate [default: the advertised IP].
    #[arg(long, env = "SORI_TURN_TLS_HOST", value_name = "HOST")]
    #[serde(rename = "turn.tls_host")]
    turn_tls_host: Option<String>,
}

/// Whether TURN runs, or which servers run elsewhere: `--no-turn` wins over everything,
/// `--turn-external` included (and the file's `external`).
#[derive(Args)]
struct TurnChoice {
    /// Do not run or hand out a TURN server.
    #[arg(long, env = "SORI_NO_TURN")]
    no_turn: bool,
    /// A TURN server run elsewhere, sharing --turn-secret (instead of the embedded one);
    /// repeat for several.
    #[arg(
        long = "turn-external",
        env = "SORI_TURN_EXTERNAL",
        value_name = "URL",
        value_delimiter = ','
    )]
    turn_external: Option<Vec<String>>,
}

impl Serialize for TurnChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if self.no_turn {
            map.serialize_entry("turn.enabled", &false)?;
            map.serialize_entry("turn.external", &[] as &[String])?;
        } else if let Some(urls) = &self.turn_external {
            map.serialize_entry("turn.external", urls)?;
        }
        map.end()
    }
}
