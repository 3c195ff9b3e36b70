//! The `services` section: upstream URLs, the token each receives, timeouts.

use super::*;

/// `services.<name>.timeout`: how long the upstream may take to send its response headers.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

impl Validator {
    pub(super) fn services(
        &mut self,
        raw: indexmap::IndexMap<String, RawService>,
    ) -> Vec<ServiceConfig> {
        let mut out = Vec::new();
        for (name, s) in raw {
            let key = |field: &str| format!("services.{name}.{field}");
            let url = self
                .required(&key("url"), s.url.as_ref())
                .and_then(|text| match Url::parse(text) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.has_host()
                            && u.query().is_none() =>
                    {
                        Some(u)
                    }
                    _ => {
                        self.err(
                            &key("url"),
                            "expected an http(s) URL such as http://127.0.0.1:7000 (no query)",
                        );
                        None
                    }
                });
            let token = match s.token.as_deref().unwrap_or("user") {
                "none" => Some(TokenMode::None),
                "user" => Some(TokenMode::User),
                "id_token" => Some(TokenMode::IdToken),
                "client_credentials" | "exchange" => {
                    self.err(
                        &key("token"),
                        "client_credentials and exchange are not supported by this version yet; use user, id_token or none",
                    );
                    None
                }
                _ => {
                    self.err(
                        &key("token"),
                        "expected one of none, user, id_token, client_credentials, exchange",
                    );
                    None
                }
            };
            if s.audience.is_some() || s.scopes.is_some() || s.provider.is_some() {
                self.err(
                    &name_key(&name),
                    "audience, scopes and provider apply to client_credentials and exchange, which this version does not support yet",
                );
            }
            let timeout = self.positive_duration(
                &key("timeout"),
                s.timeout.as_ref(),
                DEFAULT_UPSTREAM_TIMEOUT,
            );
            if let (Some(url), Some(token)) = (url, token) {
                out.push(ServiceConfig {
                    name,
                    url,
                    token,
                    timeout,
                });
            } else {
                // Keep the name so routes naming it do not report a second, misleading error.
                out.push(ServiceConfig {
                    name,
                    url: Url::parse("http://invalid.invalid").expect("static URL"),
                    token: TokenMode::None,
                    timeout,
                });
            }
        }
        out
    }
}

fn name_key(name: &str) -> String {
    format!("services.{name}")
}
