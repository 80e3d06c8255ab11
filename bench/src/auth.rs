//! HS256 tokens: user tokens for `/connect`, server tokens for the admin listener.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct UserClaims<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct ServerClaims {
    server: bool,
}

/// The claims the baseline reads back out of a user token.
#[derive(Deserialize)]
pub struct VerifiedUser {
    /// The user the token was issued for.
    pub user_id: String,
}

/// Mints user and server tokens with one app secret.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
}

impl TokenMinter {
    /// A minter for the app secret `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// `{"user_id": id}`, no `iat`, no `exp`: the token the SDKs' `createToken(id)` makes.
    pub fn user_token(&self, user_id: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &UserClaims { user_id },
            &self.key,
        )
        .expect("HS256 signing cannot fail")
    }

    /// `{"server": true}`: full access on the admin listener.
    pub fn server_token(&self) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &ServerClaims { server: true },
            &self.key,
        )
        .expect("HS256 signing cannot fail")
    }
}

/// Verifies user tokens the way the gateway does for the common case (HS256, no `exp` needed).
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier for the app secret `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's `user_id` when the signature and claims check out.
    pub fn verify(&self, token: &str) -> Option<VerifiedUser> {
        jsonwebtoken::decode::<VerifiedUser>(token, &self.key, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_sdk_tokens_verify() {
        // The SDKs put `alg` first in the header; jsonwebtoken puts `typ` first. Both are
        // HS256 over the same claims, so the gateway accepts either.
        let sdk_alice = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.2i5pyyoU1DXmsdnhQS10A6wltbitZY0iDmTPBJfhftc";
        let verifier = TokenVerifier::new("test-secret");
        assert_eq!(verifier.verify(sdk_alice).unwrap().user_id, "alice");
        let minter = TokenMinter::new("test-secret");
        assert_eq!(
            verifier.verify(&minter.user_token("bob")).unwrap().user_id,
            "bob"
        );
        assert!(TokenVerifier::new("other").verify(sdk_alice).is_none());
        let server = minter.server_token();
        let payload = server.split('.').nth(1).unwrap();
        assert_eq!(payload, "eyJzZXJ2ZXIiOnRydWV9"); // {"server":true}
    }
}
