//! Offer collision ("glare"): the core is the polite side. When a client's offer crosses the
//! core's own, the core drops its offer, answers the client, and offers again; the client may
//! simply ignore the core's crossed offer. Runs in memory on virtual time.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{answer, client, join, offers_to, pump};
use sori_sfu::{SfuError, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};

#[test]
fn a_client_offer_crossing_the_core_offer_wins_and_the_core_offers_again() {
    let mut now = Instant::now();
    let mut sfu = common::sfu();
    let mut clients = HashMap::new();

    let mut a = client(0, now);
    let pa = join(&mut sfu, &mut a, "glare", now);
    clients.insert(pa, a);
    pump(&mut sfu, &mut clients, &mut now, 5);

    let mut b = client(1, now);
    let pb = join(&mut sfu, &mut b, "glare", now);
    clients.insert(pb, b);
    let events = pump(&mut sfu, &mut clients, &mut now, 5);

    // The core offers b's tracks to a. At the same moment a offers a screen share; a is the
    // impolite side and ignores the core's offer.
    let crossed = offers_to(&events, pa);
    assert_eq!(crossed.len(), 1, "the core offered b's tracks to a");
    // b, meanwhile, takes the core's offer of a's tracks.
    for sdp in offers_to(&events, pb) {
        let ans = answer(clients.get_mut(&pb).unwrap(), &sdp);
        sfu.accept_answer(pb, &ans, now).unwrap();
    }
    let a = clients.get_mut(&pa).unwrap();
    let mut api = a.rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let reply = sfu
        .accept_offer(pa, &offer.to_sdp_string(), now)
        .expect("the core answers the crossing offer");
    a.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&reply).unwrap())
        .unwrap();

    let events = pump(&mut sfu, &mut clients, &mut now, 5);
    let again = offers_to(&events, pa);
    assert_eq!(again.len(), 1, "the core offered again after answering");

    let a = clients.get_mut(&pa).unwrap();
    let ans = answer(a, &again[0]);
    sfu.accept_answer(pa, &ans, now).unwrap();
    assert_eq!(
        sfu.accept_answer(pa, &ans, now),
        Err(SfuError::NoPendingOffer)
    );

    // b is offered a's new track; answer everything until the core is quiet.
    let mut events: Vec<SfuEvent> = events
        .into_iter()
        .filter(|e| matches!(e, SfuEvent::Offer { peer, .. } if *peer == pb))
        .collect();
    assert_eq!(events.len(), 1, "the core offered a's screen share to b");
    for _ in 0..5 {
        let mut answered = false;
        for (peer, sdp) in events.iter().filter_map(|e| match e {
            SfuEvent::Offer { peer, sdp } => Some((*peer, sdp.clone())),
            _ => None,
        }) {
            let c = clients.get_mut(&peer).unwrap();
            let ans = answer(c, &sdp);
            sfu.accept_answer(peer, &ans, now).unwrap();
            answered = true;
        }
        events = pump(&mut sfu, &mut clients, &mut now, 5);
        if !answered {
            break;
        }
    }
    assert!(clients.values().all(|c| c.connected));
    let state = sfu.state();
    assert_eq!(state.tracks, 5, "a publishes 3 tracks, b 2");
    assert_eq!(state.subscriptions, 5, "a receives b's 2, b receives a's 3");
}
