//! `POST /api/auth/evaluations`: the SPA asks whether the current user may do things (to show
//! or hide a button), with OpenID AuthZEN batch semantics:
//! `{"evaluations":[{"action":{"name":…},"resource":{"type":…,"id":…}}]}` →
//! `{"evaluations":[{"decision":…}]}`; a top-level `action` or `resource` is the default of
//! every item.
//!
//! # Security
//! The subject is always the session's, and the context Sallyport's: a `subject` or `context`
//! in the body is ignored, so page JavaScript can only ever learn about its own user. The
//! endpoint is CSRF-checked like any unsafe request, answered by the decision point
//! `authz.evaluations` names, through the same cache as the routes, and bounded: at most
//! [`MAX_BATCH`] questions in at most 16 KiB.

use std::borrow::Cow;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::authz::{Question, question};
use crate::error::{ApiError, ErrorCode};
use crate::session::manager::Lookup;

/// Most questions in one request.
pub const MAX_BATCH: usize = 20;
/// Largest request body.
const MAX_BODY: usize = 16 * 1024;

/// The request body.
#[derive(Deserialize)]
struct Batch {
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    resource: Option<Resource>,
    evaluations: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    resource: Option<Resource>,
}

#[derive(Deserialize, Clone)]
struct Action {
    name: String,
}

#[derive(Deserialize, Clone)]
struct Resource {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

/// `POST /api/auth/evaluations`.
pub async fn evaluations(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let session = match app.sessions.lookup(&headers).await? {
        Lookup::Found(s) => s,
        Lookup::NoCookie => return Err(ApiError::new(ErrorCode::NotAuthenticated)),
        Lookup::Ended => return Err(super::admit::expired(&app)),
    };
    super::csrf::check(&headers, &app.config, &session.record.csrf_token, None)?;
    let Some(pdp) = app.config.authz.evaluations else {
        return Err(ApiError::new(ErrorCode::NotFound)
            .with_message("no policy decision point answers questions here (authz)"));
    };
    let bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::new(ErrorCode::RequestTooLarge))?
        .to_bytes();
    let batch: Batch = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::new(ErrorCode::InvalidRequest).with_message(
            "expected {\"evaluations\":[{\"action\":{\"name\":…},\"resource\":{\"type\":…,\"id\":…}}]}",
        )
    })?;
    if batch.evaluations.is_empty() || batch.evaluations.len() > MAX_BATCH {
        return Err(ApiError::new(ErrorCode::InvalidRequest)
            .with_message(format!("ask 1 to {MAX_BATCH} evaluations at a time")));
    }
    let subject = super::admit::subject(&app, &session.record)?;
    let client = super::client::client_ip(peer.ip(), &headers, &app.config.server.trusted_proxies);
    let now = app.sessions.clock().unix();
    let mut questions = Vec::with_capacity(batch.evaluations.len());
    for item in &batch.evaluations {
        let (Some(action), Some(resource)) = (
            item.action.as_ref().or(batch.action.as_ref()),
            item.resource.as_ref().or(batch.resource.as_ref()),
        ) else {
            return Err(ApiError::new(ErrorCode::InvalidRequest)
                .with_message("every evaluation needs an action and a resource (or a default)"));
        };
        questions.push(Question::new(
            subject.clone(),
            Cow::Borrowed(&action.name),
            Cow::Borrowed(&resource.kind),
            Cow::Borrowed(&resource.id),
            question::Context::of(&session.record, client, now),
        ));
    }
    let decisions = futures_util::future::join_all(
        questions.iter().map(|q| super::admit::decide(&app, pdp, q)),
    )
    .await;
    let language = super::admit::accept_language(&headers);
    let mut answers = Vec::with_capacity(decisions.len());
    for decision in decisions {
        let decision = decision?;
        answers.push(match decision.reason_text(language) {
            Some(reason) if !decision.permit => {
                json!({ "decision": false, "context": { "reason_user": reason } })
            }
            _ => json!({ "decision": decision.permit }),
        });
    }
    let mut resp = Json(json!({ "evaluations": Value::Array(answers) })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
