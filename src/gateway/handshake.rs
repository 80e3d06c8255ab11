//! The `/connect` handshake: where the connect data comes from (query or first frame), who it
//! claims to be (`identify`: api key, connect data, token), and turning that into an admitted,
//! created-or-merged user (`admit`) — or a refusal with its code.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::auth::{Identity, TokenClaims};
use crate::model::user::{validate_id, User};
use crate::protocol::{ApiError, ErrorCode};
use crate::users::UsersService;

/// What a client sends to connect, from the query string or a connect frame.
#[derive(Debug, Default, Clone)]
pub struct ConnectRequest {
    /// `api_key`.
    pub api_key: Option<String>,
    /// `authorization` (the JWT), absent for anonymous users.
    pub token: Option<String>,
    /// `stream-auth-type`.
    pub auth_type: Option<String>,
    /// The decoded `json` payload.
    pub payload: Option<Value>,
}

fn no_token(t: &str) -> bool {
    t.is_empty() || t == "undefined" || t == "null"
}

impl ConnectRequest {
    /// Reads the form-decoded query string. `json` that is not valid JSON is kept as a
    /// string so the refusal can say so.
    pub fn from_query(query: &HashMap<String, String>) -> Self {
        Self {
            api_key: query.get("api_key").cloned(),
            token: query.get("authorization").filter(|t| !no_token(t)).cloned(),
            auth_type: query.get("stream-auth-type").cloned(),
            payload: query
                .get("json")
                .map(|j| serde_json::from_str(j).unwrap_or_else(|_| Value::String(j.clone()))),
        }
    }

    /// Whether the connect data is still to come in a first frame.
    pub fn awaits_frame(&self) -> bool {
        self.payload.is_none()
    }

    /// Completes the request from a connect frame: the `json` payload itself, optionally
    /// carrying `authorization` and `stream-auth-type` next to `user_id` / `user_details`.
    pub fn with_frame(mut self, frame: &str) -> Result<Self, ApiError> {
        let mut obj: Map<String, Value> = serde_json::from_str(frame)
            .map_err(|_| ApiError::input("the connect frame must be a JSON object"))?;
        if let Some(Value::String(t)) = obj.remove("authorization") {
            if !no_token(&t) {
                self.token = Some(t);
            }
        }
        if let Some(Value::String(t)) = obj.remove("stream-auth-type") {
            self.auth_type = Some(t);
        }
        if let Some(Value::String(k)) = obj.remove("api_key") {
            self.api_key.get_or_insert(k);
        }
        self.payload = Some(Value::Object(obj));
        Ok(self)
    }
}

/// Who a connect claims to be, once the token is verified: not yet admitted, because the
/// checks against the stored user (deleted, deactivated, revoked) run after the connection is
/// registered, so an admin call that ends the user either finds the socket registered or is
/// seen by those checks.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The user id (for anonymous users, a fresh `!anon…` id).
    pub user_id: String,
    /// The verified token's claims (none for anonymous users).
    pub token: Option<TokenClaims>,
    /// The `user_details` sent with the connect.
    pub details: Map<String, Value>,
}

impl Identified {
    /// Anonymous connection.
    pub fn anonymous(&self) -> bool {
        self.token.is_none()
    }
}

/// Who ended up connected.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The user (for anonymous users, an unstored one with role `anonymous`).
    pub user: User,
    /// The connect wrote the user, `last_active` included.
    pub activity_recorded: bool,
}

fn auth_failed(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFailed, detail)
}

/// Checks the api key, the connect data and the token (its signature and claims only).
pub fn identify(svc: &UsersService, req: &ConnectRequest) -> Result<Identified, ApiError> {
    match req.api_key.as_deref() {
        Some(k) if k == svc.api_key() => {}
        _ => return Err(ApiError::new(ErrorCode::ApiKey, "api_key not found")),
    }
    let payload = match &req.payload {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::input("json must be a JSON object")),
        None => return Err(ApiError::input("json is a required field")),
    };
    let details = match payload.get("user_details") {
        Some(Value::Object(d)) => d,
        _ => return Err(ApiError::input("user_details is a required field")),
    };
    let requested = match payload.get("user_id") {
        Some(Value::String(id)) => id.as_str(),
        None | Some(Value::Null) => details
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::input("user_id is a required field"))?,
        Some(_) => return Err(ApiError::input("user_id must be a string")),
    };
    match req.auth_type.as_deref() {
        Some("anonymous") => {
            if req.token.is_some() {
                return Err(auth_failed("anonymous connections carry no token"));
            }
            Ok(Identified {
                user_id: format!("!anon{}", uuid::Uuid::new_v4().simple()),
                token: None,
                details: Map::new(),
            })
        }
        Some("jwt") => {
            let token = req
                .token
                .as_deref()
                .ok_or_else(|| auth_failed("JWTAuth error: token is missing"))?;
            let claims = match svc.verify_token(token)? {
                Identity::User(claims) => claims,
                Identity::Server => {
                    return Err(auth_failed("server tokens cannot connect as a user"))
                }
            };
            if claims.user_id != requested {
                return Err(auth_failed(
                    "JWTAuth error: token user_id does not match the requested user",
                ));
            }
            validate_id(&claims.user_id)?;
            Ok(Identified {
                user_id: claims.user_id.clone(),
                token: Some(claims),
                details: details.clone(),
            })
        }
        _ => Err(auth_failed("stream-auth-type must be jwt or anonymous")),
    }
}

/// Admits an identified connect: applies connectUser semantics (§5.2) after checking the
/// token against the stored user and the app (revocation, deletion, deactivation).
pub async fn admit(svc: &UsersService, who: &Identified) -> Result<Connected, ApiError> {
    let Some(claims) = &who.token else {
        let mut user = User::new(&who.user_id, crate::protocol::Timestamp::now());
        user.role = "anonymous".into();
        return Ok(Connected {
            user,
            activity_recorded: false,
        });
    };
    let (user, changed) = svc.connect_user(claims, &who.details).await?;
    Ok(Connected {
        user,
        activity_recorded: changed,
    })
}
