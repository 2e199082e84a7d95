//! RelayEndpoint (cascading between media nodes): made only where links are possible; its
//! route takes the other node's dial only with the control API's token, never from a page,
//! only for an element that waits, once; a frame that does not read ends the link and
//! nothing else; releasing the element ends its link.

mod common;

use common::{pipeline, server, server_linking, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sori_kurento::KurentoConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};

const TOKEN: &str = "relay t0ken";

/// The relay URL of `element` on the server whose control API is at `url`.
fn relay_url(url: &str, element: &str, token: Option<&str>) -> String {
    let enc = |s: &str| s.replace('/', "%2F").replace(' ', "%20");
    let mut u = format!("{url}/relay?element={}", enc(element));
    if let Some(t) = token {
        u.push_str(&format!("&access_token={}", enc(t)));
    }
    u
}

/// The HTTP status a dial of `url` gets (101 when it is taken).
async fn dial_status(url: &str, origin: Option<&str>) -> u16 {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("dial {url}: {e}"),
    }
}

async fn waiting_relay(c: &mut Client, p: &str) -> String {
    let v = c
        .ok(
            "create",
            json!({"type": "sori.RelayEndpoint", "constructorParams": {"mediaPipeline": p}}),
        )
        .await;
    v["value"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_media_server_without_links_refuses_a_relay_endpoint() {
    let s = server().await;
    let mut c = Client::connect(&s.url).await;
    let p = pipeline(&mut c).await;
    let e = c
        .err(
            "create",
            json!({"type": "sori.RelayEndpoint", "constructorParams": {"mediaPipeline": p}}),
        )
        .await;
    assert_eq!(e["code"], 40009, "{e}");
    assert!(e["message"].as_str().unwrap().contains("relay link"), "{e}");
    assert_eq!(s.kurento.counts().await, (1, 1, 0), "nothing was made");
}

#[tokio::test]
async fn the_relay_route_takes_the_other_node_with_the_token_once_and_no_one_else() {
    let config = KurentoConfig {
        access_token: Some(TOKEN.into()),
        ..KurentoConfig::default()
    };
    let s = server_linking(config, 7, 2).await;
    let mut c = Client::connect(&format!("{}?access_token=relay%20t0ken", s.url)).await;
    let p = pipeline(&mut c).await;
    let relay = waiting_relay(&mut c, &p).await;
    assert!(relay.ends_with("_sori.RelayEndpoint"), "{relay}");

    // No token, a wrong one, a page's Origin, an element that does not wait: refused.
    assert_eq!(
        dial_status(&relay_url(&s.url, &relay, None), None).await,
        401
    );
    assert_eq!(
        dial_status(&relay_url(&s.url, &relay, Some("wrong")), None).await,
        401
    );
    assert_eq!(
        dial_status(
            &relay_url(&s.url, &relay, Some(TOKEN)),
            Some("http://127.0.0.1")
        )
        .await,
        403
    );
    assert_eq!(
        dial_status(&relay_url(&s.url, &p, Some(TOKEN)), None).await,
        404,
        "a pipeline is no relay"
    );
    // The other node, once; a second dial of the same element finds it taken.
    let url = relay_url(&s.url, &relay, Some(TOKEN));
    let (mut link, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(dial_status(&url, None).await, 404);

    // A frame that does not read ends the link (the connection closes) and nothing else:
    // the session goes on and makes another relay.
    link.send(Message::Binary(vec![0xff, 1, 2, 3].into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = link.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the link was closed");
    let again = waiting_relay(&mut c, &p).await;

    // Releasing a linked element ends its link.
    let (mut link, _) = tokio_tungstenite::connect_async(&relay_url(&s.url, &again, Some(TOKEN)))
        .await
        .unwrap();
    c.ok("release", json!({"object": again})).await;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = link.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the link ended with its element");
}
