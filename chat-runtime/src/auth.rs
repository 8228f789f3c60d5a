//! User tokens (JWT, HS256) and server API keys.
//!
//! A user token is signed with one of its tenant's API secrets. Its header
//! names that secret's key id in `kid`; its claims are `sub` (user id),
//! `aud` (tenant id), `exp` and `iat` (seconds since the Unix epoch). The
//! full contract is in `docs/api.md`.
//!
//! Verification accepts only `alg: HS256`, requires `sub`, `aud` and `exp`,
//! allows `server.token_leeway_seconds` of clock difference on `exp` (30 by
//! default), and requires `aud`
//! to be the tenant the request names, so a token of one tenant never opens
//! another even if both happened to share a key id.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TenantSettings;

/// Maximum lifetime of a token minted by the server API, in seconds (one week).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// A token whose signature, audience and expiry were checked. The user's
/// existence is checked separately against the store.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub user_id: String,
    pub expires_at: u64,
    pub issued_at: Option<u64>,
}

/// Reason a token was rejected. The code is sent to the client; the variants
/// are deliberately coarse so a client learns nothing about our keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a user token is required")]
    Missing,
    #[error("the token is invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Invalid => "token_invalid",
            TokenError::Expired => "token_expired",
        }
    }
}

/// Checks a user token for `tenant`, allowing `leeway` seconds of clock
/// difference on `exp`.
pub fn verify_user_token(
    tenant: &TenantSettings,
    token: &str,
    leeway: u64,
) -> Result<VerifiedToken, TokenError> {
    // The header is read before the signature is checked, only to choose
    // the key: a forged `kid` just selects a key the forger does not have.
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::Invalid);
    }
    let key_id = header.kid.ok_or(TokenError::Invalid)?;
    let key = tenant.api_key(&key_id).ok_or(TokenError::Invalid)?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = leeway;
    validation.validate_nbf = true;
    validation.set_audience(&[tenant.id.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);

    let decoding_key = DecodingKey::from_secret(&key.secret).map_err(|_| TokenError::Invalid)?;
    let data =
        jsonwebtoken::decode::<Claims>(token, &decoding_key, &validation).map_err(|error| {
            match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            }
        })?;
    // The library accepts a token while `now <= exp + leeway`, but a token
    // must not be accepted at or after its `exp` (RFC 7519, section 4.1.4).
    if data.claims.exp.saturating_add(leeway) <= unix_now() {
        return Err(TokenError::Expired);
    }
    if data.claims.sub.is_empty() {
        return Err(TokenError::Invalid);
    }
    Ok(VerifiedToken {
        user_id: data.claims.sub,
        expires_at: data.claims.exp,
        issued_at: data.claims.iat,
    })
}

/// Signs a user token with the tenant's first API key, which is the current
/// one during a rotation.
pub fn mint_user_token(
    tenant: &TenantSettings,
    user_id: &str,
    now: u64,
    ttl_seconds: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    mint_user_token_issued_at(tenant, user_id, now, now + ttl_seconds)
}

/// Signs a user token with `iat` set to `issued_at` and `exp` to
/// `expires_at`, both in seconds since the epoch.
pub fn mint_user_token_issued_at(
    tenant: &TenantSettings,
    user_id: &str,
    issued_at: u64,
    expires_at: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let key = tenant.api_keys.first().ok_or_else(|| {
        jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)
    })?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.id.clone());
    let claims = Claims {
        sub: user_id.to_owned(),
        aud: tenant.id.clone(),
        exp: expires_at,
        iat: Some(issued_at),
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.secret)?)
}

/// Checks an HTTP Basic `key_id:secret` pair against the tenant's keys in
/// time that does not depend on where the secrets differ.
pub fn check_api_key(tenant: &TenantSettings, key_id: &str, secret: &[u8]) -> bool {
    match tenant.api_key(key_id) {
        Some(key) => constant_time_eq(&key.secret, secret),
        None => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKey, Limits, StoreSettings};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn tenant(id: &str, secret: &str) -> TenantSettings {
        TenantSettings {
            id: id.into(),
            display_name: id.into(),
            api_keys: vec![ApiKey {
                id: "k1".into(),
                secret: secret.as_bytes().to_vec(),
            }],
            allowed_origins: vec![],
            limits: Limits::default(),
            attachment_hosts: vec![],
            moderation: Default::default(),
            events: Default::default(),
            hook: None,
            webhooks: Vec::new(),
            templates: Vec::new(),
            extensions: Default::default(),
            store: StoreSettings::Embedded,
        }
    }

    fn sign_raw(alg: Algorithm, kid: &str, claims: &serde_json::Value, secret: &[u8]) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    const LEEWAY: u64 = 30;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_token_verifies() {
        let acme = tenant("acme", SECRET);
        let now = unix_now();
        let token = mint_user_token(&acme, "alice", now, 60).unwrap();
        let verified = verify_user_token(&acme, &token, LEEWAY).unwrap();
        assert_eq!(verified.user_id, "alice");
        assert_eq!(verified.expires_at, now + 60);
    }

    #[test]
    fn token_from_claims_verifies() {
        let acme = tenant("acme", SECRET);
        let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": unix_now() + 60});
        let token = sign_raw(Algorithm::HS256, "k1", &claims, SECRET.as_bytes());
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap().user_id,
            "bob"
        );
    }

    #[test]
    fn alg_none_is_rejected() {
        let acme = tenant("acme", SECRET);
        let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": unix_now() + 60});
        let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let token = format!("{head}.{body}.");
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn other_algorithm_is_rejected() {
        let acme = tenant("acme", SECRET);
        let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": unix_now() + 60});
        let token = sign_raw(Algorithm::HS384, "k1", &claims, SECRET.as_bytes());
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn bad_signature_is_rejected() {
        let acme = tenant("acme", SECRET);
        let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": unix_now() + 60});
        let token = sign_raw(
            Algorithm::HS256,
            "k1",
            &claims,
            b"another secret of thirty-two bytes!",
        );
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn expiry_and_leeway() {
        let acme = tenant("acme", SECRET);
        let now = unix_now();
        let sign = |exp: u64| {
            let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": exp});
            sign_raw(Algorithm::HS256, "k1", &claims, SECRET.as_bytes())
        };
        assert!(verify_user_token(&acme, &sign(now - 5), LEEWAY).is_ok());
        assert_eq!(
            verify_user_token(&acme, &sign(now - LEEWAY - 5), LEEWAY).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn future_nbf_is_rejected() {
        let acme = tenant("acme", SECRET);
        let now = unix_now();
        let claims =
            serde_json::json!({"sub": "bob", "aud": "acme", "exp": now + 600, "nbf": now + 300});
        let token = sign_raw(Algorithm::HS256, "k1", &claims, SECRET.as_bytes());
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn missing_exp_is_rejected() {
        let acme = tenant("acme", SECRET);
        let claims = serde_json::json!({"sub": "bob", "aud": "acme"});
        let token = sign_raw(Algorithm::HS256, "k1", &claims, SECRET.as_bytes());
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn other_tenant_token_is_rejected() {
        // Same key id and secret on purpose: only the audience differs.
        let acme = tenant("acme", SECRET);
        let globex = tenant("globex", SECRET);
        let token = mint_user_token(&globex, "bob", unix_now(), 60).unwrap();
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn unknown_kid_is_rejected() {
        let acme = tenant("acme", SECRET);
        let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": unix_now() + 60});
        let token = sign_raw(Algorithm::HS256, "k9", &claims, SECRET.as_bytes());
        assert_eq!(
            verify_user_token(&acme, &token, LEEWAY).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn second_key_verifies_during_rotation() {
        let mut acme = tenant("acme", SECRET);
        let old_secret = "fedcba9876543210fedcba9876543210";
        acme.api_keys.push(ApiKey {
            id: "k0".into(),
            secret: old_secret.as_bytes().to_vec(),
        });
        let claims = serde_json::json!({"sub": "bob", "aud": "acme", "exp": unix_now() + 60});
        let token = sign_raw(Algorithm::HS256, "k0", &claims, old_secret.as_bytes());
        assert!(verify_user_token(&acme, &token, LEEWAY).is_ok());
    }

    #[test]
    fn api_key_check() {
        let acme = tenant("acme", SECRET);
        assert!(check_api_key(&acme, "k1", SECRET.as_bytes()));
        assert!(!check_api_key(
            &acme,
            "k1",
            b"0123456789abcdef0123456789abcdeX"
        ));
        assert!(!check_api_key(&acme, "k2", SECRET.as_bytes()));
    }
}
