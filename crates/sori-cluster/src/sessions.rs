//! Session servers on Redis: each announces itself (`sori:session:<id>`, renewed every beat,
//! expiring three beats after the last) and listens on its channel
//! (`sori:session:<id>:bus`); a room lives on one of them (`sori:room:<room>:session`).
//!
//! A node is alive while its announcement lasts *and* it listens on its channel: a process
//! that dies loses its Redis connection at once, so that its peers notice within a check
//! rather than after the announcement expires.

use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::mpsc;

use crate::ClusterError;

/// The set of session node ids.
const NODES: &str = "sori:session:nodes";

fn node_key(id: &str) -> String {
    format!("sori:session:{id}")
}

fn channel(id: &str) -> String {
    format!("sori:session:{id}:bus")
}

fn owner_key(room: &str) -> String {
    format!("sori:room:{room}:session")
}

fn state_key(room: &str) -> String {
    format!("sori:room:{room}:state")
}

/// How long a room's snapshot outlives its server's last renewal: time for its participants
/// to resume on another server once the first of them finds it gone.
const STATE_TTL: Duration = Duration::from_secs(120);

/// How long a room stays this node's without renewal.
const ROOM_TTL: Duration = Duration::from_secs(10);

/// What a node hears on its channel.
#[derive(Debug)]
pub enum Heard {
    Message(Vec<u8>),
    /// The channel's connection was lost (messages meanwhile are lost) and made again.
    Reset,
}

/// One session server's place in the cluster's Redis.
#[derive(Clone)]
pub struct SessionNode {
    id: String,
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
}

impl SessionNode {
    /// Session node `id` in Redis at `url` (connected at the first call, as the
    /// [`crate::Registry`]).
    pub fn connect(url: &str, id: &str) -> Result<SessionNode, ClusterError> {
        let (client, conn) = crate::connect(url)?;
        Ok(SessionNode {
            id: id.to_string(),
            client,
            conn,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Announces this node (or renews it) for `ttl`.
    pub async fn announce(&self, ttl: Duration) -> Result<(), ClusterError> {
        let mut c = self.conn.clone();
        redis::pipe()
            .atomic()
            .set_options(
                node_key(&self.id),
                1,
                redis::SetOptions::default()
                    .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64)),
            )
            .ignore()
            .sadd(NODES, &self.id)
            .ignore()
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// This node leaves at once (it stops).
    pub async fn withdraw(&self) -> Result<(), ClusterError> {
        crate::withdraw(&self.conn, NODES, &node_key(&self.id), &self.id).await
    }

    /// The session nodes announced now.
    pub async fn nodes(&self) -> Result<Vec<String>, ClusterError> {
        let mut c = self.conn.clone();
        let mut ids: Vec<String> = c.smembers(NODES).await?;
        ids.sort();
        let mut live = Vec::new();
        for id in ids {
            if c.exists(node_key(&id)).await? {
                live.push(id);
            } else {
                let _: i64 = c.srem(NODES, &id).await?;
            }
        }
        Ok(live)
    }

    /// Whether node `id` is announced and listening (false when Redis cannot say).
    pub async fn alive(&self, id: &str) -> bool {
        let mut c = self.conn.clone();
        let answer: Result<(bool, (String, i64)), _> = redis::pipe()
            .exists(node_key(id))
            .cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel(id))
            .query_async(&mut c)
            .await;
        matches!(answer, Ok((true, (_, n))) if n > 0)
    }

    /// The node `room` lives on: the one that holds it while it is alive, else this one.
    pub async fn owner(&self, room: &str) -> Result<String, ClusterError> {
        let mut c = self.conn.clone();
        let key = owner_key(room);
        let cur: Option<String> = c.get(&key).await?;
        match cur.as_deref() {
            Some(me) if me == self.id => return Ok(me.to_string()),
            Some(other) if self.alive(other).await => return Ok(other.to_string()),
            _ => {}
        }
        let winner: String = redis::Script::new(REPLACE)
            .key(&key)
            .arg(cur.unwrap_or_default())
            .arg(&self.id)
            .arg(ROOM_TTL.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(winner)
    }

    /// Renews this node's hold on `rooms` (taking those nobody holds), storing each one's
    /// snapshot when given (else renewing the one stored); returns those another node holds.
    pub async fn keep(
        &self,
        rooms: &[(String, Option<Vec<u8>>)],
    ) -> Result<Vec<String>, ClusterError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        for (room, snapshot) in rooms {
            pipe.cmd("EVAL")
                .arg(KEEP)
                .arg(2)
                .arg(owner_key(room))
                .arg(state_key(room))
                .arg(&self.id)
                .arg(ROOM_TTL.as_millis() as u64)
                .arg(snapshot.as_deref().unwrap_or_default())
                .arg(STATE_TTL.as_millis() as u64);
        }
        let holders: Vec<String> = pipe.query_async(&mut c).await?;
        Ok(rooms
            .iter()
            .zip(holders)
            .filter(|(_, h)| *h != self.id)
            .map(|((r, _), _)| r.clone())
            .collect())
    }

    /// The snapshot of `room` its last server stored.
    pub async fn load(&self, room: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut c = self.conn.clone();
        Ok(c.get(state_key(room)).await?)
    }

    /// Sends `message` to node `to`; false when it does not listen.
    pub async fn publish(&self, to: &str, message: &[u8]) -> Result<bool, ClusterError> {
        let mut c = self.conn.clone();
        let heard: i64 = c.publish(channel(to), message).await?;
        Ok(heard > 0)
    }

    /// Listens on this node's channel for as long as `heard` is open: what arrives goes
    /// there in order; a lost connection is made again (every half second while Redis is
    /// away) and reported as [`Heard::Reset`].
    pub async fn listen(self, heard: mpsc::Sender<Heard>) {
        use futures_util::StreamExt;
        let mut lost = false;
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(channel(&self.id)).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
                Ok(Ok(pubsub)) => {
                    if lost && heard.send(Heard::Reset).await.is_err() {
                        return;
                    }
                    let mut messages = pubsub.into_on_message();
                    while let Some(m) = messages.next().await {
                        let bytes = m.get_payload_bytes().to_vec();
                        if heard.send(Heard::Message(bytes)).await.is_err() {
                            return;
                        }
                    }
                    tracing::warn!("session bus: the Redis connection was lost");
                    lost = true;
                    if heard.send(Heard::Reset).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!("session bus: cannot subscribe: {e}");
                    lost = true;
                }
                Err(_) => lost = true,
            }
            if heard.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Sets KEYS[1] to ARGV[2] for ARGV[3] ms if it still holds ARGV[1] ("" for none); returns
/// what it holds after.
const REPLACE: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return cur
";

/// Renews KEYS[1] for ARGV[2] ms if it holds ARGV[1], or takes it if it holds nothing; then
/// stores ARGV[3] in KEYS[2] for ARGV[4] ms (or, when it is empty, renews what KEYS[2]
/// holds). Returns what KEYS[1] holds after.
const KEEP: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return cur
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return ARGV[1]
";
