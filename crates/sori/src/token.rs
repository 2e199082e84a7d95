//! `sori token create`: an access token, and a join URL, signed with a configured API key.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use sori_signal::auth::{Claims, VideoGrant};

use crate::config::Config;
use crate::flags::{settings, AuthFlags};

#[derive(Args, Serialize)]
pub struct TokenArgs {
    /// TOML configuration file holding [auth.keys].
    #[arg(long, env = "SORI_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    auth: AuthFlags,
    /// The room the token lets its holder join.
    #[arg(long)]
    #[serde(skip)]
    room: String,
    /// The participant's identity (unique in the room: a second join replaces the first).
    #[arg(long)]
    #[serde(skip)]
    identity: String,
    /// Display name [default: the identity].
    #[arg(long)]
    #[serde(skip)]
    name: Option<String>,
    /// How long the token is valid: 90s, 30m, 6h, 2d [default: 6h].
    #[arg(long, default_value = "6h", value_parser = parse_ttl)]
    #[serde(skip)]
    ttl: u64,
    /// What it may do, comma-separated: publish, subscribe, chat, record, admin, or a source
    /// (camera, microphone, screen_share) to publish only those
    /// [default: publish,subscribe,chat].
    #[arg(long, value_delimiter = ',', default_value = "publish,subscribe,chat")]
    #[serde(skip)]
    grant: Vec<String>,
    /// Base URL of the join link [default: http:// and the configured --listen address].
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
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

/// `sori token create`: prints the token, then the join URL; exit 2 on a usage error.
pub fn token_create(args: TokenArgs) -> ExitCode {
    match create(args) {
        Ok((token, url)) => {
            println!("{token}");
            println!("{url}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sori: {e}");
            ExitCode::from(2)
        }
    }
}

fn create(args: TokenArgs) -> Result<(String, String), String> {
    let config =
        Config::load(args.config.as_deref(), settings(&args)?).map_err(|e| e.to_string())?;
    let key = match args.auth.api_key.clone() {
        Some(k) => k,
        None if config.auth.keys.len() == 1 => {
            config.auth.keys.keys().next().cloned().unwrap_or_default()
        }
        None if config.auth.keys.is_empty() => {
            return Err(
                "no API key: give --api-key and --api-secret (or SORI_API_KEY and \
                 SORI_API_SECRET), or a config file with [auth.keys]"
                    .into(),
            )
        }
        None => return Err("several API keys are configured: choose one with --api-key".into()),
    };
    let keys = config.keys();
    let secret = keys
        .secret(&key)
        .ok_or_else(|| format!("no API key {key} is configured"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        iss: key,
        sub: Some(args.identity.clone()),
        name: Some(args.name.unwrap_or_else(|| args.identity.clone())),
        nbf: Some(now),
        exp: Some(now + args.ttl),
        jti: Some(args.identity),
        video: Some(grant(&args.room, &args.grant)?),
        ..Default::default()
    };
    let token = sori_signal::auth::sign(&claims, secret)?;
    let base = args.url.unwrap_or_else(|| {
        let listen = config.server.listen;
        let host = if listen.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), listen.port())
        } else {
            listen
        };
        format!("http://{host}")
    });
    let url = format!(
        "{}/?room={}&token={token}",
        base.trim_end_matches('/'),
        percent_encoded(&args.room)
    );
    Ok((token, url))
}

/// The grant of `--grant`'s words, for one room.
fn grant(room: &str, words: &[String]) -> Result<VideoGrant, String> {
    let mut video = VideoGrant {
        room: Some(room.to_string()),
        room_join: Some(true),
        can_publish: Some(false),
        can_subscribe: Some(false),
        can_publish_data: Some(false),
        ..Default::default()
    };
    let mut sources = Vec::new();
    for g in words {
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
                return Err(format!(
                    "--grant: unknown {other:?} (publish, subscribe, chat, record, admin, \
                     camera, microphone, screen_share, screen_share_audio)"
                ))
            }
        }
    }
    if !sources.is_empty() {
        video.can_publish_sources = Some(sources);
    }
    Ok(video)
}

/// `s` as a URL query value.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
