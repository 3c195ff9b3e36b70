//! An OTLP/HTTP trace receiver on 127.0.0.1: takes what an exporter posts to `/v1/traces`
//! and decodes it with the official OpenTelemetry protobuf definitions.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message as _;

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    /// `service.name`.
    pub service: String,
    /// The span.
    pub span: opentelemetry_proto::tonic::trace::v1::Span,
}

impl Received {
    /// The span's id, hex.
    pub fn id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The span's trace id, hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The parent span's id, hex (empty for a root).
    pub fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// The value of attribute `key` as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(text)
    }

    /// Every attribute as `key=value`, and the name: all the span says.
    pub fn everything(&self) -> Vec<String> {
        let mut all = vec![self.span.name.clone()];
        for kv in &self.span.attributes {
            all.push(format!(
                "{}={}",
                kv.key,
                kv.value.as_ref().map(text).unwrap_or_default()
            ));
        }
        for event in &self.span.events {
            all.push(event.name.clone());
            for kv in &event.attributes {
                all.push(format!(
                    "{}={}",
                    kv.key,
                    kv.value.as_ref().map(text).unwrap_or_default()
                ));
            }
        }
        if let Some(status) = &self.span.status {
            all.push(status.message.clone());
        }
        all
    }
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver; stopped when dropped.
pub struct Otlp {
    /// `http://127.0.0.1:PORT`, the base URL an exporter is given.
    pub url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn traces(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (http::StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(text)
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    (
        http::StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

impl Otlp {
    /// Starts the receiver on a free port.
    pub async fn start() -> Otlp {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(Arc::clone(&spans));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Otlp { url, spans, task }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
