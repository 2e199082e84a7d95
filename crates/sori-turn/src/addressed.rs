//! TURN's UDP listener, answering from the address each client's datagrams arrived at: on a
//! host with several addresses, a reply that left from the route's address would not be taken
//! as the answer to the request (the client matches it by the address it asked).
//!
//! Each datagram is read with its destination (`IP_PKTINFO`/`IPV6_PKTINFO`, through
//! `quinn-udp`); the last address each client reached is remembered, and replies name it as
//! their source. On a socket bound to one address there is nothing to choose.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use async_trait::async_trait;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use webrtc_util::Conn;

/// Clients whose arrival address is remembered; past it the table starts over (a reply then
/// leaves by the route until the client's next datagram).
const REMEMBERED: usize = 65_536;

pub(crate) struct AddressedUdp {
    socket: UdpSocket,
    state: UdpSocketState,
    unspecified: bool,
    arrivals: Mutex<HashMap<SocketAddr, IpAddr>>,
    /// Datagrams the kernel coalesced (GRO) beyond the one returned.
    pending: Mutex<VecDeque<(Vec<u8>, SocketAddr)>>,
}

impl AddressedUdp {
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let unspecified = socket.local_addr()?.ip().is_unspecified();
        Ok(Self {
            socket,
            state,
            unspecified,
            arrivals: Mutex::default(),
            pending: Mutex::default(),
        })
    }

    fn remember(&self, from: SocketAddr, at: Option<IpAddr>) {
        let (true, Some(at)) = (self.unspecified, at) else {
            return;
        };
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        if arrivals.len() >= REMEMBERED && !arrivals.contains_key(&from) {
            arrivals.clear();
        }
        arrivals.insert(from, at);
    }

    fn source_for(&self, target: SocketAddr) -> Option<IpAddr> {
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.get(&target).copied()
    }
}

#[async_trait]
impl Conn for AddressedUdp {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        if let Some((data, from)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            return Ok((n, from));
        }
        let mut storage = vec![0u8; buf.len().max(1500) * self.state.gro_segments().max(1)];
        let mut meta = [RecvMeta::default()];
        loop {
            self.socket.readable().await?;
            let got = self.socket.try_io(Interest::READABLE, || {
                let mut slices = [IoSliceMut::new(&mut storage)];
                self.state
                    .recv(UdpSockRef::from(&self.socket), &mut slices, &mut meta)
            });
            match got {
                Ok(0) => continue,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let m = &meta[0];
        self.remember(m.addr, m.dst_ip);
        let stride = m.stride.max(1);
        let mut segments = storage[..m.len].chunks(stride);
        let first = segments.next().unwrap_or_default();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(segments.map(|s| (s.to_vec(), m.addr)));
        let n = first.len().min(buf.len());
        buf[..n].copy_from_slice(&first[..n]);
        Ok((n, m.addr))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let transmit = Transmit {
            destination: target,
            ecn: None,
            contents: buf,
            segment_size: None,
            src_ip: self.source_for(target),
        };
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.state
                    .try_send(UdpSockRef::from(&self.socket), &transmit)
            })
            .await?;
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.socket.peer_addr().ok()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
