//! The endpoints the gateway serves, under the names Stream's rate limits give them, and which
//! request is which.

use axum::http::Method;

/// One of Stream's API endpoints that the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint(u8);

/// Stream's names of the endpoints served here, in the order reports list them.
const NAMES: [&str; 18] = [
    "Connect",
    "CreateGuest",
    "QueryUsers",
    "UpdateUsers",
    "UpdateUsersPartial",
    "DeleteUser",
    "DeleteUsers",
    "RestoreUsers",
    "DeactivateUser",
    "DeactivateUsers",
    "ReactivateUser",
    "ReactivateUsers",
    "ExportUser",
    "ExportUsers",
    "GetTask",
    "GetApp",
    "UpdateApp",
    "GetRateLimits",
];

/// The smallest budget Stream's table gives any endpoint: for one missing from the
/// configuration (which only a configuration built in code can lack).
pub const FALLBACK_PER_MINUTE: u32 = 60;

impl Endpoint {
    /// `GET /connect`, the client WebSocket.
    pub const CONNECT: Endpoint = Endpoint(0);
    /// `POST /guest`.
    pub const CREATE_GUEST: Endpoint = Endpoint(1);

    /// Every endpoint, in report order.
    pub fn all() -> impl Iterator<Item = Endpoint> {
        (0..NAMES.len() as u8).map(Endpoint)
    }

    /// Its place in report order, from 0.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Stream's name of it (`QueryUsers`).
    pub fn name(self) -> &'static str {
        NAMES[self.0 as usize]
    }

    /// The endpoint of a name as Stream writes it (`UpdateUsersPartial`).
    pub fn by_name(name: &str) -> Option<Endpoint> {
        NAMES
            .iter()
            .position(|n| *n == name.trim())
            .map(|i| Endpoint(i as u8))
    }

    /// Its key in `[rate_limits.endpoints]`: the name in snake case (`update_users_partial`),
    /// which survives the lower-casing of environment overrides
    /// (`CHAT_GATEWAY_RATE_LIMITS__ENDPOINTS__UPDATE_USERS_PARTIAL`).
    pub fn config_key(self) -> String {
        let mut key = String::new();
        for c in self.name().chars() {
            if c.is_ascii_uppercase() {
                if !key.is_empty() {
                    key.push('_');
                }
                key.push(c.to_ascii_lowercase());
            } else {
                key.push(c);
            }
        }
        key
    }

    /// The endpoint of a `[rate_limits.endpoints]` key.
    pub fn by_config_key(key: &str) -> Option<Endpoint> {
        Endpoint::all().find(|e| e.config_key() == key)
    }

    /// The endpoint a request is, on the listener it came to; `None` for routes Stream has
    /// no name for (`/healthz`, `/metrics`, export downloads, the admin WebSocket, unknown
    /// paths). Only routes the listener serves count: a `DELETE /users/x` sent to the public
    /// listener is answered 404 and is no `DeleteUser`.
    pub fn of_request(admin: bool, method: &Method, path: &str) -> Option<Endpoint> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let name = match (segments.as_slice(), method.as_str()) {
            (["users"], "GET") => "QueryUsers",
            (["users"], "POST") => "UpdateUsers",
            (["users"], "PATCH") => "UpdateUsersPartial",
            (["guest"], "POST") => "CreateGuest",
            (["connect"], "GET") if !admin => "Connect",
            _ if !admin => return None,
            (["users", "delete"], "POST") => "DeleteUsers",
            (["users", "restore"], "POST") => "RestoreUsers",
            (["users", "deactivate"], "POST") => "DeactivateUsers",
            (["users", "reactivate"], "POST") => "ReactivateUsers",
            (["users", _], "DELETE") => "DeleteUser",
            (["users", _, "deactivate"], "POST") => "DeactivateUser",
            (["users", _, "reactivate"], "POST") => "ReactivateUser",
            (["users", _, "export"], "GET") => "ExportUser",
            (["export", "users"], "POST") => "ExportUsers",
            (["tasks", _], "GET") => "GetTask",
            (["app"], "GET") => "GetApp",
            (["app"], "PATCH") => "UpdateApp",
            (["rate_limits"], "GET") => "GetRateLimits",
            _ => return None,
        };
        Endpoint::by_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(admin: bool, method: Method, path: &str) -> Option<&'static str> {
        Endpoint::of_request(admin, &method, path).map(Endpoint::name)
    }

    #[test]
    fn requests_map_to_streams_names_on_the_listener_that_serves_them() {
        assert_eq!(name(false, Method::GET, "/users"), Some("QueryUsers"));
        assert_eq!(name(true, Method::GET, "/users"), Some("QueryUsers"));
        assert_eq!(name(false, Method::GET, "/connect"), Some("Connect"));
        assert_eq!(name(true, Method::GET, "/connect"), None);
        assert_eq!(
            name(true, Method::DELETE, "/users/a%20b"),
            Some("DeleteUser")
        );
        assert_eq!(name(false, Method::DELETE, "/users/a"), None);
        assert_eq!(
            name(true, Method::POST, "/users/delete"),
            Some("DeleteUsers")
        );
        assert_eq!(
            name(true, Method::POST, "/users/x/reactivate"),
            Some("ReactivateUser")
        );
        assert_eq!(
            name(true, Method::GET, "/rate_limits"),
            Some("GetRateLimits")
        );
        assert_eq!(name(false, Method::GET, "/rate_limits"), None);
        assert_eq!(name(true, Method::GET, "/healthz"), None);
        assert_eq!(name(true, Method::GET, "/ws"), None);
        assert_eq!(name(true, Method::PUT, "/users"), None);
    }

    #[test]
    fn names_and_configuration_keys() {
        let e = Endpoint::by_name("UpdateUsersPartial").unwrap();
        assert_eq!(e.config_key(), "update_users_partial");
        assert_eq!(Endpoint::by_config_key("update_users_partial"), Some(e));
        assert_eq!(Endpoint::by_config_key("UpdateUsersPartial"), None);
        assert_eq!(Endpoint::by_name("SendMessage"), None);
        assert_eq!(Endpoint::all().count(), NAMES.len());
        assert_eq!(Endpoint::CONNECT.name(), "Connect");
        assert_eq!(Endpoint::CREATE_GUEST.name(), "CreateGuest");
    }
}
