//! Logs, traces and correlation ids: the subscriber, and the middleware that gives each
//! request a correlation id (and a trace span when tracing is on), logs one line per request,
//! and renders error bodies.
//!
//! Query strings are never logged: on `/auth/callback` they carry the code and state.

pub mod trace;

use std::fmt::Write as _;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, header};

use crate::error::ErrorInfo;
use crate::proxy::headers::X_CORRELATION_ID;

/// The id that ties a response, its log lines and the upstream's logs together. Held as a
/// header value, so the response and the upstream request share it without copying.
#[derive(Debug, Clone)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// A fresh id (see [`correlation_id`]).
    pub fn new() -> Self {
        let hex = bytes::Bytes::from(correlation_id().into_bytes());
        Self(HeaderValue::from_maybe_shared(hex).expect("hex digits are header text"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("hex digits are text")
    }

    /// The id as a header value.
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh correlation id: 32 hex digits, unique within the process (a counter through a
/// bijective mix) and, by a random per-process prefix, across instances and restarts. It is a
/// reference, not a secret, so it needs no system call per request (a UUIDv4 read the OS
/// random source on every request; the load benchmark showed that syscall).
pub fn correlation_id() -> String {
    // Not `format!`, which costs a proxied request more than the rest of this.
    let mut id = String::with_capacity(32);
    crate::hex::push(&crate::random::process_prefix().to_be_bytes(), &mut id);
    crate::hex::push(&crate::random::unique().to_be_bytes(), &mut id);
    id
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: log lines on stderr, filtered by `RUST_LOG` (default
/// `info`), and, with `otlp`, spans exported over OTLP/HTTP. Returns the exporter, to be shut
/// down (flushing the last spans) when the process ends.
///
/// Each output has a filter of its own: `RUST_LOG` never decides which spans are exported,
/// and the exporter never sees log events.
pub fn init(
    format: LogFormat,
    otlp: Option<&crate::config::OtlpConfig>,
) -> Option<trace::Exporter> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.fmt_fields(text_fields()).with_filter(filter).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let (spans, exporter, failed) = match otlp.map(trace::layer) {
        None => (None, None, None),
        Some(Ok((layer, exporter))) => {
            let filter = trace::in_a_recorded_request();
            (Some(layer.with_filter(filter)), Some(exporter), None)
        }
        Some(Err(e)) => (None, None, Some(e)),
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    if let Some(e) = failed {
        tracing::error!(error = %e, "traces are off");
    }
    exporter
}

/// Text log fields as the default formatter writes them, without the `otel.*` fields that
/// only steer the span exporter.
fn text_fields() -> TextFields {
    TextFields
}

/// See [`text_fields`].
struct TextFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = match name {
            "message" => write!(self.writer, "{sep}{value:?}"),
            name => write!(
                self.writer,
                "{sep}{}={value:?}",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        };
    }
}

/// Runs `handle` for `req` with a correlation id, renders its error (if any), logs one
/// access line, and records the request in `metrics` (as answered by `listener`): the outermost
/// part of every listener's service.
///
/// With tracing on, `traced` says whether the request gets a span (`Some`) and whether its
/// sender is a trusted edge whose trace context it continues (`Some(true)`).
pub async fn observe<F, Fut>(
    mut req: Request,
    metrics: Option<(&crate::metrics::Metrics, crate::metrics::Listener)>,
    traced: Option<bool>,
    handle: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    use tracing::Instrument as _;
    let started = Instant::now();
    let cid = CorrelationId::new();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Only an error needs to know what the caller accepts: keep the two headers (a reference
    // count each) and look inside them only then.
    let accepts = (
        req.headers().get(header::ACCEPT).cloned(),
        req.headers().get(&SEC_FETCH_DEST).cloned(),
    );
    let span = match traced {
        Some(trusted) => {
            let (span, unrecorded) = trace::request_span(&method, &path, req.headers(), trusted);
            if let Some(unrecorded) = unrecorded {
                req.extensions_mut().insert(unrecorded);
            }
            span
        }
        None => tracing::Span::none(),
    };
    req.extensions_mut().insert(cid.clone());
    let id = cid.as_str();

    let mut resp = handle(req).instrument(span.clone()).await;
    // The lines below carry the span's trace id.
    let _entered = span.enter();

    let route = resp
        .extensions_mut()
        .remove::<crate::metrics::RouteLabel>()
        .map(|label| label.0);
    if !span.is_disabled() {
        let code = resp
            .extensions()
            .get::<ErrorInfo>()
            .map(|i| i.code.as_str());
        let name = match &route {
            Some(label) => Some(&*label.0),
            None => crate::metrics::own_endpoint(&path),
        };
        trace::finish_request(&span, &method, name, resp.status().as_u16(), code);
    }
    if let Some((m, listener)) = metrics {
        let route = match route {
            Some(label) => label,
            None => m.own_route(&path),
        };
        m.request(
            listener,
            route,
            &method,
            resp.status().as_u16(),
            started.elapsed(),
        );
        if let Some(info) = resp.extensions().get::<ErrorInfo>() {
            m.refusal(info.code.as_str());
        }
    }
    if let Some(info) = resp.extensions_mut().remove::<ErrorInfo>() {
        let status = resp.status();
        match &info.cause {
            Some(cause) if status.is_server_error() => {
                tracing::warn!(correlation_id = %id, code = info.code.as_str(), status = status.as_u16(), cause = %chain(cause.as_ref()), "request failed")
            }
            Some(cause) => {
                tracing::info!(correlation_id = %id, code = info.code.as_str(), status = status.as_u16(), cause = %chain(cause.as_ref()), "request refused")
            }
            None => {
                tracing::debug!(correlation_id = %id, code = info.code.as_str(), status = status.as_u16(), "request refused")
            }
        }
        render(
            &mut resp,
            &info,
            id,
            wants_html(accepts.0.as_ref(), accepts.1.as_ref()),
        );
    }
    resp.headers_mut()
        .insert(X_CORRELATION_ID.clone(), cid.header().clone());
    tracing::info!(
        correlation_id = %id,
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

static SEC_FETCH_DEST: http::HeaderName = http::HeaderName::from_static("sec-fetch-dest");

/// A browser navigation gets an HTML error page; API callers get JSON. Takes the request's
/// `Accept` and `Sec-Fetch-Dest`.
fn wants_html(accept: Option<&HeaderValue>, dest: Option<&HeaderValue>) -> bool {
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    let dest = dest.and_then(|v| v.to_str().ok());
    dest == Some("document")
        || (accept.contains("text/html") && dest.is_none_or(|d| d == "document"))
}

/// An error and its sources, `: `-separated, for one log field.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

fn render(resp: &mut Response, info: &ErrorInfo, correlation_id: &str, html: bool) {
    let (body, content_type) = if html {
        (error_page(info, correlation_id), "text/html; charset=utf-8")
    } else {
        let mut json = serde_json::json!({
            "error": info.code.as_str(),
            "message": info.message,
            "correlation_id": correlation_id,
        });
        if let (Some(extra), Some(body)) = (&info.extra, json.as_object_mut()) {
            for (name, value) in extra {
                body.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        (json.to_string(), "application/json")
    };
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
    }
    headers.remove(header::CONTENT_LENGTH);
    *resp.body_mut() = Body::from(body);
}

fn error_page(info: &ErrorInfo, correlation_id: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in problem</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head><body>\
         <h1>Something went wrong</h1><p>{}</p><p>Error <code>{}</code>, reference <code>{}</code>.</p>\
         <p><a href=\"/\">Back to the start</a></p></body></html>",
        html_escape(&info.message),
        info.code,
        correlation_id
    )
}

/// Escapes text for HTML element and attribute content.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_show_span_and_event_fields_but_not_the_exporter_s() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Buffer::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(text_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", otel.kind = "server", trace_id = "abc");
            let _in = span.enter();
            tracing::info!(status = 200, r#type = "x", "request done");
        });
        let line = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(line.contains("request{trace_id=\"abc\"}"), "{line}");
        assert!(
            line.contains("request done status=200 type=\"x\""),
            "{line}"
        );
        assert!(!line.contains("otel"), "{line}");
    }

    #[test]
    fn correlation_ids_are_distinct_and_header_safe() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| correlation_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 32
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && HeaderValue::from_str(id).is_ok()));
    }
}
