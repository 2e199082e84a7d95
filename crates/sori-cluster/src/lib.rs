//! # sori-cluster — media nodes on Redis
//!
//! Media nodes announce themselves in Redis, the store operators already run: each node keeps
//! a hash `sori:media:<id>` (its control URL, advertised addresses, capacity, load, whether it
//! drains) whose expiry its heartbeat renews, and its id in the set `sori:media:nodes`. A node
//! that stops withdraws both; one that dies disappears when its hash expires (ids whose hash is
//! gone are swept from the set by whoever reads it). Session servers read the live nodes and
//! place each new room on the least loaded one (`sori:room:<room>:media`, written by a
//! compare-and-set, so that two session servers placing the same room agree), and drive the
//! room's node with [`ClusterMedia`]. docs/scale-out.md tells the whole of it.

#![forbid(unsafe_code)]

mod media;
pub use media::{ClusterMedia, ROOM_TTL, WATCH_EVERY};
mod sessions;
pub use sessions::{Heard, SessionNode};

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;

/// The set of announced node ids.
const NODES: &str = "sori:media:nodes";
/// The media nodes started so far (see [`Registry::node_number`]).
const INDEX: &str = "sori:media:index";

fn node_key(id: &str) -> String {
    format!("sori:media:{id}")
}

fn room_key(room: &str) -> String {
    format!("sori:room:{room}:media")
}

/// What a media node says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique among the cluster's nodes.
    pub id: String,
    /// Where session servers command it (`ws://10.0.0.5:8888/kurento`).
    pub control_url: String,
    /// The addresses its media candidates carry.
    pub advertised: Vec<String>,
    /// The participants it takes at most (0: no limit).
    pub capacity: u32,
    /// The participants it has now.
    pub load: u32,
    /// It takes no new rooms (a SIGTERM or an admin asked it to drain).
    pub draining: bool,
}

impl NodeInfo {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("control_url", self.control_url.clone()),
            ("advertised", self.advertised.join(",")),
            ("capacity", self.capacity.to_string()),
            ("load", self.load.to_string()),
            ("draining", u8::from(self.draining).to_string()),
        ]
    }

    fn from_fields(id: &str, f: &HashMap<String, String>) -> Option<NodeInfo> {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u32>().ok());
        Some(NodeInfo {
            id: id.to_string(),
            control_url: f.get("control_url")?.clone(),
            advertised: f
                .get("advertised")
                .map(|a| {
                    a.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            capacity: num("capacity")?,
            load: num("load")?,
            draining: f.get("draining").is_some_and(|d| d == "1"),
        })
    }

    /// Whether it may take a new room.
    fn open(&self) -> bool {
        !self.draining && (self.capacity == 0 || self.load < self.capacity)
    }
}

/// The node a new room goes to: the open one with the lowest share of its capacity used (a
/// node without a capacity counts its load alone), ties to the lowest id.
pub fn least_loaded(nodes: &[NodeInfo]) -> Option<&NodeInfo> {
    nodes.iter().filter(|n| n.open()).min_by(|a, b| {
        let share = |n: &NodeInfo| {
            if n.capacity == 0 {
                n.load as f64
            } else {
                n.load as f64 / n.capacity as f64
            }
        };
        share(a).total_cmp(&share(b)).then_with(|| a.id.cmp(&b.id))
    })
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no media node takes new rooms")]
    NoNode,
}

/// A client of the Redis at `url` and its connection, made at the first call and made again
/// whenever it is lost (a Redis restart): a call while Redis is away fails within a few
/// seconds, and later calls work once it is back.
fn connect(url: &str) -> Result<(redis::Client, redis::aio::ConnectionManager), ClusterError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let conn = client.get_connection_manager_lazy(config)?;
    Ok((client, conn))
}

/// Node `id` leaves set `nodes` and its announcement `key` goes, together.
async fn withdraw(
    conn: &redis::aio::ConnectionManager,
    nodes: &str,
    key: &str,
    id: &str,
) -> Result<(), ClusterError> {
    let mut c = conn.clone();
    redis::pipe()
        .atomic()
        .del(key)
        .ignore()
        .srem(nodes, id)
        .ignore()
        .query_async::<()>(&mut c)
        .await?;
    Ok(())
}

/// The media nodes' registry in one Redis.
#[derive(Clone)]
pub struct Registry {
    conn: redis::aio::ConnectionManager,
}

impl Registry {
    /// The registry in Redis at `url` (`redis://[:password@]host:6379/0`). The connection is
    /// made at the first call and made again whenever it is lost (a Redis restart): a call
    /// while Redis is away fails within a few seconds, and later calls work once it is back.
    pub fn connect(url: &str) -> Result<Registry, ClusterError> {
        let (_, conn) = connect(url)?;
        Ok(Registry { conn })
    }

    /// A number for a media node that starts, unique among the cluster's nodes (the ids of its
    /// peers and tracks carry it, so that two linked nodes never share one): 1 to 65535, in
    /// the order nodes start (`INCR sori:media:index`), round again after the 65535th.
    pub async fn node_number(&self) -> Result<u16, ClusterError> {
        let mut c = self.conn.clone();
        let n: u64 = c.incr(INDEX, 1).await?;
        Ok(((n - 1) % 65535 + 1) as u16)
    }

    /// Announces `node` (or renews it) for `ttl`: a heartbeat calls this well within `ttl`.
    pub async fn announce(&self, node: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
        let mut c = self.conn.clone();
        let key = node_key(&node.id);
        let ms = ttl.as_millis().max(1) as i64;
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &node.fields())
            .ignore()
            .pexpire(&key, ms)
            .ignore()
            .sadd(NODES, &node.id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// The node leaves the registry at once (it stops).
    pub async fn withdraw(&self, id: &str) -> Result<(), ClusterError> {
        withdraw(&self.conn, NODES, &node_key(id), id).await
    }

    /// The live nodes (those whose announcement has not expired), by id; ids whose hash
    /// expired are swept from the set.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut c = self.conn.clone();
        let mut ids: Vec<String> = c.smembers(NODES).await?;
        ids.sort();
        let mut live = Vec::new();
        for id in ids {
            let fields: HashMap<String, String> = c.hgetall(node_key(&id)).await?;
            match NodeInfo::from_fields(&id, &fields) {
                Some(n) => live.push(n),
                None => {
                    let _: i64 = c.srem(NODES, &id).await?;
                }
            }
        }
        Ok(live)
    }

    /// The node `room` is on: the one it was placed on while that node lives and takes rooms;
    /// else `prefer` (the node this session server's participants of the room are on) when it
    /// is open; else the least loaded open node not in `skip`. The choice is recorded for
    /// `ttl`, replacing a placement only if it is still the one read (another session server
    /// placing the same room at the same moment wins or loses as a whole: both end on one
    /// node).
    pub async fn place(
        &self,
        room: &str,
        prefer: Option<&str>,
        skip: &[String],
        ttl: Duration,
    ) -> Result<NodeInfo, ClusterError> {
        let mut c = self.conn.clone();
        let key = room_key(room);
        let nodes = self.nodes().await?;
        let usable = |id: &str| {
            nodes
                .iter()
                .find(|n| n.id == id && !n.draining && !skip.iter().any(|s| s == id))
        };
        let placed: Option<String> = c.get(&key).await?;
        if let Some(n) = placed.as_deref().and_then(usable) {
            return Ok(n.clone());
        }
        let choice = match prefer.and_then(usable) {
            Some(n) if n.open() => n,
            _ => {
                let open: Vec<NodeInfo> = nodes
                    .iter()
                    .filter(|n| !skip.iter().any(|s| s == &n.id))
                    .cloned()
                    .collect();
                let id = least_loaded(&open).ok_or(ClusterError::NoNode)?.id.clone();
                usable(&id).ok_or(ClusterError::NoNode)?
            }
        };
        let ms = ttl.as_millis().max(1) as u64;
        let winner: String = redis::Script::new(REPLACE)
            .key(&key)
            .key(node_key(&choice.id))
            .arg(placed.unwrap_or_default())
            .arg(&choice.id)
            .arg(ms)
            .invoke_async(&mut c)
            .await?;
        if winner == choice.id {
            return Ok(choice.clone());
        }
        // Another session server placed it a moment ago.
        nodes
            .into_iter()
            .find(|n| n.id == winner)
            .ok_or(ClusterError::NoNode)
    }

    /// Renews the placement of `rooms` (room, node) for `ttl`, each only while it is still on
    /// that node.
    pub async fn keep_rooms(
        &self,
        rooms: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let mut c = self.conn.clone();
        let ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for (room, node) in rooms {
            pipe.cmd("EVAL")
                .arg(KEEP)
                .arg(1)
                .arg(room_key(room))
                .arg(node)
                .arg(ms)
                .ignore();
        }
        pipe.query_async::<()>(&mut c).await?;
        Ok(())
    }
}

/// Sets KEYS[1] to ARGV[2] for ARGV[3] ms if it still holds ARGV[1] ("" for none), and then
/// counts the room's first participant in the load of node hash KEYS[2] until the node's next
/// beat says its own (rooms placed within one beat spread over the nodes); returns what
/// KEYS[1] holds after.
const REPLACE: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HINCRBY', KEYS[2], 'load', 1)
  end
  return ARGV[2]
end
return cur
";

/// Renews KEYS[1] for ARGV[2] ms if it holds ARGV[1]; a placement forgotten (a Redis
/// restart) is written again.
const KEEP: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
";

/// Where a node announces itself: the [`Registry`] (a test stands in its own).
pub trait Beacon {
    /// Announces `node` for `ttl`.
    fn announce(
        &self,
        node: &NodeInfo,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<(), ClusterError>> + Send;
    /// Withdraws node `id`.
    fn withdraw(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<(), ClusterError>> + Send;
}

impl Beacon for Registry {
    async fn announce(&self, node: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
        Registry::announce(self, node, ttl).await
    }
    async fn withdraw(&self, id: &str) -> Result<(), ClusterError> {
        Registry::withdraw(self, id).await
    }
}

/// Keeps a node announced until `stop` resolves, then withdraws it: every `every` it asks
/// `now` for the node's current state (its load changes) and announces that for three beats.
/// `soon` asks for a beat at once (the node started draining): after the beat in flight, if
/// any, so that a beat that read the old state never lands after the new one. A beat Redis
/// does not take is logged and the next one tried (a Redis restart: the node is back at the
/// first beat after it).
pub async fn heartbeat<F: std::future::Future<Output = NodeInfo>>(
    registry: impl Beacon,
    every: Duration,
    mut now: impl FnMut() -> F,
    soon: &tokio::sync::Notify,
    stop: impl std::future::Future<Output = ()>,
) {
    let ttl = every * 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut id = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
            _ = soon.notified() => {}
        }
        let node = now().await;
        if let Err(e) = registry.announce(&node, ttl).await {
            tracing::warn!(node = node.id, "media node not announced: {e}");
        }
        id = Some(node.id);
    }
    if let Some(id) = id {
        if let Err(e) = registry.withdraw(&id).await {
            tracing::warn!(node = id, "media node not withdrawn (it expires): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, capacity: u32, load: u32, draining: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            control_url: format!("ws://{id}:8888/kurento"),
            advertised: vec!["10.0.0.1".into()],
            capacity,
            load,
            draining,
        }
    }

    #[test]
    fn a_room_goes_to_the_least_used_open_node() {
        let nodes = [
            node("a", 100, 50, false),
            node("b", 10, 2, false),
            node("c", 100, 0, true),
            node("d", 4, 4, false),
        ];
        // b: 20 % used; a: 50 %; c drains; d is full.
        assert_eq!(least_loaded(&nodes).map(|n| n.id.as_str()), Some("b"));
        assert_eq!(least_loaded(&nodes[2..]), None);
        let tie = [node("y", 10, 1, false), node("x", 10, 1, false)];
        assert_eq!(least_loaded(&tie).map(|n| n.id.as_str()), Some("x"));
    }

    #[test]
    fn a_node_reads_back_as_it_was_announced() {
        let n = node("m1", 100, 7, true);
        let fields: HashMap<String, String> = n
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(NodeInfo::from_fields("m1", &fields), Some(n));
        assert_eq!(NodeInfo::from_fields("m1", &HashMap::new()), None);
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::sync::Notify;
    use tokio::time::Instant;

    /// Node m1's state as a heartbeat reads it.
    fn m1(load: u32, draining: bool) -> NodeInfo {
        NodeInfo {
            id: "m1".into(),
            control_url: "ws://127.0.0.1:8888/kurento".into(),
            advertised: vec![],
            capacity: 0,
            load,
            draining,
        }
    }

    /// What a heartbeat did, and when (virtual time).
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(Instant, String)>>>);

    impl Beacon for Recorder {
        async fn announce(&self, node: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
            let what = format!("announce {} load {} for {ttl:?}", node.id, node.load);
            self.0.lock().unwrap().push((Instant::now(), what));
            Ok(())
        }
        async fn withdraw(&self, id: &str) -> Result<(), ClusterError> {
            self.0
                .lock()
                .unwrap()
                .push((Instant::now(), format!("withdraw {id}")));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_announces_the_current_state_every_beat_for_three_beats_and_withdraws_when_stopped(
    ) {
        let beacon = Recorder::default();
        let every = Duration::from_secs(1);
        let start = Instant::now();
        let load = Arc::new(Mutex::new(0u32));
        let now = {
            let load = load.clone();
            move || {
                let load = *load.lock().unwrap();
                async move { m1(load, false) }
            }
        };
        let stop = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            *load.lock().unwrap() = 4;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        };
        heartbeat(beacon.clone(), every, now, &Notify::new(), stop).await;
        let got: Vec<(Duration, String)> = beacon
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(at, w)| (*at - start, w.clone()))
            .collect();
        let s = Duration::from_secs;
        assert_eq!(
            got,
            [
                (s(0), "announce m1 load 0 for 3s".to_string()),
                (s(1), "announce m1 load 0 for 3s".to_string()),
                (s(2), "announce m1 load 4 for 3s".to_string()),
                (Duration::from_millis(2500), "withdraw m1".to_string()),
            ]
        );
    }

    /// A beacon whose writes take 100 ms to land (a slow Redis), recording what landed.
    #[derive(Clone, Default)]
    struct Slow(Arc<Mutex<Vec<(Instant, bool)>>>);

    impl Beacon for Slow {
        async fn announce(&self, node: &NodeInfo, _ttl: Duration) -> Result<(), ClusterError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.0.lock().unwrap().push((Instant::now(), node.draining));
            Ok(())
        }
        async fn withdraw(&self, _id: &str) -> Result<(), ClusterError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_told_while_a_beat_is_in_flight_is_announced_right_after_it_and_stays() {
        let beacon = Slow::default();
        let start = Instant::now();
        let draining = Arc::new(AtomicBool::new(false));
        let soon = Arc::new(Notify::new());
        let now = {
            let draining = draining.clone();
            move || {
                let draining = draining.load(Ordering::SeqCst);
                async move { m1(1, draining) }
            }
        };
        // The drain comes 50 ms into the first beat's write, which read "not draining" (a
        // task of its own: the heartbeat's own futures are not polled during a write).
        let drain = {
            let (draining, soon) = (draining.clone(), soon.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                draining.store(true, Ordering::SeqCst);
                soon.notify_one();
            })
        };
        let stop = tokio::time::sleep(Duration::from_millis(950));
        heartbeat(beacon.clone(), Duration::from_secs(1), now, &soon, stop).await;
        drain.await.unwrap();
        let ms = Duration::from_millis;
        let got: Vec<(Duration, bool)> = beacon
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(at, d)| (*at - start, *d))
            .collect();
        // The stale beat lands first, the drain right after it: draining from 200 ms on, not
        // from the next regular beat (1 s).
        assert_eq!(got, [(ms(100), false), (ms(200), true)]);
    }
}
