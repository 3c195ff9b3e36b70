//! The route table: which route serves a client path, and the upstream path it maps to.
//!
//! Built once at startup. A route `/x/*` matches `/x`, `/x/` and everything below, never `/xy`;
//! an exact route matches only itself; the longest matching route wins.
//!
//! # Security
//! One path, one route: a request path is first brought to its one normal form
//! ([`normalize`]), routes match that form, and exactly that form goes upstream. Spellings that
//! another server could read as a different path are refused rather than guessed at: dot and
//! empty segments, `;` path parameters (`/..;/` is `/../` to Tomcat and Spring), backslashes,
//! percent-encoded unreserved characters (`%70rivate` is `private` upstream, but would not
//! match a `/private/*` route here), and encoded `/`, `\`, `;`, `%` or NUL.

use http::Method;

use crate::config::{AuthMode, RouteConfig};

/// One route, ready for matching.
#[derive(Debug)]
pub struct Route {
    /// The configured path, for logs.
    pub path: String,
    /// The configured path, as the metrics name it.
    pub label: crate::metrics::Name,
    prefix: String,
    /// The segments before the wildcard, for a route with named segments (`{id}`); empty
    /// otherwise (such routes match by `prefix`).
    segments: Vec<Segment>,
    wildcard: bool,
    upstream_prefix: Option<String>,
    upstream_wildcard: bool,
    /// Index of the service.
    pub service: usize,
    /// Session requirement.
    pub auth: AuthMode,
    /// Allowed methods; `None` allows all.
    pub methods: Option<Vec<Method>>,
    /// The `Allow` header value for `405`.
    pub allow: http::HeaderValue,
    /// Largest request body in bytes, if limited.
    pub max_body: Option<u64>,
    /// Largest total size of the request headers in bytes.
    pub max_headers: u64,
    /// Claims the session must hold.
    pub require: Option<crate::authz::Require>,
    /// The policy decision it asks for.
    pub authz: Option<crate::authz::RouteAuthz>,
    /// How strong and recent the session's login must be.
    pub step_up: Option<crate::authz::StepUp>,
}

/// One segment of a route path with named segments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches itself.
    Literal(String),
    /// `{name}`: matches any one non-empty segment.
    Named,
}

/// A matched route and the upstream path for the request.
#[derive(Debug)]
pub struct Match<'a> {
    /// The route.
    pub route: &'a Route,
    /// The path to send upstream (without query).
    pub upstream_path: String,
    /// The values of the route's named segments, in the order of [`param_names`], still
    /// percent-encoded as in the (normal form of the) request path.
    pub params: Vec<String>,
}

/// Why a request path is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path has a spelling that servers read differently (see [`normalize`]).
    #[error("the path is not in normal form")]
    Unsafe,
}

/// The names of a route path's named segments (`/api/orders/{id}/*` → `id`), in order.
pub fn param_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(segment_name)
}

/// `name` when a path segment is `{name}`.
fn segment_name(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// Every route, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table from validated routes.
    pub fn new(configs: &[RouteConfig]) -> Self {
        let mut routes: Vec<Route> = configs
            .iter()
            .map(|c| {
                let (prefix, wildcard) = match c.path.strip_suffix("/*") {
                    Some(p) => (p.to_owned(), true),
                    None => (c.path.clone(), false),
                };
                let segments = if param_names(&prefix).next().is_some() {
                    prefix
                        .split('/')
                        .skip(1)
                        .map(|s| match segment_name(s) {
                            Some(_) => Segment::Named,
                            None => Segment::Literal(s.to_owned()),
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let (upstream_prefix, upstream_wildcard) = match &c.upstream_path {
                    None => (None, false),
                    Some(up) => match up.strip_suffix("/*") {
                        Some(p) => (Some(p.to_owned()), true),
                        None => (Some(up.clone()), false),
                    },
                };
                let allow = c.methods.as_ref().map_or_else(
                    || "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".to_owned(),
                    |m| m.iter().map(Method::as_str).collect::<Vec<_>>().join(", "),
                );
                Route {
                    path: c.path.clone(),
                    label: crate::metrics::Name::of(&c.path),
                    prefix,
                    segments,
                    wildcard,
                    upstream_prefix,
                    upstream_wildcard,
                    service: c.service,
                    auth: c.auth,
                    methods: c.methods.clone(),
                    allow: http::HeaderValue::from_str(&allow)
                        .expect("method names are header-safe"),
                    max_body: c.max_body,
                    max_headers: c.max_headers,
                    require: c.require.clone(),
                    authz: c.authz.clone(),
                    step_up: c.step_up.clone(),
                }
            })
            .collect();
        // Most specific first: more segments, then more literal text (a literal segment
        // before a named one), then an exact route before a wildcard one. For routes without
        // named segments this is the longest prefix first.
        routes.sort_by_key(|r| {
            let segments = r.prefix.matches('/').count();
            let literal: usize = r
                .prefix
                .split('/')
                .filter(|s| segment_name(s).is_none())
                .map(str::len)
                .sum();
            (
                std::cmp::Reverse(segments),
                std::cmp::Reverse(literal),
                r.wildcard,
            )
        });
        Self { routes }
    }

    /// The route serving `path` (raw, still percent-encoded), if any, matched on the path's
    /// normal form.
    ///
    /// # Errors
    /// [`PathError::Unsafe`] when the path has no safe normal form, whether or not a route
    /// would match it.
    pub fn find<'a>(&'a self, path: &str) -> Result<Option<Match<'a>>, PathError> {
        let path = normalize(path)?;
        let mut params = Vec::new();
        Ok(self.routes.iter().find_map(|route| {
            params.clear();
            let tail = route.matches(&path, &mut params)?;
            let upstream_path = route.map_path(&path, tail, &params);
            Some(Match {
                route,
                upstream_path,
                params: params.iter().map(|p| (*p).to_owned()).collect(),
            })
        }))
    }
}

impl Route {
    /// Where the tail below the route starts in `path`, when the route matches it; the values
    /// of named segments are pushed to `params`.
    fn matches<'p>(&self, path: &'p str, params: &mut Vec<&'p str>) -> Option<usize> {
        if self.segments.is_empty() {
            if !self.wildcard {
                return (path == self.prefix).then_some(path.len());
            }
            let rest = path.strip_prefix(self.prefix.as_str())?;
            return (rest.is_empty() || rest.starts_with('/') || self.prefix.ends_with('/'))
                .then_some(self.prefix.len());
        }
        let mut rest = path;
        for segment in &self.segments {
            let after_slash = rest.strip_prefix('/')?;
            let end = after_slash.find('/').unwrap_or(after_slash.len());
            let value = &after_slash[..end];
            match segment {
                Segment::Literal(l) if l == value => {}
                Segment::Named if !value.is_empty() => params.push(value),
                _ => return None,
            }
            rest = &after_slash[end..];
        }
        let tail = path.len() - rest.len();
        (self.wildcard || rest.is_empty()).then_some(tail)
    }

    /// Whether `method` may use this route.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| {
            m.contains(method) || (method == Method::HEAD && m.contains(&Method::GET))
        })
    }

    fn map_path(&self, path: &str, tail: usize, params: &[&str]) -> String {
        let tail = if self.wildcard { &path[tail..] } else { "" };
        match &self.upstream_prefix {
            None => path.to_owned(),
            Some(up) => {
                let mut s = String::with_capacity(up.len() + tail.len() + 1);
                if params.is_empty() {
                    s.push_str(up);
                } else {
                    // `{name}` in the upstream path takes the value of the route's segment.
                    let names: Vec<&str> = param_names(&self.prefix).collect();
                    for (i, segment) in up.split('/').enumerate() {
                        if i > 0 {
                            s.push('/');
                        }
                        match segment_name(segment).and_then(|n| names.iter().position(|m| *m == n))
                        {
                            Some(k) => s.push_str(params[k]),
                            None => s.push_str(segment),
                        }
                    }
                }
                if self.upstream_wildcard {
                    s.push_str(tail);
                }
                if s.is_empty() {
                    s.push('/');
                }
                s
            }
        }
    }
}

/// Whether `b` is an RFC 3986 §2.3 unreserved character, which must never be percent-encoded
/// in a normal form (§6.2.2.2).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The one normal form of a request path (still percent-encoded), or [`PathError::Unsafe`].
///
/// Escapes get upper-case hex digits (RFC 3986 §6.2.2.1), the only rewrite; anything else that
/// another server could read as a different path is refused: a path not starting with `/`,
/// dot segments, empty segments (but a trailing `/`), `;` (path parameters), backslashes, NUL,
/// a `%` that starts no valid escape (`%%35c` is `%5c` after one decoding and `\` after two),
/// and escapes of unreserved characters or of `/`, `\`, `;`, `%` and NUL. With `%25` refused,
/// one decoding upstream leaves no `%`, so a second decoding changes nothing.
///
/// Allocates only when an escape has lower-case hex digits.
///
/// # Errors
/// [`PathError::Unsafe`] for every refused spelling.
pub fn normalize(path: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Unsafe);
    }
    let mut lower_hex = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' | b'\\' | 0 => return Err(PathError::Unsafe),
            b'%' => {
                let hex = |j: usize| bytes.get(j).copied().filter(u8::is_ascii_hexdigit);
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(PathError::Unsafe);
                };
                let decoded = (hex_value(hi) << 4) | hex_value(lo);
                if is_unreserved(decoded) || matches!(decoded, b'/' | b'\\' | b';' | b'%' | 0) {
                    return Err(PathError::Unsafe);
                }
                lower_hex |= hi.is_ascii_lowercase() || lo.is_ascii_lowercase();
                i += 3;
            }
            b'/' => {
                // The segment after this slash: empty only at the very end, never `.` or `..`.
                let rest = &bytes[i + 1..];
                let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                let segment = &rest[..end];
                let last = end == rest.len();
                if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
                    return Err(PathError::Unsafe);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    if !lower_hex {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            // Validated above: two ASCII hex digits follow.
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_uppercase());
                }
            }
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, Option<&str>)]) -> RouteTable {
        let configs: Vec<RouteConfig> = routes
            .iter()
            .enumerate()
            .map(|(i, (path, up))| RouteConfig {
                path: (*path).to_owned(),
                service: i,
                upstream_path: up.map(str::to_owned),
                auth: AuthMode::Session,
                methods: None,
                max_body: None,
                max_headers: 16 * 1024,
                require: None,
                authz: None,
                step_up: None,
            })
            .collect();
        RouteTable::new(&configs)
    }

    fn up(t: &RouteTable, path: &str) -> Option<Result<(usize, String), PathError>> {
        match t.find(path) {
            Ok(m) => m.map(|m| Ok((m.route.service, m.upstream_path))),
            Err(e) => Some(Err(e)),
        }
    }

    #[test]
    fn wildcards_match_the_prefix_and_below_but_not_siblings() {
        let t = table(&[("/api/orders/*", Some("/v1/orders/*"))]);
        assert_eq!(up(&t, "/api/orders"), Some(Ok((0, "/v1/orders".into()))));
        assert_eq!(up(&t, "/api/orders/"), Some(Ok((0, "/v1/orders/".into()))));
        assert_eq!(
            up(&t, "/api/orders/7/items"),
            Some(Ok((0, "/v1/orders/7/items".into())))
        );
        assert_eq!(up(&t, "/api/ordersx"), None);
        assert_eq!(up(&t, "/api/order"), None);
    }

    #[test]
    fn the_longest_route_wins_and_exact_routes_match_only_themselves() {
        let t = table(&[
            ("/api/*", None),
            ("/api/orders/*", Some("/orders/*")),
            ("/api/orders/export", Some("/export")),
        ]);
        assert_eq!(
            up(&t, "/api/orders/export"),
            Some(Ok((2, "/export".into())))
        );
        assert_eq!(
            up(&t, "/api/orders/export/x"),
            Some(Ok((1, "/orders/export/x".into())))
        );
        assert_eq!(
            up(&t, "/api/users"),
            Some(Ok((0, "/api/users".into()))),
            "no upstream_path keeps the path"
        );
        assert_eq!(up(&t, "/other"), None);
    }

    fn params(t: &RouteTable, path: &str) -> Option<(usize, String, Vec<String>)> {
        t.find(path)
            .unwrap()
            .map(|m| (m.route.service, m.upstream_path, m.params))
    }

    #[test]
    fn named_segments_match_one_segment_and_fill_the_upstream_path() {
        let t = table(&[
            ("/api/orders/*", None),
            ("/api/orders/{id}/*", Some("/v1/orders/{id}/*")),
            ("/api/orders/{id}", Some("/v1/order/{id}")),
            ("/api/orders/export", None),
            ("/api/{tenant}/admin/*", None),
        ]);
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            params(&t, "/api/orders/42/items/7"),
            Some((1, "/v1/orders/42/items/7".into(), s(&["42"])))
        );
        assert_eq!(
            params(&t, "/api/orders/42"),
            Some((2, "/v1/order/42".into(), s(&["42"]))),
            "an exact route before a wildcard one"
        );
        assert_eq!(
            params(&t, "/api/orders/42/"),
            Some((1, "/v1/orders/42/".into(), s(&["42"])))
        );
        assert_eq!(
            params(&t, "/api/orders/export"),
            Some((3, "/api/orders/export".into(), s(&[]))),
            "a literal segment before a named one"
        );
        assert_eq!(
            params(&t, "/api/orders"),
            Some((0, "/api/orders".into(), s(&[]))),
            "a named segment is never empty"
        );
        assert_eq!(
            params(&t, "/api/orders/caf%C3%A9"),
            Some((2, "/v1/order/caf%C3%A9".into(), s(&["caf%C3%A9"]))),
            "values stay encoded in the upstream path"
        );
        assert_eq!(
            params(&t, "/api/acme/admin"),
            Some((4, "/api/acme/admin".into(), s(&["acme"])))
        );
        assert_eq!(
            params(&t, "/api/orders/admin/x"),
            Some((1, "/v1/orders/admin/x".into(), s(&["admin"]))),
            "more literal text wins over more named segments"
        );
        assert_eq!(
            up(&t, "/api/orders/..%2f/x"),
            Some(Err(PathError::Unsafe)),
            "a named segment cannot climb"
        );
    }

    #[test]
    fn a_wildcard_upstream_at_the_root_maps_tails() {
        let t = table(&[("/api/echo/*", Some("/*"))]);
        assert_eq!(up(&t, "/api/echo/hello"), Some(Ok((0, "/hello".into()))));
        assert_eq!(up(&t, "/api/echo"), Some(Ok((0, "/".into()))));
    }

    #[test]
    fn tails_cannot_climb_out() {
        let t = table(&[("/api/orders/*", Some("/v1/orders/*"))]);
        for evil in [
            "/api/orders/../admin",
            "/api/orders/..",
            "/api/orders/./x",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2E%2E/admin",
            "/api/orders/.%2e/admin",
            "/api/orders/%2e./admin",
            "/api/orders/a%2f..%2fadmin",
            "/api/orders/a%2F..",
            "/api/orders//admin",
            "/api/orders/a//b",
            "/api/orders/..\\admin",
            "/api/orders/%5c..",
            "/api/orders/%252e%252e/admin",
            "/api/orders/a%00",
            "/api/orders/%%35c%",
            "/api/orders/%%32f..",
            "/api/orders/a%",
            "/api/orders/a%zz",
            "/api/orders/file%2etxt",
        ] {
            assert_eq!(up(&t, evil), Some(Err(PathError::Unsafe)), "{evil}");
        }
        assert_eq!(
            up(&t, "/api/orders/a..b/.c"),
            Some(Ok((0, "/v1/orders/a..b/.c".into())))
        );
    }

    #[test]
    fn path_parameters_cannot_pick_another_route_or_climb_upstream() {
        let t = table(&[
            ("/app/*", None),
            ("/app/private/*", None),
            ("/api/orders/*", Some("/v1/orders/*")),
        ]);
        for evil in [
            "/api/orders/..;/..;/actuator/env",
            "/api/orders/x;jsessionid=1",
            "/app/private;x=1/page",
            "/app;/private/page",
            "/app/private%3bx=1/page",
            "/app/private%3Bx=1/page",
            "/app/%70rivate/page",
            "/app/priv%61te/page",
            "/app/private%2Dx",
            "/app/private/%7Euser",
            "/app/private/%5F",
            "/app/./private/page",
            "/app//private/page",
            "app/private/page",
            "",
        ] {
            assert_eq!(up(&t, evil), Some(Err(PathError::Unsafe)), "{evil:?}");
        }
        // Also where no route matches: the static files and the 404 see one path too.
        assert_eq!(up(&t, "/nowhere;x"), Some(Err(PathError::Unsafe)));
        assert_eq!(
            up(&t, "/app/private/page"),
            Some(Ok((1, "/app/private/page".into())))
        );
    }

    #[test]
    fn escapes_are_forwarded_in_one_spelling() {
        let t = table(&[("/api/orders/*", Some("/v1/orders/*"))]);
        assert_eq!(
            up(&t, "/api/orders/caf%c3%a9%20x"),
            Some(Ok((0, "/v1/orders/caf%C3%A9%20x".into())))
        );
        assert_eq!(
            normalize("/a/%C3%A9").unwrap(),
            std::borrow::Cow::Borrowed("/a/%C3%A9"),
            "a normal path is not copied"
        );
        assert_eq!(normalize("/"), Ok(std::borrow::Cow::Borrowed("/")));
        assert_eq!(normalize("/a/"), Ok(std::borrow::Cow::Borrowed("/a/")));
        assert_eq!(
            normalize("/a:b@c!$&'()*+,="),
            Ok(std::borrow::Cow::Borrowed("/a:b@c!$&'()*+,="))
        );
    }
}
