//! TURN over TCP (RFC 5766 §2.1) and over TLS (`turns:`, RFC 5766 §2.1 / RFC 7350): browsers
//! behind firewalls that pass only TCP reach the server on a stream, and the relay still speaks
//! UDP to peers.
//!
//! The `turn` crate's server reads datagrams from a [`Conn`]; [`TcpTransport`] is one: it
//! accepts connections (for TLS, completes the handshake first), cuts each byte stream into STUN
//! messages and ChannelData frames, and hands them on tagged with the connection's remote
//! address, to which replies are written back. Plain and TLS streams share every line after the
//! handshake.
//!
//! An allocation made over a connection ends with it (RFC 8656 §3.1): the crate knows nothing of
//! connections, so when one closes the transport hands the server, on the client's behalf, a
//! Refresh with lifetime 0 signed with the client's own credential (its username, realm and
//! latest nonce, seen on the stream). Without this the relay port would stay taken until the
//! allocation's lifetime ran out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::{
    is_message, Message, MessageType, Setter, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use turn::proto::lifetime::Lifetime;
use webrtc_util::Conn;

use crate::auth::SecretAuth;

/// Connections open at once on one listener (handshakes under way included); more wait in the
/// kernel's accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// A connection on which no complete frame arrives for this long is closed. Clients refresh
/// their allocation and permissions every few minutes.
const IDLE: Duration = Duration::from_secs(600);
/// Frames waiting to be written to one slow connection; beyond this they are dropped, as a
/// congested UDP path would.
const WRITE_QUEUE: usize = 256;
/// A TLS handshake not done by then closes the connection.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest frame accepted; the server reads at most 1500 bytes, so a longer one can only be
/// a stream that is not TURN (`GET / HTTP…` reads as a ChannelData header of 21 kB).
const MAX_FRAME: usize = 4096;
/// A frame whose header has arrived must be complete within this.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

pub(crate) struct TcpTransport {
    local: SocketAddr,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Writers,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpTransport {
    /// TURN over plain TCP on `listener`; `auth` signs the Refresh that ends a closed
    /// connection's allocation.
    pub(crate) fn new(listener: TcpListener, auth: Arc<SecretAuth>) -> std::io::Result<Self> {
        Self::with_tls(listener, None, auth)
    }

    /// TURN over TLS on `listener` when `tls` is given, else over plain TCP.
    pub(crate) fn with_tls(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        auth: Arc<SecretAuth>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, incoming) = mpsc::channel(1024);
        let writers = Writers::default();
        let accept = tokio::spawn(accept_loop(listener, tls, tx, writers.clone(), auth));
        Ok(Self {
            local,
            incoming: tokio::sync::Mutex::new(incoming),
            writers,
            accept,
        })
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        // The map stays consistent even if a holder panicked: entries are inserted or removed whole.
        self.writers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Accepts connections; dropping this task (abort) drops every connection's task with it.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    incoming: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
    auth: Arc<SecretAuth>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("TURN TCP accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                writers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, tx);
                let (incoming, writers, tls) = (incoming.clone(), writers.clone(), tls.clone());
                let auth = auth.clone();
                connections.spawn(async move {
                    match tls {
                        None => connection(stream, peer, incoming, rx, &auth).await,
                        Some(tls) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => connection(stream, peer, incoming, rx, &auth).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(client = %peer, "TURN TLS handshake failed: {e}")
                                }
                                Err(_) => {
                                    tracing::debug!(client = %peer, "TURN TLS handshake timed out")
                                }
                            }
                        }
                    }
                    writers.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
                });
            }
        }
    }
}

/// One client connection, plain or TLS: frames in, queued replies out, until either side ends;
/// then its allocation, if it made one, is released.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    incoming: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    auth: &SecretAuth,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // The credential of the client's latest signed Allocate or Refresh.
    let mut signed: Option<Signed> = None;
    let read = async {
        loop {
            let frame = match tokio::time::timeout(IDLE, read_frame(&mut reader)).await {
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, "TURN TCP connection dropped: {e}");
                    break;
                }
            };
            if let Some(s) = Signed::of(&frame) {
                signed = Some(s);
            }
            if incoming.send((frame, peer)).await.is_err() {
                break;
            }
        }
    };
    let write = async {
        while let Some(frame) = outgoing.recv().await {
            // A TLS stream buffers records until flushed; for plain TCP flushing is free.
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    if let Some(release) = signed.and_then(|s| s.release(auth)) {
        let _ = incoming.send((release, peer)).await;
    }
}

/// What signed one of the client's allocation requests: enough to sign another for it.
struct Signed {
    username: String,
    realm: String,
    nonce: String,
}

impl Signed {
    /// The credential of an Allocate or Refresh request carrying one, else `None`.
    fn of(frame: &[u8]) -> Option<Signed> {
        // Most frames are ChannelData or Send indications: only these two requests are decoded.
        const ALLOCATE_REQUEST: u16 = 0x0003;
        const REFRESH_REQUEST: u16 = 0x0004;
        let typ = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
        if !matches!(typ, ALLOCATE_REQUEST | REFRESH_REQUEST) || !is_message(frame) {
            return None;
        }
        let mut m = Message::new();
        m.raw = frame.to_vec();
        m.decode().ok()?;
        if m.typ.class != CLASS_REQUEST
            || (m.typ.method != METHOD_ALLOCATE && m.typ.method != METHOD_REFRESH)
        {
            return None;
        }
        let text = |attr| TextAttribute::get_from_as(&m, attr).ok().map(|t| t.text);
        Some(Signed {
            username: text(ATTR_USERNAME)?,
            realm: text(ATTR_REALM)?,
            nonce: text(ATTR_NONCE)?,
        })
    }

    /// A Refresh with lifetime 0 (delete the allocation), signed as the client would; `None`
    /// once the credential has expired (the allocation then cannot be refreshed either and ends
    /// at its lifetime).
    fn release(&self, auth: &SecretAuth) -> Option<Vec<u8>> {
        let key = auth.key(&self.username, &self.realm)?;
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
            Box::new(Lifetime(Duration::ZERO)),
            Box::new(TextAttribute::new(ATTR_USERNAME, self.username.clone())),
            Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())),
            Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())),
            Box::new(MessageIntegrity(key)),
        ];
        let mut m = Message::new();
        m.build(&setters).ok()?;
        Some(m.raw)
    }
}

/// Reads one STUN message or ChannelData frame; `None` at a clean end of stream.
async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let Some(total) = frame_len(header).filter(|&n| n <= MAX_FRAME) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "neither STUN nor ChannelData",
        ));
    };
    let mut frame = vec![0u8; total];
    frame[..4].copy_from_slice(&header);
    tokio::time::timeout(FRAME_TIMEOUT, reader.read_exact(&mut frame[4..]))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(Some(frame))
}

/// The length of the frame a 4-byte header starts: STUN messages carry their body length after
/// a 20-byte header; ChannelData frames over TCP are padded to a multiple of 4 (RFC 5766 §11.5).
pub(crate) fn frame_len(header: [u8; 4]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match header[0] >> 6 {
        0b00 => Some(20 + len),
        0b01 => Some(4 + len.next_multiple_of(4)),
        _ => None,
    }
}

#[async_trait]
impl Conn for TcpTransport {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut incoming = self.incoming.lock().await;
        loop {
            let Some((frame, from)) = incoming.recv().await else {
                return Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into());
            };
            // Larger than the server reads: no legitimate TURN message is.
            if frame.len() <= buf.len() {
                buf[..frame.len()].copy_from_slice(&frame);
                return Ok((frame.len(), from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let Some(writer) = self.writers().get(&target).cloned() else {
            return Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into());
        };
        let mut frame = buf.to_vec();
        if let Some(padded) = buf.first_chunk().and_then(|h| frame_len(*h)) {
            frame.resize(padded.max(buf.len()), 0);
        }
        // A full queue drops the frame, like a congested UDP path; a closed one is an error.
        if let Err(mpsc::error::TrySendError::Closed(_)) = writer.try_send(frame) {
            return Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into());
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.accept.abort();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_by_their_headers() {
        // A Binding request with an 8-byte body; ChannelData of 5 bytes (padded to 8).
        assert_eq!(frame_len([0x00, 0x01, 0x00, 0x08]), Some(28));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x08]), Some(12));
        assert_eq!(frame_len([0x80, 0x00, 0x00, 0x00]), None);
    }
}
