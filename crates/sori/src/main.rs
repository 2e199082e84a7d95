//! The `sori` binary: one command runs the whole conferencing server.

#![forbid(unsafe_code)]

mod config;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sori_net::MediaConfig;
use sori_signal::Signal;

use crate::config::{Config, LogFormat, RoomModeName};

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
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (overrides the built-in defaults it names).
    #[arg(long, env = "SORI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP/WebSocket address [default: 127.0.0.1:8080, loopback only].
    #[arg(long, env = "SORI_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The one UDP port all media uses [default: 40000; 0 picks a free port].
    #[arg(long, env = "SORI_RTC_PORT", value_name = "PORT")]
    rtc_port: Option<u16>,
    /// IP address browsers are told to send media to [default: first non-loopback address].
    #[arg(long, env = "SORI_ADVERTISE_IP", value_name = "IP")]
    advertise_ip: Option<IpAddr>,
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
    /// Log format [default: text]. Log levels come from RUST_LOG (default: info).
    #[arg(long, env = "SORI_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML-like text and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sori: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = args.listen {
        config.server.listen = v;
    }
    if let Some(v) = args.rtc_port {
        config.media.rtc_port = v;
    }
    if let Some(v) = args.advertise_ip {
        config.media.advertise_ip = Some(v);
    }
    if let Some(v) = args.room_mode {
        config.server.room_mode = v;
    }
    if !args.ice_servers.is_empty() {
        config.server.ice_servers = args.ice_servers;
    }
    if let Some(v) = args.log_format {
        config.log.format = v;
    }
    if args.print_config {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    init_logging(config.log.format);
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
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sori: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config) -> Result<(), String> {
    // Checked when the configuration was loaded.
    let sfu = config.sfu()?;
    let media = sori_net::start(MediaConfig {
        bind: SocketAddr::new(config.media.bind_ip, config.media.rtc_port),
        advertise: config.media.advertise_ip.into_iter().collect(),
        sfu,
    })
    .await
    .map_err(|e| {
        format!(
            "cannot open the media port UDP {}:{}: {e}",
            config.media.bind_ip, config.media.rtc_port
        )
    })?;

    let app = Signal::new(media.handle.clone(), config.signal()).router();
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let http = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        "Sori {} listening on http://{http} (media: UDP {}, advertised as {})",
        env!("CARGO_PKG_VERSION"),
        media.local_addr,
        media
            .candidates
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("HTTP server failed: {e}"))?;
    media.handle.shutdown();
    let _ = media.task.await;
    tracing::info!("stopped");
    Ok(())
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
