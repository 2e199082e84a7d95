//! Hostile frames: thousands of mutated requests (bytes flipped, cut, spliced) never crash
//! the control API, never close the socket, and change no object.

mod common;

use common::{endpoint, pipeline, server, Client};
use serde_json::{json, Value};
use sori_testkit::{mutate, Rng};

#[tokio::test]
async fn mutated_requests_get_answers_and_change_nothing() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let w = endpoint(&mut c, &p).await;
    let seeds = [
        json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"interval":5000}}),
        json!({"jsonrpc":"2.0","id":2,"method":"describe","params":{"object": w}}),
        json!({"jsonrpc":"2.0","id":3,"method":"invoke","params":{"object": w,
               "operation":"getSourceConnections","operationParams":{"mediaType":"VIDEO"}}}),
        json!({"jsonrpc":"2.0","id":4,"method":"invoke","params":{"object": w,
               "operation":"addIceCandidate","operationParams":{"candidate":
               {"candidate":"candidate:1 1 UDP 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"transaction","params":{"operations":[
               {"jsonrpc":"2.0","id":0,"method":"describe","params":{"object": p}}]}}),
        json!({"jsonrpc":"2.0","id":6,"method":"invoke","params":{"object":"manager_ServerManager",
               "operation":"getInfo"}}),
    ];
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|v| v.to_string().into_bytes()).collect();
    let mut rng = Rng::new(0x5eed_cafe_f00d_beef);
    let mut answered = 0;
    for round in 0..3000 {
        let mutations = 1 + rng.below(4);
        let frame = mutate::json_frame(&seeds, mutations, &mut rng);
        let text = String::from_utf8_lossy(&frame).into_owned();
        c.send_raw(&text).await;
        // Whatever the frame was, a ping right after it is answered: the socket is alive and
        // the frame's own reply (if any) came first.
        let id = 1_000_000 + round;
        c.send_raw(&json!({"jsonrpc":"2.0","id":id,"method":"ping"}).to_string())
            .await;
        loop {
            let v = c.recv().await;
            if v.get("method").and_then(Value::as_str) == Some("onEvent") {
                continue;
            }
            if v["id"] == json!(id) {
                assert_eq!(v["result"]["value"], "pong");
                break;
            }
            answered += 1;
        }
    }
    println!("{answered} of 3000 mutated frames were answered (the rest were notifications)");
    assert!(answered > 1000);
    let (_, pipelines, elements) = s.kurento.counts().await;
    assert_eq!((pipelines, elements), (1, 1), "nothing created or released");
    assert_eq!(
        c.ok("describe", json!({"object": w})).await["type"],
        "WebRtcEndpoint"
    );
}
