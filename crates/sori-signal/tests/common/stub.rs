//! A media server stand-in for what the in-process core cannot be made to say on cue: it answers
//! every offer with a fixed SDP, records the views it is given, reports the receiver stats a
//! test sets, and sends each peer the signals a test hands it.

use std::sync::{Arc, Mutex};

use sori_media::sori_sfu::{Priority, ReceiverStats, TrackId, View};
use sori_media::{
    BackendError, BackendJoined, BoxFuture, MediaBackend, MediaStats, PeerRef, PeerSignal,
};
use sori_signal::{Signal, SignalConfig};
use tokio::sync::{mpsc, watch};

use super::WAIT;

/// The answer the stub gives to every offer.
pub const ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=stub\r\nt=0 0\r\n";

/// The one track id the stub refuses a view for (as the core refuses a track a peer does not
/// receive).
pub const UNKNOWN_TRACK: TrackId = TrackId(999);

#[derive(Default)]
struct Inner {
    /// Each joined peer's signal channel, in join order.
    peers: Vec<mpsc::UnboundedSender<PeerSignal>>,
    /// Every view taken, in order.
    views: Vec<(PeerRef, TrackId, View)>,
    /// What `receiver_stats` answers.
    stats: Option<ReceiverStats>,
    /// How many times `receiver_stats` was asked.
    stats_asked: u64,
    /// Every priority set, in order.
    priorities: Vec<(TrackId, Priority)>,
    /// What `health` does.
    health: Health,
    /// Joins and offers fail as they do when the media server cannot be reached.
    unreachable: bool,
    /// Joins and offers are refused by a media server that answers.
    refusing: bool,
    /// Offers never get an answer, as from a frozen media server.
    offers_hang: bool,
    /// The peers that left, in order.
    left: Vec<PeerRef>,
    /// How many times `health` was asked.
    health_asked: u64,
    /// Every server mute applied, in order.
    mutes: Vec<(PeerRef, sori_media::sori_sfu::MediaKind, bool)>,
}

/// How the stub answers a health check.
#[derive(Default, Clone, Copy)]
pub enum Health {
    #[default]
    Answers,
    Fails,
    /// Never answers, as a frozen media server does.
    Hangs,
    /// Answers after this long, as a frozen media server that thaws while asked.
    Thaws(std::time::Duration),
}

/// The stand-in; [`StubMedia::calls`] counts the calls that tests wait for.
pub struct StubMedia {
    inner: Mutex<Inner>,
    /// Bumped by every `join`, `set_view`, `set_priority` and `receiver_stats`.
    calls: watch::Sender<u64>,
}

impl StubMedia {
    pub fn new(stats: Option<ReceiverStats>) -> Arc<StubMedia> {
        Arc::new(StubMedia {
            inner: Mutex::new(Inner {
                stats,
                ..Inner::default()
            }),
            calls: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn called(&self) {
        self.calls.send_modify(|n| *n += 1);
    }

    /// How many counted calls came so far.
    pub fn calls(&self) -> u64 {
        *self.calls.borrow()
    }

    /// The views taken so far.
    pub fn views(&self) -> Vec<(PeerRef, TrackId, View)> {
        self.lock().views.clone()
    }

    /// The priorities set so far.
    pub fn priorities(&self) -> Vec<(TrackId, Priority)> {
        self.lock().priorities.clone()
    }

    /// Sends `signal` to the `index`th peer that joined.
    pub fn signal(&self, index: usize, signal: PeerSignal) {
        self.lock().peers[index].send(signal).unwrap();
    }

    /// Waits (bounded) until `done` holds for the stub's state; each call to the stub wakes it.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&StubMedia) -> bool) {
        let mut calls = self.calls.subscribe();
        let waited = tokio::time::timeout(WAIT, async {
            while !done(self) {
                calls.changed().await.unwrap();
            }
        })
        .await;
        assert!(waited.is_ok(), "not within the wait: {what}");
    }

    /// Makes `health` answer this way from now on.
    pub fn set_health(&self, health: Health) {
        self.lock().health = health;
    }

    /// Makes joins and offers fail (true) as with an unreachable media server, or work.
    pub fn set_unreachable(&self, on: bool) {
        self.lock().unreachable = on;
    }

    /// Makes joins and offers refused (true) by a media server that answers, or work.
    pub fn set_refusing(&self, on: bool) {
        self.lock().refusing = on;
    }

    /// Makes offers wait for ever (true), as a frozen media server does, or answer.
    pub fn set_offers_hang(&self, on: bool) {
        self.lock().offers_hang = on;
    }

    /// The peers that left so far.
    /// Every server mute applied, in order.
    pub fn mutes(&self) -> Vec<(PeerRef, sori_media::sori_sfu::MediaKind, bool)> {
        self.lock().mutes.clone()
    }

    pub fn left(&self) -> Vec<PeerRef> {
        self.lock().left.clone()
    }

    /// How many times `health` was asked.
    pub fn health_asked(&self) -> u64 {
        self.lock().health_asked
    }

    /// How many times `receiver_stats` was asked.
    pub fn stats_asked(&self) -> u64 {
        self.lock().stats_asked
    }
}

impl MediaBackend for StubMedia {
    fn join<'a>(
        &'a self,
        _room: &'a str,
        _offer: &'a str,
        _receive: bool,
    ) -> BoxFuture<'a, Result<BackendJoined, BackendError>> {
        Box::pin(async move {
            if self.lock().unreachable {
                return Err(BackendError::Unreachable("media server unreachable".into()));
            }
            if self.lock().refusing {
                return Err(BackendError::Failed("refused".into()));
            }
            let (tx, signals) = mpsc::unbounded_channel();
            let n = {
                let mut inner = self.lock();
                inner.peers.push(tx);
                inner.peers.len()
            };
            self.called();
            Ok(BackendJoined {
                peer: PeerRef::Remote(format!("stub-{n}")),
                stream_id: format!("stream-{n}"),
                answer: ANSWER.into(),
                signals,
            })
        })
    }

    fn offer<'a>(
        &'a self,
        _peer: &'a PeerRef,
        _sdp: &'a str,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(async move {
            let (unreachable, hang) = {
                let inner = self.lock();
                (inner.unreachable, inner.offers_hang)
            };
            if unreachable {
                return Err(BackendError::Unreachable("media server unreachable".into()));
            }
            if hang {
                self.called();
                std::future::pending::<()>().await;
            }
            Ok(ANSWER.to_string())
        })
    }

    fn answer<'a>(
        &'a self,
        _peer: &'a PeerRef,
        _sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn set_muted<'a>(
        &'a self,
        peer: &'a PeerRef,
        kind: sori_media::sori_sfu::MediaKind,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.lock().mutes.push((peer.clone(), kind, muted));
            Ok(())
        })
    }

    fn set_view<'a>(
        &'a self,
        peer: &'a PeerRef,
        track: TrackId,
        view: View,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            if track == UNKNOWN_TRACK {
                return Err(BackendError::Failed(format!(
                    "{peer} does not receive {track}"
                )));
            }
            self.lock().views.push((peer.clone(), track, view));
            self.called();
            Ok(())
        })
    }

    fn set_priority(
        &self,
        track: TrackId,
        priority: Priority,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.lock().priorities.push((track, priority));
            self.called();
            Ok(())
        })
    }

    fn receiver_stats<'a>(
        &'a self,
        _peer: &'a PeerRef,
    ) -> BoxFuture<'a, Result<Option<ReceiverStats>, BackendError>> {
        Box::pin(async move {
            let stats = {
                let mut inner = self.lock();
                inner.stats_asked += 1;
                inner.stats.clone()
            };
            self.called();
            Ok(stats)
        })
    }

    fn leave<'a>(&'a self, peer: &'a PeerRef) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.lock().left.push(peer.clone());
            self.called();
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Option<MediaStats>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        let health = {
            let mut inner = self.lock();
            inner.health_asked += 1;
            inner.health
        };
        self.called();
        Box::pin(async move {
            match health {
                Health::Answers => Ok(()),
                Health::Fails => Err(BackendError::Failed("the media task stopped".into())),
                Health::Hangs => std::future::pending().await,
                Health::Thaws(after) => {
                    tokio::time::sleep(after).await;
                    Ok(())
                }
            }
        })
    }
}

/// The session server on a free loopback port, driving `stub`.
pub async fn server(stub: &Arc<StubMedia>, config: SignalConfig) -> (String, std::net::SocketAddr) {
    let media: Arc<dyn MediaBackend> = stub.clone();
    let app = Signal::new(media, config);
    let listener = tokio::net::TcpListener::bind((super::LOCALHOST, 0))
        .await
        .unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    (format!("ws://{http}/ws"), http)
}
