//! Redacting newtypes for secrets: tokens, client secrets and keys.
//!
//! Each prints `[redacted]` through `Debug`, has no `Display`, and hands out its value only through
//! an explicit `expose()`, so a secret cannot reach a log line by accident.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret itself. Call only where it must leave the process (a header, a form).
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }
    };
}

secret_string!(
    /// An OAuth client secret.
    ClientSecret
);
secret_string!(
    /// An OAuth access token.
    AccessToken
);
secret_string!(
    /// An OAuth refresh token.
    RefreshToken
);
secret_string!(
    /// An OpenID Connect ID token (a JWT with personal claims).
    IdToken
);
secret_string!(
    /// A Redis URL, which may carry a user and password.
    RedisUrl
);

/// A 32-byte session sealing key from `session.keys`.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// Wraps 32 key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

impl Drop for SessionKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let printed = format!(
            "{:?} {:?} {:?} {:?} {:?}",
            ClientSecret::new("cs-value"),
            AccessToken::new("at-value"),
            RefreshToken::new("rt-value"),
            IdToken::new("idt-value"),
            SessionKey::new([7; 32]),
        );
        for secret in ["cs-value", "at-value", "rt-value", "idt-value", "7, 7"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("[redacted]"));
    }
}
