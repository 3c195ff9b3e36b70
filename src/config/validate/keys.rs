//! `signing_keys`: Sallyport's own keys, read and checked (`crate::keys`).

use super::*;
use crate::config::raw::RawSigningKey;
use crate::keys::{Keys, SigningKey};

impl Validator {
    /// Reads every key file; each problem names the entry and the file.
    pub(super) fn signing_keys(&mut self, raw: Vec<RawSigningKey>, base_dir: &Path) -> Keys {
        let mut keys = Vec::new();
        let mut kids = HashSet::new();
        for (i, k) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("signing_keys[{i}].{field}");
            let kid = self.required(&key("kid"), k.kid.as_ref()).and_then(|kid| {
                if kid.len() > 64 || !kid.bytes().all(|b| b.is_ascii_graphic()) {
                    self.err(
                        &key("kid"),
                        "expected a short key id without spaces, such as 2026-12",
                    );
                    None
                } else if !kids.insert(kid.to_owned()) {
                    self.err(&key("kid"), "another signing key has the same kid");
                    None
                } else {
                    Some(kid.to_owned())
                }
            });
            let Some(file) = self.required(&key("file"), k.file.as_ref()) else {
                continue;
            };
            let path = base_dir.join(file);
            let pem = match std::fs::read(&path) {
                Ok(pem) => zeroize::Zeroizing::new(pem),
                Err(e) => {
                    self.err(
                        &key("file"),
                        format!(
                            "cannot read {}: {e}; create a key with `sallyport keys generate --alg ES256 --out {}`",
                            path.display(),
                            path.display()
                        ),
                    );
                    continue;
                }
            };
            let Some(kid) = kid else { continue };
            match SigningKey::from_pem(&kid, &pem) {
                Ok(k) => keys.push(std::sync::Arc::new(k)),
                Err(why) => self.err(&key("file"), format!("{} {why}", path.display())),
            }
        }
        Keys::new(keys)
    }
}
