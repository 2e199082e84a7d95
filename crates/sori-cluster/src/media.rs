//! The session server's media backend when media nodes are found in Redis: each room on one
//! node, chosen when the room first needs one, every participant's media commands sent to the
//! node its media is on.
//!
//! A participant's peer is `<node id>/<endpoint id>`: the node is known from the peer alone,
//! so a command for media on a node that went away fails at once
//! ([`BackendError::Unreachable`]; the participant is told to connect its media again by the
//! watch below) rather than waiting for a node that will not answer.
//!
//! Every [`WATCH_EVERY`] the registry is read: the participants of a node that is no longer
//! announced (it stopped, or died and its announcement expired), or that drains, are told that
//! their media was removed, which sends each browser round to connect its media again (`mode`);
//! the room is placed anew at the first of them, on another node. While Redis cannot be read
//! nothing is decided: media in progress goes on, rooms this server knows stay where they are,
//! and a new room waits for Redis.
//!
//! **Cascading.** When the room's node is full (its load, or this server's own count of its
//! participants there, at its capacity), a newcomer's media goes to another open node — one
//! the room already spans first, else the least loaded. The room's pipelines on the two nodes
//! are linked by a pair of RelayEndpoints (one waits, the other dials it): each publisher's
//! media crosses once per node, and every participant gets the other node's participants
//! through the relay, as it gets its own node's (muting included). A node whose last
//! participant of the room leaves is unlinked.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sori_kurento_client::RemoteMedia;
use sori_media::sori_sfu::{MediaKind, Priority, ReceiverStats, RemoveReason, TrackId, View};
use sori_media::{
    BackendError, BackendJoined, BoxFuture, MediaBackend, MediaStats, PeerRef, PeerSignal,
};
use tokio::sync::mpsc;

use crate::{ClusterError, NodeInfo, Registry};

/// How often the registry is read for nodes gone or draining.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long a Redis call may take before the registry counts as unreachable.
const REDIS_WITHIN: Duration = Duration::from_secs(2);
/// How long a room stays placed on its node without being renewed (renewed by every session
/// server with participants in it, each [`WATCH_EVERY`]).
pub const ROOM_TTL: Duration = Duration::from_secs(60);

/// Media nodes found in Redis, driven over their control API.
#[derive(Clone)]
pub struct ClusterMedia {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Presented to every node's control API (`?access_token=`).
    token: Option<String>,
    state: Mutex<State>,
    /// Each room's participants and linked node pairs; its lock is held while the room's
    /// media joins, leaves or mutes, so that links are made once and in order.
    spans: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Span>>>>,
}

/// A room as this server placed its media: on which nodes, linked how.
#[derive(Default)]
struct Span {
    /// Its participants (by peer, `<node>/<endpoint>`).
    members: HashMap<String, Member>,
    /// The node pairs linked for it (the lower id first).
    pairs: BTreeSet<(String, String)>,
}

impl Span {
    /// The nodes of the room's participants other than `node`.
    fn nodes_except(&self, node: &str) -> BTreeSet<String> {
        self.members
            .values()
            .filter(|m| m.node != node)
            .map(|m| m.node.clone())
            .collect()
    }
}

struct Member {
    node: String,
    endpoint: String,
    stream: String,
    muted: [bool; 2],
}

#[derive(Default)]
struct State {
    /// Control connections, by node id.
    links: HashMap<String, Link>,
    /// The participants whose media this server placed, by peer.
    peers: HashMap<String, Placed>,
}

struct Link {
    url: String,
    media: RemoteMedia,
    /// Set when the node is found gone: commands waiting for it fail at once.
    gone: tokio::sync::watch::Sender<bool>,
}

struct Placed {
    node: String,
    room: String,
    /// The participant's signals: a `Removed` sent here when its node goes.
    signals: mpsc::UnboundedSender<PeerSignal>,
}

impl ClusterMedia {
    /// Media nodes from `registry`; `token` is given to their control APIs. Starts watching
    /// the registry (until the last clone is dropped).
    pub fn new(registry: Registry, token: Option<String>) -> ClusterMedia {
        let inner = Arc::new(Inner {
            registry,
            token,
            state: Mutex::new(State::default()),
            spans: Mutex::new(HashMap::new()),
        });
        tokio::spawn(watch(Arc::downgrade(&inner)));
        ClusterMedia { inner }
    }

    /// The node and endpoint of a peer of this backend.
    fn split(peer: &PeerRef) -> Result<(&str, PeerRef), BackendError> {
        match peer {
            PeerRef::Remote(id) => id
                .split_once('/')
                .map(|(node, endpoint)| (node, PeerRef::Remote(endpoint.to_string())))
                .ok_or(BackendError::UnknownPeer),
            PeerRef::Local(_) => Err(BackendError::UnknownPeer),
        }
    }

    /// The control connection of node `id`, while this server knows the node, and what says
    /// it is gone.
    fn link_of(&self, id: &str) -> Option<(RemoteMedia, tokio::sync::watch::Receiver<bool>)> {
        lock(&self.inner.state)
            .links
            .get(id)
            .map(|l| (l.media.clone(), l.gone.subscribe()))
    }

    /// A command for `peer`, on the node its media is on. A node found gone meanwhile fails it
    /// at once (the connection to a dead node would hold it until its request timeout, and
    /// the participant's next message with it): its media is to be made anew elsewhere.
    async fn on_node<T>(
        &self,
        peer: &PeerRef,
        f: impl AsyncFnOnce(RemoteMedia, PeerRef) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let (node, endpoint) = Self::split(peer)?;
        // Not `UnknownPeer`, which would have the session server join anew with whatever the
        // browser sent (an ICE restart's offer), while the `Removed` sent to the participant
        // has its browser make a new peer connection: two joins, and the second one's `leave`
        // of the first racing the other participants' joins into the room.
        let gone_error = || BackendError::Unreachable(format!("media node {node} is gone"));
        let (media, mut gone) = self.link_of(node).ok_or_else(gone_error)?;
        tokio::select! {
            r = f(media, endpoint) => r,
            _ = gone.wait_for(|g| *g) => Err(gone_error()),
        }
    }

    /// The control connection of `node`, made now when there is none (or its URL changed).
    async fn connect(&self, node: &NodeInfo) -> Result<RemoteMedia, BackendError> {
        if let Some(l) = lock(&self.inner.state).links.get(&node.id) {
            if l.url == node.control_url {
                return Ok(l.media.clone());
            }
        }
        let url = match &self.inner.token {
            Some(t) => format!("{}?access_token={}", node.control_url, query_value(t)),
            None => node.control_url.clone(),
        };
        let media = RemoteMedia::connect(&url).await.map_err(|e| {
            BackendError::Unreachable(format!("media node {} unreachable: {e}", node.id))
        })?;
        let mut state = lock(&self.inner.state);
        // Another join connected meanwhile: one connection per node.
        if let Some(l) = state.links.get(&node.id) {
            if l.url == node.control_url {
                return Ok(l.media.clone());
            }
        }
        tracing::info!(
            node = node.id,
            url = node.control_url,
            "media node connected"
        );
        state.links.insert(
            node.id.clone(),
            Link {
                url: node.control_url.clone(),
                media: media.clone(),
                gone: tokio::sync::watch::Sender::new(false),
            },
        );
        Ok(media)
    }

    /// Node `id` as this server knows it (connected), for a room already on it.
    fn still_on(&self, id: Option<&str>) -> Option<(NodeInfo, RemoteMedia)> {
        let state = lock(&self.inner.state);
        let link = state.links.get(id?)?;
        let node = NodeInfo {
            id: id?.to_string(),
            control_url: link.url.clone(),
            advertised: Vec::new(),
            capacity: 0,
            load: 0,
            draining: false,
        };
        Some((node, link.media.clone()))
    }

    /// The node for `room`: where it is placed (this server's participants in it tell which
    /// node it is on when Redis has forgotten it, after a Redis restart), else the least
    /// loaded open node. A node this server cannot connect to is skipped.
    async fn node_for(&self, room: &str) -> Result<(NodeInfo, RemoteMedia), BackendError> {
        let here = {
            let state = lock(&self.inner.state);
            state
                .peers
                .values()
                .find(|p| p.room == room)
                .map(|p| p.node.clone())
        };
        let mut skip: Vec<String> = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let placed = tokio::time::timeout(
                REDIS_WITHIN,
                self.inner
                    .registry
                    .place(room, here.as_deref(), &skip, ROOM_TTL),
            )
            .await;
            let node = match placed {
                Ok(Ok(n)) => n,
                Ok(Err(ClusterError::NoNode)) => {
                    return Err(last.unwrap_or_else(|| {
                        BackendError::Unreachable("no media node takes new rooms".into())
                    }))
                }
                // Redis is away: a room with participants here stays on their node.
                Ok(Err(e)) => {
                    return self.still_on(here.as_deref()).ok_or_else(|| {
                        BackendError::Unreachable(format!("no media node for the room: {e}"))
                    })
                }
                Err(_) => {
                    return self.still_on(here.as_deref()).ok_or_else(|| {
                        BackendError::Unreachable(
                            "no media node for the room: Redis did not answer".into(),
                        )
                    })
                }
            };
            match self.connect(&node).await {
                Ok(media) => return Ok((node, media)),
                Err(e) => {
                    tracing::warn!(node = node.id, "{e}: the room goes to another node");
                    skip.push(node.id);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Unreachable("no media node reachable".into())))
    }
}

impl ClusterMedia {
    /// The lock of `room`'s span.
    fn span(&self, room: &str) -> Arc<tokio::sync::Mutex<Span>> {
        lock(&self.inner.spans)
            .entry(room.to_string())
            .or_default()
            .clone()
    }

    /// Forgets `room`'s span when it has no one left (its lock held by the caller).
    fn forget_span(&self, room: &str, span: &Span) {
        if span.members.is_empty() && span.pairs.is_empty() {
            lock(&self.inner.spans).remove(room);
        }
    }

    /// Whether `node` takes no more participants: its load, or this server's own count of
    /// its participants (the load is a beat late), at its capacity.
    fn full(&self, node: &NodeInfo) -> bool {
        if node.capacity == 0 {
            return false;
        }
        let here = lock(&self.inner.state)
            .peers
            .values()
            .filter(|p| p.node == node.id)
            .count();
        node.load.max(here as u32) >= node.capacity
    }

    /// The node a newcomer of `room` goes to: the room's own (`home`) unless it is full; then
    /// an open node that is not, one the room spans first, else the least loaded. `home`
    /// when there is none.
    async fn node_in(&self, home: (NodeInfo, RemoteMedia), span: &Span) -> (NodeInfo, RemoteMedia) {
        if !self.full(&home.0) {
            return home;
        }
        let Ok(Ok(nodes)) = tokio::time::timeout(REDIS_WITHIN, self.inner.registry.nodes()).await
        else {
            return home;
        };
        let spanned = |id: &str| span.members.values().any(|m| m.node == id);
        let mut open: Vec<NodeInfo> = nodes
            .into_iter()
            .filter(|n| n.id != home.0.id && n.open() && !self.full(n))
            .collect();
        open.sort_by(|a, b| {
            let share = |n: &NodeInfo| n.load as f64 / n.capacity.max(1) as f64;
            (!spanned(&a.id), share(a), &a.id)
                .partial_cmp(&(!spanned(&b.id), share(b), &b.id))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for node in open {
            match self.connect(&node).await {
                Ok(media) => {
                    tracing::info!(
                        node = node.id,
                        full = home.0.id,
                        "the room's node is full: a participant's media goes to another, linked"
                    );
                    return (node, media);
                }
                Err(e) => tracing::warn!(node = node.id, "{e}"),
            }
        }
        home
    }

    /// Links `node` with every other node of `room`'s participants; false when one could not
    /// be linked.
    async fn link_all(&self, room: &str, node: &str, span: &mut Span) -> bool {
        let others = span.nodes_except(node);
        let mut all = true;
        for o in &others {
            if let Err(e) = self.pair(room, o, node, span).await {
                tracing::warn!(room, node, other = o, "{e}");
                all = false;
            }
        }
        all
    }

    /// Links `room`'s pipelines on nodes `a` and `b` (once): `a`'s RelayEndpoint waits, `b`'s
    /// dials it; `b` then has `a`'s participants.
    async fn pair(
        &self,
        room: &str,
        a: &str,
        b: &str,
        span: &mut Span,
    ) -> Result<(), BackendError> {
        let key = if a < b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        };
        if span.pairs.contains(&key) {
            return Ok(());
        }
        let gone = |n: &str| BackendError::Unreachable(format!("media node {n} is gone"));
        let (ma, _) = self.link_of(a).ok_or_else(|| gone(a))?;
        let (mb, _) = self.link_of(b).ok_or_else(|| gone(b))?;
        let url = lock(&self.inner.state)
            .links
            .get(a)
            .map(|l| l.url.clone())
            .ok_or_else(|| gone(a))?;
        let remote = |e: sori_kurento_client::RemoteError| {
            BackendError::Unreachable(format!("relay between {a} and {b}: {e}"))
        };
        let waiting = ma.relay(room, b, None).await.map_err(remote)?;
        let uri = relay_uri(&url, &waiting, self.inner.token.as_deref());
        mb.relay(room, a, Some(&uri)).await.map_err(remote)?;
        span.pairs.insert(key);
        tracing::info!(room, a, b, "room linked across two media nodes");
        for m in span.members.values().filter(|m| m.node == a) {
            mb.add_remote(room, a, &m.endpoint, &m.stream, m.muted)
                .await
                .map_err(remote)?;
        }
        Ok(())
    }

    /// `peer` is no longer in `room`: the other nodes stop relaying it, and its node is
    /// unlinked when it has no one else of the room. False when it was not a member.
    async fn forget_member(&self, room: &str, span: &mut Span, peer: &str) -> bool {
        let Some(me) = span.members.remove(peer) else {
            return false;
        };
        let others = span.nodes_except(&me.node);
        for o in others {
            if let Some((m, _)) = self.link_of(&o) {
                let _ = m.update_remote(room, &me.endpoint, None).await;
            }
        }
        self.unpair_empty(room, &me.node, span).await;
        true
    }

    /// Unlinks `node` from the other nodes of `room` once it has none of its participants.
    async fn unpair_empty(&self, room: &str, node: &str, span: &mut Span) {
        if span.members.values().any(|m| m.node == node) {
            return;
        }
        let pairs: Vec<(String, String)> = span
            .pairs
            .iter()
            .filter(|(a, b)| a == node || b == node)
            .cloned()
            .collect();
        for (a, b) in pairs {
            span.pairs.remove(&(a.clone(), b.clone()));
            for (here, there) in [(&a, &b), (&b, &a)] {
                if let Some((m, _)) = self.link_of(here) {
                    m.unrelay(room, there).await;
                }
            }
            tracing::info!(room, a, b, "media nodes unlinked for the room");
        }
    }
}

/// The URI a RelayEndpoint dials to reach `element` on the node whose control API is at
/// `control_url`.
fn relay_uri(control_url: &str, element: &str, token: Option<&str>) -> String {
    let base = control_url.split('?').next().unwrap_or_default();
    let mut uri = format!(
        "{}/relay?element={}",
        base.trim_end_matches('/'),
        query_value(element)
    );
    if let Some(t) = token {
        uri.push_str(&format!("&access_token={}", query_value(t)));
    }
    uri
}

/// Reads the registry every [`WATCH_EVERY`] while the backend lives: participants on nodes
/// that went away or drain are sent round, their connections to gone nodes dropped, and the
/// rooms with participants here kept placed.
async fn watch(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable = false;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let nodes = match tokio::time::timeout(REDIS_WITHIN, inner.registry.nodes()).await {
            Ok(Ok(n)) => n,
            failed => {
                if !unreachable {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".into(),
                    };
                    tracing::warn!(
                        "media node registry unreachable ({why}): rooms stay where they are"
                    );
                    unreachable = true;
                }
                continue;
            }
        };
        if unreachable {
            tracing::info!("media node registry reachable again");
            unreachable = false;
        }
        let rooms = sweep(&inner, &nodes);
        if !rooms.is_empty() {
            if let Err(e) = inner.registry.keep_rooms(&rooms, ROOM_TTL).await {
                tracing::debug!("room placements not renewed: {e}");
            }
        }
    }
}

/// Sends round the participants of nodes not in `nodes` or draining, forgets the gone nodes'
/// connections; returns the rooms (and their nodes) that still have participants here.
fn sweep(inner: &Inner, nodes: &[NodeInfo]) -> Vec<(String, String)> {
    let mut guard = lock(&inner.state);
    let state = &mut *guard;
    let live = |id: &str| nodes.iter().find(|n| n.id == id);
    // Gone: not announced and not connected. A node that is only missing from the registry
    // (Redis restarted empty, its next beat not in yet) still has its control connection,
    // and keeps its participants.
    let gone: Vec<String> = state
        .links
        .iter()
        .filter(|(id, l)| live(id).is_none() && !l.media.is_connected())
        .map(|(id, _)| id.clone())
        .collect();
    for id in &gone {
        tracing::warn!(
            node = id,
            "media node gone: its participants connect their media again"
        );
        if let Some(link) = state.links.remove(id) {
            link.gone.send_replace(true);
        }
    }
    let links = &state.links;
    let mut rooms = Vec::new();
    state.peers.retain(|peer, p| {
        let why = match live(&p.node) {
            Some(n) if n.draining => format!("media node {} drains", p.node),
            None if !links.contains_key(&p.node) => format!("media node {} is gone", p.node),
            _ => {
                if !rooms.iter().any(|(r, _)| r == &p.room) {
                    rooms.push((p.room.clone(), p.node.clone()));
                }
                return true;
            }
        };
        tracing::info!(
            room = p.room,
            peer,
            "{why}: the participant's media is made anew"
        );
        let _ = p
            .signals
            .send(PeerSignal::Removed(RemoveReason::Failed(why)));
        false
    });
    rooms
}

impl MediaBackend for ClusterMedia {
    fn join<'a>(
        &'a self,
        room: &'a str,
        offer: &'a str,
        receive: bool,
    ) -> BoxFuture<'a, Result<BackendJoined, BackendError>> {
        Box::pin(async move {
            let span = self.span(room);
            let mut span = span.lock().await;
            // Participants whose media went without a leave (their node died or drained, and
            // they were sent round) are forgotten first.
            let stale: Vec<String> = {
                let state = lock(&self.inner.state);
                span.members
                    .keys()
                    .filter(|p| !state.peers.contains_key(*p))
                    .cloned()
                    .collect()
            };
            for p in stale {
                self.forget_member(room, &mut span, &p).await;
            }
            let home = self.node_for(room).await?;
            let (mut node, mut media) = self.node_in(home.clone(), &span).await;
            // The room's other nodes are linked to this one first, so that the newcomer gets
            // their participants as it joins. A node that cannot be linked (no free link
            // there) takes no newcomer of the room: it goes to the room's own node, over its
            // capacity, rather than alone.
            if !self.link_all(room, &node.id, &mut span).await && node.id != home.0.id {
                tracing::warn!(
                    room,
                    node = node.id,
                    "not linked: the participant's media goes to the room's own node"
                );
                self.unpair_empty(room, &node.id, &mut span).await;
                (node, media) = home;
                self.link_all(room, &node.id, &mut span).await;
            }
            let others = span.nodes_except(&node.id);
            let joined = match MediaBackend::join(&media, room, offer, receive).await {
                Ok(j) => j,
                Err(e) => {
                    self.unpair_empty(room, &node.id, &mut span).await;
                    self.forget_span(room, &span);
                    return Err(e);
                }
            };
            let PeerRef::Remote(endpoint) = &joined.peer else {
                return Err(BackendError::UnknownPeer);
            };
            let peer = format!("{}/{endpoint}", node.id);
            tracing::info!(room, node = node.id, peer, "media joined on a node");
            for o in &others {
                if let Some((m, _)) = self.link_of(o) {
                    let added = m
                        .add_remote(room, &node.id, endpoint, &joined.stream_id, [false; 2])
                        .await;
                    if let Err(e) = added {
                        tracing::warn!(room, peer, node = o, "not relayed there: {e}");
                    }
                }
            }
            span.members.insert(
                peer.clone(),
                Member {
                    node: node.id.clone(),
                    endpoint: endpoint.clone(),
                    stream: joined.stream_id.clone(),
                    muted: [false; 2],
                },
            );
            // Unbounded as the backend's own signals are (the trait's type): it carries what
            // the node sends for this peer, one for one, and at most one `Removed` of ours.
            // Placed before the span's lock goes: a member not placed is stale to the next join.
            let (tx, rx) = mpsc::unbounded_channel();
            lock(&self.inner.state).peers.insert(
                peer.clone(),
                Placed {
                    node: node.id.clone(),
                    room: room.to_string(),
                    signals: tx.clone(),
                },
            );
            drop(span);
            tokio::spawn(relay(
                Arc::downgrade(&self.inner),
                peer.clone(),
                joined.signals,
                tx,
            ));
            Ok(BackendJoined {
                peer: PeerRef::Remote(peer),
                stream_id: joined.stream_id,
                answer: joined.answer,
                signals: rx,
            })
        })
    }

    fn offer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        Box::pin(self.on_node(peer, async |m: RemoteMedia, p: PeerRef| {
            MediaBackend::offer(&m, &p, sdp).await
        }))
    }

    fn answer<'a>(
        &'a self,
        peer: &'a PeerRef,
        sdp: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.on_node(peer, async |m: RemoteMedia, p: PeerRef| {
            MediaBackend::answer(&m, &p, sdp).await
        }))
    }

    fn set_muted<'a>(
        &'a self,
        peer: &'a PeerRef,
        kind: MediaKind,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.on_node(peer, async move |m: RemoteMedia, p: PeerRef| {
                MediaBackend::set_muted(&m, &p, kind, muted).await
            })
            .await?;
            // The room's other nodes stop (or start again) relaying it to their participants.
            let PeerRef::Remote(id) = peer else {
                return Ok(());
            };
            let Some(room) = lock(&self.inner.state)
                .peers
                .get(id)
                .map(|p| p.room.clone())
            else {
                return Ok(());
            };
            let span = self.span(room.as_str());
            let mut span = span.lock().await;
            let Some(me) = span.members.get_mut(id) else {
                return Ok(());
            };
            me.muted[usize::from(kind == MediaKind::Video)] = muted;
            let (node, endpoint) = (me.node.clone(), me.endpoint.clone());
            let others = span.nodes_except(&node);
            for o in others {
                if let Some((m, _)) = self.link_of(&o) {
                    let r = m.update_remote(&room, &endpoint, Some((kind, muted))).await;
                    if let Err(e) = r {
                        tracing::warn!(room, node = o, "mute not relayed there: {e}");
                    }
                }
            }
            self.forget_span(&room, &span);
            Ok(())
        })
    }

    fn set_view<'a>(
        &'a self,
        peer: &'a PeerRef,
        track: TrackId,
        view: View,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.on_node(peer, async move |m: RemoteMedia, p: PeerRef| {
            MediaBackend::set_view(&m, &p, track, view).await
        }))
    }

    fn set_priority(
        &self,
        _track: TrackId,
        _priority: Priority,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        // A node's control API chooses no layers (as `RemoteMedia`).
        Box::pin(async { Ok(()) })
    }

    fn receiver_stats<'a>(
        &'a self,
        peer: &'a PeerRef,
    ) -> BoxFuture<'a, Result<Option<ReceiverStats>, BackendError>> {
        Box::pin(self.on_node(peer, async |m: RemoteMedia, p: PeerRef| {
            MediaBackend::receiver_stats(&m, &p).await
        }))
    }

    fn leave<'a>(&'a self, peer: &'a PeerRef) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let PeerRef::Remote(id) = peer {
                lock(&self.inner.state).peers.remove(id);
            }
            let _ = self
                .on_node(peer, async |m: RemoteMedia, p: PeerRef| {
                    MediaBackend::leave(&m, &p).await;
                    Ok(())
                })
                .await;
            let PeerRef::Remote(id) = peer else { return };
            let spans: Vec<(String, Arc<tokio::sync::Mutex<Span>>)> = lock(&self.inner.spans)
                .iter()
                .map(|(r, s)| (r.clone(), s.clone()))
                .collect();
            for (room, span) in spans {
                let mut span = span.lock().await;
                if self.forget_member(&room, &mut span, id).await {
                    self.forget_span(&room, &span);
                    break;
                }
            }
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Option<MediaStats>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    /// Healthy when Redis answers and some media node takes new rooms.
    fn health(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let nodes = tokio::time::timeout(REDIS_WITHIN, self.inner.registry.nodes())
                .await
                .map_err(|_| BackendError::Unreachable("Redis did not answer".into()))?
                .map_err(|e| BackendError::Unreachable(e.to_string()))?;
            if crate::least_loaded(&nodes).is_none() {
                return Err(BackendError::Unreachable(
                    "no media node takes new rooms".into(),
                ));
            }
            Ok(())
        })
    }
}

impl From<ClusterMedia> for Arc<dyn MediaBackend> {
    fn from(c: ClusterMedia) -> Self {
        Arc::new(c)
    }
}

/// Passes a node's signals for `peer` on until its receiver is gone or it is removed; then
/// the peer is forgotten.
async fn relay(
    inner: Weak<Inner>,
    peer: String,
    mut from: mpsc::UnboundedReceiver<PeerSignal>,
    to: mpsc::UnboundedSender<PeerSignal>,
) {
    loop {
        tokio::select! {
            s = from.recv() => match s {
                Some(s) => {
                    let removed = matches!(s, PeerSignal::Removed(_));
                    if to.send(s).is_err() || removed {
                        break;
                    }
                }
                None => break,
            },
            _ = to.closed() => break,
        }
    }
    if let Some(inner) = inner.upgrade() {
        lock(&inner.state).peers.remove(&peer);
    }
}

/// `s` as a URL query value: unreserved characters as they are, every other byte `%XX`.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_into_the_control_url_encoded() {
        assert_eq!(query_value("a+b&c=d%é ~x"), "a%2Bb%26c%3Dd%25%C3%A9%20~x");
    }

    #[test]
    fn a_peer_names_its_node() {
        let peer =
            PeerRef::Remote("m2/pipe_kurento.MediaPipeline/ep_kurento.WebRtcEndpoint".into());
        let (node, endpoint) = ClusterMedia::split(&peer).unwrap();
        assert_eq!(node, "m2");
        assert_eq!(
            endpoint,
            PeerRef::Remote("pipe_kurento.MediaPipeline/ep_kurento.WebRtcEndpoint".into())
        );
        assert_eq!(
            ClusterMedia::split(&PeerRef::Remote("no-node".into())).unwrap_err(),
            BackendError::UnknownPeer
        );
    }
}
