//! The `sori` binary: one command runs the whole conferencing server.

#![forbid(unsafe_code)]

mod config;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sori_kurento::Kurento;
use sori_kurento_client::RemoteMedia;
use sori_net::MediaConfig;
use sori_signal::{Signal, TurnAccess};
use sori_turn::{TurnConfig, TurnServer, TurnTls};

use crate::config::{Config, LogFormat, RoomModeName, TurnPlan};

/// Sori — a self-hosted WebRTC video-conferencing server in one binary.
///
/// Browsers join rooms over one WebSocket; their media goes through Sori's selective forwarding
/// unit on one UDP port. Start with `sori serve`, then open the printed address.
#[derive(Parser)]
#[command(name = "sori", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP on --listen, media on UDP --rtc-port.
    ///
    /// Every setting has a built-in default (print them with `sori serve --print-config`);
    /// a TOML file, SORI_… environment variables and flags override them, in that order.
    Serve(ServeArgs),
    /// Run only the media server, commanded over the Kurento protocol
    /// (ws://127.0.0.1:8888/kurento by default) — for Kurento applications, or for a
    /// session server on another machine (`sori signal`).
    Media(MediaArgs),
    /// Run only the session server and web client, driving a media server elsewhere
    /// (`sori media`) over its control API.
    Signal(SignalArgs),
    /// Access tokens for joining rooms on a server with API keys.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an access token and a join URL for one participant of one room.
    ///
    /// The token is signed with an API key of the configuration (--api-key/--api-secret,
    /// SORI_API_KEY/SORI_API_SECRET or [auth.keys], as for `sori serve`), in LiveKit's claim
    /// layout.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// TOML configuration file holding [auth.keys].
    #[arg(long, env = "SORI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    auth: AuthFlags,
    /// The room the token lets its holder join.
    #[arg(long)]
    room: String,
    /// The participant's identity (unique in the room: a second join replaces the first).
    #[arg(long)]
    identity: String,
    /// Display name [default: the identity].
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid: 90s, 30m, 6h, 2d [default: 6h].
    #[arg(long, default_value = "6h", value_parser = parse_ttl)]
    ttl: u64,
    /// What it may do, comma-separated: publish, subscribe, chat, record, admin, or a source
    /// (camera, microphone, screen_share) to publish only those
    /// [default: publish,subscribe,chat].
    #[arg(long, value_delimiter = ',', default_value = "publish,subscribe,chat")]
    grant: Vec<String>,
    /// Base URL of the join link [default: http:// and the configured --listen address].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, e.g. 6h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(scale)
        .filter(|t| *t > 0)
        .ok_or_else(|| format!("{s:?} is not a usable lifetime"))
}

/// `sori token create`.
fn token_create(args: TokenArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("sori: {e}");
        ExitCode::from(2)
    };
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let chosen = args.auth.api_key.clone();
    if let Err(e) = args.auth.apply(&mut config) {
        return fail(e);
    }
    let keys = match config.keys() {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let key = match chosen {
        Some(k) => k,
        None if config.auth.keys.len() == 1 => {
            config.auth.keys.keys().next().cloned().unwrap_or_default()
        }
        None if config.auth.keys.is_empty() => {
            return fail(
                "no API key: give --api-key and --api-secret (or SORI_API_KEY and \
                 SORI_API_SECRET), or a config file with [auth.keys]"
                    .into(),
            )
        }
        None => return fail("several API keys are configured: choose one with --api-key".into()),
    };
    let Some(secret) = keys.secret(&key) else {
        return fail(format!("no API key {key} is configured"));
    };
    let mut video = sori_signal::auth::VideoGrant {
        room: Some(args.room.clone()),
        room_join: Some(true),
        can_publish: Some(false),
        can_subscribe: Some(false),
        can_publish_data: Some(false),
        ..Default::default()
    };
    let mut sources = Vec::new();
    for g in &args.grant {
        match g.trim() {
            "publish" => video.can_publish = Some(true),
            "subscribe" => video.can_subscribe = Some(true),
            "chat" => video.can_publish_data = Some(true),
            "record" => video.room_record = Some(true),
            "admin" => video.room_admin = Some(true),
            s @ ("camera" | "microphone" | "screen_share" | "screen_share_audio") => {
                video.can_publish = Some(true);
                sources.push(s.to_string());
            }
            other => {
                return fail(format!(
                    "--grant: unknown {other:?} (publish, subscribe, chat, record, admin, \
                     camera, microphone, screen_share, screen_share_audio)"
                ))
            }
        }
    }
    if !sources.is_empty() {
        video.can_publish_sources = Some(sources);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = sori_signal::auth::Claims {
        iss: key,
        sub: Some(args.identity.clone()),
        name: Some(args.name.unwrap_or_else(|| args.identity.clone())),
        nbf: Some(now),
        exp: Some(now + args.ttl),
        jti: Some(args.identity),
        video: Some(video),
        ..Default::default()
    };
    let token = match sori_signal::auth::sign(&claims, secret) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let base = args.url.unwrap_or_else(|| {
        let listen = config.server.listen;
        let host = if listen.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), listen.port())
        } else {
            listen
        };
        format!("http://{host}")
    });
    let room: String = args
        .room
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    println!("{token}");
    println!("{}/?room={room}&token={token}", base.trim_end_matches('/'));
    ExitCode::SUCCESS
}

/// Settings every command has.
#[derive(Args)]
struct BaseArgs {
    /// TOML configuration file (overrides the built-in defaults it names).
    #[arg(long, env = "SORI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format [default: text]. Log levels come from RUST_LOG (default: info).
    #[arg(long, env = "SORI_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML-like text and exit.
    #[arg(long)]
    print_config: bool,
}

/// Settings of the media server.
#[derive(Args)]
struct MediaFlags {
    /// The one UDP port all media uses [default: 40000; 0 picks a free port].
    #[arg(long, env = "SORI_RTC_PORT", value_name = "PORT")]
    rtc_port: Option<u16>,
    /// TCP port for media from browsers whose UDP is blocked (ICE-TCP)
    /// [default: the --rtc-port number].
    #[arg(long, env = "SORI_RTC_TCP_PORT", value_name = "PORT")]
    rtc_tcp_port: Option<u16>,
    /// Media over UDP only: no ICE-TCP listener, no TCP candidates.
    #[arg(long, env = "SORI_NO_RTC_TCP")]
    no_rtc_tcp: bool,
    /// IP address browsers are told to send media to; repeat (or comma-separate) for several,
    /// IPv4 and IPv6 [default: first non-loopback address].
    #[arg(
        long = "advertise-ip",
        env = "SORI_ADVERTISE_IP",
        value_name = "IP",
        value_delimiter = ','
    )]
    advertise_ip: Vec<IpAddr>,
    /// Address of the Kurento-protocol control API [default: 127.0.0.1:8888, loopback only].
    #[arg(long, env = "SORI_KURENTO_LISTEN", value_name = "ADDR")]
    kurento_listen: Option<SocketAddr>,
    /// WebSocket path of the control API [default: /kurento].
    #[arg(long, env = "SORI_KURENTO_PATH", value_name = "PATH")]
    kurento_path: Option<String>,
    /// Directory recordings are written in, and only in [default: ./recordings].
    #[arg(long, env = "SORI_RECORDINGS_DIR", value_name = "DIR")]
    recordings_dir: Option<String>,
    /// Require ?access_token=TOKEN on control connections [default: none].
    #[arg(
        long,
        env = "SORI_KURENTO_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    kurento_token: Option<String>,
    /// Web origin whose pages may open the control API; repeat for several [default: none,
    /// so browsers are refused; applications, which send no Origin, are not affected].
    #[arg(
        long = "kurento-allow-origin",
        env = "SORI_KURENTO_ALLOW_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    kurento_allow_origins: Vec<String>,
}

impl MediaFlags {
    fn apply(self, config: &mut Config) {
        if let Some(v) = self.rtc_port {
            config.media.rtc_port = v;
        }
        if let Some(v) = self.rtc_tcp_port {
            config.media.tcp_port = v;
        }
        if self.no_rtc_tcp {
            config.media.tcp = false;
        }
        if !self.advertise_ip.is_empty() {
            config.media.advertise_ip = self.advertise_ip;
        }
        if let Some(v) = self.kurento_listen {
            config.kurento.listen = v;
        }
        if let Some(v) = self.kurento_path {
            config.kurento.path = v;
        }
        if let Some(v) = self.kurento_token {
            config.kurento.access_token = v;
        }
        if !self.kurento_allow_origins.is_empty() {
            config.kurento.allowed_origins = self.kurento_allow_origins;
        }
        if let Some(v) = self.recordings_dir {
            config.recording.dir = v;
        }
    }
}

/// Settings of the session server.
#[derive(Args)]
struct SessionFlags {
    /// HTTP/WebSocket address [default: 127.0.0.1:8080, loopback only].
    #[arg(long, env = "SORI_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Mode of new rooms whose URL names none [default: sfu].
    #[arg(long, env = "SORI_ROOM_MODE", value_enum)]
    room_mode: Option<RoomModeName>,
    /// ICE server URL for browsers (stun:… or turn:…); repeat for several.
    #[arg(
        long = "ice-server",
        env = "SORI_ICE_SERVERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    ice_servers: Vec<String>,
    #[command(flatten)]
    auth: AuthFlags,
    /// Accept joins without an access token on a non-loopback address (trying Sori out).
    #[arg(long, env = "SORI_DEV")]
    dev: bool,
    /// A web origin (https://app.example.org) whose pages may open /ws besides the server's
    /// own; repeat for several.
    #[arg(
        long = "allow-origin",
        env = "SORI_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// A reverse proxy whose X-Forwarded-For names the client; repeat for several.
    #[arg(
        long = "trusted-proxy",
        env = "SORI_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpAddr>,
    /// Bearer token that opens /metrics to clients not on loopback [default: loopback only].
    #[arg(
        long,
        env = "SORI_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    /// A separate address serving /metrics to whoever reaches it (a private interface).
    #[arg(long, env = "SORI_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Room recordings one room may start in an hour; 0: any number [default: 20].
    #[arg(long, env = "SORI_RECORDING_STARTS_PER_HOUR", value_name = "N")]
    recording_starts_per_hour: Option<u32>,
    /// GiB the recordings directory may hold before room recordings are refused; 0: no quota
    /// [default: 10].
    #[arg(long, env = "SORI_RECORDINGS_QUOTA_GIB", value_name = "GIB")]
    recordings_quota_gib: Option<f64>,
}

/// One API key, given on the command line or in the environment.
#[derive(Args)]
struct AuthFlags {
    /// API key access tokens name in `iss` (with --api-secret) [default: the [auth] keys].
    #[arg(long, env = "SORI_API_KEY", value_name = "KEY")]
    api_key: Option<String>,
    /// Secret of --api-key, at least 32 characters.
    #[arg(
        long,
        env = "SORI_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    api_secret: Option<String>,
}

impl AuthFlags {
    fn apply(self, config: &mut Config) -> Result<(), String> {
        match (self.api_key, self.api_secret) {
            (Some(k), Some(s)) => {
                config.auth.keys.insert(k, s);
                Ok(())
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err("--api-key needs --api-secret (or SORI_API_SECRET)".into()),
            (None, Some(_)) => Err("--api-secret needs --api-key (or SORI_API_KEY)".into()),
        }
    }
}

impl SessionFlags {
    fn apply(self, config: &mut Config) -> Result<(), String> {
        self.auth.apply(config)?;
        if self.dev {
            config.auth.dev = true;
        }
        if !self.allowed_origins.is_empty() {
            config.server.allowed_origins = self.allowed_origins;
        }
        if !self.trusted_proxies.is_empty() {
            config.server.trusted_proxies = self.trusted_proxies;
        }
        if let Some(v) = self.metrics_token {
            config.server.metrics_token = v;
        }
        if let Some(v) = self.metrics_listen {
            config.server.metrics_listen = Some(v);
        }
        if let Some(v) = self.recording_starts_per_hour {
            config.recording.starts_per_room_per_hour = v;
        }
        if let Some(v) = self.recordings_quota_gib {
            config.recording.quota_gib = v;
        }
        if let Some(v) = self.listen {
            config.server.listen = v;
        }
        if let Some(v) = self.room_mode {
            config.server.room_mode = v;
        }
        if !self.ice_servers.is_empty() {
            config.server.ice_servers = self.ice_servers;
        }
        Ok(())
    }
}

/// Settings of TURN (the embedded server runs in `serve`; `signal` hands out external ones).
#[derive(Args)]
struct TurnFlags {
    /// Do not run or hand out a TURN server.
    #[arg(long, env = "SORI_NO_TURN")]
    no_turn: bool,
    /// UDP and TCP address of the embedded TURN server [default: 0.0.0.0:3478].
    #[arg(long, env = "SORI_TURN_LISTEN", value_name = "ADDR")]
    turn_listen: Option<SocketAddr>,
    /// Shared secret TURN credentials are signed with [default: random at each start].
    #[arg(
        long,
        env = "SORI_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    turn_secret: Option<String>,
    /// UDP ports the TURN relay uses, LOW-HIGH [default: 49152-65535].
    #[arg(long, env = "SORI_TURN_RELAY_PORTS", value_name = "LOW-HIGH")]
    turn_relay_ports: Option<String>,
    /// Seconds an issued TURN credential stays valid [default: 7200].
    #[arg(long, env = "SORI_TURN_CREDENTIAL_TTL", value_name = "SECS")]
    turn_credential_ttl: Option<u64>,
    /// Allocations one TURN credential may hold at once, 0: no cap [default: 8].
    #[arg(long, env = "SORI_TURN_ALLOCATIONS_PER_USERNAME", value_name = "N")]
    turn_allocations_per_username: Option<usize>,
    /// Allocations one client IP address may hold at once, 0: no cap [default: 64].
    #[arg(long, env = "SORI_TURN_ALLOCATIONS_PER_IP", value_name = "N")]
    turn_allocations_per_ip: Option<usize>,
    /// A private prefix the relay may reach (e.g. 10.0.0.0/8); repeat for several.
    #[arg(
        long = "turn-allow",
        env = "SORI_TURN_ALLOW",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    turn_allow: Vec<String>,
    /// A TURN server run elsewhere, sharing --turn-secret (instead of the embedded one);
    /// repeat for several.
    #[arg(
        long = "turn-external",
        env = "SORI_TURN_EXTERNAL",
        value_name = "URL",
        value_delimiter = ','
    )]
    turn_external: Vec<String>,
    /// TCP address of TURN over TLS, used with --turn-tls-cert [default: 0.0.0.0:5349].
    #[arg(long, env = "SORI_TURN_TLS_LISTEN", value_name = "ADDR")]
    turn_tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TURN over TLS (with --turn-tls-key) [default: no TLS].
    #[arg(long, env = "SORI_TURN_TLS_CERT", value_name = "FILE")]
    turn_tls_cert: Option<String>,
    /// PEM private key of --turn-tls-cert.
    #[arg(long, env = "SORI_TURN_TLS_KEY", value_name = "FILE")]
    turn_tls_key: Option<String>,
    /// Host name in the turns: URL; must match the certificate [default: the advertised IP].
    #[arg(long, env = "SORI_TURN_TLS_HOST", value_name = "HOST")]
    turn_tls_host: Option<String>,
}

impl TurnFlags {
    fn apply(self, config: &mut Config) {
        let t = &mut config.turn;
        if self.no_turn {
            t.enabled = false;
            t.external.clear();
        }
        if let Some(v) = self.turn_listen {
            t.listen = v;
        }
        if let Some(v) = self.turn_secret {
            t.secret = v;
        }
        if let Some(v) = self.turn_relay_ports {
            t.relay_ports = v;
        }
        if let Some(v) = self.turn_credential_ttl {
            t.credential_ttl_secs = v;
        }
        if let Some(v) = self.turn_allocations_per_username {
            t.allocations_per_username = v;
        }
        if let Some(v) = self.turn_allocations_per_ip {
            t.allocations_per_ip = v;
        }
        if !self.turn_allow.is_empty() {
            t.allow = self.turn_allow;
        }
        if !self.turn_external.is_empty() && !self.no_turn {
            t.external = self.turn_external;
        }
        if let Some(v) = self.turn_tls_listen {
            t.tls_listen = v;
        }
        if let Some(v) = self.turn_tls_cert {
            t.tls_cert = v;
        }
        if let Some(v) = self.turn_tls_key {
            t.tls_key = v;
        }
        if let Some(v) = self.turn_tls_host {
            t.tls_host = v;
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    base: BaseArgs,
    #[command(flatten)]
    session: SessionFlags,
    #[command(flatten)]
    media: MediaFlags,
    #[command(flatten)]
    turn: TurnFlags,
    /// Also serve the Kurento-protocol control API on --kurento-listen.
    #[arg(long, env = "SORI_KURENTO")]
    kurento: bool,
}

#[derive(Args)]
struct MediaArgs {
    #[command(flatten)]
    base: BaseArgs,
    #[command(flatten)]
    media: MediaFlags,
}

#[derive(Args)]
struct SignalArgs {
    #[command(flatten)]
    base: BaseArgs,
    #[command(flatten)]
    session: SessionFlags,
    #[command(flatten)]
    turn: TurnFlags,
    /// The media server's control API, e.g. ws://10.0.0.5:8888/kurento (add
    /// ?access_token=… when it requires one).
    #[arg(
        long = "media",
        env = "SORI_MEDIA_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    media_url: String,
}

/// What a process runs.
enum Role {
    /// Session server and media server; with the control API when true.
    Serve { kurento: bool },
    /// Media server and control API only.
    Media,
    /// Session server only, driving the media server at this URL.
    Signal { media_url: String },
}

/// The command's own flags, applied to the loaded configuration.
type Overrides = Box<dyn FnOnce(&mut Config) -> Result<(), String>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (base, role, apply): (BaseArgs, Role, Overrides) = match cli.command {
        Command::Serve(args) => {
            let role = Role::Serve {
                kurento: args.kurento,
            };
            let (session, media, turn) = (args.session, args.media, args.turn);
            let apply = move |config: &mut Config| {
                session.apply(config)?;
                media.apply(config);
                turn.apply(config);
                Ok(())
            };
            (args.base, role, Box::new(apply))
        }
        Command::Media(args) => {
            let media = args.media;
            (
                args.base,
                Role::Media,
                Box::new(move |c: &mut Config| {
                    media.apply(c);
                    Ok(())
                }),
            )
        }
        Command::Token(TokenCommand::Create(args)) => return token_create(args),
        Command::Signal(args) => {
            let (session, turn) = (args.session, args.turn);
            let role = Role::Signal {
                media_url: args.media_url,
            };
            let apply = move |c: &mut Config| {
                session.apply(c)?;
                turn.apply(c);
                Ok(())
            };
            (args.base, role, Box::new(apply))
        }
    };
    start(base, role, apply)
}

fn start(args: BaseArgs, role: Role, apply: Overrides) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sori: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = apply(&mut config) {
        eprintln!("sori: {e}");
        return ExitCode::from(2);
    }
    if let Some(v) = args.log_format {
        config.log.format = v;
    }
    let checked = config
        .kurento()
        .and_then(|_| config.turn())
        .and_then(|_| config.recordings_quota())
        .and_then(|_| config.keys())
        .and_then(|keys| match role {
            Role::Media => Ok(()),
            _ => open_mode_allowed(&config, keys.is_empty()),
        });
    if let Err(e) = checked {
        eprintln!("sori: {e}");
        return ExitCode::from(2);
    }
    if args.print_config {
        if !config.kurento.access_token.is_empty() {
            config.kurento.access_token = "<set>".into();
        }
        if !config.turn.secret.is_empty() {
            config.turn.secret = "<set>".into();
        }
        if !config.server.metrics_token.is_empty() {
            config.server.metrics_token = "<set>".into();
        }
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    init_logging(config.log.format);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sori: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sori: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Without API keys anyone can join: allowed on loopback (the quick start) or on purpose
/// (`--dev`), refused anywhere else.
fn open_mode_allowed(config: &Config, no_keys: bool) -> Result<(), String> {
    let listen = config.server.listen;
    if no_keys && !config.auth.dev && !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without API keys: anyone who reaches it could join \
             any room. Configure a key (--api-key KEY --api-secret SECRET, SORI_API_KEY and \
             SORI_API_SECRET, or [auth.keys] in the config file; then `sori token create` \
             mints join tokens), or pass --dev (SORI_DEV=1) to accept anonymous joins on purpose"
        ));
    }
    Ok(())
}

/// Every connection is a descriptor: the soft limit (often 1024) goes up to the hard one, so the
/// connection caps, not the descriptor limit, decide who is refused.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            {
                Ok(()) => tracing::info!("open-file limit raised from {soft} to {hard}"),
                Err(e) => tracing::warn!("open-file limit stays {soft}: {e}"),
            },
            Ok((soft, _)) => tracing::debug!("open-file limit {soft}"),
            Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
        }
    }
}

fn init_logging(format: LogFormat) {
    // The turn crate logs every malformed or refused datagram, and every packet a peer sends
    // toward a relayed client whose TCP connection is gone, as an error (its log records reach
    // tracing through tracing-subscriber's log bridge): remote input, not the operator's.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,turn::server=off,turn::allocation=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config, role: Role) -> Result<(), String> {
    if let Role::Signal { media_url } = &role {
        return run_signal(config, media_url).await;
    }
    // Checked when the configuration was loaded.
    let sfu = config.sfu()?;
    let media = sori_net::start(MediaConfig {
        bind: SocketAddr::new(config.media.bind_ip, config.media.rtc_port),
        advertise: config.media.advertise_ip.clone(),
        sfu,
        tcp: config.tcp(),
    })
    .await
    .map_err(|e| {
        let (ip, port) = (config.media.bind_ip, config.media.rtc_port);
        let tcp = match config.tcp() {
            Some(t) => format!("TCP {ip}:{}", t.port.unwrap_or(port)),
            None => "no TCP".into(),
        };
        format!("cannot open the media port (UDP {ip}:{port}, {tcp}): {e}")
    })?;
    let advertised = media
        .candidates
        .iter()
        .map(|c| c.to_string())
        .chain(media.tcp_candidates.iter().map(|c| format!("{c}/tcp")))
        .collect::<Vec<_>>()
        .join(", ");

    let mut servers = tokio::task::JoinSet::new();
    let with_kurento = matches!(role, Role::Media | Role::Serve { kurento: true });
    if with_kurento {
        let kconfig = config.kurento()?;
        let path = kconfig.path.clone();
        let mut app = Kurento::new(media.handle.clone(), kconfig).router();
        if let Role::Media = role {
            // The media server alone still answers health checks and metrics.
            let handle = media.handle.clone();
            app = app
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let handle = handle.clone();
                        async move {
                            match handle.stats().await {
                                Ok(stats) => {
                                    Ok(sori_signal::metrics::render(0, 0, Some(&stats), None))
                                }
                                Err(e) => Err((
                                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                    e.to_string(),
                                )),
                            }
                        }
                    }),
                );
        }
        let (listener, addr) = bind(config.kurento.listen).await?;
        tracing::info!(
            "Sori {} media server: control API on ws://{addr}{path} (media: UDP {}, advertised as {advertised})",
            env!("CARGO_PKG_VERSION"),
            media.local_addr,
        );
        let limits = sori_signal::http::ConnLimits::from(&config.limits());
        servers.spawn(serve_http(listener, app, limits, "control API"));
    }
    let mut turn = None;
    if let Role::Serve { .. } = role {
        let mut signal = config.signal();
        let (server, access) = start_turn(&config, &media.candidates).await?;
        signal.turn = access;
        signal.turn_monitor = server.as_ref().map(TurnServer::monitor);
        turn = server;
        log_access_mode(&signal);
        let app = Signal::new(media.handle.clone(), signal);
        if let Some(at) = config.server.metrics_listen {
            servers.spawn(serve_metrics(at, app.clone(), &config).await?);
        }
        let (listener, http) = bind(config.server.listen).await?;
        tracing::info!(
            "Sori {} listening on http://{http} (media: UDP {}, advertised as {advertised})",
            env!("CARGO_PKG_VERSION"),
            media.local_addr,
        );
        servers.spawn(async move {
            app.serve(listener, shutdown_signal()).await;
            Ok(())
        });
    }
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            result = Err(e);
            servers.abort_all();
        }
    }
    if let Some(turn) = turn {
        turn.shutdown().await;
    }
    media.handle.shutdown();
    let _ = media.task.await;
    tracing::info!("stopped");
    result
}

/// Starts the embedded TURN server when the configuration asks for it; returns it with the TURN
/// servers the session server hands out credentials for.
async fn start_turn(
    config: &Config,
    media: &[SocketAddr],
) -> Result<(Option<TurnServer>, Option<TurnAccess>), String> {
    let (listen, secret, realm, relay_ports, allow, ttl, tls, limits) = match config.turn()? {
        TurnPlan::Off => return Ok((None, None)),
        TurnPlan::External { urls, secret, ttl } => {
            tracing::info!("TURN: handing out {}", urls.join(", "));
            return Ok((None, Some(TurnAccess { urls, secret, ttl })));
        }
        TurnPlan::Embedded {
            listen,
            secret,
            realm,
            relay_ports,
            allow,
            ttl,
            tls,
            limits,
        } => (listen, secret, realm, relay_ports, allow, ttl, tls, limits),
    };
    // A certificate that does not load stops the start, naming the file.
    let tls_config = match &tls {
        Some(plan) => Some(TurnTls {
            listen: plan.listen,
            config: sori_turn::tls::load_pem(&plan.cert, &plan.key).map_err(|e| e.to_string())?,
        }),
        None => None,
    };
    let secret = match secret {
        Some(s) => s,
        None => sori_turn::credentials::random_secret()
            .map_err(|_| "cannot draw a random TURN secret".to_string())?,
    };
    // Browsers reach TURN where they reach the media port: the advertised address.
    let Some(advertised) = media.first().map(|a| a.ip()) else {
        return Err("TURN needs the media server's advertised address (--advertise-ip)".into());
    };
    let server = TurnServer::start(TurnConfig {
        listen,
        // Relayed datagrams leave from the address peers send them to: the advertised one
        // when it is this host's, rather than whichever the route back picks.
        relay_bind: if config.media.bind_ip.is_unspecified()
            && sori_net::is_local_address(advertised)
        {
            advertised
        } else {
            config.media.bind_ip
        },
        relay_ip: advertised,
        relay_ports: relay_ports.clone(),
        secret: secret.clone(),
        realm,
        allow,
        own: media.to_vec(),
        tls: tls_config,
        limits,
    })
    .await
    .map_err(|e| e.to_string())?;
    let at = SocketAddr::new(advertised, server.local_addr().port());
    let mut urls = vec![
        format!("stun:{at}"),
        format!("turn:{at}?transport=udp"),
        format!("turn:{at}?transport=tcp"),
    ];
    if let (Some(tls_addr), Some(plan)) = (server.tls_addr(), &tls) {
        // Browsers check the certificate against this host: a name it is issued for, or the
        // advertised IP when the certificate is for that IP.
        let turns = match &plan.host {
            Some(host) => match host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, tls_addr.port()).to_string(),
                Err(_) => format!("{host}:{}", tls_addr.port()),
            },
            None => SocketAddr::new(advertised, tls_addr.port()).to_string(),
        };
        urls.push(format!("turns:{turns}?transport=tcp"));
        tracing::info!("TURN on TLS {tls_addr} (advertised as turns:{turns})");
    }
    tracing::info!(
        "TURN on UDP+TCP {} (advertised as {at}, relay ports {}-{})",
        server.local_addr(),
        relay_ports.start(),
        relay_ports.end(),
    );
    Ok((Some(server), Some(TurnAccess { urls, secret, ttl })))
}

/// The session server alone, driving a remote media server.
async fn run_signal(config: Config, media_url: &str) -> Result<(), String> {
    let shown = media_url.split('?').next().unwrap_or(media_url);
    let media = RemoteMedia::connect(media_url)
        .await
        .map_err(|e| format!("cannot reach the media server at {shown}: {e}"))?;
    let mut signal = config.signal();
    // A session server alone hands out TURN servers run elsewhere, never its own.
    if let TurnPlan::External { urls, secret, ttl } = config.turn()? {
        tracing::info!("TURN: handing out {}", urls.join(", "));
        signal.turn = Some(TurnAccess { urls, secret, ttl });
    }
    log_access_mode(&signal);
    let app = Signal::new(media, signal);
    if let Some(at) = config.server.metrics_listen {
        tokio::spawn(serve_metrics(at, app.clone(), &config).await?);
    }
    let (listener, http) = bind(config.server.listen).await?;
    tracing::info!(
        "Sori {} listening on http://{http} (media server: {shown})",
        env!("CARGO_PKG_VERSION"),
    );
    app.serve(listener, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds a TCP listener; returns it with the address it got.
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}

/// Serves `app` on `listener` until SIGINT/SIGTERM, with the connection limits of `config`;
/// `what` names it in logs.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: sori_signal::http::ConnLimits,
    what: &'static str,
) -> Result<(), String> {
    sori_signal::http::serve(listener, app, limits, what, shutdown_signal()).await;
    Ok(())
}

/// Binds the separate metrics address; the returned future serves it until shutdown.
async fn serve_metrics(
    at: SocketAddr,
    signal: Signal,
    config: &Config,
) -> Result<impl std::future::Future<Output = Result<(), String>>, String> {
    let (listener, addr) = bind(at).await?;
    tracing::info!("metrics on http://{addr}/metrics");
    let limits = sori_signal::http::ConnLimits::from(&config.limits());
    Ok(serve_http(
        listener,
        signal.metrics_router(),
        limits,
        "metrics",
    ))
}

/// One line at start saying who may join.
fn log_access_mode(signal: &sori_signal::SignalConfig) {
    if signal.keys.is_empty() {
        tracing::info!(
            "no API keys: open mode, anyone who reaches this server joins any room without a token"
        );
    } else if signal.anonymous {
        tracing::warn!("--dev: joins without a token are accepted; tokens are checked when given");
    } else {
        tracing::info!("joins need an access token signed with one of the configured API keys");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
