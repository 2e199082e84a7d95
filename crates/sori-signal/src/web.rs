//! The web client, embedded in the binary: `cargo run -- serve` needs no separate build step.
//! The build script lists `web/` into [`FILES`]; `/` is `index.html`, every other file is at its
//! own path, and anything else is a 404.

use axum::http::header;
use axum::routing::get;
use axum::Router;

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

/// A route per file of the web client.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, bytes)| {
            let path = if path == "/index.html" { "/" } else { path };
            router.route(
                path,
                get(move || async move { ([(header::CONTENT_TYPE, content_type)], bytes) }),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get_path(path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let kind = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        (status, kind, body.to_vec())
    }

    #[tokio::test]
    async fn every_file_of_web_is_served_with_its_content_type() {
        let (status, kind, body) = get_path("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(kind.as_deref(), Some("text/html; charset=utf-8"));
        assert!(String::from_utf8(body).unwrap().contains("/app.js"));
        for (path, kind) in [
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
        ] {
            let (status, got, body) = get_path(path).await;
            assert_eq!(
                (status, got.as_deref()),
                (StatusCode::OK, Some(kind)),
                "{path}"
            );
            assert!(!body.is_empty());
        }
        let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web");
        for entry in std::fs::read_dir(web).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".js") {
                let (status, kind, body) = get_path(&format!("/{name}")).await;
                assert_eq!(status, StatusCode::OK, "{name}");
                assert_eq!(kind.as_deref(), Some("text/javascript; charset=utf-8"));
                assert_eq!(body, std::fs::read(format!("{web}/{name}")).unwrap());
            }
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        for path in ["/nope.js", "/index.htm", "/../Cargo.toml", "/app.js/x"] {
            assert_eq!(get_path(path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
    }
}
