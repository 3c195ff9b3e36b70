//! A real upstream on 127.0.0.1: echoes what it received, streams big bodies, answers slowly
//! on demand, and accepts a WebSocket-style upgrade that echoes bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every `Authorization` header the upstream saw, in order.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// A running upstream; stopped when dropped.
pub struct Upstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Authorization headers received.
    pub seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

/// How the echo shows a bearer token: its SHA-256, so that the token itself never travels
/// back to the browser through the test upstream.
pub fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    format!(
        "Bearer sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn headers_json(h: &HeaderMap) -> serde_json::Value {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in h {
        let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
        let shown = match (k.as_str(), text.strip_prefix("Bearer ")) {
            ("authorization", Some(token)) => fingerprint(token),
            _ => text,
        };
        map.entry(k.as_str().to_owned()).or_default().push(shown);
    }
    json!(map)
}

async fn echo(State(seen): State<Seen>, req: Request) -> Response {
    if let Some(a) = req.headers().get("authorization") {
        seen.lock()
            .unwrap()
            .push(a.to_str().unwrap_or("").to_owned());
    }
    let body = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers_json(req.headers()),
    });
    axum::Json(body).into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

async fn big(Query(q): Query<BTreeMap<String, u64>>) -> Response {
    let total = q.get("bytes").copied().unwrap_or(1024);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = total / chunk.len() as u64;
    let rest = (total % chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    )
    .chain(futures_util::stream::iter(
        (rest > 0).then(|| Ok(Bytes::from(vec![b'x'; rest]))),
    ));
    Response::builder()
        .header("content-length", total)
        .body(Body::from_stream(stream))
        .unwrap()
}

/// An endless event stream (no `Content-Length`): a chunk every 100 ms.
async fn events() -> Response {
    let stream = futures_util::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(format!("data: {n}\n\n"))),
            n + 1,
        ))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn upload(req: Request) -> Response {
    let mut stream = req.into_body().into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => total += c.len() as u64,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    axum::Json(json!({ "bytes": total })).into_response()
}

async fn ws(mut req: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", "test-accept")
        .body(Body::empty())
        .unwrap()
}

async fn set_cookie() -> Response {
    Response::builder()
        .header("set-cookie", "sallyport=forged-by-upstream; Path=/")
        .header("set-cookie", "app-pref=1; Path=/")
        .header("access-control-allow-origin", "*")
        .body(Body::from("ok"))
        .unwrap()
}

/// An API that needs a multi-factor login (RFC 9470): it reads the `acr` of the ID token it
/// is given as bearer (service `echo_id`) and answers `401` with an
/// `insufficient_user_authentication` challenge unless it is `mfa`.
async fn step_up(req: Request) -> Response {
    use base64::Engine as _;
    let acr = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|jwt| jwt.split('.').nth(1))
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|claims| claims["acr"].as_str().map(str::to_owned));
    if acr.as_deref() == Some("mfa") {
        return axum::Json(json!({ "granted": true })).into_response();
    }
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            "www-authenticate",
            r#"Bearer error="insufficient_user_authentication", error_description="A multi-factor login is required", acr_values="mfa""#,
        )
        .body(Body::from("step up"))
        .unwrap()
}

impl Upstream {
    /// Starts the upstream on a free port.
    pub async fn start() -> Upstream {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/slow", any(slow))
            .route("/big", any(big))
            .route("/upload", any(upload))
            .route("/ws", any(ws))
            .route("/events", any(events))
            .route("/set-cookie", any(set_cookie))
            .route("/step-up", any(step_up))
            .fallback(echo)
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream {
            url: format!("http://{addr}"),
            seen,
            task,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
