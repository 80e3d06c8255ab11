//! Stream's error envelope (`{"code","message","StatusCode",...}`) and the codes it uses.

use serde::Serialize;
use serde_json::{Map, Value};

/// The Stream error codes this gateway answers with, each tied to its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// -1 / 500: something broke inside the gateway.
    Internal,
    /// 2 / 401: missing or unknown API key.
    ApiKey,
    /// 4 / 400: invalid input.
    InputError,
    /// 5 / 401: authentication failed for any reason not listed below.
    AuthFailed,
    /// 6 / 400: the username is held by another user.
    DuplicateUsername,
    /// 9 / 429: rate limit reached.
    RateLimited,
    /// 16 / 404: the resource does not exist (or was deleted).
    DoesNotExist,
    /// 17 / 403: the caller may not do this.
    NotAllowed,
    /// 22 / 413: payload too big.
    PayloadTooBig,
    /// 23 / 408: request timeout.
    RequestTimeout,
    /// 24 / 431: request headers too large.
    HeadersTooLarge,
    /// 40 / 401: token expired or revoked.
    TokenExpired,
    /// 41 / 401: token not valid yet (`nbf`).
    TokenNotValidYet,
    /// 42 / 401: token issued in the future (`iat`).
    TokenUsedBeforeIssued,
    /// 43 / 401: token signature invalid.
    TokenSignature,
    /// 71 / 429: too many connections for this user or this gateway.
    TooManyConnections,
    /// -1 / 503: the gateway cannot do this for now (its data volume is full); retry later.
    /// Stream has no code of its own for it; the detail, unlike an internal error's, is shown.
    Unavailable,
}

impl ErrorCode {
    /// The numeric Stream code.
    pub fn code(self) -> i32 {
        match self {
            Self::Internal => -1,
            Self::ApiKey => 2,
            Self::InputError => 4,
            Self::AuthFailed => 5,
            Self::DuplicateUsername => 6,
            Self::RateLimited => 9,
            Self::DoesNotExist => 16,
            Self::NotAllowed => 17,
            Self::PayloadTooBig => 22,
            Self::RequestTimeout => 23,
            Self::HeadersTooLarge => 24,
            Self::TokenExpired => 40,
            Self::TokenNotValidYet => 41,
            Self::TokenUsedBeforeIssued => 42,
            Self::TokenSignature => 43,
            Self::TooManyConnections => 71,
            Self::Unavailable => -1,
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::ApiKey | Self::AuthFailed => 401,
            Self::InputError | Self::DuplicateUsername => 400,
            Self::RateLimited | Self::TooManyConnections => 429,
            Self::DoesNotExist => 404,
            Self::NotAllowed => 403,
            Self::PayloadTooBig => 413,
            Self::RequestTimeout => 408,
            Self::HeadersTooLarge => 431,
            Self::TokenExpired
            | Self::TokenNotValidYet
            | Self::TokenUsedBeforeIssued
            | Self::TokenSignature => 401,
        }
    }
}

/// An error on its way to a client: a code, a detail and, optionally, the operation that
/// failed. The envelope's message is `<Operation> failed with error: "<detail>"` when an
/// operation is known, the bare detail otherwise.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What went wrong, as a Stream code.
    pub code: ErrorCode,
    /// The human-readable detail.
    pub detail: String,
    /// The Stream operation name (`UpdateUsers`, ...), when known.
    pub operation: Option<&'static str>,
    /// Per-field messages (`exception_fields`).
    pub fields: Map<String, Value>,
}

impl ApiError {
    /// A new error with the given code and detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            operation: None,
            fields: Map::new(),
        }
    }

    /// Input error (code 4).
    pub fn input(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InputError, detail)
    }

    /// Internal error (code -1); the detail is for the log, the client sees a generic text.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, detail)
    }

    /// Adds an `exception_fields` entry.
    pub fn with_field(mut self, field: &str, message: impl Into<String>) -> Self {
        self.fields
            .insert(field.to_owned(), Value::String(message.into()));
        self
    }

    /// Names the operation unless one is already set.
    pub fn in_operation(mut self, operation: &'static str) -> Self {
        self.operation.get_or_insert(operation);
        self
    }

    /// The message as the envelope carries it.
    pub fn message(&self) -> String {
        let detail = match self.code {
            ErrorCode::Internal => "internal error",
            _ => &self.detail,
        };
        match self.operation {
            Some(op) => format!("{op} failed with error: \"{detail}\""),
            None => detail.to_owned(),
        }
    }

    /// The envelope body.
    pub fn envelope(&self, duration: &str) -> Envelope {
        Envelope {
            code: self.code.code(),
            message: self.message(),
            exception_fields: self.fields.clone(),
            status_code: self.code.status(),
            duration: duration.to_owned(),
            more_info: "https://getstream.io/chat/docs/api_errors_response".to_owned(),
            details: Vec::new(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code.code(), self.detail)
    }
}

impl std::error::Error for ApiError {}

/// Stream's error body.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Stream code.
    pub code: i32,
    /// Message.
    pub message: String,
    /// Per-field messages.
    pub exception_fields: Map<String, Value>,
    /// HTTP status.
    #[serde(rename = "StatusCode")]
    pub status_code: u16,
    /// Time taken.
    pub duration: String,
    /// Documentation link.
    pub more_info: String,
    /// Always empty.
    pub details: Vec<Value>,
}
