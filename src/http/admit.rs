//! Admission: whether a request may pass, and as whom. The one decision behind the proxy path
//! (`http::api`) and forward-auth (`http::forward`), so the edge and the proxy can never
//! answer differently.
//!
//! [`admit`] takes the parts of a request that decide ([`Ask`]) and runs the checks in order,
//! each before anything that costs more:
//! 1. **route**: the path in normal form (`400 invalid_path`) and the route it falls under;
//!    on the public port a path under no route is not ours to decide ([`Admission::Unrouted`],
//!    static files or `404`), at the edge it is a page of the app and needs a session;
//! 2. **limits**: header size (`431`), declared body size (`413`), method (`405` with `Allow`);
//! 3. **identity** by the route's `auth`: nobody (`none`, no store read), a machine client's
//!    own bearer (`session_or_bearer`; a refused one counts against the client's address), or
//!    the session cookie (`401 not_authenticated` / `session_expired`, unless `optional`);
//! 4. **CSRF** for a cookie-authenticated request: unsafe methods need an allowed origin and
//!    the session's token (the origin alone for pages under no route), WebSocket upgrades an
//!    allowed origin (`403`); then **authorization** (`authz`): the route's `step_up` met
//!    (`401 step_up_required`), its `require` met and its policy decision point's permit
//!    (`403 access_denied`, `503 pdp_unavailable`); an `optional` route with any of these
//!    needs a session (`401`);
//! 5. **token**: the token the route's service receives (`tokens`): the session's own,
//!    refreshed when about to expire; one exchanged for the service (cached in the session);
//!    or Sallyport's own client-credentials token.
//!
//! The result, a [`Pass`], says what to forward ([`Pass::forwarded`]); callers never look at
//! the session or the route's mode again.

use std::net::IpAddr;
use std::sync::Arc;
use tracing::Instrument as _;

use http::{HeaderMap, HeaderValue, Method, header};

use super::AppState;
use crate::config::{AuthMode, DEFAULT_MAX_HEADERS, TokenKind};
use crate::error::{ApiError, ErrorCode};
use crate::proxy::guard::SessionGuard;
use crate::proxy::headers::{Claims, IdentityHeaders};
use crate::proxy::routes::Match;
use crate::session::cookie;
use crate::session::manager::{Loaded, Lookup};
use crate::tokens::SharedToken;

/// The parts of a request admission looks at.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The method (at the edge: the original request's).
    pub method: &'a Method,
    /// The path, without query (at the edge: the original request's).
    pub path: &'a str,
    /// The browser's headers (at the edge: as the edge passed them on).
    pub headers: &'a HeaderMap,
    /// The connection's peer address.
    pub peer: IpAddr,
    /// Who asks.
    pub surface: Surface,
}

/// Who asks for a decision: it decides what a path under no route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The public port: a path under no route is a static file or nothing.
    Proxy,
    /// Forward-auth: a path under no route is a page of the app behind the edge.
    Edge,
}

/// The decision.
#[derive(Debug)]
pub enum Admission<'a> {
    /// The request may pass.
    Pass(Pass<'a>),
    /// No route matches, on the public port: not the proxy's request.
    Unrouted,
}

/// A request that may pass, and as whom.
#[derive(Debug)]
pub struct Pass<'a> {
    /// The route and the path its upstream receives; `None` for a page under no route (edge).
    pub route: Option<Match<'a>>,
    /// The client's address (see `http::client`).
    pub client: IpAddr,
    /// Who the request is from.
    pub identity: Identity,
    /// Sallyport's own token, when the route's service gets one (`client_credentials`).
    pub shared: Option<Arc<SharedToken>>,
}

/// Who a request is from.
#[derive(Debug)]
pub enum Identity {
    /// Nobody: an `auth: none` route, or `optional` without a session.
    Anonymous,
    /// A session, its access token fresh when the route's service receives it.
    Session(Loaded),
    /// A machine client's own bearer token, validated, forwarded unchanged.
    Bearer {
        /// The token as sent.
        token: String,
        /// Its `sub`, when it has one.
        sub: Option<String>,
        /// Its issuer.
        issuer: String,
    },
}

/// What is forwarded for a passed request: the bearer token and the identity headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forwarded<'a> {
    /// `Authorization: Bearer …`, when the route's service gets a token.
    pub bearer: Option<&'a str>,
    /// The DPoP key the token is bound to, when the service gets it with a proof.
    pub dpop: Option<&'a crate::oidc::dpop::DpopKey>,
    /// The identity headers the route's service gets, when the request is someone's.
    pub identity: Option<IdentityHeaders<'a>>,
}

impl Pass<'_> {
    /// What the route's service receives about the caller: exactly its token (never the
    /// user's own to an `exchange` or `client_credentials` service) and its headers.
    pub fn forwarded<'s>(&'s self, app: &'s AppState) -> Forwarded<'s> {
        let service = self.route.as_ref().map(|m| m.route.service);
        let headers = match service {
            Some(i) => &app.proxy.upstream(i).headers[..],
            None => app.proxy.default_headers(),
        };
        let kind = service.map_or(TokenKind::None, |i| app.broker.kind(i));
        match &self.identity {
            Identity::Anonymous => Forwarded {
                bearer: self.shared_token(kind),
                dpop: None,
                identity: None,
            },
            Identity::Bearer { token, sub, issuer } => Forwarded {
                bearer: match kind {
                    TokenKind::User | TokenKind::IdToken => Some(token),
                    _ => self.shared_token(kind),
                },
                dpop: None,
                identity: sub.as_deref().map(|sub| IdentityHeaders {
                    headers,
                    claims: Claims {
                        sub,
                        issuer,
                        claims: None,
                    },
                }),
            },
            Identity::Session(s) => Forwarded {
                bearer: match kind {
                    TokenKind::ClientCredentials => self.shared_token(kind),
                    _ => service.and_then(|i| app.broker.session_token(&s.record, i)),
                },
                // The user's token, bound to the session's key, to a service that checks it.
                dpop: match service {
                    Some(i) if kind == TokenKind::User && app.proxy.upstream(i).dpop => {
                        s.record.dpop_key.as_ref()
                    }
                    _ => None,
                },
                identity: Some(IdentityHeaders {
                    headers,
                    claims: Claims {
                        sub: &s.record.sub,
                        issuer: app
                            .provider(Some(&s.record.provider))
                            .map_or("", |p| p.config().issuer.as_str()),
                        claims: Some(&s.record.claims),
                    },
                }),
            },
        }
    }

    fn shared_token(&self, kind: TokenKind) -> Option<&str> {
        match kind {
            TokenKind::ClientCredentials => self.shared.as_ref().map(|t| t.access_token.expose()),
            _ => None,
        }
    }

    /// A guard that ends streams opened under this request's session with the session.
    pub fn session_guard(&self, app: &AppState) -> Option<SessionGuard> {
        match &self.identity {
            Identity::Session(s) => Some(SessionGuard::new(
                Arc::clone(&app.sessions),
                s.key,
                s.record.expires_at,
            )),
            _ => None,
        }
    }
}

/// The route `path` falls under (found once by the caller, which also names the request by it
/// in the metrics).
pub type Found<'a> = Result<Option<Match<'a>>, crate::proxy::routes::PathError>;

/// The name of a request under `found`'s route, for the metrics and the trace span (when
/// either is on).
pub fn route_label(app: &AppState, found: &Found<'_>) -> Option<crate::metrics::RouteLabel> {
    if app.metrics.is_none() && !crate::telemetry::trace::enabled() {
        return None;
    }
    let m = found.as_ref().ok()?.as_ref()?;
    Some(crate::metrics::RouteLabel(m.route.label.clone()))
}

/// Decides whether `ask` may pass; `route` is what the route table found for `ask.path`.
///
/// # Errors
/// The refusal, ready to send (the edge adapts `401`s for navigations).
pub async fn admit<'a>(
    app: &'a AppState,
    route: Found<'a>,
    ask: Ask<'_>,
) -> Result<Admission<'a>, ApiError> {
    let route = route.map_err(ApiError::invalid_path)?;
    if route.is_none() && ask.surface == Surface::Proxy {
        return Ok(Admission::Unrouted);
    }
    let client =
        super::client::client_ip(ask.peer, ask.headers, &app.config.server.trusted_proxies);
    limits(route.as_ref(), &ask)?;
    let mode = route.as_ref().map_or(AuthMode::Session, |m| m.route.auth);
    let bearer = match mode {
        AuthMode::SessionOrBearer => client_bearer(ask.headers),
        _ => None,
    };
    let identity = match (mode, bearer) {
        (AuthMode::None, _) => Identity::Anonymous,
        (_, Some(token)) => {
            // A refused token counts against the client's address; a valid one gives its
            // attempt back. No cookie is involved, so there is nothing for CSRF to ride on.
            let permit = app
                .limiter
                .acquire(client)
                .map_err(super::limits::rate_limited)?;
            let (sub, issuer) = Box::pin(validate_bearer(app, &token)).await?;
            permit.succeeded();
            Identity::Bearer { token, sub, issuer }
        }
        (AuthMode::Session | AuthMode::SessionOrBearer | AuthMode::Optional, None) => {
            let span = tracing::debug_span!(target: crate::telemetry::trace::TARGET, "session");
            match app.sessions.lookup(ask.headers).instrument(span).await? {
                Lookup::Found(s) => {
                    csrf(app, &ask, route.is_some(), &s.record.csrf_token)?;
                    step_up(app, route.as_ref(), &s)?;
                    authorize(route.as_ref(), &s)?;
                    if let Some(m) = &route {
                        ask_pdp(app, m, &ask, client, &s).await?;
                    }
                    let s = match &route {
                        Some(m) => session_token(app, s, m.route.service).await?,
                        None => s,
                    };
                    // Its tokens are renewed before they expire from now on, request or not.
                    app.broker
                        .watch(s.key, &s.record, app.sessions.clock().unix());
                    Identity::Session(s)
                }
                // An optional route with requirements has nothing to check them on.
                Lookup::NoCookie | Lookup::Ended
                    if mode == AuthMode::Optional && !requires(route.as_ref()) =>
                {
                    Identity::Anonymous
                }
                Lookup::NoCookie => return Err(ApiError::new(ErrorCode::NotAuthenticated)),
                Lookup::Ended => return Err(expired(app)),
            }
        }
    };
    // Sallyport's own token is asked for only once the caller passed: a refused request
    // never makes the gateway call its provider.
    let shared = match &route {
        Some(m) if app.broker.kind(m.route.service) == TokenKind::ClientCredentials => Some(
            app.broker
                .client_credentials(&app.sessions, &app.providers, m.route.service)
                .await?,
        ),
        _ => None,
    };
    Ok(Admission::Pass(Pass {
        route,
        client,
        identity,
        shared,
    }))
}

/// Whether the route has requirements (`require`, `authz`, `step_up`) a caller must meet.
fn requires(route: Option<&Match<'_>>) -> bool {
    route.is_some_and(|m| {
        m.route.require.is_some() || m.route.authz.is_some() || m.route.step_up.is_some()
    })
}

/// Step 4a: the route's `step_up`, met by the session's login (`401 step_up_required` with
/// the login that meets it when not).
fn step_up(app: &AppState, route: Option<&Match<'_>>, session: &Loaded) -> Result<(), ApiError> {
    match route.and_then(|m| m.route.step_up.as_ref()) {
        Some(step) if !step.is_met(&session.record.claims, app.sessions.clock().unix()) => {
            Err(step_up_required(step))
        }
        _ => Ok(()),
    }
}

/// `401 step_up_required`, with the `login_url` that asks the provider for `step`. The page
/// adds where to come back to (`return_to`); a navigation is redirected there by the caller.
pub fn step_up_required(step: &crate::authz::StepUp) -> ApiError {
    ApiError::new(ErrorCode::StepUpRequired)
        .with_field("login_url", serde_json::Value::String(step.login_url(None)))
}

/// Step 4c: the route's policy decision point, asked about the session's user (`403` when it
/// denies, `503 pdp_unavailable` when it cannot answer: fail closed).
async fn ask_pdp(
    app: &AppState,
    route: &Match<'_>,
    ask: &Ask<'_>,
    client: IpAddr,
    session: &Loaded,
) -> Result<(), ApiError> {
    use crate::authz::question::Context;
    let Some(authz) = &route.route.authz else {
        return Ok(());
    };
    let path = crate::proxy::routes::normalize(ask.path).map_err(ApiError::invalid_path)?;
    let question = crate::authz::Question::new(
        subject(app, &session.record)?,
        authz.action.of(ask.method),
        std::borrow::Cow::Borrowed(&authz.resource_type),
        authz.resource_id.render(&path, &route.params),
        Context::of(&session.record, client, app.sessions.clock().unix()),
    );
    let decision = decide(app, authz.pdp, &question).await?;
    if decision.permit {
        return Ok(());
    }
    let denied = ApiError::new(ErrorCode::AccessDenied);
    Err(match decision.reason_text(accept_language(ask.headers)) {
        Some(reason) => denied.with_field("reason_user", reason.into()),
        None => denied,
    })
}

/// The AuthZEN subject of a session (`403` when it lacks the claim its id comes from: there
/// is nobody to ask about).
pub(crate) fn subject<'a>(
    app: &'a AppState,
    record: &'a crate::session::SessionRecord,
) -> Result<crate::authz::Subject<'a>, ApiError> {
    crate::authz::Subject::of(&app.authz.subject, record).ok_or_else(|| {
        ApiError::new(ErrorCode::AccessDenied).with_cause(std::io::Error::other(
            "the session has no string claim to take the subject's id from (authz.subject.id)",
        ))
    })
}

/// The decision of `pdp` about `question`, calling a remote PDP with Sallyport's own token
/// when it takes one (`503 pdp_unavailable` when there is no decision).
pub(crate) async fn decide(
    app: &AppState,
    pdp: crate::config::PdpRef,
    question: &crate::authz::Question<'_>,
) -> Result<crate::authz::Decision, ApiError> {
    let span = tracing::debug_span!(
        target: crate::telemetry::trace::TARGET,
        "pdp",
        sallyport.decision = tracing::field::Empty,
    );
    let decision = app
        .authz
        .decide(pdp, question, |plan| {
            app.broker
                .client_credentials(&app.sessions, &app.providers, plan)
        })
        .instrument(span.clone())
        .await;
    match &decision {
        Ok(d) => {
            span.record(
                "sallyport.decision",
                if d.permit { "permit" } else { "deny" },
            );
        }
        Err(_) => crate::telemetry::trace::failed(&span, "pdp_unavailable"),
    }
    decision.map_err(|e| ApiError::new(ErrorCode::PdpUnavailable).with_cause(e))
}

/// The request's `Accept-Language`, which picks the language of a denial's reason.
pub(crate) fn accept_language(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
}

/// Step 4b: the route's requirements, for a caller known by their session (`403` when not met).
fn authorize(route: Option<&Match<'_>>, session: &Loaded) -> Result<(), ApiError> {
    match route.and_then(|m| m.route.require.as_ref()) {
        Some(require) if !require.is_met(&session.record.claims) => {
            Err(ApiError::new(ErrorCode::AccessDenied))
        }
        _ => Ok(()),
    }
}

/// Header size, declared body size and method, before anything reads the store.
fn limits(route: Option<&Match<'_>>, ask: &Ask<'_>) -> Result<(), ApiError> {
    let max_headers = route.map_or(DEFAULT_MAX_HEADERS, |m| m.route.max_headers);
    super::limits::check_header_size(ask.headers, max_headers)?;
    let Some(route) = route.map(|m| m.route) else {
        return Ok(());
    };
    if let Some(max) = route.max_body {
        let declared = ask
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(ApiError::new(ErrorCode::RequestTooLarge));
        }
    }
    if !route.allows(ask.method) {
        return Err(ApiError::new(ErrorCode::MethodNotAllowed)
            .with_header(header::ALLOW, route.allow.clone()));
    }
    Ok(())
}

/// The CSRF checks of a cookie-authenticated request.
fn csrf(app: &AppState, ask: &Ask<'_>, routed: bool, token: &str) -> Result<(), ApiError> {
    if super::csrf::is_unsafe(ask.method) {
        // Pages under no route (server-rendered, behind the edge) have no CSRF token to send:
        // the origin alone decides.
        match routed {
            true => super::csrf::check(ask.headers, &app.config, token, None)?,
            false => super::csrf::check_origin(ask.headers, &app.config)?,
        }
    }
    if crate::proxy::is_upgrade(ask.headers)
        && !super::csrf::origin_allowed(ask.headers, &app.config)
    {
        // Cross-site WebSocket hijacking: a cookie-authenticated upgrade must come from us.
        return Err(ApiError::new(ErrorCode::ForbiddenOrigin));
    }
    Ok(())
}

/// The token of an `Authorization: Bearer …` header, if the client sent one.
fn client_bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

fn invalid_token(cause: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken)
        .with_cause(cause)
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )
}

/// Validates a client's bearer: a JWT at the provider that issued it, an opaque token by
/// introspection at the providers that accept bearers (the first that knows it). Gives its
/// `sub` and issuer.
async fn validate_bearer(
    app: &AppState,
    token: &str,
) -> Result<(Option<String>, String), ApiError> {
    use crate::oidc::bearer::BearerError;
    let now = app.sessions.clock().unix() as i64;
    let accepting = || {
        app.providers
            .iter()
            .filter(|p| !p.config().bearer_audiences.is_empty())
    };
    let Some(issuer) = crate::oidc::unverified_issuer(token) else {
        // Not a JWT (or one without an issuer): only its provider can say what it is.
        let mut refusal = invalid_token(BearerError::UnknownIssuer);
        for provider in accepting() {
            match provider.validate_opaque_bearer(token, now).await {
                Ok(claims) => {
                    return Ok((claims.sub.clone(), provider.config().issuer.clone()));
                }
                Err(Ok(reason)) => refusal = invalid_token(reason),
                Err(Err(unavailable)) => return Err(ApiError::provider_unavailable(unavailable)),
            }
        }
        return Err(refusal);
    };
    let provider = accepting()
        .find(|p| p.config().issuer == issuer)
        .ok_or_else(|| invalid_token(BearerError::UnknownIssuer))?;
    let claims = provider
        .validate_bearer(token, now)
        .await
        .map_err(|e| match e {
            Ok(reason) => invalid_token(reason),
            Err(unavailable) => ApiError::provider_unavailable(unavailable),
        })?;
    Ok((claims.sub, claims.iss))
}

/// The session, holding the token `service` receives from it, not about to expire: its
/// own tokens refreshed (`user`, `id_token`), or one exchanged for the service (`exchange`).
async fn session_token(
    app: &AppState,
    session: Loaded,
    service: usize,
) -> Result<Loaded, ApiError> {
    let kind = app.broker.kind(service);
    let result = match kind {
        TokenKind::User | TokenKind::IdToken => {
            let Some(provider) = app.provider(Some(&session.record.provider)) else {
                return Err(expired(app));
            };
            app.broker
                .ensure_fresh(&app.sessions, provider, session, kind == TokenKind::IdToken)
                .await
        }
        TokenKind::Exchange => {
            app.broker
                .exchanged(&app.sessions, &app.providers, session, service)
                .await
        }
        TokenKind::None | TokenKind::ClientCredentials => return Ok(session),
    };
    result.map_err(|e| {
        let e = ApiError::from(e);
        match e.code() {
            ErrorCode::SessionExpired => e.with_header(header::SET_COOKIE, clear_cookie(app)),
            _ => e,
        }
    })
}

/// `401 session_expired`, clearing the dead cookie.
pub(crate) fn expired(app: &AppState) -> ApiError {
    ApiError::new(ErrorCode::SessionExpired).with_header(header::SET_COOKIE, clear_cookie(app))
}

fn clear_cookie(app: &AppState) -> HeaderValue {
    let c = app.sessions.cookie();
    cookie::clear(c, &c.name)
}
