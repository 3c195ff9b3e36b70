//! `/auth/login`, `/auth/callback` and `/auth/logout`: the authorization-code flow run on the
//! server (OIDC Core §3.1), and logout with RP-initiated logout at the provider.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;
use tracing::Instrument as _;

use super::AppState;
use crate::config::SameSite;
use crate::error::{ApiError, ErrorCode};
use crate::oidc::authorize::{AuthorizationRequest, end_session_url};
use crate::oidc::id_token::Expectations;
use crate::oidc::{IdTokenClaims, TokenError};
use crate::session::manager::Lookup;
use crate::session::{LoginRecord, SessionId, SessionRecord, StoreKey, cookie};

/// How long a started login may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long the continuation URL of a JSON logout stays usable: the SPA follows it at once.
const LOGOUT_TTL: Duration = Duration::from_secs(60);
/// The claims `/api/auth/session` shows and upstream identity headers draw from.
const PROFILE_CLAIMS: [&str; 17] = [
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "email",
    "email_verified",
    "picture",
    "locale",
    "zoneinfo",
    "updated_at",
    "groups",
    "roles",
    "acr",
    "amr",
    "auth_time",
];
/// `prompt` values `/auth/login` passes on.
const PROMPTS: [&str; 3] = ["login", "consent", "select_account"];

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = status.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    no_store(&mut resp);
    resp
}

/// Checks a `return_to`: a same-origin relative path. Returns it normalised.
///
/// # Security
/// Refuses scheme-relative (`//evil`), backslash (`/\evil`, which browsers read as `//`),
/// absolute URLs, control characters (header injection) and anything that resolves to
/// another origin — including a path that only *normalises* to `//host` (`/.//evil`), which a
/// browser would read as scheme-relative once it is the `Location` (found by the `return_to`
/// fuzz target).
pub fn safe_return_to(raw: &str, public_url: &url::Url) -> Option<String> {
    if raw.len() > 2048 || !raw.starts_with('/') || raw.starts_with("//") || raw.contains('\\') {
        return None;
    }
    if raw.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    let resolved = public_url.join(raw).ok()?;
    if resolved.origin() != public_url.origin() {
        return None;
    }
    let mut out = resolved.path().to_owned();
    if let Some(q) = resolved.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = resolved.fragment() {
        out.push('#');
        out.push_str(f);
    }
    if out.starts_with("//") {
        return None;
    }
    Some(out)
}

fn invalid_return_to() -> ApiError {
    ApiError::new(ErrorCode::InvalidReturnTo)
}

/// `GET /auth/login`: starts a login and redirects to the provider.
pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let provider = app
        .provider(params.get("provider").map(String::as_str))
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownProvider))?;
    let return_to = match params.get("return_to") {
        None => "/".to_owned(),
        Some(raw) => {
            safe_return_to(raw, &app.config.server.public_url).ok_or_else(invalid_return_to)?
        }
    };
    let metadata = provider
        .metadata()
        .await
        .map_err(ApiError::provider_unavailable)?;

    let cfg = provider.config();
    let mut extra = Vec::new();
    let forced = params.get("force").is_some_and(|v| v == "true" || v == "1");
    match params.get("prompt").map(String::as_str) {
        Some(p) if PROMPTS.contains(&p) => extra.push(("prompt".to_owned(), p.to_owned())),
        Some(_) => {
            return Err(ApiError::new(ErrorCode::InvalidRequest)
                .with_message("prompt must be login, consent or select_account"));
        }
        None if forced => extra.push(("prompt".to_owned(), "login".to_owned())),
        None => {}
    }
    for name in &cfg.login_params {
        if let Some(v) = params.get(name).filter(|v| v.len() <= 256) {
            extra.push((name.clone(), v.clone()));
        }
    }
    // Step-up: what the login must give (checked again at the callback).
    let acr_values: Vec<String> = match params.get("acr_values") {
        None => Vec::new(),
        Some(v) => {
            let values: Vec<String> = v
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if values.is_empty()
                || values.len() > 8
                || !values.iter().all(|a| crate::authz::is_acr(a))
            {
                return Err(ApiError::new(ErrorCode::InvalidRequest)
                    .with_message("acr_values must be up to 8 space-separated acr values"));
            }
            extra.push(("acr_values".to_owned(), values.join(" ")));
            values
        }
    };
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(age) if v.len() <= 10 => {
                extra.push(("max_age".to_owned(), age.to_string()));
                Some(age)
            }
            _ => {
                return Err(ApiError::new(ErrorCode::InvalidRequest)
                    .with_message("max_age must be a number of seconds"));
            }
        },
    };
    let fresh = extra.iter().any(|(k, v)| k == "prompt" && v == "login");
    if fresh && max_age.is_none() {
        // `max_age=0` means the same as `prompt=login` and obliges the provider to put
        // `auth_time` in the ID token (OIDC Core 3.1.2.1), which the callback checks.
        extra.push(("max_age".to_owned(), "0".to_owned()));
    }

    // RFC 9449 §10: the code is bound to the key the session will hold, so only a token
    // request proving possession of it can redeem the code.
    let dpop_key = cfg.dpop.then(crate::oidc::dpop::DpopKey::generate);
    if let Some(key) = &dpop_key {
        extra.push(("dpop_jkt".to_owned(), key.thumbprint()));
    }
    let state = crate::random::token();
    let record = LoginRecord {
        state: state.clone(),
        provider: cfg.name.clone(),
        nonce: crate::random::token(),
        code_verifier: crate::random::token(),
        return_to,
        started_at: app.sessions.clock().unix(),
        acr_values,
        max_age,
        fresh,
        dpop_key,
    };
    let cookie_cfg = app.sessions.cookie();
    let name = cookie::login_name(cookie_cfg, &state).expect("random tokens are long enough");
    let sealed = app.sessions.seal_login(&name, &record);

    let request = AuthorizationRequest {
        endpoint: &metadata.authorization_endpoint,
        client_id: cfg.client_id.as_str(),
        redirect_uri: provider.redirect_uri(),
        scopes: &cfg.scopes,
        state: &state,
        nonce: &record.nonce,
        code_verifier: &record.code_verifier,
        extra: &extra,
    };
    let par_endpoint = match (cfg.par, &metadata.pushed_authorization_request_endpoint) {
        // `required` without an endpoint fails discovery (the provider is not ready).
        (crate::config::Par::Off, _) | (_, None) => None,
        (par, Some(endpoint)) => {
            // Each push is a call to the provider for someone who has proven nothing: a
            // budget per client address bounds what a flood of login starts costs it. Over
            // the budget a front-channel request does the same job, unless PAR is required.
            let ip =
                super::client::client_ip(peer.ip(), &headers, &app.config.server.trusted_proxies);
            match app.par_budget.acquire(ip) {
                Ok(_spent) => Some(endpoint),
                Err(wait)
                    if par == crate::config::Par::Required
                        || metadata.require_pushed_authorization_requests =>
                {
                    return Err(super::limits::rate_limited(wait).with_message(
                        "too many sign-ins started from this address; try again later",
                    ));
                }
                Err(_) => None,
            }
        }
    };
    let url = match par_endpoint {
        // RFC 9126: the parameters go to the provider directly, authenticated; the browser
        // carries only `client_id` and the `request_uri`.
        Some(endpoint) => {
            let params = request.params();
            let form = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let request_uri = provider
                .push_authorization_request(endpoint, &metadata.token_endpoint, form)
                .await
                .map_err(|e| match e {
                    TokenError::Refused { .. } => ApiError::new(ErrorCode::ProviderError)
                        .with_message(
                            "the identity provider refused the pushed authorization request",
                        )
                        .with_cause(e),
                    TokenError::Unavailable(_) => ApiError::provider_unavailable(e),
                })?;
            request.pushed_url(&request_uri)
        }
        None => request.url(),
    };

    let mut resp = redirect(StatusCode::FOUND, &url);
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie::login(cookie_cfg, &name, &sealed, LOGIN_TTL),
    );
    // This browser's other logins in flight (other tabs) stay, newest first, up to a bound;
    // older ones, and ones that no longer open, are cleared rather than piling up.
    let now = app.sessions.clock().unix();
    let mut others: Vec<(u64, &str)> = Vec::new();
    for (other, value) in cookie::logins(&headers, cookie_cfg) {
        match app.sessions.open_login(other, value) {
            Some(r) if now <= r.started_at + LOGIN_TTL.as_secs() => {
                others.push((r.started_at, other));
            }
            _ => {
                h.append(header::SET_COOKIE, cookie::clear(cookie_cfg, other));
            }
        }
    }
    others.sort_unstable_by_key(|&(started, _)| std::cmp::Reverse(started));
    for (_, old) in others.iter().skip(cookie::MAX_LOGINS_PER_BROWSER - 1) {
        h.append(header::SET_COOKIE, cookie::clear(cookie_cfg, old));
    }
    if let Some(m) = &app.metrics {
        m.login("started", "");
    }
    Ok(resp)
}

/// RFC 9207: whether an authorization response's `iss` names the provider the login went to.
/// Without it, a mix-up attack could bring another provider's code; it may be absent only
/// where the provider does not send it and no profile requires it.
fn response_issuer_ok(iss: Option<&str>, issuer: &str, required: bool) -> bool {
    match iss {
        Some(iss) => iss == issuer,
        None => !required,
    }
}

/// Whether the ID token's `claims` show the authentication `login` asked for at `now`: an
/// `acr` among the requested values, an `auth_time` within `max_age`, and for a fresh login
/// (`prompt=login`) an `auth_time` not before the login started (`skew` seconds of leeway).
fn authentication_as_asked(
    login: &LoginRecord,
    claims: &serde_json::Map<String, serde_json::Value>,
    now: u64,
    skew: u64,
) -> Result<(), &'static str> {
    if !login.acr_values.is_empty() {
        let acr = claims.get("acr").and_then(serde_json::Value::as_str);
        if !acr.is_some_and(|acr| login.acr_values.iter().any(|a| a == acr)) {
            return Err(
                "the identity provider did not perform the authentication that was asked for (acr)",
            );
        }
    }
    if login.max_age.is_some() || login.fresh {
        let Some(auth_time) = claims.get("auth_time").and_then(serde_json::Value::as_u64) else {
            return Err(
                "the identity provider did not say when the user authenticated (auth_time)",
            );
        };
        if let Some(max_age) = login.max_age
            && auth_time.saturating_add(max_age).saturating_add(skew) < now
        {
            return Err(
                "the identity provider reused an authentication older than asked for (max_age)",
            );
        }
        if login.fresh && auth_time.saturating_add(skew) < login.started_at {
            return Err(
                "the identity provider reused an earlier authentication instead of a new login",
            );
        }
    }
    Ok(())
}

fn invalid_state(message: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidState).with_message(message)
}

/// `GET /auth/callback`: finishes a login and creates the session.
pub async fn callback(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let result = finish_login(&app, peer, &headers, &params).await;
    if let Some(m) = &app.metrics {
        match &result {
            Ok(_) => m.login("completed", ""),
            Err(e) => m.login("failed", e.code().as_str()),
        }
    }
    result
}

/// The callback's work: the login cookie, the code exchange, the ID token, the new session.
async fn finish_login(
    app: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let cookie_cfg = app.sessions.cookie();
    let state = params
        .get("state")
        .ok_or_else(|| invalid_state("the state parameter is missing"))?;
    // The login must be one this browser started (login CSRF protection): its cookie, named
    // after the state, opens only for that name and holds exactly this state.
    let name = cookie::login_name(cookie_cfg, state)
        .ok_or_else(|| invalid_state("this login was not started in this browser"))?;
    let login_cookie = cookie::find(headers, &name).ok_or_else(|| {
        invalid_state("the login cookie is missing; start the login again in this browser")
    })?;
    let clear_login = cookie::clear(cookie_cfg, &name);
    let with_cleared = |e: ApiError| e.with_header(header::SET_COOKIE, clear_login.clone());
    let login = app
        .sessions
        .open_login(&name, login_cookie)
        .filter(|l| {
            l.state.len() == state.len() && bool::from(l.state.as_bytes().ct_eq(state.as_bytes()))
        })
        .ok_or_else(|| with_cleared(invalid_state("this login was not started in this browser")))?;
    let now = app.sessions.clock().unix();
    if now > login.started_at + LOGIN_TTL.as_secs() {
        return Err(with_cleared(invalid_state(
            "this login expired or was already used; start again",
        )));
    }
    if let Some(error) = params.get("error") {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(48)
            .collect();
        return Err(with_cleared(
            ApiError::new(ErrorCode::LoginFailed)
                .with_message(format!("the identity provider refused the login ({code})")),
        ));
    }
    let provider = app.provider(Some(&login.provider)).ok_or_else(|| {
        with_cleared(
            ApiError::new(ErrorCode::UnknownProvider)
                .with_message("the provider of this login is no longer configured"),
        )
    })?;
    let cfg = provider.config();
    // RFC 9207 §2.4: when the provider names itself, it must be the one we sent the user to;
    // when its discovery promises to name itself, a response that does not is refused (a
    // mix-up attack would bring a response from another provider without it).
    let metadata = provider
        .metadata()
        .await
        .map_err(|e| with_cleared(ApiError::provider_unavailable(e)))?;
    let iss_required = metadata.authorization_response_iss_parameter_supported
        || cfg.profile == crate::config::Profile::Fapi2;
    if !response_issuer_ok(
        params.get("iss").map(String::as_str),
        &cfg.issuer,
        iss_required,
    ) {
        return Err(with_cleared(ApiError::new(ErrorCode::InvalidIssuer)));
    }
    let code = params.get("code").ok_or_else(|| {
        with_cleared(
            ApiError::new(ErrorCode::InvalidRequest).with_message("the code parameter is missing"),
        )
    })?;

    // From here on the provider is called for this client: failures count against its
    // address (a success gives the attempt back).
    let permit = app
        .limiter
        .acquire(super::client::client_ip(
            peer.ip(),
            headers,
            &app.config.server.trusted_proxies,
        ))
        .map_err(|wait| with_cleared(super::limits::rate_limited(wait)))?;
    // Single use, on every instance sharing the store.
    let used = StoreKey::hash(format!("state\0{state}").as_bytes());
    let until = crate::session::from_unix(login.started_at + LOGIN_TTL.as_secs());
    if !app.sessions.store().first_use(&used, until).await? {
        return Err(with_cleared(invalid_state(
            "this login expired or was already used; start again",
        )));
    }
    // RFC 9449: the key the code is bound to (the login's), to which the provider binds the
    // session's tokens. A login started before `dpop` was turned on gets one now.
    let dpop_key = match (&login.dpop_key, cfg.dpop) {
        (Some(key), true) => Some(key.clone()),
        (None, true) => Some(crate::oidc::dpop::DpopKey::generate()),
        (_, false) => None,
    };
    let tokens = provider
        .exchange_code(code, &login.code_verifier, dpop_key.as_ref())
        .instrument(tracing::debug_span!(
            target: crate::telemetry::trace::TARGET,
            "code_exchange",
            sallyport.provider = %cfg.name,
        ))
        .await
        .map_err(|e| {
            with_cleared(match e {
                TokenError::Refused { .. } => {
                    ApiError::new(ErrorCode::TokenExchangeFailed).with_cause(e)
                }
                TokenError::Unavailable(_) => ApiError::provider_unavailable(e),
            })
        })?;
    let id_token = tokens.id_token.clone().ok_or_else(|| {
        with_cleared(
            ApiError::new(ErrorCode::ProviderError)
                .with_message("the identity provider sent no ID token"),
        )
    })?;
    let now = app.sessions.clock().unix();
    let expect = Expectations {
        issuer: &cfg.issuer,
        client_id: cfg.client_id.as_str(),
        nonce: Some(&login.nonce),
        access_token: Some(tokens.access_token.expose()),
        algorithms: &cfg.id_token_algs,
        now: now as i64,
        skew: cfg.clock_skew.as_secs() as i64,
        not_issued_before: login.started_at as i64,
    };
    let claims: IdTokenClaims = provider
        .validate_id_token(id_token.expose(), &expect)
        .await
        .map_err(|e| {
            with_cleared(match e {
                Ok(reason) => ApiError::new(ErrorCode::InvalidIdToken).with_cause(reason),
                Err(unavailable) => ApiError::provider_unavailable(unavailable),
            })
        })?;

    // What the login asked for must have happened: a provider that ignores `acr_values`,
    // `max_age` or `prompt=login` must not pass an old or weaker authentication off as new.
    if let Err(why) = authentication_as_asked(&login, &claims.other, now, cfg.clock_skew.as_secs())
    {
        return Err(with_cleared(
            ApiError::new(ErrorCode::LoginFailed)
                .with_message(why)
                .with_cause(std::io::Error::other(why)),
        ));
    }

    // The profile, the claims services receive as identity headers, and those routes require.
    let kept: Vec<&str> = PROFILE_CLAIMS
        .iter()
        .copied()
        .chain(
            app.config
                .services
                .iter()
                .flat_map(|s| &s.headers)
                .filter_map(|h| match &h.claim {
                    crate::config::Claim::Named(name) => Some(name.as_str()),
                    _ => None,
                }),
        )
        .chain(
            app.config
                .routes
                .iter()
                .filter_map(|r| r.require.as_ref())
                .flat_map(crate::authz::Require::claim_names),
        )
        // What policy decision points are told about the subject.
        .chain(
            std::iter::once(app.config.authz.subject.id.as_str()).chain(
                app.config
                    .authz
                    .subject
                    .properties
                    .iter()
                    .map(String::as_str),
            ),
        )
        .collect();
    let mut profile = serde_json::Map::new();
    profile.insert("sub".into(), claims.sub.clone().into());
    for &name in &kept {
        if let Some(v) = claims.other.get(name) {
            profile.insert(name.into(), v.clone());
        }
    }
    if let (true, Some(endpoint)) = (cfg.userinfo, &metadata.userinfo_endpoint) {
        match provider
            .userinfo(endpoint, &tokens.access_token, dpop_key.as_ref())
            .instrument(tracing::debug_span!(
                target: crate::telemetry::trace::TARGET,
                "userinfo",
                sallyport.provider = %cfg.name,
            ))
            .await
        {
            // OIDC Core §5.3.4: the userinfo `sub` must match the ID token's.
            Ok(info) if info.get("sub").and_then(|s| s.as_str()) != Some(&claims.sub) => {
                return Err(with_cleared(ApiError::new(ErrorCode::UserinfoMismatch)));
            }
            Ok(info) => {
                for &name in &kept {
                    if let Some(v) = info.get(name) {
                        profile.insert(name.into(), v.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "userinfo failed; continuing with the ID token's claims")
            }
        }
    }

    // A session the browser already had ends: every login gets a new id.
    if let Some(old) = cookie::find(headers, &cookie_cfg.name).and_then(SessionId::parse) {
        app.sessions.delete(&old.store_key()).await?;
    }
    let (created_at, expires_at) = app.sessions.timestamps();
    // A token of unknown lifetime is renewed after `tokens.default_lifetime` when there is a
    // refresh token to renew it with; without one, expiring it would only end the session.
    let access_expires_at = match &tokens.refresh_token {
        Some(_) => Some(tokens.access_expires_at(now, app.config.tokens.default_lifetime)),
        None => tokens.known_expiry(now),
    };
    let record = SessionRecord {
        v: 1,
        provider: cfg.name.clone(),
        sub: claims.sub.clone(),
        sid: claims.sid,
        claims: profile,
        id_token,
        access_token: tokens.access_token,
        access_expires_at,
        refresh_token: tokens.refresh_token,
        id_expires_at: u64::try_from(claims.exp).ok(),
        service_tokens: Default::default(),
        created_at,
        last_seen: created_at,
        expires_at,
        csrf_token: crate::random::token(),
        dpop_key,
        client_address: Some(
            super::client::client_ip(peer.ip(), headers, &app.config.server.trusted_proxies)
                .to_string(),
        ),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(200).collect()),
    };
    let id = app.sessions.create(&record).await?;
    app.broker.watch(id.store_key(), &record, now);
    permit.succeeded();
    tracing::info!(provider = %cfg.name, "login completed");

    let session_cookie = cookie::session(cookie_cfg, &id.encode(), app.sessions.cookie_max_age());
    let mut resp = match cookie_cfg.same_site {
        SameSite::Lax => redirect(StatusCode::FOUND, &login.return_to),
        // A SameSite=Strict cookie set here is not sent on a redirect that continues this
        // cross-site navigation; a same-site page that moves on makes the next request
        // same-site, so the user lands logged in.
        SameSite::Strict => continue_page(&login.return_to),
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, session_cookie);
    resp.headers_mut().append(header::SET_COOKIE, clear_login);
    Ok(resp)
}

fn continue_page(return_to: &str) -> Response {
    let target = crate::telemetry::html_escape(return_to);
    let mut resp = Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={target}\"><title>Signed in</title></head>\
         <body><p>Signed in. <a href=\"{target}\">Continue</a></p></body></html>"
    ))
    .into_response();
    no_store(&mut resp);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `POST /auth/logout`: ends the session here, then at the provider when it supports it.
///
/// # Security
/// The end-session URL carries the ID token (`id_token_hint`, OIDC RP-Initiated Logout 1.0
/// §2), so it only ever travels as a redirect the browser follows. A caller that asks for JSON
/// (a `fetch()`, which cannot follow a redirect to another origin) gets a Sallyport URL instead:
/// `/auth/logout/continue?h=…`, single-use, valid for a minute, and bound to this browser by an
/// `HttpOnly` cookie, which answers the same `303`. Page JavaScript can read that URL but gets
/// nothing from it: it cannot read a cross-origin redirect, and the URL is useless elsewhere.
pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form: HashMap<String, String> = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        HashMap::new()
    };
    let return_to = match form.get("return_to").or(query.get("return_to")) {
        None => "/".to_owned(),
        Some(raw) => {
            safe_return_to(raw, &app.config.server.public_url).ok_or_else(invalid_return_to)?
        }
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let cookie_cfg = app.sessions.cookie();
    let mut target = return_to.clone();
    let mut binder_cookie = None;
    if let Lookup::Found(session) = app.sessions.lookup(&headers).await? {
        super::csrf::check(
            &headers,
            &app.config,
            &session.record.csrf_token,
            form.get("csrf_token").map(String::as_str),
        )?;
        app.sessions.delete(&session.key).await?;
        tracing::info!("logged out");
        // The grant ends at the provider too (RFC 7009), so a copy of its refresh token is
        // worth nothing; in the background, so that a slow provider does not hold up the
        // logout (the session is gone here either way).
        let revoking = app.clone();
        let record = std::sync::Arc::clone(&session.record);
        tokio::spawn(async move {
            if let Some(provider) = revoking.provider(Some(&record.provider))
                && let Err(e) = provider.revoke(&record).await
            {
                tracing::warn!(provider = %record.provider, error = %e, "revoking the logged-out session's tokens at the provider failed");
            }
        });
        if let Some(provider) = app.provider(Some(&session.record.provider))
            && let Ok(metadata) = provider.metadata().await
            && let Some(endpoint) = &metadata.end_session_endpoint
        {
            let post_logout = format!("{}{}", app.config.server.public_origin, return_to);
            let end_session = end_session_url(
                endpoint,
                session.record.id_token.expose(),
                provider.config().client_id.as_str(),
                &post_logout,
            );
            if wants_json {
                let (handle, binder) = (crate::random::token(), crate::random::token());
                app.sessions
                    .put_logout(&handle, &binder, &end_session, LOGOUT_TTL)
                    .await?;
                // Absolute: an SPA on another origin (two-origin development) navigates to it.
                target = format!(
                    "{}/auth/logout/continue?h={handle}",
                    app.config.server.public_origin
                );
                binder_cookie = Some(cookie::logout(cookie_cfg, &binder, LOGOUT_TTL));
            } else {
                target = end_session;
            }
        }
    } else {
        super::csrf::check_origin(&headers, &app.config)?;
    }

    let mut resp = if wants_json {
        // Page JavaScript cannot read a redirect; it gets the target to navigate to.
        let mut r = axum::Json(serde_json::json!({ "redirect_to": target })).into_response();
        no_store(&mut r);
        r
    } else {
        redirect(StatusCode::SEE_OTHER, &target)
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie::clear(cookie_cfg, &cookie_cfg.name),
    );
    if let Some(c) = binder_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `GET /auth/logout/continue?h=…`: the `303` to the provider's end-session URL that a JSON
/// logout stored for this browser (see [`logout`]); single use.
pub async fn logout_continue(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let cookie_cfg = app.sessions.cookie();
    let clear = cookie::clear(cookie_cfg, &cookie_cfg.logout_name);
    let binder = cookie::find(&headers, &cookie_cfg.logout_name);
    let end_session = match (params.get("h"), binder) {
        (Some(handle), Some(binder)) if !handle.is_empty() && !binder.is_empty() => {
            app.sessions.take_logout(handle, binder).await?
        }
        _ => None,
    };
    let Some(end_session) = end_session else {
        return Err(invalid_state(
            "this logout link expired, was already used, or belongs to another browser; you are signed out of this site",
        )
        .with_header(header::SET_COOKIE, clear));
    };
    let mut resp = redirect(StatusCode::SEE_OTHER, &end_session);
    resp.headers_mut().append(header::SET_COOKIE, clear);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_issuer_must_match_and_may_be_missing_only_where_not_required() {
        let issuer = "https://login.example.com";
        assert!(response_issuer_ok(Some(issuer), issuer, true));
        assert!(response_issuer_ok(Some(issuer), issuer, false));
        assert!(!response_issuer_ok(
            Some("https://evil.example"),
            issuer,
            false
        ));
        assert!(
            !response_issuer_ok(None, issuer, true),
            "fapi2 or advertised"
        );
        assert!(response_issuer_ok(None, issuer, false));
    }

    #[test]
    fn return_to_accepts_same_origin_paths_only() {
        let base = url::Url::parse("https://app.example.com").unwrap();
        assert_eq!(
            safe_return_to("/app/page?x=1#top", &base).as_deref(),
            Some("/app/page?x=1#top")
        );
        assert_eq!(safe_return_to("/", &base).as_deref(), Some("/"));
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "\\\\evil.example",
            "/%0d%0aSet-Cookie:x=1".replace("%0d%0a", "\r\n").as_str(),
            "javascript:alert(1)",
            "evil",
            "",
            "/a b",
            "/\tx",
            "/.//evil.example",
            "/.///evil.example/x",
            "/a/..//evil.example",
            "/%2e//evil.example",
        ] {
            assert_eq!(safe_return_to(bad, &base), None, "{bad:?}");
        }
    }

    #[test]
    fn a_login_must_bring_the_authentication_it_asked_for() {
        let login = |acr: &[&str], max_age: Option<u64>, fresh: bool| LoginRecord {
            state: String::new(),
            provider: String::new(),
            nonce: String::new(),
            code_verifier: String::new(),
            return_to: "/".into(),
            started_at: 1_000,
            acr_values: acr.iter().map(|s| (*s).to_owned()).collect(),
            max_age,
            fresh,
            dpop_key: None,
        };
        let claims = |v: serde_json::Value| v.as_object().unwrap().clone();
        let now = 1_010;
        let ok =
            |l: &LoginRecord, c: serde_json::Value| authentication_as_asked(l, &claims(c), now, 5);
        assert!(
            ok(&login(&[], None, false), serde_json::json!({})).is_ok(),
            "nothing asked"
        );
        let mfa = login(&["mfa"], None, false);
        assert!(ok(&mfa, serde_json::json!({"acr": "mfa"})).is_ok());
        assert!(
            ok(&mfa, serde_json::json!({"acr": "pwd"}))
                .unwrap_err()
                .contains("(acr)")
        );
        assert!(ok(&mfa, serde_json::json!({})).is_err());
        let recent = login(&[], Some(60), false);
        assert!(ok(&recent, serde_json::json!({"auth_time": 950})).is_ok());
        assert!(
            ok(&recent, serde_json::json!({"auth_time": 940}))
                .unwrap_err()
                .contains("max_age")
        );
        assert!(
            ok(&recent, serde_json::json!({}))
                .unwrap_err()
                .contains("auth_time")
        );
        let fresh = login(&[], None, true);
        assert!(
            ok(&fresh, serde_json::json!({"auth_time": 999})).is_ok(),
            "within the skew"
        );
        assert!(
            ok(&fresh, serde_json::json!({"auth_time": 900}))
                .unwrap_err()
                .contains("earlier")
        );
    }
}
