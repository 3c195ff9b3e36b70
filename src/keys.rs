//! Sallyport's own signing keys (`signing_keys`): they sign its client assertions
//! (`private_key_jwt`, RFC 7523) and are published, public parts only, at
//! `GET /.well-known/jwks.json`.
//!
//! Keys are PEM files: EC P-256 (ES256), Ed25519 (EdDSA) or RSA of at least 2048 bits (PS256),
//! each with a `kid`. The first key signs; all are published, so that a provider caching the
//! JWKS keeps verifying assertions across a rotation. Signing and the public JWK come from
//! `jsonwebtoken` (aws-lc-rs backend); new keys from aws-lc-rs (`sallyport keys generate`).

use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Shortest RSA modulus accepted (NIST SP 800-57: 2048 bits until 2030).
const MIN_RSA_BITS: usize = 2048;
/// Lifetime of a client assertion (RFC 7523 §3: short; one use).
pub const ASSERTION_LIFETIME: u64 = 60;

/// One signing key, with its public JWK.
pub struct SigningKey {
    /// The key id published and put in each signature's header.
    pub kid: String,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    key: EncodingKey,
    /// The public key as a JWK (`kty`, the public parameters, `kid`, `use: sig`, `alg`).
    pub public: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PEM private key (PKCS#8 `PRIVATE KEY`, or `RSA PRIVATE KEY`).
    ///
    /// # Errors
    /// What is wrong with it, in words for `check` (never the key).
    pub fn from_pem(kid: &str, pem: &[u8]) -> Result<Self, String> {
        let (key, alg) = if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            (key, Algorithm::PS256)
        } else {
            return Err(
                "is not a PEM private key (EC P-256, Ed25519 or RSA); create one with `sallyport keys generate --alg ES256 --out FILE`"
                    .into(),
            );
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|_| match alg {
            // aws-lc-rs itself refuses RSA keys below 2048 bits.
            Algorithm::PS256 => format!(
                "is an RSA key that cannot sign; RSA keys need at least {MIN_RSA_BITS} bits"
            ),
            Algorithm::ES256 => {
                "is an EC key that cannot sign ES256: not on the P-256 curve, or damaged".to_owned()
            }
            _ => "holds a key that cannot sign (a damaged or unsupported key)".to_owned(),
        })?;
        match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) if ec.curve != EllipticCurve::P256 => {
                return Err("is an EC key on another curve than P-256 (ES256)".into());
            }
            AlgorithmParameters::RSA(rsa) => {
                use base64::Engine as _;
                let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&rsa.n)
                    .unwrap_or_default();
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "is an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
                    ));
                }
            }
            _ => {}
        }
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match alg {
            Algorithm::ES256 => KeyAlgorithm::ES256,
            Algorithm::EdDSA => KeyAlgorithm::EdDSA,
            _ => KeyAlgorithm::PS256,
        });
        let public = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
        // Belt and braces: a private parameter never leaves (the JWK is built from public
        // components, but a future change must not publish one by accident).
        if ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .any(|k| public.get(k).is_some())
        {
            return Err("would publish a private key part".into());
        }
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            key,
            public,
        })
    }
}

/// All of Sallyport's signing keys.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<Arc<SigningKey>>,
    jwks: bytes::Bytes,
}

/// An RFC 7523 client assertion's claims.
#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

impl Keys {
    /// The configured keys, in order (the first signs).
    pub fn new(keys: Vec<Arc<SigningKey>>) -> Self {
        let jwks = serde_json::json!({
            "keys": keys.iter().map(|k| &k.public).collect::<Vec<_>>(),
        });
        Self {
            jwks: bytes::Bytes::from(jwks.to_string()),
            keys,
        }
    }

    /// The JWK Set (RFC 7517 §5) of the public keys.
    pub fn jwks(&self) -> bytes::Bytes {
        self.jwks.clone()
    }

    /// Whether there is a key to sign with.
    pub fn can_sign(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The algorithm of the key that signs (the first), if any.
    pub fn signing_alg(&self) -> Option<jsonwebtoken::Algorithm> {
        self.keys.first().map(|k| k.alg)
    }

    /// A client assertion (RFC 7523 §2.2, OIDC Core §9 `private_key_jwt`) for `client_id`
    /// toward `audience`, issued at `now` (unix seconds), signed with the first key.
    ///
    /// # Errors
    /// No key, or signing failed.
    pub fn client_assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let key = self
            .keys
            .first()
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        let claims = Assertion {
            iss: client_id,
            sub: client_id,
            aud: audience,
            jti: crate::random::token(),
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &key.key)
    }
}

/// The algorithms `sallyport keys generate` writes keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKey {
    /// EC P-256.
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSA of 3072 bits, signing with PS256 (for providers without EC or EdDSA support).
    Ps256,
}

/// A new private key, as PKCS#8 PEM.
///
/// # Errors
/// The system's random source failed.
pub fn generate(alg: NewKey) -> Result<String, aws_lc_rs::error::Unspecified> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    let der: Vec<u8> = match alg {
        NewKey::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?
            .to_pkcs8v1()?
            .as_ref()
            .to_vec(),
        NewKey::EdDsa => Ed25519KeyPair::generate()?.to_pkcs8v1()?.as_ref().to_vec(),
        // 3072 bits: NIST SP 800-57's size for use beyond 2030.
        NewKey::Ps256 => {
            use aws_lc_rs::encoding::AsDer as _;
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072)?
                .as_der()?
                .as_ref()
                .to_vec()
        }
    };
    Ok(pem("PRIVATE KEY", &der))
}

/// PEM (RFC 7468): base64 in lines of 64 between the labels.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_sign_and_publish_only_their_public_part() {
        for (alg, kty, jws_alg) in [
            (NewKey::Es256, "EC", Algorithm::ES256),
            (NewKey::EdDsa, "OKP", Algorithm::EdDSA),
            (NewKey::Ps256, "RSA", Algorithm::PS256),
        ] {
            let pem = generate(alg).unwrap();
            let key = SigningKey::from_pem("k1", pem.as_bytes()).unwrap();
            assert_eq!(key.alg, jws_alg);
            assert_eq!(key.public["kty"], kty);
            assert_eq!(key.public["kid"], "k1");
            assert_eq!(key.public["use"], "sig");
            assert!(
                key.public.get("d").is_none(),
                "no private part: {}",
                key.public
            );
            let keys = Keys::new(vec![Arc::new(key)]);
            let jwt = keys
                .client_assertion("sallyport", "https://id.example.com", 1_000)
                .unwrap();
            // Verified with the published JWK, as a provider does.
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&keys.jwks()).unwrap();
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
            let mut validation = jsonwebtoken::Validation::new(jws_alg);
            validation.set_audience(&["https://id.example.com"]);
            validation.validate_exp = false;
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&jwt, &decoding, &validation).unwrap();
            assert_eq!(data.claims["iss"], "sallyport");
            assert_eq!(data.claims["sub"], "sallyport");
            assert_eq!(data.claims["exp"], 1_060);
            assert_eq!(data.header.kid.as_deref(), Some("k1"));
            let second = keys
                .client_assertion("sallyport", "https://id.example.com", 1_000)
                .unwrap();
            assert_ne!(jwt, second, "a new jti each time");
        }
    }

    #[test]
    fn wrong_keys_are_refused_in_words() {
        assert!(
            SigningKey::from_pem("k", b"not a key")
                .unwrap_err()
                .contains("is not a PEM private key")
        );
        // An RSA key of 1024 bits (test only).
        let short = include_str!("../tests/keys/rsa1024.pem");
        assert!(
            SigningKey::from_pem("k", short.as_bytes())
                .unwrap_err()
                .contains("at least 2048 bits")
        );
        let p384 = include_str!("../tests/keys/ec-p384.pem");
        assert!(
            SigningKey::from_pem("k", p384.as_bytes())
                .unwrap_err()
                .contains("P-256")
        );
        let rsa = include_str!("../tests/keys/rsa2048.pem");
        let key = SigningKey::from_pem("r", rsa.as_bytes()).unwrap();
        assert_eq!(key.alg, Algorithm::PS256);
        assert_eq!(key.public["kty"], "RSA");
        assert!(key.public.get("d").is_none() && key.public.get("p").is_none());
    }
}
