//! Token and permission attacks against a real gateway: forged, tampered, expired and revoked
//! tokens, the wrong kind of token on each listener, admin routes on the public listener, and
//! users reaching for fields or accounts that are not theirs. Each case checks the code of
//! spec §2 (or §4–§6) over the WebSocket `/connect` and over REST where it applies; the table
//! in `SECURITY.md` lists them.

#[path = "../common/mod.rs"]
mod common;
use common::ws;

mod bin;
mod cli;
mod guests;
mod leaks;
mod listeners;
mod logs;
mod permissions;
mod races;
mod startup;
mod tokens;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use common::{Api, Creds, Reply};

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// URL-safe base64 without padding, as in a JWT.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this header and claims, its signature computed with `alg` (an HMAC) over
/// the encoded header and payload — whatever the header says.
pub fn forge(header: Value, claims: Value, secret: &str, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        alg,
    )
    .expect("HMAC signing");
    format!("{message}.{signature}")
}

/// An HS256 token with these claims, signed with `secret`.
pub fn hs256(claims: Value, secret: &str) -> String {
    forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        secret,
        Algorithm::HS256,
    )
}

/// Client credentials: the app's api key, this token, `stream-auth-type: jwt`.
pub fn jwt(api: &Api, token: &str) -> Creds {
    Creds {
        api_key: Some(api.api_key.clone()),
        token: Some(token.to_owned()),
        auth_type: Some("jwt".into()),
    }
}

/// Anonymous client credentials.
pub fn anonymous(api: &Api) -> Creds {
    Creds {
        api_key: Some(api.api_key.clone()),
        token: None,
        auth_type: Some("anonymous".into()),
    }
}

/// A client query for one user id on the public listener.
pub async fn client_query(api: &Api, creds: &Creds, id: &str) -> Reply {
    let q = common::encode(&json!({"filter_conditions": {"id": id}}).to_string());
    api.public_with(
        reqwest::Method::GET,
        &format!("/users?payload={q}"),
        None,
        creds,
    )
    .await
}

/// Fetches a user through the admin listener (`Value::Null` when not found).
pub async fn stored_user(api: &Api, id: &str) -> Value {
    let q = common::encode(
        &json!({"filter_conditions": {"id": id}, "include_deactivated_users": true}).to_string(),
    );
    let body = api
        .admin_ok(reqwest::Method::GET, &format!("/users?payload={q}"), None)
        .await;
    body["users"][0].clone()
}
