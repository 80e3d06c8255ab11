//! Token verification and minting (HS256 only); nothing else in the gateway knows about JWTs.

use base64::Engine;
use jsonwebtoken::{decode, Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::{json, Map, Value};

use crate::protocol::{ApiError, ErrorCode, Timestamp};

/// The app's signing secret. Never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Whether the secret is empty: a token signed with the empty key would verify, so the
    /// gateway refuses to start with one.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the secret is shorter than [`MIN_SECRET_BYTES`].
    pub fn is_short(&self) -> bool {
        self.0.len() < MIN_SECRET_BYTES
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A server token: full access to the admin listener.
    Server,
    /// A user token.
    User(TokenClaims),
}

/// The claims of a verified user token that the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The `user_id` claim.
    pub user_id: String,
    /// The `iat` claim, seconds.
    pub iat: Option<i64>,
    /// Minted by `POST /guest` (claim `guest: true`): good only while the user is a guest.
    pub guest: bool,
}

fn auth_error(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFailed, format!("JWTAuth error: {detail}"))
}

/// Verifies a token. With `skip_signature` (app setting `disable_auth_checks`) the signature
/// of a user token is not checked, which is what lets dev tokens in; a server token is always
/// checked, or anyone could take the admin listener while auth checks are off.
pub fn verify(token: &str, secret: &Secret, skip_signature: bool) -> Result<Identity, ApiError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(auth_error("token is missing"));
    }
    refuse_critical_header(token)?;
    if skip_signature {
        let identity = identity_of(&unverified_claims(token)?)?;
        if identity != Identity::Server {
            return Ok(identity);
        }
    }
    identity_of(&verified_claims(token, secret)?)
}

/// Refuses a token whose header has a `crit` parameter: it names extensions the receiver must
/// understand to accept the token (RFC 7515 §4.1.11), and the gateway understands none.
fn refuse_critical_header(token: &str) -> Result<(), ApiError> {
    let header = token.split('.').next().unwrap_or("");
    let header = decode_part(header).ok_or_else(|| auth_error("token is malformed"))?;
    if header.get("crit").is_some() {
        return Err(auth_error(
            "token header has critical parameters (crit), which are not supported",
        ));
    }
    Ok(())
}

/// Decodes one base64 part of a token as JSON: URL-safe base64 (real JWTs) or standard
/// padded base64 (dev tokens).
fn decode_part(part: &str) -> Option<Value> {
    let part = part.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(part))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Decodes the payload of an HS256 token whose signature checks out.
fn verified_claims(token: &str, secret: &Secret) -> Result<Map<String, Value>, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(secret.expose().as_bytes());
    decode::<Map<String, Value>>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => ApiError::new(
                    ErrorCode::TokenSignature,
                    "JWTAuth error: signature is invalid",
                ),
                ErrorKind::InvalidAlgorithm => auth_error("only HS256 tokens are accepted"),
                _ => auth_error("token is malformed"),
            }
        })
}

/// Decodes the payload without checking the signature (only with auth checks disabled).
/// Accepts both URL-safe base64 (real JWTs) and standard padded base64 (dev tokens).
fn unverified_claims(token: &str) -> Result<Map<String, Value>, ApiError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(auth_error("token is malformed"));
    };
    let header = decode_part(header).ok_or_else(|| auth_error("token is malformed"))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(auth_error("only HS256 tokens are accepted"));
    }
    match decode_part(payload) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(auth_error("token is malformed")),
    }
}

/// A NumericDate claim (RFC 7519: seconds since the epoch, fractions allowed).
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, ApiError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|t| t.is_finite())
            .map(Some)
            .ok_or_else(|| auth_error(&format!("{name} must be a number of seconds"))),
        Some(_) => Err(auth_error(&format!("{name} must be a number of seconds"))),
    }
}

/// Seconds since the epoch, with their fraction.
fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn identity_of(claims: &Map<String, Value>) -> Result<Identity, ApiError> {
    let exp = time_claim(claims, "exp")?;
    let nbf = time_claim(claims, "nbf")?;
    let iat = time_claim(claims, "iat")?;
    let now = now_seconds();
    if let Some(exp) = exp {
        if exp <= now {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "JWTAuth error: token has expired",
            ));
        }
    }
    if nbf.is_some_and(|nbf| nbf > now) {
        return Err(ApiError::new(
            ErrorCode::TokenNotValidYet,
            "JWTAuth error: token is not valid yet",
        ));
    }
    if iat.is_some_and(|iat| iat > now + 1.0) {
        return Err(ApiError::new(
            ErrorCode::TokenUsedBeforeIssued,
            "JWTAuth error: token used before issue at (iat)",
        ));
    }
    match (claims.get("server"), claims.get("user_id")) {
        (Some(Value::Bool(true)), None) => Ok(Identity::Server),
        (None, Some(Value::String(id))) if !id.is_empty() => Ok(Identity::User(TokenClaims {
            user_id: id.clone(),
            // Whole seconds, as revocation cutoffs compare them.
            iat: iat.map(|t| t.floor() as i64),
            guest: claims.get("guest") == Some(&Value::Bool(true)),
        })),
        (None, Some(_)) => Err(auth_error("user_id must be a non-empty string")),
        _ => Err(auth_error("token has neither a user_id nor server claim")),
    }
}

/// Secrets shorter than this many bytes are accepted with a warning: an HS256 key should
/// carry at least as many bits as the hash (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Mints a server token (`{"server":true}`).
pub fn server_token(secret: &Secret) -> String {
    sign(&json!({"server": true}), secret)
}

/// Mints a server token that expires `expires_in` seconds from now when given.
pub fn server_token_expiring(secret: &Secret, expires_in: Option<i64>) -> String {
    match expires_in {
        Some(secs) => sign(
            &json!({"server": true, "exp": Timestamp::now().unix() + secs}),
            secret,
        ),
        None => server_token(secret),
    }
}

/// Mints a user token; `expires_in` seconds from now when given.
pub fn user_token(user_id: &str, expires_in: Option<i64>, secret: &Secret) -> String {
    let mut claims = json!({"user_id": user_id});
    if let Some(secs) = expires_in {
        claims["exp"] = json!(Timestamp::now().unix() + secs);
    }
    sign(&claims, secret)
}

/// Mints a guest's token: it names the guest and its issue time, so that it stops working
/// once the back end takes the id over (and is never byte-identical to a back-end token).
pub fn guest_token(user_id: &str, secret: &Secret) -> String {
    let claims = json!({"user_id": user_id, "guest": true, "iat": Timestamp::now().unix()});
    sign(&claims, secret)
}

/// Header of every token minted here, byte-identical to the official SDKs' tokens.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

fn sign(claims: &Value, secret: &Secret) -> String {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let message = format!("{HEADER_B64}.{payload}");
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signing cannot fail");
    format!("{message}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.O3_wD3p25fBsOrJNqxpY4PRoTcYGCflzvBWDgoUgJ84";
    const ALICE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.2i5pyyoU1DXmsdnhQS10A6wltbitZY0iDmTPBJfhftc";
    const DEV: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ==.devtoken";

    #[test]
    fn spec_examples() {
        let s = Secret::new("test-secret");
        assert_eq!(server_token(&s), SERVER);
        assert_eq!(user_token("alice", None, &s), ALICE);
        assert_eq!(verify(SERVER, &s, false).unwrap(), Identity::Server);
        assert_eq!(
            verify(ALICE, &s, false).unwrap(),
            Identity::User(TokenClaims {
                user_id: "alice".into(),
                iat: None,
                guest: false,
            })
        );
        assert_eq!(
            verify(DEV, &s, false).unwrap_err().code,
            ErrorCode::TokenSignature
        );
        assert!(matches!(verify(DEV, &s, true).unwrap(), Identity::User(_)));
        let wrong = Secret::new("other");
        assert_eq!(
            verify(ALICE, &wrong, false).unwrap_err().code,
            ErrorCode::TokenSignature
        );
    }

    #[test]
    fn claim_checks() {
        let s = Secret::new("k");
        let now = Timestamp::now().unix();
        let t = |c: Value| verify(&sign(&c, &s), &s, false);
        assert_eq!(
            t(json!({"user_id":"a","exp":now-5})).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        assert_eq!(
            t(json!({"user_id":"a","nbf":now+60})).unwrap_err().code,
            ErrorCode::TokenNotValidYet
        );
        assert_eq!(
            t(json!({"user_id":"a","iat":now+60})).unwrap_err().code,
            ErrorCode::TokenUsedBeforeIssued
        );
        assert_eq!(
            t(json!({"user_id":42})).unwrap_err().code,
            ErrorCode::AuthFailed
        );
        assert_eq!(
            t(json!({"user_id":"a","exp":"soon"})).unwrap_err().code,
            ErrorCode::AuthFailed
        );
        // Auth checks off let unsigned user tokens in, never an unsigned server token.
        let forged_server = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.devtoken";
        assert_eq!(
            verify(forged_server, &s, true).unwrap_err().code,
            ErrorCode::TokenSignature
        );
        assert_eq!(
            verify(&server_token(&s), &s, true).unwrap(),
            Identity::Server
        );
        let none = format!("{}.{}.", "eyJhbGciOiJub25lIn0", "eyJ1c2VyX2lkIjoiYSJ9");
        assert_eq!(
            verify(&none, &s, false).unwrap_err().code,
            ErrorCode::AuthFailed
        );
    }

    #[test]
    fn fractional_numeric_dates_are_accepted_and_compared() {
        let s = Secret::new("k");
        let now = now_seconds();
        let t = |c: Value| verify(&sign(&c, &s), &s, false);
        let ok = t(json!({"user_id":"a","exp":now+60.5,"iat":now-0.25})).unwrap();
        assert_eq!(
            ok,
            Identity::User(TokenClaims {
                user_id: "a".into(),
                iat: Some((now - 0.25).floor() as i64),
                guest: false,
            })
        );
        // Half a second ago is past, however the fraction falls.
        assert_eq!(
            t(json!({"user_id":"a","exp":now-0.5})).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        assert_eq!(
            t(json!({"user_id":"a","nbf":now+30.5})).unwrap_err().code,
            ErrorCode::TokenNotValidYet
        );
        assert_eq!(
            t(json!({"user_id":"a","iat":now+30.5})).unwrap_err().code,
            ErrorCode::TokenUsedBeforeIssued
        );
    }

    #[test]
    fn critical_header_parameters_are_refused() {
        let s = Secret::new("k");
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#);
        for claims in [json!({"user_id": "a"}), json!({"server": true})] {
            let payload =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
            let message = format!("{header}.{payload}");
            let key = EncodingKey::from_secret(b"k");
            let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
                .expect("signs");
            let token = format!("{message}.{sig}");
            for skip in [false, true] {
                let err = verify(&token, &s, skip).unwrap_err();
                assert_eq!(err.code, ErrorCode::AuthFailed, "{claims} skip={skip}");
                assert!(err.detail.contains("crit"), "{}", err.detail);
            }
        }
    }
}
