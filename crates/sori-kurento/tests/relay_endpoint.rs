//! RelayEndpoint (cascading between media nodes): made only where links are possible; its
//! route takes the other node's dial only with the control API's token, never from a page,
//! only for an element that waits, once at a time; a frame that does not read ends the link
//! and nothing else; a link that ends while its elements live is made again (the waiting one
//! waits anew, the dialing one dials again); releasing the element ends its link.

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

/// Whether the server closes `link` (a close frame, or the connection ends) within the
/// tests' bound.
async fn closes(
    link: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> bool {
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = link.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await
    .is_ok()
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

/// Dials `url` until it is taken (the element waits anew once its last link ended), within
/// the tests' bound.
async fn redial(
    url: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok(l) => return l,
            Err(Error::Http(r)) if r.status() == 404 => {
                assert!(std::time::Instant::now() < deadline, "never waiting again");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("dial {url}: {e}"),
        }
    }
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
    assert!(closes(&mut link).await, "the link was closed");
    // The element lives on: it waits anew, and the other node's next dial links it again.
    let (link, _) = redial(&url).await;
    drop(link);
    let again = waiting_relay(&mut c, &p).await;

    // Releasing a linked element ends its link.
    let (mut link, _) = tokio_tungstenite::connect_async(&relay_url(&s.url, &again, Some(TOKEN)))
        .await
        .unwrap();
    c.ok("release", json!({"object": again})).await;
    assert!(closes(&mut link).await, "the link ended with its element");
}

/// A TCP proxy on loopback to `to`: once open, each connection made through it is carried
/// until `cut` is called, which drops every connection carried so far (a network cut); it
/// takes new ones. Before it opens, connections wait in its listener's backlog.
struct Proxy {
    addr: std::net::SocketAddr,
    listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
    to: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn bind(to: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Proxy {
            addr: listener.local_addr().unwrap(),
            listener: std::sync::Mutex::new(Some(listener)),
            to,
            connections: Default::default(),
            accepted: Default::default(),
        }
    }

    fn open(&self) {
        let listener = self.listener.lock().unwrap().take().unwrap();
        let (conns, count, to) = (self.connections.clone(), self.accepted.clone(), self.to);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
    }

    fn cut(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_link_cut_between_two_nodes_is_made_again() {
    let config = || KurentoConfig {
        access_token: Some(TOKEN.into()),
        ..KurentoConfig::default()
    };
    let a = server_linking(config(), 1, 2).await;
    let b = server_linking(config(), 2, 2).await;
    let mut ca = Client::connect(&format!("{}?access_token=relay%20t0ken", a.url)).await;
    let mut cb = Client::connect(&format!("{}?access_token=relay%20t0ken", b.url)).await;
    let pa = pipeline(&mut ca).await;
    let pb = pipeline(&mut cb).await;
    let ra = waiting_relay(&mut ca, &pa).await;
    // b reaches a's control listener through a proxy that can cut the connection.
    let a_addr: std::net::SocketAddr = a.url["ws://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Proxy::bind(a_addr).await;
    let through = format!("ws://{}/kurento", proxy.addr);
    let uri = relay_url(&through, &ra, Some(TOKEN));
    ca.ok(
        "subscribe",
        json!({"object": ra, "type": "ConnectionStateChanged"}),
    )
    .await;
    let rb = cb
        .ok(
            "create",
            json!({"type": "sori.RelayEndpoint", "constructorParams": {"mediaPipeline": pb, "uri": uri}}),
        )
        .await["value"]
        .as_str()
        .unwrap()
        .to_string();
    cb.ok(
        "subscribe",
        json!({"object": rb, "type": "ConnectionStateChanged"}),
    )
    .await;
    // b's dial waits in the proxy's backlog until both sides listen for the link's events.
    proxy.open();
    // Linked: both elements say so.
    let state = |e: &serde_json::Value| e["params"]["value"]["data"]["newState"].clone();
    assert_eq!(
        state(&ca.event(&ra, "ConnectionStateChanged").await),
        "CONNECTED"
    );
    assert_eq!(
        state(&cb.event(&rb, "ConnectionStateChanged").await),
        "CONNECTED"
    );
    assert_eq!(proxy.accepted(), 1);

    // The network between them is cut: each side sees its link go, b dials again (a new
    // connection through the proxy), a takes it, and both are linked again.
    proxy.cut();
    assert_eq!(
        state(&ca.event(&ra, "ConnectionStateChanged").await),
        "DISCONNECTED"
    );
    assert_eq!(
        state(&cb.event(&rb, "ConnectionStateChanged").await),
        "DISCONNECTED"
    );
    assert_eq!(
        state(&ca.event(&ra, "ConnectionStateChanged").await),
        "CONNECTED"
    );
    assert_eq!(
        state(&cb.event(&rb, "ConnectionStateChanged").await),
        "CONNECTED"
    );
    assert!(proxy.accepted() >= 2, "b dialed again");
    // Released on b: its link ends for good; a's element waits again, and b dials no more.
    let before = proxy.accepted();
    cb.ok("release", json!({"object": rb})).await;
    assert_eq!(
        state(&ca.event(&ra, "ConnectionStateChanged").await),
        "DISCONNECTED"
    );
    let direct = relay_url(&a.url, &ra, Some(TOKEN));
    let (l, _) = redial(&direct).await;
    drop(l);
    assert_eq!(
        proxy.accepted(),
        before,
        "b dialed nothing after its element went"
    );
}
