//! Serving the SPA's built files from the same origin (`static`), with the fallback to
//! `index.html` for navigations.

use std::path::PathBuf;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::StaticConfig;

/// The static file service.
#[derive(Debug, Clone)]
pub struct Assets {
    dir: ServeDir,
    fallback: Option<PathBuf>,
}

impl Assets {
    /// Serves `config.dir`.
    pub fn new(config: &StaticConfig) -> Self {
        Self {
            dir: ServeDir::new(&config.dir)
                .precompressed_gzip()
                .precompressed_br(),
            fallback: config.spa_fallback.as_ref().map(|f| config.dir.join(f)),
        }
    }

    /// Serves a file, or the SPA fallback for a navigation that matches none; `None` when
    /// nothing fits (the caller answers 404).
    pub async fn serve(&self, req: Request<Body>) -> Option<Response> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let navigation = is_navigation(&req);
        let head = req.method() == Method::HEAD;
        let resp = self.dir.clone().oneshot(req).await.ok()?;
        if resp.status() != StatusCode::NOT_FOUND {
            let mut resp = resp.into_response();
            set_headers(&mut resp);
            return Some(resp);
        }
        let fallback = self.fallback.as_ref().filter(|_| navigation)?;
        let method = if head { Method::HEAD } else { Method::GET };
        let req = Request::builder()
            .method(method)
            .uri("/")
            .body(Body::empty())
            .ok()?;
        let mut resp = ServeFile::new(fallback)
            .oneshot(req)
            .await
            .ok()?
            .into_response();
        if resp.status() != StatusCode::OK {
            return None;
        }
        set_headers(&mut resp);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Some(resp)
    }
}

fn is_navigation<B>(req: &Request<B>) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/html")
}

fn set_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
}
