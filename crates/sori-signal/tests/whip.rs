//! WHIP and WHEP over plain HTTP, with str0m clients on loopback: a publisher that is a
//! participant of its room, viewers that receive its frames byte for byte, sessions that end
//! with DELETE, ICE restarts with PATCH, and every refusal, each leaving nothing behind.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    http_request, server, server_with, server_with_core, Client, HttpResponse, Server, LOCALHOST,
    WAIT,
};
use sori_signal::auth::{sign, Claims, Keys, VideoGrant};
use sori_signal::SignalConfig;
use sori_testkit::udp::{self, Flow, Pacer, Stage, Tick};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::{Event, Rtc, RtcConfig, RtcError};
use tokio::sync::{mpsc, oneshot};

/// The synthetic frame number `seq`: a VP8 frame tag (a keyframe with its start code and
/// size, as an encoder writes them) or Opus bytes, then `SORI`, the number and filler.
fn frame(video: bool, seq: u32, keyframe: bool) -> Vec<u8> {
    let (mut v, len) = match (video, keyframe) {
        (false, _) => (b"OPUS".to_vec(), 60),
        (true, true) => (
            vec![0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01],
            2000,
        ),
        (true, false) => (vec![0x11, 0, 0], 900),
    };
    v.extend_from_slice(b"SORI");
    v.extend_from_slice(&seq.to_be_bytes());
    while v.len() < len {
        v.push((seq as usize + v.len()) as u8);
    }
    v
}

/// What a client received: frames whose every byte is what the publisher wrote.
#[derive(Debug, Default, Clone)]
struct Got {
    connected: bool,
    video_frames: u32,
    audio_frames: u32,
    damaged: u32,
}

fn check(data: &[u8], video: bool) -> bool {
    let at = match (video, data.first()) {
        (false, _) => 4,
        (true, Some(b)) if b & 1 == 0 => 10,
        (true, _) => 3,
    };
    let Some(seq) = data
        .get(at + 4..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return false;
    };
    let keyframe = video && at == 10;
    data == frame(video, seq, keyframe).as_slice()
}

struct Runner {
    /// The m-lines it publishes on (a publisher).
    send: Option<(Mid, Mid)>,
    pacer: Pacer,
    video_seq: u32,
    audio_seq: u32,
    got: Arc<Mutex<Got>>,
    ctl: mpsc::Receiver<Ctl>,
    /// An ICE restart's offer, waiting for its answer.
    restarting: Option<SdpPendingOffer>,
}

/// What a test asks of a running client.
enum Ctl {
    /// Move to a new address and restart ICE: new credentials, given back (ufrag, pwd).
    RestartIce(oneshot::Sender<(String, String)>),
    /// The answer to the restart.
    Answer(String),
}

impl udp::Handler for Runner {
    type Command = Option<Ctl>;

    fn tick(&mut self, rtc: &mut Rtc, now: Instant) -> Tick {
        let Some((audio, video)) = self.send else {
            return Tick::Wait(None);
        };
        if !self.got.lock().unwrap().connected {
            self.pacer.hold(now);
            return Tick::Wait(None);
        }
        if self.pacer.audio_due(now) {
            let ts = MediaTime::new(self.audio_seq as u64 * 960, Frequency::FORTY_EIGHT_KHZ);
            write(rtc, audio, now, ts, &frame(false, self.audio_seq, false));
            self.audio_seq += 1;
            return Tick::Wrote;
        }
        if let Some(f) = self.pacer.video_due(now) {
            let ts = MediaTime::new(self.video_seq as u64 * 3000, Frequency::NINETY_KHZ);
            write(
                rtc,
                video,
                now,
                ts,
                &frame(true, self.video_seq, f.keyframe),
            );
            self.video_seq += 1;
            return Tick::Wrote;
        }
        Tick::Wait(self.pacer.next_due())
    }

    fn on_event(&mut self, _rtc: &mut Rtc, e: Event) {
        let mut got = self.got.lock().unwrap();
        match e {
            Event::Connected => got.connected = true,
            Event::MediaData(d) => {
                let video = d.params.spec().codec == Codec::Vp8;
                if !check(&d.data, video) {
                    got.damaged += 1;
                } else if video {
                    got.video_frames += 1;
                } else {
                    got.audio_frames += 1;
                }
            }
            Event::KeyframeRequest(_) => self.pacer.request_keyframe(),
            _ => {}
        }
    }

    fn on_error(&mut self, _e: RtcError, stage: Stage) -> Flow {
        match stage {
            Stage::Input => Flow::Continue,
            Stage::Output => Flow::Stop,
        }
    }

    /// The client stops when its [`Running`] is dropped.
    async fn next_command(&mut self) -> Option<Ctl> {
        self.ctl.recv().await
    }

    async fn on_command(&mut self, peer: &mut udp::Peer, command: Option<Ctl>) -> Flow {
        match command {
            None => return Flow::Stop,
            Some(Ctl::RestartIce(reply)) => {
                // The client moves (a new socket: a new address), as after a network change;
                // only checks with the new credentials can reach the server from there.
                let socket = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
                peer.local = socket.local_addr().unwrap();
                peer.socket = socket;
                let mut api = peer.rtc.sdp_api();
                let creds = api.ice_restart(false);
                let (_, pending) = api.apply().expect("an ICE restart is an offer");
                self.restarting = Some(pending);
                let _ = reply.send((creds.ufrag, creds.pass));
            }
            Some(Ctl::Answer(sdp)) => {
                let pending = self.restarting.take().expect("a restart waits");
                let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                peer.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                // str0m restarts its ICE agent as the answer comes, dropping the old address's
                // candidate: the new one is added after.
                let host = str0m::Candidate::host(peer.local, "udp").unwrap();
                peer.rtc.add_local_candidate(host);
            }
        }
        Flow::Continue
    }
}

fn write(rtc: &mut Rtc, mid: Mid, now: Instant, ts: MediaTime, data: &[u8]) {
    let Some(writer) = rtc.writer(mid) else {
        return;
    };
    let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
        return;
    };
    let _ = writer.write(pt, now, ts, data.to_vec());
}

/// A WHIP publisher or WHEP viewer whose offer is made; [`Media::answered`] starts its media.
struct Media {
    peer: udp::Peer,
    pending: SdpPendingOffer,
    offer: String,
    send: Option<(Mid, Mid)>,
}

/// A running client.
struct Running {
    got: Arc<Mutex<Got>>,
    ctl: mpsc::Sender<Ctl>,
}

impl Media {
    /// Opus and VP8 to send, as an encoder offers them.
    async fn publisher() -> Media {
        Self::publisher_with(udp::config()).await
    }

    async fn publisher_with(config: RtcConfig) -> Media {
        let mut peer = udp::Peer::bind(LOCALHOST, config).await.unwrap();
        let offer = peer.offer(true, true).unwrap();
        Media {
            send: Some((offer.audio.unwrap(), offer.video.unwrap())),
            pending: offer.pending,
            offer: offer.sdp,
            peer,
        }
    }

    /// Video and audio to receive, as a WHEP player offers them.
    async fn viewer() -> Media {
        let mut peer = udp::Peer::bind(LOCALHOST, udp::config()).await.unwrap();
        let mut api = peer.rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        Media {
            send: None,
            pending,
            offer: offer.to_sdp_string(),
            peer,
        }
    }

    fn answered(mut self, answer: &HttpResponse) -> Running {
        let sdp = String::from_utf8(answer.body.clone()).unwrap();
        let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
        self.peer
            .rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .unwrap();
        let got = Arc::new(Mutex::new(Got::default()));
        let (ctl, commands) = mpsc::channel(4);
        let mut runner = Runner {
            send: self.send,
            pacer: Pacer::new(
                Some(Duration::from_millis(20)),
                Some(Duration::from_millis(33)),
                Duration::from_secs(2),
                Instant::now(),
            ),
            video_seq: 0,
            audio_seq: 0,
            got: got.clone(),
            ctl: commands,
            restarting: None,
        };
        let mut peer = self.peer;
        tokio::spawn(async move { udp::run(&mut peer, &mut runner).await });
        Running { got, ctl }
    }
}

impl Running {
    /// Restarts ICE at the client; returns its new credentials.
    async fn restart_ice(&self) -> (String, String) {
        let (reply, creds) = oneshot::channel();
        self.ctl.send(Ctl::RestartIce(reply)).await.unwrap();
        creds.await.unwrap()
    }

    async fn answer(&self, sdp: String) {
        self.ctl.send(Ctl::Answer(sdp)).await.unwrap();
    }

    fn got(&self) -> Got {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `enough` holds of what it received.
    async fn until(&self, what: &str, enough: impl Fn(&Got) -> bool) -> Got {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.got();
            if enough(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: only {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn post(http: SocketAddr, path: &str, headers: &[(&str, &str)], sdp: &str) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/sdp")];
    all.extend_from_slice(headers);
    http_request(http, "POST", path, &all, sdp.as_bytes()).await
}

/// POSTs `media`'s offer to `path`, which must answer `201 Created`, and starts the client
/// on the answer; returns the response (its `Location`, `ETag`…) and the running client.
async fn start(
    http: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    media: Media,
) -> (HttpResponse, Running) {
    let r = post(http, path, headers, &media.offer).await;
    assert_eq!(r.status, 201, "{path}: {}", text(&r));
    let running = media.answered(&r);
    (r, running)
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

/// The server's counts that a refusal must not change.
async fn state(s: &Server) -> [u64; 5] {
    [
        s.metric("sori_participants").await,
        s.metric("sori_whip_sessions").await,
        s.metric("sori_whep_sessions").await,
        s.metric("sori_media_peers").await,
        s.metric("sori_rooms").await,
    ]
}

async fn wait_metric(s: &Server, name: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = s.metric(name).await;
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {v}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_is_a_participant_whose_frames_whep_viewers_receive_intact() {
    let s = server().await;
    let (mut ada, _) = Client::join(&s.url, "live", "Ada").await;

    let publisher = Media::publisher().await;
    let r = post(s.http, "/whip/live?name=Encoder", &[], &publisher.offer).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with("/whip-sessions/"), "{location}");
    assert!(r.header("etag").is_some_and(|t| t.starts_with('"')));
    assert_eq!(
        r.header("accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    let joined = ada.expect("participant-joined").await;
    assert_eq!(joined["participant"]["name"], "Encoder");
    assert_eq!(joined["participant"]["ingress"], true);
    let encoder_id = joined["participant"]["id"].as_str().unwrap().to_string();
    let publishing = publisher.answered(&r);
    publishing
        .until("the publisher connected", |g| g.connected)
        .await;

    // One viewer names the publisher, one watches whoever has the floor.
    let mut viewers = Vec::new();
    for path in ["/whep/live/Encoder", "/whep/live"] {
        let (r, watching) = start(s.http, path, &[], Media::viewer().await).await;
        let location = r.header("location").unwrap().to_string();
        assert!(location.starts_with("/whep-sessions/"), "{location}");
        viewers.push((watching, location));
    }
    for (viewer, location) in &viewers {
        let got = viewer
            .until(location, |g| g.video_frames >= 30 && g.audio_frames >= 30)
            .await;
        assert_eq!(got.damaged, 0, "{got:?}");
    }
    // Nobody in the room sees the viewers.
    assert_eq!(s.metric("sori_participants").await, 2);
    assert_eq!(s.metric("sori_whip_sessions").await, 1);
    assert_eq!(s.metric("sori_whep_sessions").await, 2);

    for (_, location) in &viewers {
        let r = http_request(s.http, "DELETE", location, &[], b"").await;
        assert_eq!(r.status, 200, "{}", text(&r));
        let again = http_request(s.http, "DELETE", location, &[], b"").await;
        assert_eq!(again.status, 404);
    }
    assert_eq!(s.metric("sori_whep_sessions").await, 0);

    // A WHEP session's location does not end a WHIP session, and the other way round.
    let wrong = location.replace("/whip-sessions/", "/whep-sessions/");
    assert_eq!(
        http_request(s.http, "DELETE", &wrong, &[], b"")
            .await
            .status,
        404
    );
    let r = http_request(s.http, "DELETE", &location, &[], b"").await;
    assert_eq!(r.status, 200);
    let left = ada.expect("participant-left").await;
    assert_eq!(left["id"], encoder_id.as_str());
    assert_eq!(left["reason"], "left");
    wait_metric(&s, "sori_media_peers", 0).await;
    assert_eq!(s.metric("sori_participants").await, 1);
    assert_eq!(s.metric("sori_whip_sessions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_media_stops_leaves_the_room() {
    // An encoder that goes away without a DELETE: its media times out, and it leaves.
    let core = sori_media::sori_sfu::SfuConfig {
        ice_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let s = server_with_core(SignalConfig::default(), core).await;
    let (mut ada, _) = Client::join(&s.url, "quiet", "Ada").await;
    let (_, running) = start(s.http, "/whip/quiet", &[], Media::publisher().await).await;
    let joined = ada.expect("participant-joined").await;
    assert_eq!(joined["participant"]["name"], "WHIP");
    running.until("connected", |g| g.connected).await;
    drop(running);
    let left = ada.expect("participant-left").await;
    assert_eq!(left["id"], joined["participant"]["id"]);
    assert_eq!(left["reason"], "timeout");
    wait_metric(&s, "sori_whip_sessions", 0).await;
}

const KEY: &str = "APIwhip";
const SECRET: &str = "whip-test-secret-0123456789abcdefgh";

/// An encoder's claims for `room` (identity `encoder-<room>`, name `Stream`).
fn claims_for(room: &str) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        iss: KEY.into(),
        sub: Some(format!("encoder-{room}")),
        name: Some("Stream".into()),
        nbf: Some(now - 1),
        exp: Some(now + 600),
        video: Some(VideoGrant {
            room: Some(room.into()),
            room_join: Some(true),
            ..VideoGrant::default()
        }),
        ..Claims::default()
    }
}

fn token(room: &str, f: impl FnOnce(&mut VideoGrant)) -> String {
    let mut claims = claims_for(room);
    f(claims.video.as_mut().unwrap());
    sign(&claims, SECRET).unwrap()
}

/// A request that must be refused: what it is, where it goes, its headers and body, and the
/// status and a piece of the reason expected.
type Refused<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, String)>,
    String,
    u16,
    &'a str,
);

fn refused<'a>(
    what: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: String,
    status: u16,
    reason: &'a str,
) -> Refused<'a> {
    (what, path, headers, body, status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_reason_and_leaves_nothing_behind() {
    let s = server_with(SignalConfig {
        keys: Keys::new([(KEY.to_string(), SECRET.to_string())]),
        anonymous: false,
        ..SignalConfig::default()
    })
    .await;
    let good = token("show", |_| {});
    let bearer = format!("Bearer {good}");
    let offer = Media::publisher().await.offer;
    let viewer = Media::viewer().await.offer;
    let before = state(&s).await;

    let long_room = format!("/whip/{}", "r".repeat(65));
    let refusals = [
        refused(
            "no token",
            "/whip/show",
            vec![("Content-Type", "application/sdp".into())],
            offer.clone(),
            401,
            "needs an access token",
        ),
        refused(
            "a token signed with another secret",
            "/whip/show",
            vec![
                ("Content-Type", "application/sdp".into()),
                (
                    "Authorization",
                    format!(
                        "Bearer {}",
                        sign(&claims_for("show"), "another-secret-0123456789abcdefghij").unwrap()
                    ),
                ),
            ],
            offer.clone(),
            401,
            "signature",
        ),
        refused(
            "a token for another room",
            "/whip/other",
            vec![
                ("Content-Type", "application/sdp".into()),
                ("Authorization", bearer.clone()),
            ],
            offer.clone(),
            403,
            "another room",
        ),
        refused(
            "a token without canPublish",
            "/whip/show",
            vec![
                ("Content-Type", "application/sdp".into()),
                (
                    "Authorization",
                    format!("Bearer {}", token("show", |v| v.can_publish = Some(false))),
                ),
            ],
            offer.clone(),
            403,
            "canPublish",
        ),
        refused(
            "JSON instead of SDP",
            "/whip/show",
            vec![
                ("Content-Type", "application/json".into()),
                ("Authorization", bearer.clone()),
            ],
            "{\"sdp\":\"v=0\"}".into(),
            415,
            "application/sdp",
        ),
        refused(
            "no content type",
            "/whep/show",
            vec![("Authorization", bearer.clone())],
            viewer.clone(),
            415,
            "application/sdp",
        ),
        refused(
            "text that is no SDP",
            "/whip/show",
            vec![
                ("Content-Type", "application/sdp".into()),
                ("Authorization", bearer.clone()),
            ],
            "hello".into(),
            400,
            "not an SDP offer",
        ),
        refused(
            "an SDP without its ICE and DTLS lines",
            "/whip/show",
            vec![
                ("Content-Type", "application/sdp".into()),
                ("Authorization", bearer.clone()),
            ],
            offer
                .lines()
                .filter(|l| !l.starts_with("a=fingerprint") && !l.starts_with("a=ice-"))
                .map(|l| format!("{l}\r\n"))
                .collect(),
            400,
            "offer was refused",
        ),
        refused(
            "a WHEP viewer of a room that does not exist",
            "/whep/show",
            vec![
                ("Content-Type", "application/sdp".into()),
                ("Authorization", bearer.clone()),
            ],
            viewer.clone(),
            404,
            "no room",
        ),
        refused(
            "a room name that is too long",
            &long_room,
            vec![
                ("Content-Type", "application/sdp".into()),
                ("Authorization", bearer.clone()),
            ],
            offer.clone(),
            400,
            "room name",
        ),
    ];
    for (what, path, headers, body, status, reason) in refusals {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = http_request(s.http, "POST", path, &headers, body.as_bytes()).await;
        assert_eq!(r.status, status, "{what}: {}", text(&r));
        assert!(text(&r).contains(reason), "{what}: {}", text(&r));
        if status == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        }
        assert_eq!(state(&s).await, before, "{what} left something behind");
    }

    // An offer larger than any SDP: refused before it is read whole.
    let huge = format!("v=0\r\n{}", "a=x-filler\r\n".repeat(6_000));
    let r = post(s.http, "/whip/show", &[("Authorization", &bearer)], &huge).await;
    assert_eq!(r.status, 413, "{}", text(&r));
    assert_eq!(
        state(&s).await,
        before,
        "a large body left something behind"
    );

    // A publisher makes the room (VP8); then what needs it.
    let auth = [("Authorization", bearer.as_str())];
    let (_, running) = start(s.http, "/whip/show", &auth, Media::publisher().await).await;
    running.until("connected", |g| g.connected).await;
    wait_metric(&s, "sori_tracks", 2).await;
    let during = state(&s).await;

    let h264 = Media::publisher_with(
        RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true),
    )
    .await
    .offer;
    // Another identity: the same one would replace the publisher.
    let second = format!("Bearer {}", {
        let mut claims = claims_for("show");
        claims.sub = Some("camera-2".into());
        sign(&claims, SECRET).unwrap()
    });
    let r = post(s.http, "/whip/show", &[("Authorization", &second)], &h264).await;
    assert_eq!(r.status, 406, "{}", text(&r));
    assert!(text(&r).contains("room uses vp8 video"), "{}", text(&r));
    assert_eq!(
        state(&s).await,
        during,
        "a codec refusal left something behind"
    );

    let no_subscribe = format!(
        "Bearer {}",
        token("show", |v| v.can_subscribe = Some(false))
    );
    let r = post(
        s.http,
        "/whep/show",
        &[("Authorization", &no_subscribe)],
        &viewer,
    )
    .await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert!(text(&r).contains("canSubscribe"));
    let r = post(
        s.http,
        "/whep/show/Nobody",
        &[("Authorization", &bearer)],
        &viewer,
    )
    .await;
    assert_eq!(r.status, 404, "{}", text(&r));
    assert!(
        text(&r).contains("no participant \"Nobody\""),
        "{}",
        text(&r)
    );
    // An offer with nothing to receive on.
    let r = post(s.http, "/whep/show", &[("Authorization", &bearer)], &offer).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(text(&r).contains("recvonly"), "{}", text(&r));
    wait_metric(&s, "sori_media_peers", during[3]).await;
    assert_eq!(
        state(&s).await,
        during,
        "a WHEP refusal left something behind"
    );

    // And the viewer with every right gets the stream.
    let (_, watching) = start(s.http, "/whep/show/Stream", &auth, Media::viewer().await).await;
    watching
        .until("the viewer's frames", |g| g.video_frames >= 10)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_takes_trickled_candidates_and_restarts_ice_with_media_going_on() {
    // The publisher moves to a new address and restarts ICE: its media reaches the server
    // from there only once both ends hold the new credentials (and the old path is gone).
    let core = sori_media::sori_sfu::SfuConfig {
        ice_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let s = server_with_core(SignalConfig::default(), core).await;
    let publisher = Media::publisher().await;
    let r = post(s.http, "/whip/ice?name=Encoder", &[], &publisher.offer).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let location = r.header("location").unwrap().to_string();
    let etag = r.header("etag").unwrap().to_string();
    let answer = text(&r);
    // The publisher's own credentials, as its offer gave them.
    let own: String = publisher
        .offer
        .lines()
        .filter(|l| l.starts_with("a=ice-ufrag:") || l.starts_with("a=ice-pwd:"))
        .take(2)
        .map(|l| format!("{l}\r\n"))
        .collect();
    let running = publisher.answered(&r);
    running.until("connected", |g| g.connected).await;
    let (_, watching) = start(s.http, "/whep/ice/Encoder", &[], Media::viewer().await).await;
    watching.until("frames", |g| g.video_frames >= 10).await;

    let trickle = format!(
        "{own}a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    );
    let patch = |headers: Vec<(&'static str, String)>, body: String, at: String| {
        let http = s.http;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            http_request(http, "PATCH", &at, &h, body.as_bytes()).await
        }
    };
    let ct = |t: &str| ("Content-Type", t.to_string());
    let r = patch(
        vec![ct("application/sdp")],
        trickle.clone(),
        location.clone(),
    )
    .await;
    assert_eq!(r.status, 415, "{}", text(&r));
    let if_match = |t: &str| ("If-Match", t.to_string());
    let sdpfrag = "application/trickle-ice-sdpfrag";
    let r = patch(
        vec![ct(sdpfrag), if_match(&etag)],
        trickle.clone(),
        location.clone(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let r = patch(
        vec![ct(sdpfrag), if_match("\"stale\"")],
        trickle.clone(),
        location.clone(),
    )
    .await;
    assert_eq!(r.status, 412, "{}", text(&r));
    let r = patch(
        vec![ct(sdpfrag)],
        trickle.clone(),
        "/whip-sessions/unknown".into(),
    )
    .await;
    assert_eq!(r.status, 404, "{}", text(&r));
    let bad = "a=ice-ufrag:x y\r\na=ice-pwd:short\r\n".to_string();
    let r = patch(vec![ct(sdpfrag)], bad, location.clone()).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(text(&r).contains("ice-chars"), "{}", text(&r));

    // The publisher restarts ICE: its new credentials go in a PATCH, the server's come back.
    let (ufrag, pwd) = running.restart_ice().await;
    let restart = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let r = patch(
        vec![ct(sdpfrag), if_match(&etag)],
        restart.clone(),
        location.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("content-type"), Some(sdpfrag));
    let new_etag = r.header("etag").unwrap().to_string();
    assert_ne!(new_etag, etag);
    let body = text(&r);
    let value = |sdp: &str, name: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {name} in {sdp}"))
    };
    let (server_ufrag, server_pwd) = (value(&body, "a=ice-ufrag:"), value(&body, "a=ice-pwd:"));
    assert_ne!(server_ufrag, value(&answer, "a=ice-ufrag:"));
    assert!(body.contains("a=candidate:"), "{body}");
    // The publisher's answer: the first one with the server's new credentials and candidates
    // (which name the new ufrag).
    let candidates: String = body
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let restarted: String = answer
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:"))
        .map(|l| {
            if l.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{server_ufrag}\r\n")
            } else if l.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{server_pwd}\r\n{candidates}")
            } else {
                l.to_string()
            }
        })
        .collect();
    running.answer(restarted).await;
    let at_restart = watching.got();
    let after = watching
        .until("two more seconds of frames after the restart", |g| {
            g.video_frames >= at_restart.video_frames + 60
        })
        .await;
    assert_eq!(after.damaged, 0, "{after:?}");
    assert_eq!(s.metric("sori_whip_sessions").await, 1);
    // The old ETag no longer matches.
    let r = patch(
        vec![ct(sdpfrag), if_match(&etag)],
        restart,
        location.clone(),
    )
    .await;
    assert_eq!(r.status, 412, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_are_refused_and_allowed_ones_get_cors_headers() {
    let s = server_with(SignalConfig {
        allowed_origins: vec!["https://player.example".into()],
        ..SignalConfig::default()
    })
    .await;
    let (_ada, _) = Client::join(&s.url, "cors", "Ada").await;
    let r = http_request(
        s.http,
        "OPTIONS",
        "/whep/cors",
        &[
            ("Origin", "https://player.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://player.example")
    );
    assert!(r
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("Authorization")));
    assert!(r
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("Location")));
    let viewer = Media::viewer().await;
    let r = post(
        s.http,
        "/whep/cors",
        &[("Origin", "https://evil.example")],
        &viewer.offer,
    )
    .await;
    assert_eq!(r.status, 403, "{}", text(&r));
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(s.metric("sori_whep_sessions").await, 0);
    let r = post(
        s.http,
        "/whep/cors",
        &[("Origin", "https://player.example")],
        &viewer.offer,
    )
    .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://player.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_viewer_waits_for_its_publisher_to_return_and_ends_with_the_room() {
    let s = server_with(SignalConfig {
        room_timeouts: sori_signal::RoomTimeouts {
            departure: Duration::from_secs(1),
            ..Default::default()
        },
        ..SignalConfig::default()
    })
    .await;
    let (r, first) = start(
        s.http,
        "/whip/back?name=Encoder",
        &[],
        Media::publisher().await,
    )
    .await;
    let first_session = r.header("location").unwrap().to_string();
    first.until("connected", |g| g.connected).await;

    let (_, watching) = start(s.http, "/whep/back/Encoder", &[], Media::viewer().await).await;
    let before = watching.until("frames", |g| g.video_frames >= 10).await;

    // The encoder goes and comes back under the same name: the viewer, still there, gets it.
    let r = http_request(s.http, "DELETE", &first_session, &[], b"").await;
    assert_eq!(r.status, 200);
    drop(first);
    let (r, second) = start(
        s.http,
        "/whip/back?name=Encoder",
        &[],
        Media::publisher().await,
    )
    .await;
    let second_session = r.header("location").unwrap().to_string();
    assert_eq!(s.metric("sori_whep_sessions").await, 1);
    let after = watching
        .until("frames from the returned encoder", |g| {
            g.video_frames >= before.video_frames + 30
        })
        .await;
    assert_eq!(after.damaged, 0, "{after:?}");

    // The last one leaves; the room ends a second later, and its viewer with it.
    let r = http_request(s.http, "DELETE", &second_session, &[], b"").await;
    assert_eq!(r.status, 200);
    drop(second);
    wait_metric(&s, "sori_rooms", 0).await;
    wait_metric(&s, "sori_whep_sessions", 0).await;
    wait_metric(&s, "sori_media_peers", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_offers_are_answered_or_refused_and_leave_nothing_behind() {
    // Offers with lines dropped, doubled, swapped or bytes flipped: each one a publisher
    // (then ended) or a 4xx with a reason; the server stays as it was. (Sixty sessions from
    // one address: above the default join burst.)
    let s = server_with(SignalConfig {
        limits: sori_signal::Limits {
            joins_burst: 200.0,
            ..Default::default()
        },
        ..SignalConfig::default()
    })
    .await;
    let (_ada, _) = Client::join(&s.url, "mangled", "Ada").await;
    let before = state(&s).await;
    let valid = Media::publisher().await.offer;
    let mut rng = sori_testkit::Rng::new(0x5eed_f00d);
    let (mut created, mut refused) = (0, 0);
    for i in 0..60 {
        let mut offer = valid.clone();
        for _ in 0..1 + rng.below(3) {
            offer = sori_testkit::mutate::lines(&offer, "\r\n", &mut rng);
        }
        let r = post(s.http, "/whip/mangled", &[], &offer).await;
        match r.status {
            201 => {
                created += 1;
                let at = r.header("location").unwrap().to_string();
                let end = http_request(s.http, "DELETE", &at, &[], b"").await;
                assert_eq!(end.status, 200, "offer {i}");
            }
            400 | 406 => {
                refused += 1;
                assert!(!r.body.is_empty(), "offer {i}: a refusal says why");
            }
            other => panic!("offer {i}: {other} {}\n{offer}", text(&r)),
        }
    }
    eprintln!("{created} mangled offers answered, {refused} refused");
    assert!(refused > 0, "no mangling was refused");
    wait_metric(&s, "sori_media_peers", before[3]).await;
    assert_eq!(state(&s).await, before);
    // And the server still takes a good one.
    let r = post(s.http, "/whip/mangled", &[], &valid).await;
    assert_eq!(r.status, 201, "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_removed_through_the_server_api_leaves_with_its_media() {
    let s = server().await;
    let (mut ada, _) = Client::join(&s.url, "moderated", "Ada").await;
    let path = "/whip/moderated?name=Encoder";
    let (r, running) = start(s.http, path, &[], Media::publisher().await).await;
    let location = r.header("location").unwrap().to_string();
    let joined = ada.expect("participant-joined").await;
    let identity = joined["participant"]["identity"]
        .as_str()
        .unwrap()
        .to_string();
    running.until("connected", |g| g.connected).await;
    wait_metric(&s, "sori_tracks", 2).await;

    // On a server without keys the server API answers loopback without a token. LiveKit's
    // SDKs see the encoder as an ingress participant.
    let list = serde_json::json!({"room": "moderated"}).to_string();
    let r = http_request(
        s.http,
        "POST",
        "/twirp/livekit.RoomService/ListParticipants",
        &[("Content-Type", "application/json")],
        list.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let listed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let kinds: Vec<(String, String)> = listed["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("Encoder".into(), "INGRESS".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("Ada".into(), "STANDARD".into())),
        "{kinds:?}"
    );
    let body = serde_json::json!({"room": "moderated", "identity": identity}).to_string();
    let r = http_request(
        s.http,
        "POST",
        "/twirp/livekit.RoomService/RemoveParticipant",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let left = ada.expect("participant-left").await;
    assert_eq!(left["id"], joined["participant"]["id"]);
    // Its media is gone from the media server too, not only from the room.
    wait_metric(&s, "sori_media_peers", 0).await;
    wait_metric(&s, "sori_tracks", 0).await;
    assert_eq!(s.metric("sori_whip_sessions").await, 0);
    let r = http_request(s.http, "DELETE", &location, &[], b"").await;
    assert_eq!(r.status, 404);
}
