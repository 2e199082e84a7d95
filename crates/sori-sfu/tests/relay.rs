//! Two cores share a room through a relay: the core with the publisher exports its tracks,
//! the other imports them, and receivers on either get the same frames. The test moves relay
//! packets and keyframe requests between the cores as `sori-net`'s workers do. Virtual time.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{answer, client, join, Client, SERVER};
use sori_sfu::{PeerId, RelayId, Sfu, SfuConfig, SfuEvent, TrackId};
use str0m::media::{MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output};

/// One core and its clients.
struct Core {
    sfu: Sfu,
    clients: HashMap<PeerId, Client>,
    events: Vec<SfuEvent>,
}

/// Two cores (0 and 1) and the relays between them: relay `RelayId(i)` leads to core `i`.
struct Pair {
    cores: [Core; 2],
    now: Instant,
    /// Keyframe requests that crossed from an importing core to the exporting one.
    keyframe_requests_relayed: usize,
    /// The tracks each core's own peers publish.
    local: [std::collections::HashSet<TrackId>; 2],
}

fn core(first_id: u64) -> Core {
    Core {
        sfu: Sfu::new(SfuConfig {
            candidates: vec![SERVER],
            first_id,
            ..SfuConfig::default()
        }),
        clients: HashMap::new(),
        events: Vec::new(),
    }
}

impl Pair {
    fn new() -> Pair {
        Pair {
            cores: [core(1), core(1 << 40)],
            now: Instant::now(),
            keyframe_requests_relayed: 0,
            local: Default::default(),
        }
    }

    /// A client `i` publishing audio and video joins `room` on core `c`.
    fn join(&mut self, c: usize, i: u8, room: &str) -> PeerId {
        let now = self.now;
        let mut client = client(i, now);
        let core = &mut self.cores[c];
        let id = join(&mut core.sfu, &mut client, room, now);
        core.clients.insert(id, client);
        // The room's tracks on the other core come here.
        let other = &self.cores[1 - c].sfu;
        let infos: Vec<_> = self.cores[1 - c]
            .clients
            .keys()
            .flat_map(|p| published_by(other, *p))
            .filter_map(|t| other.track_info(t))
            .filter(|i| i.room == room)
            .collect();
        for info in infos {
            let track = info.track;
            if self.cores[c].sfu.import(info, now).is_ok() {
                self.cores[1 - c]
                    .sfu
                    .export(track, RelayId(c as u32), now)
                    .unwrap();
            }
        }
        id
    }

    fn owner(&self, peer: PeerId) -> usize {
        if self.cores[0].clients.contains_key(&peer) {
            0
        } else {
            1
        }
    }

    fn client(&mut self, peer: PeerId) -> &mut Client {
        let c = self.owner(peer);
        self.cores[c].clients.get_mut(&peer).unwrap()
    }

    /// One 10 ms round: datagrams both ways on each core, relay packets and keyframe
    /// requests across, tracks exported and imported as they come and go, offers answered.
    fn round(&mut self) {
        let now = self.now;
        for core in &mut self.cores {
            for c in core.clients.values_mut() {
                loop {
                    match c.rtc.poll_output().unwrap() {
                        Output::Timeout(_) => break,
                        Output::Transmit(t) => {
                            core.sfu.handle_datagram(now, c.addr, SERVER, &t.contents)
                        }
                        Output::Event(Event::Connected) => c.connected = true,
                        Output::Event(Event::MediaData(d)) => c.received.push(d),
                        Output::Event(Event::KeyframeRequest(_)) => c.keyframe_requests.push(now),
                        Output::Event(_) => {}
                    }
                }
            }
            while let Some(t) = core.sfu.poll_transmit() {
                if let Some(c) = core.clients.values_mut().find(|c| c.addr == t.destination) {
                    let r = Receive::new(Protocol::Udp, SERVER, c.addr, &t.contents).unwrap();
                    c.rtc.handle_input(Input::Receive(now, r)).unwrap();
                }
            }
        }
        for from in 0..2 {
            while let Some(p) = self.cores[from].sfu.poll_relay() {
                let to = p.to.0 as usize;
                assert_ne!(to, from);
                self.cores[to].sfu.relay_in(now, p);
            }
        }
        for c in 0..2 {
            let events: Vec<SfuEvent> =
                std::iter::from_fn(|| self.cores[c].sfu.poll_event()).collect();
            for e in &events {
                self.handle(c, e);
            }
            self.cores[c].events.extend(events);
        }
        self.now += Duration::from_millis(10);
        for core in &mut self.cores {
            for c in core.clients.values_mut() {
                c.rtc.handle_input(Input::Timeout(self.now)).unwrap();
            }
            core.sfu.handle_timeout(self.now);
        }
    }

    fn handle(&mut self, c: usize, e: &SfuEvent) {
        let now = self.now;
        let other = 1 - c;
        match e {
            SfuEvent::Offer { peer, sdp } => {
                // An offer made before its peer left is not answered.
                let Some(client) = self.cores[c].clients.get_mut(peer) else {
                    return;
                };
                let ans = answer(client, sdp);
                self.cores[c].sfu.accept_answer(*peer, &ans, now).unwrap();
            }
            SfuEvent::TrackPublished { peer, track, .. }
                if self.cores[c].clients.contains_key(peer) =>
            {
                self.local[c].insert(*track);
                let info = self.cores[c].sfu.track_info(*track).unwrap();
                if self.cores[other].sfu.import(info, now).is_ok() {
                    let to = RelayId(other as u32);
                    self.cores[c].sfu.export(*track, to, now).unwrap();
                }
            }
            SfuEvent::TrackUnpublished { track, .. } => {
                if self.local[c].remove(track) {
                    // The publisher's track ended: the copy goes too.
                    self.cores[other].sfu.unimport(*track, now);
                } else {
                    // The copy went (no peer of its room left here): stop sending it.
                    self.cores[other]
                        .sfu
                        .unexport(*track, RelayId(c as u32), now);
                }
            }
            SfuEvent::RelayKeyframeRequest {
                track,
                layer,
                urgency,
            } => {
                self.keyframe_requests_relayed += 1;
                self.cores[other]
                    .sfu
                    .request_track_keyframe(*track, *layer, *urgency, now)
                    .unwrap();
            }
            _ => {}
        }
    }

    fn leave(&mut self, peer: PeerId) {
        let c = self.owner(peer);
        self.cores[c].sfu.leave(peer, self.now).unwrap();
        self.cores[c].clients.remove(&peer);
    }

    fn rounds(&mut self, n: usize) {
        for _ in 0..n {
            self.round();
        }
    }

    /// `publisher` sends frame `n` of its video (every 10th a keyframe, as far as the data
    /// goes) and an audio frame, then three rounds run (30 frames a second).
    fn send_frame(&mut self, publisher: PeerId, n: u32) {
        let now = self.now;
        let data = frame(n);
        let c = self.client(publisher);
        let ts = MediaTime::from_90khz(u64::from(n) * 3000);
        common::write(c, MediaKind::Video, now, ts, &data);
        common::write(
            c,
            MediaKind::Audio,
            now,
            MediaTime::from_90khz(u64::from(n) * 1800),
            &[n as u8; 60],
        );
        self.rounds(3);
    }

    /// The video frames `peer` received from `publisher`'s video track, as written.
    fn video_from(&mut self, peer: PeerId) -> Vec<Vec<u8>> {
        self.client(peer)
            .received
            .iter()
            .filter(|d| d.data.len() > 100)
            .map(|d| d.data.to_vec())
            .collect()
    }
}

/// A VP8 frame whose first bytes say whether it is a keyframe (every 10th), then its number.
fn frame(n: u32) -> Vec<u8> {
    common::vp8_frame(u64::from(n), n.is_multiple_of(10), 1200)
}

/// The tracks `peer` publishes on `sfu`.
fn published_by(sfu: &Sfu, peer: PeerId) -> Vec<TrackId> {
    sfu.media(peer)
        .map(|lines| lines.into_iter().filter_map(|l| l.published).collect())
        .unwrap_or_default()
}

#[test]
fn receivers_on_both_cores_get_every_frame_byte_identical() {
    let mut p = Pair::new();
    let publisher = p.join(0, 1, "r");
    let near = p.join(0, 2, "r");
    let far = p.join(1, 3, "r");
    let far2 = p.join(1, 4, "r");
    p.rounds(60);
    for id in [publisher, near, far, far2] {
        assert!(p.client(id).connected, "{id} connected");
    }
    for n in 0..100 {
        p.send_frame(publisher, n);
    }
    p.rounds(30);
    let near_frames = p.video_from(near);
    let far_frames = p.video_from(far);
    let far2_frames = p.video_from(far2);
    assert!(
        near_frames.len() >= 90,
        "near got {} frames",
        near_frames.len()
    );
    // The far receivers start at the keyframe asked for across the relay, and from then on
    // miss nothing: the same bytes as the near one, in the same order.
    for got in [&far_frames, &far2_frames] {
        assert!(got.len() >= 80, "far got {} frames", got.len());
        let first = near_frames
            .iter()
            .position(|f| f == &got[0])
            .expect("a frame near got");
        assert_eq!(
            got[..],
            near_frames[first..first + got.len()],
            "same frames, same order"
        );
        assert_eq!(got.last(), near_frames.last());
    }
    assert!(
        p.keyframe_requests_relayed >= 1,
        "a far receiver's keyframe request crossed"
    );
    // A packet crosses once per core, not once per receiver there.
    let a = p.cores[0].sfu.counters();
    let b = p.cores[1].sfu.counters();
    assert!(
        b.rtp_received <= a.rtp_received,
        "{} relayed in, {} received from clients",
        b.rtp_received,
        a.rtp_received
    );
}

#[test]
fn a_publisher_leaving_removes_its_track_on_the_other_core_and_an_empty_room_stops_the_relay() {
    let mut p = Pair::new();
    let publisher = p.join(0, 1, "r");
    let far = p.join(1, 2, "r");
    p.rounds(60);
    for n in 0..30 {
        p.send_frame(publisher, n);
    }
    p.rounds(10);
    assert!(p.video_from(far).len() >= 20);
    let track = published_by(&p.cores[0].sfu, publisher)[1];
    assert!(p.cores[1].sfu.track_info(track).is_some(), "imported");

    // The far receiver leaves: its core's copy goes, and the publisher's core stops sending.
    let other = p.join(1, 3, "r");
    p.rounds(30);
    p.leave(far);
    p.leave(other);
    p.rounds(5);
    assert!(
        p.cores[1].sfu.track_info(track).is_none(),
        "the copy went with the room"
    );
    let relayed = p.cores[1].sfu.counters().relay_unknown;
    for n in 30..40 {
        p.send_frame(publisher, n);
    }
    assert_eq!(
        p.cores[1].sfu.counters().relay_unknown,
        relayed,
        "nothing relayed any more"
    );

    // Back in the room on that core, then the publisher leaves: the copy is unpublished there
    // and its receiver is offered the session without it.
    let back = p.join(1, 4, "r");
    p.rounds(60);
    assert!(p.cores[1].sfu.track_info(track).is_some(), "imported again");
    let offers_before = p.cores[1]
        .events
        .iter()
        .filter(|e| matches!(e, SfuEvent::Offer { peer, .. } if *peer == back))
        .count();
    p.leave(publisher);
    p.rounds(10);
    assert!(
        p.cores[1].sfu.track_info(track).is_none(),
        "the copy went with the publisher"
    );
    let offers_after = p.cores[1]
        .events
        .iter()
        .filter(|e| matches!(e, SfuEvent::Offer { peer, .. } if *peer == back))
        .count();
    assert!(offers_after > offers_before, "the receiver renegotiated");
}

#[test]
fn a_tap_on_the_importing_core_records_the_relayed_track() {
    let mut p = Pair::new();
    let publisher = p.join(0, 1, "r");
    let _far = p.join(1, 2, "r");
    p.rounds(60);
    let track = published_by(&p.cores[0].sfu, publisher)[1];
    let now = p.now;
    let tap = p.cores[1].sfu.tap(track, now).unwrap();
    let mut tapped = Vec::new();
    for n in 0..40 {
        p.send_frame(publisher, n);
        while let Some(t) = p.cores[1].sfu.poll_tap() {
            assert_eq!(t.tap, tap);
            tapped.push(t);
        }
    }
    assert!(
        tapped.first().is_some_and(|t| t.keyframe),
        "starts at a keyframe"
    );
    let seqs: Vec<u64> = tapped.iter().map(|t| t.seq).collect();
    let expected: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "continuous sequence numbers");
    assert!(tapped.len() >= 20, "{} packets tapped", tapped.len());
}
