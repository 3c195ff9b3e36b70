//! DPoP (RFC 9449): tokens bound to a key, and the proofs that show possession of it.
//!
//! With `providers.<name>.dpop: true`, each login gets its own ES256 key, generated when the
//! login starts (its thumbprint binds the code: `dpop_jkt`; the key travels sealed in the login
//! cookie) and kept in the sealed session record (so every instance can prove possession of
//! it, and it ends with the session). The code exchange, every refresh and the userinfo call
//! carry a proof signed with it, so the provider binds the session's tokens to it
//! (`token_type: DPoP`, `cnf.jkt`); services marked `dpop: true` get `Authorization: DPoP …`
//! with a proof for the exact request (`htm`, `htu`, `ath`). A stolen access token is useless
//! without the key, which leaves Sallyport only sealed (in the login cookie).
//!
//! Proofs are JWTs signed by `jsonwebtoken` (aws-lc-rs); the key comes from aws-lc-rs. The
//! proof's claims and the nonce handshake are a few lines that no maintained crate offers as a
//! client.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// A session's DPoP key: ES256, as PKCS#8.
#[derive(Clone)]
pub struct DpopKey {
    pkcs8: zeroize::Zeroizing<Vec<u8>>,
    key: EncodingKey,
    /// The proof header: `typ: dpop+jwt`, `alg: ES256`, the public `jwk`.
    header: Header,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DpopKey([redacted])")
    }
}

/// A proof's claims (RFC 9449 §4.2).
#[derive(Serialize)]
struct Proof<'a> {
    jti: String,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl DpopKey {
    /// A new key.
    ///
    /// # Panics
    /// When the system's random source fails (nothing can be sealed then either).
    pub fn generate() -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .expect("the system's random source works");
        Self::from_pkcs8(pkcs8.as_ref().to_vec()).expect("a new key loads")
    }

    /// The key stored in a session.
    fn from_pkcs8(pkcs8: Vec<u8>) -> Option<Self> {
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let key = EncodingKey::from_ec_der(&pkcs8);
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).ok()?;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(jwk);
        Some(Self { pkcs8, key, header })
    }

    /// The JWK SHA-256 thumbprint (RFC 7638) of the public key: the `jkt` tokens are bound to.
    pub fn thumbprint(&self) -> String {
        self.header
            .jwk
            .as_ref()
            .and_then(|jwk| jwk.thumbprint(ThumbprintHash::SHA256).ok())
            .unwrap_or_default()
    }

    /// A proof for a request with method `htm` to `htu` (scheme, authority and path; no query
    /// or fragment), at `now` (unix seconds); with `access_token`, its hash (`ath`), as a
    /// resource server wants it; with the server's `nonce` when it asked for one.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> String {
        let claims = Proof {
            jti: crate::random::token(),
            htm,
            htu,
            iat: now,
            ath: access_token.map(|t| URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(t.as_bytes()))),
            nonce,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .expect("an ES256 key that loaded signs")
    }
}

/// `htu` of a URL: without query and fragment (RFC 9449 §4.2).
pub fn htu(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// Seconds since the unix epoch, for a proof's `iat` (the provider's clock, not a test's).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Serialize for DpopKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(&*self.pkcs8))
    }
}

impl<'de> Deserialize<'de> for DpopKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        let der = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)?;
        Self::from_pkcs8(der).ok_or_else(|| serde::de::Error::custom("not an ES256 key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn a_proof_verifies_with_its_embedded_key_and_carries_the_request() {
        let key = DpopKey::generate();
        let proof = key.proof(
            "GET",
            "https://api.example.com/orders",
            Some("the-token"),
            Some("n-1"),
            1_000,
        );
        let header = jsonwebtoken::decode_header(&proof).unwrap();
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = header.jwk.unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            key.thumbprint()
        );
        let public = serde_json::to_value(&jwk).unwrap();
        assert!(public.get("d").is_none(), "no private part: {public}");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &proof,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example.com/orders");
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"the-token"))
        );
        let other = key.proof("GET", "https://api.example.com/orders", None, None, 1_000);
        let jti = |p: &str| {
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(p)
                .unwrap()
                .claims["jti"]
                .clone()
        };
        assert_ne!(jti(&proof), jti(&other), "a new jti for every proof");
    }

    #[test]
    fn a_stored_key_comes_back_as_the_same_key_and_prints_no_secret() {
        let key = DpopKey::generate();
        let stored = serde_json::to_string(&key).unwrap();
        let back: DpopKey = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.thumbprint(), key.thumbprint());
        assert_eq!(format!("{key:?}"), "DpopKey([redacted])");
        assert!(serde_json::from_str::<DpopKey>("\"bm90IGEga2V5\"").is_err());
        assert_eq!(
            htu(&url::Url::parse("https://a.example/p/q?x=1#f").unwrap()),
            "https://a.example/p/q"
        );
    }
}
