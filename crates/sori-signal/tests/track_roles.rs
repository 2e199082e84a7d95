//! Track roles between browsers: a browser says which of its videos is the camera and which the
//! screen share, and the server relays that with the SDP. A bad `roles` map is refused and
//! changes nothing. (In SFU rooms the roles reach the others with the published tracks once
//! media flows: `roles.rs` pairs them, the browser suites check them end to end.)

mod common;

use common::{flush, server, Client};
use serde_json::{json, Value};

#[tokio::test]
async fn p2p_offers_carry_the_senders_roles_to_the_other_browser() {
    let s = server().await;
    let (mut p, _) = Client::connect_and_join(&s.url, "roles-p2p", "P", "p2p").await;
    let (mut q, jq) = Client::connect_and_join(&s.url, "roles-p2p", "Q", "p2p").await;
    let p_id = jq["participants"][0]["id"].clone();
    let q_id = p.expect("participant-joined").await["participant"]["id"].clone();

    let roles = json!({"1": "camera", "2": "screen"});
    q.send(json!({"type": "offer", "sdp": "v=0\r\n", "to": p_id, "roles": roles}));
    let offer = p.expect("offer").await;
    assert_eq!(offer["from"], q_id);
    assert_eq!(offer["roles"], roles);

    p.send(json!({"type": "answer", "sdp": "v=0\r\n", "to": q_id, "roles": {"0": "camera"}}));
    let answer = q.expect("answer").await;
    assert_eq!(answer["roles"], json!({"0": "camera"}));

    // An older client states no roles: none are made up on the way.
    q.send(json!({"type": "offer", "sdp": "v=0\r\n", "to": p_id}));
    let offer = p.expect("offer").await;
    assert!(offer.get("roles").is_none(), "{offer}");
}

#[tokio::test]
async fn a_bad_roles_map_is_refused_and_nothing_is_relayed() {
    let s = server().await;
    let (mut p, _) = Client::connect_and_join(&s.url, "roles-bad", "P", "p2p").await;
    let (mut q, jq) = Client::connect_and_join(&s.url, "roles-bad", "Q", "p2p").await;
    let p_id = jq["participants"][0]["id"].clone();
    p.expect("participant-joined").await;

    let too_many: serde_json::Map<String, Value> =
        (0..300).map(|i| (i.to_string(), json!("camera"))).collect();
    for (roles, says) in [
        (json!({"1": "webcam"}), "unknown track role \"webcam\""),
        (json!({"": "camera"}), "mid"),
        (Value::Object(too_many), "300 entries"),
    ] {
        q.send(json!({"type": "offer", "sdp": "v=0\r\n", "to": p_id, "roles": roles}));
        let e = q.recv().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "bad-roles", "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    }
    // A role that is not a string is not a roles map at all.
    q.send(json!({"type": "offer", "sdp": "v=0\r\n", "to": p_id, "roles": {"1": 3}}));
    assert_eq!(q.recv().await["code"], "bad-message");

    // P received none of the refused offers: the first thing to reach it is Q's chat.
    q.send(json!({"type": "chat", "text": "after the refusals"}));
    let seen = flush(&mut p, "from p").await;
    let offers: Vec<&Value> = seen.iter().filter(|m| m["type"] == "offer").collect();
    assert!(offers.is_empty(), "{offers:?}");
    assert!(
        seen.iter().any(|m| m["text"] == "after the refusals"),
        "{seen:?}"
    );
}
