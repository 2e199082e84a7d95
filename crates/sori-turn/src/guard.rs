//! The relay policy, applied where requests enter the server.
//!
//! The `turn` crate has no permission hook, so [`Guarded`] wraps the socket the server reads
//! requests from. CreatePermission and ChannelBind requests naming a forbidden peer are answered
//! `403 Forbidden` here and never reach the crate; Send indications toward one are dropped.
//! Since the relay only sends to peers with a permission or channel, nothing reaches them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stun::attributes::{ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{ErrorCodeAttribute, CODE_FORBIDDEN};
use stun::integrity::MessageIntegrity;
use stun::message::{
    is_message, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_INDICATION,
    CLASS_REQUEST, MAGIC_COOKIE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use webrtc_util::Conn;

use crate::auth::SecretAuth;
use crate::policy::RelayPolicy;

/// A server socket whose inbound requests pass the relay policy first.
pub(crate) struct Guarded {
    pub(crate) inner: Arc<dyn Conn + Send + Sync>,
    pub(crate) policy: Arc<RelayPolicy>,
    pub(crate) auth: Arc<SecretAuth>,
    pub(crate) realm: String,
    /// Requests and indications refused by the policy, shared by every transport.
    pub(crate) refused: Arc<AtomicU64>,
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
        self.refused.fetch_add(1, Ordering::Relaxed);
        match peer {
            Some(p) => tracing::debug!(client = %from, peer = %p, "TURN relay refused by policy"),
            None => tracing::debug!(client = %from, "TURN request with a malformed peer address"),
        }
        if class == CLASS_INDICATION {
            return Verdict::Drop;
        }
        match self.forbidden_response(&m) {
            Some(raw) => Verdict::Reply(raw),
            None => Verdict::Drop,
        }
    }

    /// `403 Forbidden` for request `m`, signed with the requester's key when it has a
    /// current one (clients ignore unsigned answers to signed requests).
    fn forbidden_response(&self, m: &Message) -> Option<Vec<u8>> {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(Message {
                transaction_id: m.transaction_id,
                ..Default::default()
            }),
            Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute {
                code: CODE_FORBIDDEN,
                reason: b"Forbidden".to_vec(),
            }),
        ];
        if let Ok(username) = TextAttribute::get_from_as(m, ATTR_USERNAME) {
            if let Some(key) = self.auth.key(&username.text, &self.realm) {
                setters.push(Box::new(MessageIntegrity(key)));
            }
        }
        let mut reply = Message::new();
        reply.build(&setters).ok()?;
        Some(reply.raw)
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
