//! The `sori` binary: one command runs the whole conferencing server.

#![forbid(unsafe_code)]

mod acme;
mod cluster;
mod config;
mod flags;
mod rooms;
mod run;
mod tls;
mod token;
mod turn;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{Config, LogFormat};
use crate::flags::{
    settings, BaseArgs, ClusterMediaFlags, ClusterSignalFlags, MediaFlags, SessionFlags, TurnFlags,
};
use crate::run::Role;
use crate::token::TokenArgs;

/// The version and the git revision it was built from: `0.1.0 (1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SORI_GIT_REVISION"),
    ")"
);

/// Sori — a self-hosted WebRTC video-conferencing server in one binary.
///
/// Browsers join rooms over one WebSocket; their media goes through Sori's selective forwarding
/// unit on one UDP port. Start with `sori serve`, then open the printed address.
#[derive(Parser)]
#[command(name = "sori", version = VERSION, about, long_about)]
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
    /// Manage a running server's rooms through its server API: list, participants, remove,
    /// mute, end, record.
    Rooms(rooms::RoomsArgs),
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

#[derive(Args, Serialize)]
struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    base: BaseArgs,
    #[command(flatten)]
    #[serde(flatten)]
    session: SessionFlags,
    #[command(flatten)]
    #[serde(flatten)]
    media: MediaFlags,
    #[command(flatten)]
    #[serde(flatten)]
    turn: TurnFlags,
    /// Also serve the Kurento-protocol control API on --kurento-listen.
    #[arg(long, env = "SORI_KURENTO")]
    #[serde(skip)]
    kurento: bool,
}

#[derive(Args, Serialize)]
struct MediaArgs {
    #[command(flatten)]
    #[serde(flatten)]
    base: BaseArgs,
    #[command(flatten)]
    #[serde(flatten)]
    media: MediaFlags,
    #[command(flatten)]
    #[serde(flatten)]
    cluster: ClusterMediaFlags,
}

#[derive(Args, Serialize)]
struct SignalArgs {
    #[command(flatten)]
    #[serde(flatten)]
    base: BaseArgs,
    #[command(flatten)]
    #[serde(flatten)]
    session: SessionFlags,
    #[command(flatten)]
    #[serde(flatten)]
    turn: TurnFlags,
    /// The media server's control API, e.g. ws://10.0.0.5:8888/kurento (add
    /// ?access_token=… when it requires one); or --redis for media nodes of a cluster.
    #[arg(
        long = "media",
        env = "SORI_MEDIA_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip)]
    media_url: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    cluster: ClusterSignalFlags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (settings, base, role) = match cli.command {
        Command::Serve(args) => {
            let role = Role::Serve {
                kurento: args.kurento,
            };
            (settings(&args), args.base, role)
        }
        Command::Media(args) => (settings(&args), args.base, Role::Media),
        Command::Signal(args) => {
            let settings = settings(&args);
            let role = Role::Signal {
                media_url: args.media_url,
            };
            (settings, args.base, role)
        }
        Command::Token(TokenCommand::Create(args)) => return token::token_create(args),
        Command::Rooms(args) => return rooms::rooms(args),
    };
    let config = match settings.and_then(|s| load(&base, s, &role)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sori: {e}");
            return ExitCode::from(2);
        }
    };
    if base.print_config {
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
    match runtime.block_on(run::run(config, role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sori: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration: defaults, file and command line, checked for what `role` runs.
fn load(base: &BaseArgs, settings: toml::Table, role: &Role) -> Result<Config, String> {
    let config = Config::load(base.config.as_deref(), settings).map_err(|e| e.to_string())?;
    if !matches!(role, Role::Media) {
        open_mode_allowed(&config)?;
    }
    if let Role::Signal { media_url: None } = role {
        if config.cluster.redis.is_none() {
            return Err(
                "sori signal needs the media server to drive: --media URL (one media \
                 server), or --redis URL (the media nodes of a cluster)"
                    .into(),
            );
        }
    }
    Ok(config)
}

/// Without API keys anyone can join: allowed on loopback (the quick start) or on purpose
/// (`--dev`), refused anywhere else.
fn open_mode_allowed(config: &Config) -> Result<(), String> {
    let listen = config.server.listen;
    if config.auth.keys.is_empty() && !config.auth.dev && !listen.ip().is_loopback() {
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
    use std::io::IsTerminal;
    // Colours only for a person at a terminal; under systemd (which sets JOURNAL_STREAM on the
    // stderr it hands the service) the journal stamps each line itself.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Json, _) => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TurnPlan;

    /// Loads the configuration `sori ARGS…` would run with (no file).
    fn configured(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from([&["sori"], args].concat()).map_err(|e| e.to_string())?;
        let settings = match &cli.command {
            Command::Serve(a) => settings(a),
            Command::Media(a) => settings(a),
            Command::Signal(a) => settings(a),
            Command::Token(_) | Command::Rooms(_) => unreachable!("not a server command"),
        }?;
        Config::load(None, settings).map_err(|e| e.to_string())
    }

    #[test]
    fn every_flag_sets_a_key_of_the_file() {
        let c = configured(&[
            "serve",
            "--log-format=json",
            "--listen=127.0.0.1:9000",
            "--room-mode=auto",
            "--ice-server=stun:a.example.org,stun:b.example.org",
            "--api-key=k.1",
            "--api-secret=0123456789abcdef0123456789abcdef",
            "--dev",
            "--allow-origin=https://app.example.org",
            "--trusted-proxy=10.0.0.1",
            "--metrics-token=m",
            "--metrics-listen=127.0.0.1:9100",
            "--recording-starts-per-hour=3",
            "--recordings-quota-gib=0.5",
            "--webhook=http://hooks.example.org/a,https://hooks.example.org/b",
            "--departure-timeout-secs=7",
            "--empty-timeout-secs=70",
            "--rtc-port=5000",
            "--rtc-tcp-port=443",
            "--no-rtc-tcp",
            "--advertise-ip=192.0.2.1",
            "--advertise-ip=2001:db8::1",
            "--kurento-listen=127.0.0.1:9888",
            "--kurento-path=/k",
            "--recordings-dir=/srv/rec",
            "--kurento-token=t",
            "--kurento-allow-origin=https://k.example.org",
            "--turn-listen=0.0.0.0:3479",
            "--turn-secret=s",
            "--turn-relay-ports=50000-50100",
            "--turn-credential-ttl=600",
            "--turn-allocations-per-username=2",
            "--turn-allocations-per-ip=4",
            "--turn-allow=10.0.0.0/8",
            "--turn-tls-listen=0.0.0.0:5350",
            "--turn-tls-cert=c.pem",
            "--turn-tls-key=k.pem",
            "--turn-tls-host=turn.example.org",
            "--kurento",
        ])
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.ice_servers.len(), 2);
        assert!(
            c.auth.dev && c.auth.keys.contains_key("k.1"),
            "a dotted key name"
        );
        assert_eq!(c.signal().metrics_token.as_deref(), Some("m"));
        assert_eq!(c.recording.quota, Some(1 << 29));
        assert_eq!(c.signal().webhooks.urls.len(), 2);
        assert_eq!(c.signal().room_timeouts.departure.as_secs(), 7);
        assert_eq!(c.signal().room_timeouts.empty.as_secs(), 70);
        assert_eq!(c.media.advertise_ip.len(), 2);
        assert!(c.tcp().is_none());
        assert_eq!(c.kurento().path, "/k");
        assert_eq!(c.kurento().access_token.as_deref(), Some("t"));
        assert_eq!(c.recording.dir, Some("/srv/rec".into()));
        let TurnPlan::Embedded {
            relay_ports,
            ttl,
            tls: Some(tls),
            ..
        } = c.turn()
        else {
            panic!("the embedded server with TLS");
        };
        assert_eq!(relay_ports, 50000..=50100);
        assert_eq!(ttl, std::time::Duration::from_secs(600));
        assert_eq!(tls.host.as_deref(), Some("turn.example.org"));
    }

    #[test]
    fn webhooks_need_a_key_and_http_urls() {
        let e = configured(&["serve", "--webhook=http://h.example.org/"]).unwrap_err();
        assert!(e.contains("API key"), "{e}");
        let e = configured(&[
            "serve",
            "--api-key=k",
            "--api-secret=0123456789abcdef0123456789abcdef",
            "--webhook=ftp://h.example.org/",
        ])
        .unwrap_err();
        assert!(e.contains("not http"), "{e}");
    }

    #[test]
    fn no_turn_wins_over_external_servers() {
        let c = configured(&[
            "signal",
            "--media=ws://m",
            "--turn-external=turn:t",
            "--no-turn",
        ]);
        assert_eq!(c.unwrap().turn(), TurnPlan::Off);
        let c = configured(&[
            "signal",
            "--media=ws://m",
            "--turn-external=turn:t",
            "--turn-secret=s",
        ]);
        assert!(matches!(c.unwrap().turn(), TurnPlan::External { .. }));
    }

    #[test]
    fn a_key_needs_its_secret() {
        let e = configured(&["media", "--print-config"]).map(|_| ());
        assert!(e.is_ok(), "{e:?}");
        let e = configured(&["serve", "--api-key=k"]).unwrap_err();
        assert!(e.contains("--api-key needs --api-secret"), "{e}");
        let e = configured(&["serve", "--api-secret=s"]).unwrap_err();
        assert!(e.contains("--api-secret needs --api-key"), "{e}");
    }
}
