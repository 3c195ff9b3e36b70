//! The session and login cookies: finding ours in a request and writing `Set-Cookie`.
//!
//! Our cookie values are base64url tokens, so no quoting or percent-encoding is ever needed;
//! this small codec avoids parsing every cookie of a request into owned values on the hot path.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};

use crate::config::{CookieConfig, SameSite};

/// How many logins one browser may have in flight (one per tab, say); older ones drop out.
pub const MAX_LOGINS_PER_BROWSER: usize = 5;
/// How many characters of a login's `state` name its cookie (`<login_name>-<tag>`): enough
/// that a browser's few logins never share one.
pub const LOGIN_TAG: usize = 12;

/// Whether the cookie `key` is one of Sallyport's: one of `names`, or a name under one of
/// them (`<name>-…`, such as the per-login cookies). Such cookies never reach an upstream, and
/// an upstream can never set one.
pub fn is_ours(key: &str, names: &[&str]) -> bool {
    names.iter().any(|n| {
        key.strip_prefix(n)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    })
}

/// The value of the cookie `name` in `headers`, if sent.
///
/// # Security
/// When the name comes more than once with different values, none is used. A browser sends
/// every cookie whose path and domain match, the most specific path first, so a second value
/// is a cookie planted for a sub-path or by a sibling subdomain ("cookie tossing"). Taking the
/// first would let the planter choose the session (or the login state) a request runs under;
/// taking none only costs the victim a fresh login. The `__Host-` prefix that Sallyport uses on
/// HTTPS keeps such cookies out in the first place.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        });
    let first = values.next()?;
    values.all(|v| v == first).then_some(first)
}

/// `Set-Cookie` for a session id, living as long as the session may.
pub fn session(cfg: &CookieConfig, value: &str, max_age: Duration) -> HeaderValue {
    let same_site = match cfg.same_site {
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
    };
    build(&cfg.name, value, same_site, cfg.secure, Some(max_age))
}

/// The name of the cookie of the login with `state`: `<login_name>-<first LOGIN_TAG chars>`;
/// `None` for a state too short to be ours.
pub fn login_name(cfg: &CookieConfig, state: &str) -> Option<String> {
    let tag = state.get(..LOGIN_TAG)?;
    tag.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then(|| format!("{}-{tag}", cfg.login_name))
}

/// `Set-Cookie` for one login in flight: its sealed record, under [`login_name`].
///
/// # Security
/// Always `SameSite=Lax`: the provider's redirect back to `/auth/callback` is a cross-site
/// navigation, on which a `Strict` cookie would not be sent.
pub fn login(cfg: &CookieConfig, name: &str, sealed: &str, max_age: Duration) -> HeaderValue {
    build(name, sealed, "Lax", cfg.secure, Some(max_age))
}

/// The login cookies a request carries, as `(name, value)`: every cookie named
/// `<login_name>-…`, each at most once.
pub fn logins<'a>(headers: &'a HeaderMap, cfg: &CookieConfig) -> Vec<(&'a str, &'a str)> {
    let prefix = cfg.login_name.as_str();
    let mut found: Vec<(&str, &str)> = Vec::new();
    for pair in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
    {
        let Some((k, v)) = pair.trim().split_once('=') else {
            continue;
        };
        if k.strip_prefix(prefix)
            .is_some_and(|rest| rest.len() == LOGIN_TAG + 1 && rest.starts_with('-'))
            && !found.iter().any(|(name, _)| *name == k)
        {
            found.push((k, v.trim_matches('"')));
        }
    }
    found
}

/// `Set-Cookie` for the logout cookie: binds a JSON logout's continuation URL to the browser
/// that logged out, so that the URL alone (read by page JavaScript, say) is worth nothing.
pub fn logout(cfg: &CookieConfig, binder: &str, max_age: Duration) -> HeaderValue {
    build(&cfg.logout_name, binder, "Lax", cfg.secure, Some(max_age))
}

/// `Set-Cookie` that removes the cookie `name`.
pub fn clear(cfg: &CookieConfig, name: &str) -> HeaderValue {
    build(name, "", "Lax", cfg.secure, Some(Duration::ZERO))
}

fn build(
    name: &str,
    value: &str,
    same_site: &str,
    secure: bool,
    max_age: Option<Duration>,
) -> HeaderValue {
    let mut s = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
    if secure {
        s.push_str("; Secure");
    }
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    HeaderValue::from_str(&s).expect("cookie names and base64url values are valid header text")
}

/// Removes our cookies (see [`is_ours`]) from the `Cookie` headers, keeping all others.
pub fn strip(headers: &mut HeaderMap, names: &[&str]) {
    let ours = |pair: &str| {
        let key = pair.trim().split_once('=').map_or(pair.trim(), |(k, _)| k);
        is_ours(key, names)
    };
    let (mut any_ours, mut any_other) = (false, false);
    for pair in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter(|p| !p.trim().is_empty())
    {
        if ours(pair) {
            any_ours = true;
        } else {
            any_other = true;
        }
    }
    if !any_ours {
        return;
    }
    if !any_other {
        // Only ours (an SPA's API call, typically): nothing to rebuild.
        headers.remove(header::COOKIE);
        return;
    }
    let kept = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !ours(p))
        .collect::<Vec<_>>()
        .join("; ");
    match HeaderValue::from_str(&kept) {
        Ok(v) => {
            headers.insert(header::COOKIE, v);
        }
        Err(_) => {
            headers.remove(header::COOKIE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secure: bool, same_site: SameSite) -> CookieConfig {
        let name = if secure {
            "__Host-sallyport"
        } else {
            "sallyport"
        };
        CookieConfig {
            name: name.into(),
            login_name: format!("{name}-login"),
            logout_name: format!("{name}-logout"),
            same_site,
            secure,
        }
    }

    #[test]
    fn finds_our_cookie_among_others_and_across_headers() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sallyport-login=x"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("b=2;sallyport=abc; c=3"),
        );
        assert_eq!(find(&h, "sallyport"), Some("abc"));
        assert_eq!(find(&h, "sallyport-login"), Some("x"));
        assert_eq!(find(&h, "sally"), None);
    }

    #[test]
    fn a_second_different_value_makes_the_cookie_unusable() {
        let mut h = HeaderMap::new();
        // What a browser sends when a cookie was planted for `/api` next to ours for `/`.
        h.append(
            header::COOKIE,
            HeaderValue::from_static("sallyport=planted; theme=dark; sallyport=ours"),
        );
        assert_eq!(find(&h, "sallyport"), None);
        assert_eq!(find(&h, "theme"), Some("dark"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("sallyport=same; sallyport=same"),
        );
        assert_eq!(
            find(&h, "sallyport"),
            Some("same"),
            "an exact repeat is harmless"
        );
    }

    #[test]
    fn session_cookies_are_http_only_and_secure_on_https() {
        let c = session(&cfg(true, SameSite::Strict), "id", Duration::from_secs(60));
        assert_eq!(
            c,
            "__Host-sallyport=id; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=60"
        );
        let c = session(&cfg(false, SameSite::Lax), "id", Duration::from_secs(60));
        assert_eq!(
            c,
            "sallyport=id; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
    }

    #[test]
    fn login_cookies_are_lax_even_when_sessions_are_strict_and_named_by_state() {
        let cfg = cfg(true, SameSite::Strict);
        let name = login_name(&cfg, "AbCdEf-_1234rest-of-state").unwrap();
        assert_eq!(name, "__Host-sallyport-login-AbCdEf-_1234");
        let c = login(&cfg, &name, "sealed", Duration::from_secs(600));
        assert_eq!(
            c,
            "__Host-sallyport-login-AbCdEf-_1234=sealed; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=600"
        );
        assert_eq!(login_name(&cfg, "short"), None);
        assert_eq!(login_name(&cfg, "has;semicolon+x"), None);

        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "__Host-sallyport-login-aaaaaaaaaaaa=1; x=2; __Host-sallyport-login-bbbbbbbbbbbb=3; __Host-sallyport-login-short=4; __Host-sallyport-login-aaaaaaaaaaaa=5",
            ),
        );
        assert_eq!(
            logins(&h, &cfg),
            [
                ("__Host-sallyport-login-aaaaaaaaaaaa", "1"),
                ("__Host-sallyport-login-bbbbbbbbbbbb", "3")
            ]
        );
    }

    #[test]
    fn strip_removes_only_our_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; sallyport=secret; sallyport-login-aaaaaaaaaaaa=s; sallyportx=kept",
            ),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip(&mut h, &["sallyport", "sallyport-login"]);
        assert_eq!(
            h.get_all(header::COOKIE).iter().collect::<Vec<_>>(),
            ["a=1; sallyportx=kept; b=2"]
        );
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("sallyport=secret"));
        strip(&mut only_ours, &["sallyport"]);
        assert!(only_ours.get(header::COOKIE).is_none());
    }
}
