//! The route table: which route serves a client path, and the upstream path it maps to.
//!
//! Built once at startup. A route `/x/*` matches `/x`, `/x/` and everything below, never `/xy`;
//! an exact route matches only itself; the longest matching route wins. A wildcard tail can
//! never climb out of its `upstream_path`: dot segments, empty segments, backslashes and
//! encoded slashes or dots are refused.

use http::Method;
use percent_encoding::percent_decode_str;

use crate::config::{AuthMode, RouteConfig};

/// One route, ready for matching.
#[derive(Debug)]
pub struct Route {
    /// The configured path, for logs.
    pub path: String,
    prefix: String,
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
}

/// A matched route and the upstream path for the request.
#[derive(Debug)]
pub struct Match<'a> {
    /// The route.
    pub route: &'a Route,
    /// The path to send upstream (without query).
    pub upstream_path: String,
}

/// Why a path that matched a route is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// The tail would escape the upstream path, or is ambiguous to decode.
    Unsafe,
}

/// Every route, longest prefix first.
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
                    prefix,
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
                }
            })
            .collect();
        // Longest first; on equal length an exact route before a wildcard one.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(a.wildcard.cmp(&b.wildcard))
        });
        Self { routes }
    }

    /// The route serving `path` (raw, still percent-encoded), if any.
    ///
    /// # Errors
    /// [`PathError::Unsafe`] when a route matches but the tail could escape its upstream path.
    pub fn find<'a>(&'a self, path: &str) -> Option<Result<Match<'a>, PathError>> {
        let route = self.routes.iter().find(|r| r.matches(path))?;
        Some(route.map_path(path).map(|upstream_path| Match {
            route,
            upstream_path,
        }))
    }
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        if !self.wildcard {
            return path == self.prefix;
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || self.prefix.ends_with('/'),
            None => false,
        }
    }

    /// Whether `method` may use this route.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| {
            m.contains(method) || (method == Method::HEAD && m.contains(&Method::GET))
        })
    }

    fn map_path(&self, path: &str) -> Result<String, PathError> {
        let tail = if self.wildcard {
            &path[self.prefix.len()..]
        } else {
            ""
        };
        if !tail.is_empty() && !tail_is_safe(tail) {
            return Err(PathError::Unsafe);
        }
        Ok(match &self.upstream_prefix {
            None => path.to_owned(),
            Some(up) if self.upstream_wildcard => {
                let mut s = String::with_capacity(up.len() + tail.len() + 1);
                s.push_str(up);
                s.push_str(tail);
                if s.is_empty() {
                    s.push('/');
                }
                s
            }
            Some(up) => up.clone(),
        })
    }
}

/// A tail (`/a/b`, still percent-encoded) is safe when neither it nor its decoded form holds a
/// dot segment, an empty segment, a backslash, a NUL, or an encoded `/`, `\` or `.` that a
/// second decoding upstream could turn into one. A `%` that starts no valid escape is refused
/// too: `%%35c` decodes once to `%5c` and twice to `\` (found by the `route` fuzz target).
/// With that and `%25` refused, one decoding leaves no `%`, so a second changes nothing.
fn tail_is_safe(tail: &str) -> bool {
    let bytes = tail.as_bytes();
    if bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    }) {
        return false;
    }
    let lower = tail.to_ascii_lowercase();
    if ["%2f", "%5c", "%00", "%25"]
        .iter()
        .any(|bad| lower.contains(bad))
    {
        return false;
    }
    let decoded = percent_decode_str(tail).decode_utf8_lossy();
    if decoded.contains('\\') || decoded.contains('\0') {
        return false;
    }
    let mut segments = decoded.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return false;
        }
        // An empty segment is only allowed as the trailing slash.
        if segment.is_empty() && segments.peek().is_some() {
            return false;
        }
    }
    true
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
            })
            .collect();
        RouteTable::new(&configs)
    }

    fn up(t: &RouteTable, path: &str) -> Option<Result<(usize, String), PathError>> {
        t.find(path)
            .map(|m| m.map(|m| (m.route.service, m.upstream_path)))
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
        ] {
            assert_eq!(up(&t, evil), Some(Err(PathError::Unsafe)), "{evil}");
        }
        assert_eq!(
            up(&t, "/api/orders/file%2etxt"),
            Some(Ok((0, "/v1/orders/file%2etxt".into())))
        );
        assert_eq!(
            up(&t, "/api/orders/a..b/.c"),
            Some(Ok((0, "/v1/orders/a..b/.c".into())))
        );
    }
}
