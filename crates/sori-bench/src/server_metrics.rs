//! The server's own account of its simulcast layers, read from its Prometheus page
//! (`/metrics`, which Sori answers on loopback): `sori_layer_switches_total` (times a
//! receiver's video moved to another layer, paused or resumed) and `sori_video_receivers`
//! (video deliveries by the layer sent), and its egress, `sori_rtp_forwarded_bytes_total`. A
//! server whose page has none of them reports nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for the page.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest page read.
const MAX_PAGE: u64 = 1 << 20;

const SWITCHES: &str = "sori_layer_switches_total";
const RECEIVERS: &str = "sori_video_receivers";
const FORWARDED_BYTES: &str = "sori_rtp_forwarded_bytes_total";

/// What the server says about the layers it sends.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerLayers {
    /// Layer switches (and pauses, resumes) during the measurement window.
    pub switches_in_window: Option<u64>,
    /// Layer switches since the server started, at the end of the window.
    pub switches_total: Option<u64>,
    /// Video deliveries (track, receiver) by the layer sent at the end of the window:
    /// `paused`, `low`, `medium`, `high` (`high` includes tracks sent as one encoding).
    pub receivers_by_layer: BTreeMap<String, u64>,
    /// RTP payload bytes the server forwarded to receivers during the window.
    #[serde(default)]
    pub forwarded_bytes_in_window: Option<u64>,
}

/// `http://HOST:PORT/metrics` for a signaling URL `ws://HOST:PORT/...`; `None` for other
/// schemes (a TLS server is not read).
pub fn metrics_url(signaling: &str) -> Option<String> {
    let rest = signaling.strip_prefix("ws://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(format!("http://{authority}/metrics"))
}

/// Reads `url` (`http://HOST:PORT/PATH`) with one HTTP/1.0 request; the body of a 200 answer.
pub async fn fetch(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// is read"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let get = async {
        let mut stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_PAGE)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, get)
        .await
        .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_string())
}

/// The value of one series (`name` or `name{labels}`, as the page writes it).
pub fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// The layers from the pages read before and after the window; `None` when the page after
/// has neither metric.
pub fn layers(before: Option<&str>, after: &str) -> Option<ServerLayers> {
    let total = value(after, SWITCHES).map(|v| v as u64);
    let receivers_by_layer: BTreeMap<String, u64> = ["paused", "low", "medium", "high"]
        .iter()
        .filter_map(|layer| {
            let v = value(after, &format!("{RECEIVERS}{{layer=\"{layer}\"}}"))?;
            Some((layer.to_string(), v as u64))
        })
        .collect();
    let bytes = value(after, FORWARDED_BYTES).map(|v| v as u64);
    if total.is_none() && receivers_by_layer.is_empty() && bytes.is_none() {
        return None;
    }
    let counted = |series| before.and_then(|b| value(b, series)).map(|v| v as u64);
    Some(ServerLayers {
        switches_in_window: total
            .zip(counted(SWITCHES))
            .map(|(a, b)| a.saturating_sub(b)),
        switches_total: total,
        receivers_by_layer,
        forwarded_bytes_in_window: bytes
            .zip(counted(FORWARDED_BYTES))
            .map(|(a, b)| a.saturating_sub(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP sori_layer_switches_total Times ...\n\
        # TYPE sori_layer_switches_total counter\n\
        sori_layer_switches_total 17\n\
        sori_video_receivers{layer=\"paused\"} 0\n\
        sori_video_receivers{layer=\"low\"} 1\n\
        sori_video_receivers{layer=\"high\"} 9\n\
        sori_rtp_forwarded_bytes_total 5000\n\
        sori_tracks 4\n";

    #[test]
    fn series_are_read_by_name_and_labels() {
        assert_eq!(value(PAGE, "sori_tracks"), Some(4.0));
        assert_eq!(
            value(PAGE, "sori_video_receivers{layer=\"low\"}"),
            Some(1.0)
        );
        assert_eq!(value(PAGE, "sori_video_receivers"), None);
        assert_eq!(value(PAGE, "sori_layer_switches"), None);
        assert_eq!(value("sori_tracks x\n", "sori_tracks"), None);
    }

    #[test]
    fn switches_in_the_window_are_the_difference_of_two_pages() {
        let before = "sori_layer_switches_total 5\nsori_rtp_forwarded_bytes_total 1000\n";
        let l = layers(Some(before), PAGE).unwrap();
        assert_eq!(l.switches_in_window, Some(12));
        assert_eq!(l.forwarded_bytes_in_window, Some(4000));
        assert_eq!(l.switches_total, Some(17));
        assert_eq!(l.receivers_by_layer["high"], 9);
        assert_eq!(l.receivers_by_layer.get("medium"), None);
        assert_eq!(layers(None, PAGE).unwrap().switches_in_window, None);
        // A server without layer metrics says nothing about layers.
        assert_eq!(layers(Some(before), "sori_tracks 4\n"), None);
    }

    #[test]
    fn the_metrics_page_sits_next_to_the_signaling_socket() {
        assert_eq!(
            metrics_url("ws://127.0.0.1:4100/ws").as_deref(),
            Some("http://127.0.0.1:4100/metrics")
        );
        assert_eq!(metrics_url("wss://example.org/ws"), None);
        assert_eq!(metrics_url("ws:///ws"), None);
    }

    /// A server that answers one request with `answer` and closes; returns its address.
    async fn answering(answer: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /metrics HTTP/1.0\r\n"));
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn the_page_is_the_body_of_a_200_answer() {
        let ok =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 28\r\n\r\nsori_layer_switches_total 3\n")
                .await;
        let page = fetch(&format!("http://{ok}/metrics")).await.unwrap();
        assert_eq!(value(&page, SWITCHES), Some(3.0));
        let refused = answering("HTTP/1.1 401 Unauthorized\r\n\r\nno\n").await;
        let e = fetch(&format!("http://{refused}/metrics"))
            .await
            .unwrap_err();
        assert!(e.contains("401"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_page_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(fetch(&format!("http://{addr}/metrics")).await.is_err());
        assert!(fetch("https://127.0.0.1/metrics").await.is_err());
    }
}
