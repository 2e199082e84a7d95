//! The checks the `turn` crate lacks, applied where requests enter the server.
//!
//! The crate has no hook for them, so [`Guarded`] wraps the socket the server reads requests
//! from and answers refused requests itself; they never reach the crate:
//!
//! - **Revocation**: Allocate, Refresh, CreatePermission and ChannelBind requests carrying a
//!   revoked username get `401 Unauthorized`. A Refresh with lifetime 0 still passes: it ends
//!   an allocation, which is what the revocation wants.
//! - **Quotas**: an authenticated Allocate over its username's or its client address's cap gets
//!   `486 Allocation Quota Reached` (RFC 8656 §7.2). The guard also watches the crate's
//!   answers to Allocates on their way out to keep the books of [`Quotas`].
//! - **Relay policy**: CreatePermission and ChannelBind requests naming a forbidden peer get
//!   `403 Forbidden`; Send indications toward one are dropped. Since the relay only sends to
//!   peers with a permission or channel, nothing reaches them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{
    ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_UNAUTHORIZED,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    is_message, Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
    CLASS_REQUEST, MAGIC_COOKIE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_REFRESH, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use turn::proto::lifetime::Lifetime;
use webrtc_util::Conn;

use crate::auth::SecretAuth;
use crate::policy::RelayPolicy;
use crate::quota::{QuotaReached, Quotas};
use crate::revocation::Revocations;

/// Requests and indications refused since the start, shared by every transport.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// Toward a peer the relay policy forbids.
    pub(crate) peers: AtomicU64,
    /// Allocates over a quota.
    pub(crate) quota: AtomicU64,
    /// Requests with a revoked credential.
    pub(crate) revoked: AtomicU64,
}

/// State the guards of every transport share with each other and with the monitor.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) refusals: Refusals,
    pub(crate) quotas: Mutex<Quotas>,
    pub(crate) revocations: Mutex<Revocations>,
}

impl Shared {
    pub(crate) fn quotas(&self) -> MutexGuard<'_, Quotas> {
        // Each call changes the books whole; a panicking holder leaves them consistent.
        self.quotas.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn revocations(&self) -> MutexGuard<'_, Revocations> {
        // As above: one revocation is inserted or removed whole.
        self.revocations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A server socket whose inbound requests pass revocation, quotas and the relay policy first.
pub(crate) struct Guarded {
    pub(crate) inner: Arc<dyn Conn + Send + Sync>,
    /// `inner`'s own address: with the client's, what the crate keys allocations by.
    pub(crate) local: SocketAddr,
    pub(crate) policy: Arc<RelayPolicy>,
    pub(crate) auth: Arc<SecretAuth>,
    pub(crate) realm: String,
    pub(crate) shared: Arc<Shared>,
}

/// What to do with one inbound datagram.
enum Verdict {
    Pass,
    Drop,
    Reply(Vec<u8>),
}

impl Guarded {
    fn judge(&self, data: &[u8], from: SocketAddr) -> Verdict {
        if !is_message(data) {
            return Verdict::Pass;
        }
        let mut m = Message::new();
        m.raw = data.to_vec();
        if m.decode().is_err() {
            return Verdict::Pass;
        }
        if m.typ.class == CLASS_REQUEST {
            if let Some(verdict) = self.judge_credential(&mut m, from) {
                return verdict;
            }
        }
        self.judge_peers(&m, from)
    }

    /// Refuses requests with a revoked credential and Allocates over a quota; `None` lets the
    /// request on.
    fn judge_credential(&self, m: &mut Message, from: SocketAddr) -> Option<Verdict> {
        let method = m.typ.method;
        if ![
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&method)
        {
            return None;
        }
        // Without a username the request is the first of an exchange, which the crate answers
        // with its challenge.
        let username = TextAttribute::get_from_as(m, ATTR_USERNAME).ok()?.text;
        if self.shared.revocations().is_revoked(&username) && !is_release(m) {
            self.shared.refusals.revoked.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %from, username, "TURN request with a revoked credential");
            return Some(
                self.unauthorized_response(m)
                    .map_or(Verdict::Drop, Verdict::Reply),
            );
        }
        // Only authentic Allocates count: a forged one would otherwise hold a slot of its
        // username until the crate's refusal went out.
        if method != METHOD_ALLOCATE || !self.authentic(m, &username) {
            return None;
        }
        let cap = self
            .shared
            .quotas()
            .reserve((from, self.local), &username)
            .err()?;
        self.shared.refusals.quota.fetch_add(1, Ordering::Relaxed);
        let cap = match cap {
            QuotaReached::Username => "username",
            QuotaReached::Ip => "client address",
        };
        tracing::debug!(client = %from, username, "TURN allocation quota of the {cap} reached");
        let reply = self.signed_error(m, CODE_ALLOC_QUOTA_REACHED, b"Allocation Quota Reached");
        Some(reply.map_or(Verdict::Drop, Verdict::Reply))
    }

    /// Whether `m` carries a MESSAGE-INTEGRITY made with the current credential `username`.
    fn authentic(&self, m: &mut Message, username: &str) -> bool {
        let Ok(realm) = TextAttribute::get_from_as(m, ATTR_REALM) else {
            return false;
        };
        self.auth
            .key(username, &realm.text)
            .is_some_and(|key| MessageIntegrity(key).check(m).is_ok())
    }

    fn judge_peers(&self, m: &Message, from: SocketAddr) -> Verdict {
        let (method, class) = (m.typ.method, m.typ.class);
        let guarded = (class == CLASS_REQUEST
            && (method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND))
            || (class == CLASS_INDICATION && method == METHOD_SEND);
        if !guarded {
            return Verdict::Pass;
        }
        let forbidden = m
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            .map(|a| xor_address(&a.value, &m.transaction_id.0))
            .find(|peer| !peer.is_some_and(|p| self.policy.permits(p)));
        let Some(peer) = forbidden else {
            return Verdict::Pass;
        };
        self.shared.refusals.peers.fetch_add(1, Ordering::Relaxed);
        match peer {
            Some(p) => tracing::debug!(client = %from, peer = %p, "TURN relay refused by policy"),
            None => tracing::debug!(client = %from, "TURN request with a malformed peer address"),
        }
        if class == CLASS_INDICATION {
            return Verdict::Drop;
        }
        match self.signed_error(m, CODE_FORBIDDEN, b"Forbidden") {
            Some(raw) => Verdict::Reply(raw),
            None => Verdict::Drop,
        }
    }

    /// An error response to request `m`, signed with the requester's key when it has a
    /// current one (clients ignore unsigned answers to signed requests).
    fn signed_error(&self, m: &Message, code: ErrorCode, reason: &[u8]) -> Option<Vec<u8>> {
        let mut setters = error_setters(m, code, reason);
        if let Ok(username) = TextAttribute::get_from_as(m, ATTR_USERNAME) {
            if let Some(key) = self.auth.key(&username.text, &self.realm) {
                setters.push(Box::new(MessageIntegrity(key)));
            }
        }
        build(&setters)
    }

    /// `401 Unauthorized` for a request with a revoked credential: with the realm and the
    /// request's own nonce, as RFC 8489 §9.2.4 asks, and unsigned, since the credential is
    /// not one the server accepts. A client that already answered a challenge gives up.
    fn unauthorized_response(&self, m: &Message) -> Option<Vec<u8>> {
        let mut setters = error_setters(m, CODE_UNAUTHORIZED, b"Unauthorized");
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
        if let Ok(nonce) = TextAttribute::get_from_as(m, ATTR_NONCE) {
            setters.push(Box::new(nonce));
        }
        build(&setters)
    }
}

/// The common head of an error response to `m`.
fn error_setters(m: &Message, code: ErrorCode, reason: &[u8]) -> Vec<Box<dyn Setter>> {
    vec![
        Box::new(Message {
            transaction_id: m.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.to_vec(),
        }),
    ]
}

fn build(setters: &[Box<dyn Setter>]) -> Option<Vec<u8>> {
    let mut reply = Message::new();
    reply.build(setters).ok()?;
    Some(reply.raw)
}

/// Whether `m` is a Refresh with lifetime 0, which deletes the allocation.
fn is_release(m: &Message) -> bool {
    let mut lifetime = Lifetime::default();
    m.typ.method == METHOD_REFRESH && lifetime.get_from(m).is_ok() && lifetime.0 == Duration::ZERO
}

/// Whether an outbound datagram is the crate's answer to an Allocate: `Some(true)` for a
/// success, `Some(false)` for an error.
fn allocate_answer(data: &[u8]) -> Option<bool> {
    const ALLOCATE_SUCCESS: u16 = 0x0103;
    const ALLOCATE_ERROR: u16 = 0x0113;
    if !is_message(data) {
        return None;
    }
    // is_message checked the 20-byte header is there.
    match u16::from_be_bytes([data[0], data[1]]) {
        ALLOCATE_SUCCESS => Some(true),
        ALLOCATE_ERROR => Some(false),
        _ => None,
    }
}

/// Decodes an XOR-PEER-ADDRESS value (RFC 5389 §15.2).
fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&cookie);
    pad[4..].copy_from_slice(transaction);
    let ip = match (value.get(1)?, value.len()) {
        (0x01, 8) => {
            let b: [u8; 4] = std::array::from_fn(|i| value[4 + i] ^ pad[i]);
            IpAddr::V4(Ipv4Addr::from(b))
        }
        (0x02, 20) => {
            let b: [u8; 16] = std::array::from_fn(|i| value[4 + i] ^ pad[i]);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[async_trait]
impl Conn for Guarded {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            match self.judge(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Drop => {}
                Verdict::Reply(raw) => {
                    if let Err(e) = self.inner.send_to(&raw, from).await {
                        tracing::debug!(client = %from, "cannot answer a TURN request: {e}");
                    }
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if let Some(success) = allocate_answer(buf) {
            self.shared.quotas().answered((target, self.local), success);
        }
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    /// Does nothing: the `turn` crate closes the socket an allocation came in on whenever that
    /// allocation ends, but this socket is the server's own listener, shared by every client.
    /// [`crate::TurnServer::shutdown`] closes the transports itself.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::xoraddr::XorMappedAddress;

    #[test]
    fn xor_peer_addresses_decode_like_the_stun_crate_encodes_them() {
        for peer in ["203.0.113.9:4242", "[2001:db8::7]:65535"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut m = Message::new();
            m.build(&[
                Box::new(stun::agent::TransactionId::new()),
                Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
            ])
            .unwrap();
            XorMappedAddress {
                ip: peer.ip(),
                port: peer.port(),
            }
            .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
            .unwrap();
            let attr = m.attributes.get(ATTR_XOR_PEER_ADDRESS).0;
            assert_eq!(xor_address(&attr.value, &m.transaction_id.0), Some(peer));
        }
        assert_eq!(xor_address(&[0, 1, 0], &[0; 12]), None);
    }
}
