//! The media port's UDP socket: datagrams out leave from the local address the client's
//! datagrams arrived at, whatever address the socket is bound to.
//!
//! ICE requires a response to come from the address the request went to (RFC 8445
//! §7.2.5.2.1). A socket bound to `0.0.0.0` that answers with a plain `send_to` lets the kernel
//! pick the source from the route back, which on a host with two addresses (or when the
//! advertised address is not the one the default route leaves from) is the wrong one, and every
//! connectivity check fails. So each datagram is read with its destination address
//! (`IP_PKTINFO`/`IPV6_PKTINFO`) and each reply names its source. Reads go through `quinn-udp`,
//! which does the control-message work and batches them with `recvmmsg` and GRO; writes go in
//! batches of up to 32 per `sendmmsg` (`nix`), one system call where there were 32 (GSO would
//! need one destination per batch, and an SFU's consecutive datagrams go to many).
//!
//! One socket with packet info rather than a socket per address: addresses come and go (DHCP,
//! failover IPs), an unspecified bind follows them without a restart, and the core keeps one
//! port to route by.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams (or GRO batches) read per system call.
const BATCH: usize = 16;

/// The media port's UDP socket.
pub(crate) struct MediaSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    routes: Routes,
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

/// Which address a datagram is said to have arrived at, and which a reply leaves from.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// The advertised candidates.
    candidates: Vec<SocketAddr>,
    /// Candidate addresses that are this host's own: a reply may name them as its source.
    local: Vec<IpAddr>,
    /// The socket is bound to an unspecified address, so replies must name their source.
    unspecified: bool,
    /// The socket is IPv6 (dual-stack): IPv4 peers appear as IPv4-mapped addresses.
    v6_socket: bool,
}

impl Routes {
    pub(crate) fn new(
        bound: SocketAddr,
        candidates: Vec<SocketAddr>,
        is_local: impl Fn(IpAddr) -> bool,
    ) -> Self {
        let local = candidates
            .iter()
            .map(|c| c.ip())
            .filter(|ip| is_local(*ip))
            .collect();
        Self {
            candidates,
            local,
            unspecified: bound.ip().is_unspecified(),
            v6_socket: bound.is_ipv6(),
        }
    }

    /// The candidate a datagram from `source` to local address `arrived_at` was sent to: the
    /// candidate with that address, or — behind a NAT that rewrote it — the first candidate of
    /// the source's family.
    pub(crate) fn destination(&self, source: SocketAddr, arrived_at: Option<IpAddr>) -> SocketAddr {
        if let Some(ip) = arrived_at.map(unmap) {
            if let Some(c) = self.candidates.iter().find(|c| c.ip() == ip) {
                return *c;
            }
        }
        self.candidates
            .iter()
            .find(|c| c.is_ipv4() == source.is_ipv4())
            .copied()
            .unwrap_or(self.candidates[0])
    }

    /// The source address a datagram from candidate `from` must name: its own address when it
    /// is one of this host's and the socket could pick another; else none (a specific bind, or
    /// an address a NAT maps to this host, where the kernel's choice is the right one).
    pub(crate) fn source(&self, from: SocketAddr) -> Option<IpAddr> {
        (self.unspecified && self.local.contains(&from.ip())).then(|| from.ip())
    }

    /// `addr` as the socket needs it: IPv4-mapped on a dual-stack socket.
    fn outgoing(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(v4) if self.v6_socket => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn unmap_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap(addr.ip()), addr.port())
}

/// Whether `ip` is an address of this host (a socket can be bound to it).
pub(crate) fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

impl MediaSocket {
    pub(crate) fn new(socket: UdpSocket, routes: Routes) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // With GRO one read may hold several datagrams of one sender: room for the most the
        // kernel coalesces.
        let size = 2048 * state.gro_segments().max(1);
        Ok(Self {
            socket,
            state,
            routes,
            bufs: (0..BATCH).map(|_| vec![0u8; size]).collect(),
            meta: vec![RecvMeta::default(); BATCH],
        })
    }

    /// Resolves when datagrams may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads what is waiting, one batch; calls `each(source, destination, datagram)` for every
    /// datagram. `WouldBlock` when nothing was.
    pub(crate) fn try_recv(
        &mut self,
        mut each: impl FnMut(SocketAddr, SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let Self {
            socket,
            state,
            routes,
            bufs,
            meta,
        } = self;
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(&*socket), &mut slices, meta)
        })?;
        let mut datagrams = 0;
        for (m, buf) in meta.iter().zip(slices.iter()).take(n) {
            let source = unmap_addr(m.addr);
            let destination = routes.destination(source, m.dst_ip);
            let stride = m.stride.max(1);
            for datagram in buf[..m.len].chunks(stride) {
                each(source, destination, datagram);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends datagrams (`source` candidate, `destination`, contents), in order, in batches of
    /// up to [`SEND_BATCH`] per `sendmmsg` (one system call instead of one per datagram).
    /// A datagram the kernel refuses (an unreachable destination, say) is logged and skipped;
    /// the others still go.
    pub(crate) async fn send_all(&self, datagrams: &[(SocketAddr, SocketAddr, Vec<u8>)]) {
        let mut at = 0;
        while at < datagrams.len() {
            // A run of datagrams that name the same source (usually all of them).
            let src_ip = self.routes.source(datagrams[at].0);
            let end = datagrams[at..]
                .iter()
                .take(SEND_BATCH)
                .position(|d| self.routes.source(d.0) != src_ip)
                .map_or((at + SEND_BATCH).min(datagrams.len()), |n| at + n);
            let run = &datagrams[at..end];
            let sent = self
                .socket
                .async_io(Interest::WRITABLE, || {
                    send_many(self.socket.as_raw_fd(), &self.routes, src_ip, run)
                })
                .await;
            match sent {
                Ok(n) => at += n.max(1),
                Err(e) => {
                    tracing::debug!(destination = %run[0].1, "media socket send: {e}");
                    at += 1;
                }
            }
        }
    }
}

/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 32;

/// One `sendmmsg` of `run` (every datagram from `src_ip`, when it must be named): how many
/// went. `WouldBlock` when the socket's buffer is full.
fn send_many(
    fd: std::os::fd::RawFd,
    routes: &Routes,
    src_ip: Option<IpAddr>,
    run: &[(SocketAddr, SocketAddr, Vec<u8>)],
) -> io::Result<usize> {
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    let slices: Vec<[IoSlice<'_>; 1]> = run.iter().map(|d| [IoSlice::new(&d.2)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = run
        .iter()
        .map(|d| Some(SockaddrStorage::from(routes.outgoing(d.1))))
        .collect();
    let v4;
    let v6;
    let cmsgs: Vec<ControlMessage<'_>> = match src_ip {
        None => Vec::new(),
        Some(IpAddr::V4(ip)) if !routes.v6_socket => {
            v4 = nix::libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: nix::libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: nix::libc::in_addr { s_addr: 0 },
            };
            vec![ControlMessage::Ipv4PacketInfo(&v4)]
        }
        Some(ip) => {
            let ip6 = match ip {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            v6 = nix::libc::in6_pktinfo {
                ipi6_addr: nix::libc::in6_addr {
                    s6_addr: ip6.octets(),
                },
                ipi6_ifindex: 0,
            };
            vec![ControlMessage::Ipv6PacketInfo(&v6)]
        }
    };
    let space = src_ip.map(|_| nix::cmsg_space!(nix::libc::in6_pktinfo));
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(run.len(), space);
    match sendmmsg(fd, &mut headers, &slices, &addrs, &cmsgs, MsgFlags::empty()) {
        Ok(results) => Ok(results.count()),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn routes(bound: &str) -> Routes {
        let candidates = vec![
            addr("192.0.2.10:40000"),
            addr("198.51.100.7:40000"),
            addr("[2001:db8::1]:40000"),
        ];
        // 198.51.100.7 is a public address a NAT maps here; the others are this host's.
        Routes::new(addr(bound), candidates, |ip| {
            ip != "198.51.100.7".parse::<IpAddr>().unwrap()
        })
    }

    #[test]
    fn a_datagram_arrived_at_the_candidate_it_was_sent_to() {
        let r = routes("0.0.0.0:40000");
        let client = addr("203.0.113.5:5000");
        let at = |ip: &str| r.destination(client, Some(ip.parse().unwrap()));
        assert_eq!(at("192.0.2.10"), addr("192.0.2.10:40000"));
        assert_eq!(at("198.51.100.7"), addr("198.51.100.7:40000"));
        // Rewritten by a NAT to an address that is no candidate: the family's first.
        assert_eq!(at("10.0.0.4"), addr("192.0.2.10:40000"));
        assert_eq!(r.destination(client, None), addr("192.0.2.10:40000"));
        let v6 = addr("[2001:db8::99]:5000");
        assert_eq!(r.destination(v6, None), addr("[2001:db8::1]:40000"));
        // A dual-stack socket reports IPv4 as mapped addresses.
        assert_eq!(
            at("::ffff:192.0.2.10"),
            addr("192.0.2.10:40000"),
            "mapped addresses are IPv4"
        );
    }

    #[test]
    fn replies_name_their_source_only_when_the_kernel_could_pick_another() {
        let r = routes("0.0.0.0:40000");
        assert_eq!(
            r.source(addr("192.0.2.10:40000")),
            Some("192.0.2.10".parse().unwrap())
        );
        // Not an address of this host (1:1 NAT): the kernel's route is the right one.
        assert_eq!(r.source(addr("198.51.100.7:40000")), None);
        // Bound to one address: that is the source anyway.
        assert_eq!(
            routes("192.0.2.10:40000").source(addr("192.0.2.10:40000")),
            None
        );
    }

    #[test]
    fn a_dual_stack_socket_sends_to_ipv4_as_mapped() {
        let r = routes("[::]:40000");
        assert_eq!(
            r.outgoing(addr("203.0.113.5:5000")),
            addr("[::ffff:203.0.113.5]:5000")
        );
        assert_eq!(r.outgoing(addr("[2001:db8::9]:1")), addr("[2001:db8::9]:1"));
        assert_eq!(
            routes("0.0.0.0:1").outgoing(addr("203.0.113.5:5000")),
            addr("203.0.113.5:5000")
        );
    }

    /// The media socket over `socket` (bound to an unspecified address), advertising
    /// 127.0.0.2 on its port: the candidate, an address the route to 127.0.0.1 would not pick.
    fn advertising_127_0_0_2(socket: UdpSocket) -> (MediaSocket, SocketAddr) {
        let bound = socket.local_addr().unwrap();
        let candidate = SocketAddr::new("127.0.0.2".parse().unwrap(), bound.port());
        let routes = Routes::new(bound, vec![candidate], is_local);
        (MediaSocket::new(socket, routes).unwrap(), candidate)
    }

    #[tokio::test]
    async fn replies_leave_from_the_address_the_request_arrived_at() {
        // Bound to 0.0.0.0 and advertising 127.0.0.2: a reply to a client on 127.0.0.1 would
        // leave from 127.0.0.1 by the route, and must leave from 127.0.0.2.
        let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let (mut media, candidate) = advertising_127_0_0_2(socket);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", candidate).await.unwrap();
        let mut got = None;
        while got.is_none() {
            media.readable().await.unwrap();
            match media.try_recv(|s, d, b| got = Some((s, d, b.to_vec()))) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let (source, destination, bytes) = got.unwrap();
        assert_eq!(
            (source, destination, bytes),
            (client.local_addr().unwrap(), candidate, b"ping".to_vec())
        );
        media
            .send_all(&[(destination, source, b"pong".to_vec())])
            .await;
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], candidate));
    }

    #[tokio::test]
    async fn a_dual_stack_socket_replies_to_ipv4_from_the_address_reached() {
        let Ok(socket) = UdpSocket::bind("[::]:0").await else {
            // No IPv6 on this host: there is no dual-stack socket to test.
            return;
        };
        let (media, candidate) = advertising_127_0_0_2(socket);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        media
            .send_all(&[(candidate, client.local_addr().unwrap(), b"pong".to_vec())])
            .await;
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], candidate));
    }

    #[tokio::test]
    async fn a_batch_arrives_whole_in_order_and_a_refused_datagram_costs_only_itself() {
        // 100 datagrams (more than one sendmmsg) to three receivers, from the address the
        // socket is not bound to; one to a destination the kernel refuses (port 0) in the
        // middle of a batch.
        let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let (media, candidate) = advertising_127_0_0_2(socket);
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let refused = addr("127.0.0.1:0");
        let mut datagrams = Vec::new();
        for i in 0..100u32 {
            let to = if i == 40 {
                refused
            } else {
                receivers[i as usize % 3].local_addr().unwrap()
            };
            datagrams.push((candidate, to, i.to_be_bytes().repeat(50)));
        }
        media.send_all(&datagrams).await;
        for (r, receiver) in receivers.iter().enumerate() {
            let want: Vec<u32> = (0..100).filter(|i| i % 3 == r as u32 && *i != 40).collect();
            for i in want {
                let mut buf = [0u8; 512];
                let (n, from) = receiver.recv_from(&mut buf).await.unwrap();
                assert_eq!(from, candidate, "from the candidate's address");
                assert_eq!(&buf[..n], &i.to_be_bytes().repeat(50)[..], "datagram {i}");
            }
        }
    }
}
