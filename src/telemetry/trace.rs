//! Distributed tracing: OpenTelemetry spans exported over OTLP/HTTP, the W3C trace context
//! continued from a trusted edge and passed on to upstreams.
//!
//! Off unless `telemetry.otlp` is set, and then free: every span Sallyport opens is either
//! made only when tracing is on ([`request_span`]) or sits at [`TARGET`] below `info`, which
//! only the OTLP layer listens to; with no such layer those callsites are disabled once and
//! cost a load each.
//!
//! No span attribute holds a header value, a query string, a cookie or a token: the request
//! span names the method, the route and the path; the others name a provider, a service or a
//! decision point.

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, Method};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Status, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::OtlpConfig;

/// The target of Sallyport's spans: the OTLP layer takes these and nothing else (log events
/// stay log lines, never span events that might carry more than a log line does).
pub const TARGET: &str = "sallyport::otel";

static ON: AtomicBool = AtomicBool::new(false);
/// New traces whose draw is below this are recorded (`sample_ratio` of `u64::MAX`).
static THRESHOLD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether traces are recorded (`telemetry.otlp` was set when the process started).
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The tracer provider, kept by `main` to send the last spans before the process exits.
#[derive(Debug)]
pub struct Exporter(SdkTracerProvider);

impl Exporter {
    /// Sends what is buffered and stops the export thread.
    pub fn shutdown(self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "sending the last spans failed");
        }
    }
}

/// The OTLP layer for `cfg`, and its exporter.
///
/// # Errors
/// When the exporter cannot be built (a message for the log).
pub(super) fn layer<S>(
    cfg: &OtlpConfig,
) -> Result<
    (
        impl tracing_subscriber::Layer<S> + Send + Sync + 'static,
        Exporter,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use opentelemetry_otlp::WithExportConfig as _;
    // The batch processor exports from a thread of its own, without a Tokio runtime: the
    // blocking HTTP client is the one that works there.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(cfg.traces_url.as_str())
        .build()
        .map_err(|e| format!("telemetry.otlp: building the exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Sallyport decides before it makes a span ([`request_span`]): a request that is not
        // recorded gets none at all, so every span that exists is sampled.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sallyport"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        // Two clock reads per poll of every instrumented future, for busy/idle times no
        // question here needs.
        .with_tracked_inactivity(false)
        // Nothing reads the OpenTelemetry context of the current thread: propagation takes
        // the span's own (`inject`), so entering a span need not set it.
        .with_context_activation(false);
    // The cast saturates: a ratio of 1 gives u64::MAX, which `request_span` takes as
    // "every trace" (no draw is needed).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    THRESHOLD.store(
        (cfg.sample_ratio * u64::MAX as f64) as u64,
        Ordering::Relaxed,
    );
    ON.store(true, Ordering::Relaxed);
    Ok((layer, Exporter(provider)))
}

/// Only spans made under a request span, and request spans themselves, are exported: a
/// request that is not recorded has no span, and the spans of its work must not become
/// traces of their own.
pub(super) fn in_a_recorded_request<S>() -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt as _;
    let ours =
        tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::DEBUG);
    // Other layers' spans (a dependency's, enabled for the log) may be current too: look for
    // a request span of ours among the current one and its parents.
    let under_a_request = tracing_subscriber::filter::dynamic_filter_fn(|meta, cx| {
        !meta.is_span()
            || meta.name() == "request"
            || cx.lookup_current().is_some_and(|current| {
                current
                    .scope()
                    .any(|s| s.name() == "request" && s.metadata().target() == TARGET)
            })
    });
    ours.and(under_a_request)
}

/// The `traceparent` for the upstream of a request that is not recorded: its trace id (the
/// edge's, or a new one) with a span id of its own and the sampled flag off, so that the
/// services behind keep one trace id per request without anyone recording it here.
#[derive(Debug, Clone)]
pub struct Unrecorded(http::HeaderValue);

/// The span of one request when tracing is on and the request is recorded (else a disabled
/// one, and for an unrecorded request the `traceparent` its upstream gets), continuing the
/// trace context of `headers` when they come from a trusted edge (`trusted`): a browser or
/// any other client cannot pick our trace ids or force sampling. An edge's sampling decision
/// is followed; a new trace is recorded with `sample_ratio`.
///
/// The span's `trace_id` field puts the id on every log line written under it.
pub(crate) fn request_span(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    trusted: bool,
) -> (Span, Option<Unrecorded>) {
    use opentelemetry::trace::TraceId;
    if !enabled() {
        return (Span::none(), None);
    }
    let parent = if trusted {
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
    } else {
        opentelemetry::Context::new()
    };
    let edge = parent.span().span_context().clone();
    let recorded = if edge.is_valid() {
        edge.is_sampled()
    } else {
        let threshold = THRESHOLD.load(Ordering::Relaxed);
        threshold == u64::MAX || crate::random::unique() < threshold
    };
    if !recorded {
        let trace_id = if edge.is_valid() {
            edge.trace_id()
        } else {
            TraceId::from_bytes(
                ((u128::from(crate::random::unique()) << 64)
                    | u128::from(crate::random::unique() | 1))
                .to_be_bytes(),
            )
        };
        let traceparent = format!("00-{trace_id}-{:016x}-00", crate::random::unique() | 1);
        let unrecorded = http::HeaderValue::try_from(traceparent)
            .ok()
            .map(Unrecorded);
        return (Span::none(), unrecorded);
    }
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    if edge.is_valid() {
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let otel = cx.span();
    span.record(
        "trace_id",
        tracing::field::display(otel.span_context().trace_id()),
    );
    otel.update_name(method.as_str().to_owned());
    otel.set_attribute(opentelemetry::KeyValue::new(
        "http.request.method",
        method.as_str().to_owned(),
    ));
    otel.set_attribute(opentelemetry::KeyValue::new("url.path", path.to_owned()));
    (span, None)
}

/// Completes a request span: named by its route (`{method} {route}`), with the status, an
/// error status for `5xx`, and the error code of a refusal.
pub(crate) fn finish_request(
    span: &Span,
    method: &Method,
    route: Option<&str>,
    status: u16,
    code: Option<&str>,
) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let otel = cx.span();
    if let Some(route) = route {
        otel.update_name(format!("{method} {route}"));
        otel.set_attribute(opentelemetry::KeyValue::new("http.route", route.to_owned()));
    }
    otel.set_attribute(opentelemetry::KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if let Some(code) = code {
        otel.set_attribute(opentelemetry::KeyValue::new("error.type", code.to_owned()));
    }
    if status >= 500 {
        otel.set_status(Status::error(code.unwrap_or("server error").to_owned()));
    }
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Puts the trace context on a request to an upstream, replacing whatever the client sent:
/// `span`'s for a recorded request, else the `unrecorded` request's. Without tracing the
/// headers pass as they came.
pub(crate) fn inject(span: &Span, unrecorded: Option<&Unrecorded>, headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
    // A span the exporter does not record (made for the log, say) has no valid context.
    let cx = (!span.is_disabled())
        .then(|| span.context())
        .filter(|cx| cx.span().span_context().is_valid());
    let Some(cx) = cx else {
        if let Some(Unrecorded(traceparent)) = unrecorded {
            headers.insert(TRACEPARENT.clone(), traceparent.clone());
        }
        return;
    };
    TraceContextPropagator::new()
        .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    // The propagator writes an empty `tracestate` when there is none.
    if headers.get(&TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(&TRACESTATE);
    }
}

/// Marks `span` failed (an error status and `error.type`), when tracing is on.
pub(crate) fn failed(span: &Span, kind: &'static str) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    cx.span()
        .set_attribute(opentelemetry::KeyValue::new("error.type", kind));
    cx.span().set_status(Status::error(kind));
}
