//! Serving the SPA's built files from the same origin (`static`): content types, compression,
//! cache headers, and the fallback to `index.html` for navigations.
//!
//! - Fingerprinted assets (`index-BkX9_3aQ.js`, as bundlers name them) never change under their
//!   name: `Cache-Control: public, max-age=31536000, immutable`.
//! - Everything else, `index.html` first, is revalidated: `Cache-Control: no-cache`.
//! - A navigation (`Sec-Fetch-Mode: navigate`, or a browser asking for HTML) that matches no
//!   file gets `spa_fallback`; a missing asset (script, image, `fetch`) gets `404`.
//! - Framing: `Content-Security-Policy: frame-ancestors 'self'` (and `X-Frame-Options:
//!   SAMEORIGIN`) unless `static.frame_ancestors` says otherwise, against clickjacking.
//! - gzip or brotli when the browser accepts it (pre-compressed `.br`/`.gz` files are used when
//!   present). `ServeDir` refuses paths that leave the folder.

use std::path::PathBuf;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Request, StatusCode, header};
use tower::{Layer as _, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::StaticConfig;

const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// The static file service.
#[derive(Debug, Clone)]
pub struct Assets {
    dir: ServeDir,
    fallback: Option<PathBuf>,
    /// `Content-Security-Policy: frame-ancestors …`, built once.
    frame_ancestors: HeaderValue,
    /// The `X-Frame-Options` equivalent for older browsers, when there is one.
    frame_options: Option<HeaderValue>,
}

impl Assets {
    /// Serves `config.dir`.
    pub fn new(config: &StaticConfig) -> Self {
        Self {
            dir: ServeDir::new(&config.dir)
                .precompressed_br()
                .precompressed_gzip()
                .append_index_html_on_directories(true),
            fallback: config.spa_fallback.as_ref().map(|f| config.dir.join(f)),
            frame_ancestors: HeaderValue::from_str(&format!(
                "frame-ancestors {}",
                config.frame_ancestors.join(" ")
            ))
            .expect("validated sources are header-safe"),
            frame_options: match config.frame_ancestors.as_slice() {
                [only] if only == "'self'" => Some(HeaderValue::from_static("SAMEORIGIN")),
                [only] if only == "'none'" => Some(HeaderValue::from_static("DENY")),
                _ => None,
            },
        }
    }

    /// Serves a file, or the SPA fallback for a navigation that matches none; `None` when
    /// nothing fits (the caller answers 404).
    pub async fn serve(&self, req: Request<Body>) -> Option<Response> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let navigation = is_navigation(&req);
        let path = req.uri().path().to_owned();
        let (parts, _) = req.into_parts();
        let fallback_req = Request::from_parts(parts.clone(), Body::empty());
        let resp = CompressionLayer::new()
            .layer(self.dir.clone())
            .oneshot(Request::from_parts(parts, Body::empty()))
            .await
            .ok()?;
        if resp.status() != StatusCode::NOT_FOUND {
            let mut resp = resp.into_response();
            let cache = if is_fingerprinted(&path) {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            self.set_headers(&mut resp, cache);
            return Some(resp);
        }
        let fallback = self.fallback.as_ref().filter(|_| navigation)?;
        let mut resp = CompressionLayer::new()
            .layer(ServeFile::new(fallback))
            .oneshot(fallback_req)
            .await
            .ok()?
            .into_response();
        if resp.status() != StatusCode::OK {
            return None;
        }
        self.set_headers(&mut resp, REVALIDATE);
        Some(resp)
    }

    /// Caching, `nosniff`, and who may frame the page (clickjacking): the SPA's own
    /// `Content-Security-Policy`, if a file ever carried one, would win.
    fn set_headers(&self, resp: &mut Response, cache: HeaderValue) {
        let h = resp.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::CACHE_CONTROL, cache);
        h.entry(header::CONTENT_SECURITY_POLICY)
            .or_insert_with(|| self.frame_ancestors.clone());
        if let Some(xfo) = &self.frame_options {
            h.insert(header::X_FRAME_OPTIONS, xfo.clone());
        }
    }
}

/// A top-level page load, as opposed to a script, image or `fetch()`.
fn is_navigation<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    match h.get("sec-fetch-mode") {
        Some(mode) => mode == "navigate",
        None => h
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
    }
}

/// Whether the file name carries a content hash, as bundlers write it: a last `-` or `.`
/// separated part of at least 8 characters from `[A-Za-z0-9_]`, with a digit or an upper-case
/// letter (so `date-picker.js` or `bootstrap-datepicker.js` are not mistaken for hashed).
pub fn is_fingerprinted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    // Vite's default: `-` and exactly 8 base64url characters, which may contain `-` and `_`.
    if let Some(hash) = stem.len().checked_sub(8).and_then(|i| stem.get(i..)) {
        let separated = stem.len() > 9 && stem.as_bytes()[stem.len() - 9] == b'-';
        if separated && looks_like_hash(hash, b"_-") {
            return true;
        }
    }
    let Some(hash) = stem
        .rsplit(['-', '.'])
        .next()
        .filter(|h| h.len() < stem.len())
    else {
        return false;
    };
    hash.len() >= 8 && looks_like_hash(hash, b"_")
}

fn looks_like_hash(text: &str, extra: &[u8]) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
        && text
            .bytes()
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::is_fingerprinted;

    #[test]
    fn fingerprints_are_recognised() {
        for hashed in [
            "/assets/index-BkX9_3aQ.js",
            "/assets/index-B-x9_3aQ.js",
            "/assets/vendor-D_-1abcd.css",
            "/assets/index-dab17e84.js",
            "/assets/style.4f9a2b1c.css",
            "/a/logo-Dq3f8Z1k.svg",
            "/chunk-3F2A9C11.js",
        ] {
            assert!(is_fingerprinted(hashed), "{hashed}");
        }
        for plain in [
            "/index.html",
            "/favicon.ico",
            "/assets/date-picker.js",
            "/bootstrap-datepicker.js",
            "/app.js",
            "/robots.txt",
            "/assets/",
        ] {
            assert!(!is_fingerprinted(plain), "{plain}");
        }
    }
}
