//! What the session server knows of the media server's objects: each room's pipeline and
//! endpoints, one lock per room, and which room each endpoint is in.
//!
//! A room's lock is held while its pipeline and links change (a join links the newcomer with
//! everyone), so joins and leaves in one room happen one after another; rooms never wait for
//! each other. The map itself is behind a plain mutex, held for lookups only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A room: its pipeline and participants.
#[derive(Default)]
pub(crate) struct Room {
    /// The pipeline, once created.
    pub(crate) pipeline: Option<String>,
    pub(crate) endpoints: Vec<Endpoint>,
    /// Taken out of the map (emptied, or the media server's session was lost): whoever
    /// waited for its lock looks the room up again.
    pub(crate) gone: bool,
    /// The session epoch it was made in ([`Rooms::epoch`]).
    pub(crate) epoch: u64,
    /// Its RelayEndpoints, by the other media node they link it to (cascading).
    pub(crate) relays: HashMap<String, String>,
    /// Its participants on other media nodes, whose media comes through a relay.
    pub(crate) remote: Vec<RemotePeer>,
}

/// A participant of the room whose media is on another media node.
pub(crate) struct RemotePeer {
    /// Its endpoint there (the sink media description of its links here).
    pub(crate) id: String,
    /// Its stream id (the source media description of the relay's links).
    pub(crate) stream: String,
    /// The node it is on.
    pub(crate) node: String,
    pub(crate) muted: [bool; 2],
}

impl Room {
    /// Whether its objects may be used: not taken out, and made in the current session.
    pub(crate) fn live(&self, rooms: &Rooms) -> bool {
        !self.gone && self.epoch == rooms.epoch()
    }
}

/// A participant's endpoint and what flows from and to it.
pub(crate) struct Endpoint {
    pub(crate) id: String,
    /// It receives the others (off: a publish-only participant).
    pub(crate) receives: bool,
    /// Its audio and video go to no one (a server-side mute).
    pub(crate) muted: [bool; 2],
}

pub(crate) type RoomLock = Arc<tokio::sync::Mutex<Room>>;

/// The rooms by name, and the room of each endpoint.
#[derive(Default)]
pub(crate) struct Rooms {
    by_name: Mutex<HashMap<String, RoomLock>>,
    of_peer: Mutex<HashMap<String, String>>,
    /// Bumped each time the media server's session is lost: objects made before are gone.
    epoch: AtomicU64,
}

impl Rooms {
    /// The room named `name`, made (empty, without a pipeline) when there is none.
    pub(crate) fn get_or_add(&self, name: &str) -> RoomLock {
        // The epoch is read and bumped under the map's lock: a room in the map is always of
        // the current one.
        let mut map = lock(&self.by_name);
        let epoch = self.epoch();
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Room {
                    epoch,
                    ..Room::default()
                }))
            })
            .clone()
    }

    /// The room named `name`, if there is one.
    pub(crate) fn get(&self, name: &str) -> Option<RoomLock> {
        lock(&self.by_name).get(name).cloned()
    }

    /// The room `peer` is in.
    pub(crate) fn of(&self, peer: &str) -> Option<(String, RoomLock)> {
        let name = lock(&self.of_peer).get(peer)?.clone();
        let room = lock(&self.by_name).get(&name)?.clone();
        Some((name, room))
    }

    /// Notes that `peer` is in room `name`.
    pub(crate) fn placed(&self, peer: &str, name: &str) {
        lock(&self.of_peer).insert(peer.to_string(), name.to_string());
    }

    /// `peer` is in no room any more.
    pub(crate) fn unplaced(&self, peer: &str) {
        lock(&self.of_peer).remove(peer);
    }

    /// Takes the room out of the map if it is still `room` (its caller holds its lock and
    /// has marked it gone).
    pub(crate) fn remove(&self, name: &str, room: &RoomLock) {
        let mut map = lock(&self.by_name);
        if map.get(name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            map.remove(name);
        }
    }

    /// The media server's session is lost: every room and endpoint with it. Rooms that are
    /// locked now are seen to be stale by their epoch.
    pub(crate) fn forget_all(&self) {
        let mut map = lock(&self.by_name);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        map.clear();
        drop(map);
        lock(&self.of_peer).clear();
    }

    /// Counts the session losses so far.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
