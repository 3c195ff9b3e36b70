//! `${NAME}` interpolation of config values from an [`EnvSource`].

use std::collections::HashMap;

/// Where `${NAME}` references are looked up. Tests pass a map; the binary reads the process
/// environment (never writing it: `set_var` is unsound once threads run).
pub trait EnvSource {
    /// The value of `name`, or `None` when it is unset.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Why a value could not be interpolated. Never carries the value itself (it may be a secret).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InterpolateError {
    Unset(String),
    Malformed,
}

/// Replaces every `${NAME}` in `text`; `$$` stands for a literal `$`.
pub(crate) fn interpolate(text: &str, env: &dyn EnvSource) -> Result<String, InterpolateError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after.find('}').ok_or(InterpolateError::Malformed)?;
            let name = &after[..end];
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(InterpolateError::Malformed);
            }
            let value = env
                .get(name)
                .ok_or_else(|| InterpolateError::Unset(name.to_owned()))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("SECRET".to_owned(), "s3cr3t".to_owned()),
            ("PORT".to_owned(), "8080".to_owned()),
        ])
    }

    #[test]
    fn replaces_references_and_keeps_the_rest() {
        assert_eq!(interpolate("${SECRET}", &env()).unwrap(), "s3cr3t");
        assert_eq!(
            interpolate("127.0.0.1:${PORT}/x", &env()).unwrap(),
            "127.0.0.1:8080/x"
        );
        assert_eq!(interpolate("a$$b $x", &env()).unwrap(), "a$b $x");
    }

    #[test]
    fn unset_and_malformed_references_are_errors() {
        assert_eq!(
            interpolate("${NOPE}", &env()),
            Err(InterpolateError::Unset("NOPE".into()))
        );
        assert_eq!(
            interpolate("${OPEN", &env()),
            Err(InterpolateError::Malformed)
        );
        assert_eq!(
            interpolate("${1X}", &env()),
            Err(InterpolateError::Malformed)
        );
        assert_eq!(
            interpolate("${A-B}", &env()),
            Err(InterpolateError::Malformed)
        );
    }
}
