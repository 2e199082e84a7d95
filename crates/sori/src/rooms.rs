//! `sori rooms`: the server API from the command line — list rooms and participants, remove or
//! mute someone, end a room, start and stop its recording. Each call carries a short-lived
//! token signed with a configured API key, with the grant that call needs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};
use sori_signal::auth::{Claims, VideoGrant};

use crate::config::Config;
use crate::flags::{settings, AuthFlags};

#[derive(Args, Serialize)]
pub struct RoomsArgs {
    /// TOML configuration file holding [auth.keys] (and server.listen for the default URL).
    #[arg(long, env = "SORI_CONFIG", value_name = "FILE", global = true)]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    auth: AuthFlags,
    /// The server's base URL [default: http:// and the configured --listen address].
    #[arg(long, env = "SORI_URL", value_name = "URL", global = true)]
    #[serde(skip)]
    url: Option<String>,
    /// Print the server's JSON answer as it is.
    #[arg(long, global = true)]
    #[serde(skip)]
    json: bool,
    #[command(subcommand)]
    #[serde(skip)]
    command: RoomsCommand,
}

#[derive(Subcommand, Clone)]
pub enum RoomsCommand {
    /// The open rooms, with how many are in each.
    List,
    /// Create a room before anyone joins (it ends after its empty timeout if nobody does).
    Create {
        room: String,
        /// Seconds it stays open while nobody has joined [default: the server's].
        #[arg(long)]
        empty_timeout: Option<u32>,
        /// The most participants it takes [default: the server's limit].
        #[arg(long)]
        max_participants: Option<u32>,
        /// Application data, given to everyone in it.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Who is in ROOM, with their tracks.
    Participants { room: String },
    /// Remove IDENTITY from ROOM (it may join again with a valid token).
    Remove { room: String, identity: String },
    /// Mute IDENTITY's audio or video in ROOM at the server (`--off` lifts it).
    Mute {
        room: String,
        identity: String,
        /// audio or video.
        #[arg(value_parser = ["audio", "video"])]
        kind: String,
        #[arg(long)]
        off: bool,
    },
    /// End ROOM: everyone in it is told and disconnected.
    End { room: String },
    /// Start or stop recording ROOM.
    Record {
        room: String,
        #[arg(value_parser = ["on", "off"])]
        on: String,
    },
}

/// `sori rooms …`: exit 0 on success, 1 when the server refused, 2 on a usage error.
pub fn rooms(args: RoomsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sori: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match Client::new(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sori: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&client, args.command.clone(), args.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sori: {e}");
            ExitCode::from(1)
        }
    }
}

struct Client {
    base: String,
    key: String,
    secret: String,
    http: reqwest::Client,
}

impl Client {
    fn new(args: &RoomsArgs) -> Result<Client, String> {
        let config =
            Config::load(args.config.as_deref(), settings(args)?).map_err(|e| e.to_string())?;
        let keys = config.keys();
        let key = match args.auth.api_key.clone() {
            Some(k) => k,
            None => match keys.names().as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(
                        "no API key: give --api-key and --api-secret (or SORI_API_KEY \
                                and SORI_API_SECRET), or a config file with [auth.keys]"
                            .into(),
                    )
                }
                _ => {
                    return Err("several API keys are configured: choose one with --api-key".into())
                }
            },
        };
        let secret = keys
            .secret(&key)
            .ok_or_else(|| format!("no API key {key} is configured"))?
            .to_string();
        let base = args.url.clone().unwrap_or_else(|| {
            let listen = config.server.listen;
            let port = listen.port();
            if listen.ip().is_unspecified() || listen.ip().is_loopback() {
                format!("http://127.0.0.1:{port}")
            } else {
                format!("http://{listen}")
            }
        });
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            key,
            secret,
            http,
        })
    }

    /// A token valid for a minute with the grant `f` sets.
    fn token(&self, f: impl FnOnce(&mut VideoGrant)) -> Result<String, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut video = VideoGrant::default();
        f(&mut video);
        let claims = Claims {
            iss: self.key.clone(),
            nbf: Some(now.saturating_sub(1)),
            exp: Some(now + 60),
            video: Some(video),
            ..Default::default()
        };
        sori_signal::auth::sign(&claims, &self.secret)
    }

    async fn call(
        &self,
        service: &str,
        method: &str,
        token: String,
        body: Value,
    ) -> Result<Value, String> {
        let url = format!("{}/twirp/{service}/{method}", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| format!("{url} answered {status}: {}", text.trim()))?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{method} refused ({status}, {}): {}",
                value["code"].as_str().unwrap_or("?"),
                value["msg"].as_str().unwrap_or("")
            ))
        }
    }
}

const ROOMS: &str = "livekit.RoomService";

async fn run(c: &Client, command: RoomsCommand, raw: bool) -> Result<(), String> {
    let admin = |room: &str| {
        let room = room.to_string();
        c.token(move |g| {
            g.room = Some(room);
            g.room_admin = Some(true);
        })
    };
    let answer = match &command {
        RoomsCommand::List => {
            let t = c.token(|g| g.room_list = Some(true))?;
            c.call(ROOMS, "ListRooms", t, json!({})).await?
        }
        RoomsCommand::Create {
            room,
            empty_timeout,
            max_participants,
            metadata,
        } => {
            let t = c.token(|g| g.room_create = Some(true))?;
            let body = json!({
                "name": room,
                "emptyTimeout": empty_timeout.unwrap_or(0),
                "maxParticipants": max_participants.unwrap_or(0),
                "metadata": metadata.clone().unwrap_or_default(),
            });
            c.call(ROOMS, "CreateRoom", t, body).await?
        }
        RoomsCommand::Participants { room } => {
            c.call(
                ROOMS,
                "ListParticipants",
                admin(room)?,
                json!({"room": room}),
            )
            .await?
        }
        RoomsCommand::Remove { room, identity } => {
            let body = json!({"room": room, "identity": identity});
            c.call(ROOMS, "RemoveParticipant", admin(room)?, body)
                .await?
        }
        RoomsCommand::Mute {
            room,
            identity,
            kind,
            off,
        } => {
            // The server mutes a kind of media; any published track of that kind names it.
            let body = json!({"room": room, "identity": identity});
            let p = c.call(ROOMS, "GetParticipant", admin(room)?, body).await?;
            let wanted = kind.to_ascii_uppercase();
            let sid = p["tracks"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["type"] == wanted.as_str()))
                .and_then(|t| t["sid"].as_str())
                .ok_or_else(|| format!("{identity} publishes no {kind} in {room}"))?
                .to_string();
            let body = json!({"room": room, "identity": identity, "trackSid": sid, "muted": !off});
            c.call(ROOMS, "MutePublishedTrack", admin(room)?, body)
                .await?
        }
        RoomsCommand::End { room } => {
            let t = c.token(|g| g.room_create = Some(true))?;
            c.call(ROOMS, "DeleteRoom", t, json!({"room": room}))
                .await?
        }
        RoomsCommand::Record { room, on } => {
            let room_name = room.clone();
            let t = c.token(move |g| {
                g.room = Some(room_name);
                g.room_record = Some(true);
            })?;
            let method = if on == "on" {
                "StartRecording"
            } else {
                "StopRecording"
            };
            c.call("sori.RecordingService", method, t, json!({"room": room}))
                .await?
        }
    };
    if raw {
        println!("{answer}");
    } else {
        print!("{}", describe(&command, &answer));
    }
    Ok(())
}

/// What a person reads of an answer.
fn describe(command: &RoomsCommand, answer: &Value) -> String {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    match command {
        RoomsCommand::List => {
            let rooms = list(&answer["rooms"]);
            if rooms.is_empty() {
                return "no rooms\n".into();
            }
            rooms
                .iter()
                .map(|r| {
                    format!(
                        "{}  {} participant(s)  {}{}\n",
                        r["name"].as_str().unwrap_or(""),
                        r["num_participants"],
                        r["sori_mode"].as_str().unwrap_or(""),
                        if r["active_recording"] == true {
                            "  recording"
                        } else {
                            ""
                        }
                    )
                })
                .collect()
        }
        RoomsCommand::Participants { room } => {
            let people = list(&answer["participants"]);
            if people.is_empty() {
                return format!("nobody in {room}\n");
            }
            people
                .iter()
                .map(|p| {
                    let tracks: Vec<String> = list(&p["tracks"])
                        .iter()
                        .map(|t| {
                            format!(
                                "{}{}",
                                t["source"].as_str().unwrap_or("").to_ascii_lowercase(),
                                if t["muted"] == true { " (muted)" } else { "" }
                            )
                        })
                        .collect();
                    format!(
                        "{}  {:?}  {}  {}\n",
                        p["identity"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or(""),
                        p["state"].as_str().unwrap_or("").to_ascii_lowercase(),
                        if tracks.is_empty() {
                            "no tracks".to_string()
                        } else {
                            tracks.join(", ")
                        }
                    )
                })
                .collect()
        }
        RoomsCommand::Create { room, .. } => format!(
            "{room} is open ({})\n",
            answer["sid"].as_str().unwrap_or("")
        ),
        RoomsCommand::Remove { room, identity } => format!("{identity} removed from {room}\n"),
        RoomsCommand::Mute {
            identity,
            kind,
            off,
            ..
        } => format!(
            "{identity}'s {kind} {}\n",
            if *off { "unmuted" } else { "muted" }
        ),
        RoomsCommand::End { room } => format!("{room} ended\n"),
        RoomsCommand::Record { room, on } => match (on.as_str(), answer["recording"].as_str()) {
            ("on", Some(name)) => format!("recording {room} as {name}\n"),
            ("off", Some(name)) => format!("stopped recording {room} ({name})\n"),
            _ => format!("{room} was not being recorded\n"),
        },
    }
}
