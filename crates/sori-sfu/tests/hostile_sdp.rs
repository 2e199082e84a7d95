//! Mangled SDP never panics the core: a refused offer leaves no trace, and a bad re-offer or
//! answer from a connected peer leaves the others untouched.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{client, join, pump, settle};
use sori_testkit::{mutate, Rng};
use str0m::media::{Direction, MediaKind};

#[test]
fn mangled_offers_and_answers_never_panic_and_change_nothing_when_refused() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();
    let mut a = client(0, now);
    let pa = join(&mut sfu, &mut a, "sdp", now);
    clients.insert(pa, a);
    let mut b = client(1, now);
    let pb = join(&mut sfu, &mut b, "sdp", now);
    clients.insert(pb, b);
    let events = pump(&mut sfu, &mut clients, &mut now, 5);
    settle(&mut sfu, &mut clients, &mut now, events);
    let settled = sfu.state();

    // A valid offer from a new client, to mangle.
    let mut fresh = client(2, now);
    let mut api = fresh.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    let offer = offer.to_sdp_string();

    let mut rng = Rng::new(0x0005_eed0_f5d9);
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..1500 {
        let bad = mutate::lines(&offer, "\r\n", &mut rng);
        let before = sfu.state();
        match sfu.join("sdp", &bad, now) {
            Err(_) => {
                refused += 1;
                assert_eq!(sfu.state(), before, "a refused join leaves nothing behind");
            }
            Ok((peer, _answer)) => {
                accepted += 1;
                sfu.leave(peer, now).unwrap();
            }
        }
        // A connected peer sends nonsense: its own offer or an answer no one asked for.
        let _ = sfu.accept_offer(pa, &bad, now);
        let _ = sfu.accept_answer(pb, &bad, now);
        while sfu.poll_event().is_some() {}
    }
    println!("mangled offers: {refused} refused, {accepted} still valid");
    assert!(refused > 100 && accepted > 100, "both paths exercised");
    // b never re-offered; it still receives a's tracks and a b's, as before.
    let after = sfu.state();
    assert_eq!(after.peers, settled.peers);
    assert!(
        after.tracks >= 2,
        "b's tracks survive a's nonsense: {after:?}"
    );
}
