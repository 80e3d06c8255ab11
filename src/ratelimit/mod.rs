//! Rate limits as Stream counts them: each endpoint has a budget per minute for the whole app
//! and each platform, and each user a budget per endpoint and platform (server-side calls are
//! exempt from the user budget); beside them, the gateway's own per-caller guard over every
//! route. Both listeners share one [`RateLimits`].
//!
//! Layout: `endpoints` (Stream's names and which request is which), `platform` (server side,
//! Android, iOS, web), `buckets` (the one-minute counts), `middleware` (counting each
//! request, the `x-ratelimit-*` headers, 429) and `report` (`GET /rate_limits`).

pub mod buckets;
pub mod endpoints;
pub mod middleware;
pub mod platform;
pub mod report;

use std::net::IpAddr;

use crate::auth::{verify, Identity, Secret};
use crate::config::{Config, RateLimitsConfig};

pub use buckets::{Buckets, Count};
pub use endpoints::Endpoint;
pub use platform::Platform;

use buckets::{now_secs, Key, Scope};

/// Who a request is from, as far as counting goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A verified server token.
    Server,
    /// A verified user token.
    User(String),
    /// An anonymous client (`stream-auth-type: anonymous` with the app's api key), by address.
    Anonymous(Option<IpAddr>),
    /// Anything else (no, bad or misplaced credentials), with the key of its per-caller
    /// guard: its address, or its user for a user token on the admin listener. The route
    /// answers it with an error; it counts against that guard only, never against the app's
    /// budgets, so bad credentials cannot use up what the app's clients share.
    Unverified(String),
}

/// The credentials a request carries, as the limiter reads them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The token (`Authorization`, or `authorization` in a WebSocket query).
    pub token: Option<&'a str>,
    /// `stream-auth-type`.
    pub auth_type: Option<&'a str>,
    /// `api_key`.
    pub api_key: Option<&'a str>,
    /// The client's address.
    pub peer: Option<IpAddr>,
}

/// What counting one request decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The budget the headers show: the one that refused the request, or else the one with
    /// the fewest requests left.
    pub shown: Option<Count>,
    /// Whether the request is refused (429, code 9).
    pub refused: bool,
}

/// Every budget of one node, and how requests are counted against them.
pub struct RateLimits {
    enabled: bool,
    user_per_minute: u32,
    per_second_divisor: u32,
    per_caller: u32,
    per_endpoint: Vec<u32>,
    buckets: Buckets,
    secret: Secret,
    api_key: String,
}

/// Checks the `[rate_limits]` settings: known endpoint names, positive budgets.
pub fn validate(config: &RateLimitsConfig) -> Result<(), String> {
    if config.user_per_minute == 0 {
        return Err("rate_limits.user_per_minute must be positive".into());
    }
    for (name, limit) in &config.endpoints {
        if Endpoint::by_config_key(name).is_none() {
            let known: Vec<String> = Endpoint::all().map(Endpoint::config_key).collect();
            return Err(format!(
                "rate_limits.endpoints: unknown endpoint {name:?} (known: {})",
                known.join(", ")
            ));
        }
        if *limit == 0 {
            return Err(format!("rate_limits.endpoints.{name} must be positive"));
        }
    }
    Ok(())
}

impl RateLimits {
    /// The budgets `config` sets; tokens are verified against `secret`, anonymous callers
    /// must name `api_key`.
    pub fn new(config: &Config, api_key: &str, secret: Secret) -> Self {
        let r = &config.rate_limits;
        let per_endpoint = Endpoint::all()
            .map(|e| {
                r.endpoints
                    .get(&e.config_key())
                    .copied()
                    .unwrap_or(endpoints::FALLBACK_PER_MINUTE)
            })
            .collect();
        Self {
            enabled: r.enabled,
            user_per_minute: r.user_per_minute,
            per_second_divisor: r.per_second_divisor,
            per_caller: config.limits.requests_per_minute,
            per_endpoint,
            buckets: Buckets::new(),
            secret,
            api_key: api_key.to_owned(),
        }
    }

    /// The app's budget per minute and platform for `endpoint`.
    pub fn limit_of(&self, endpoint: Endpoint) -> u32 {
        self.per_endpoint[endpoint.index()]
    }

    /// Who presented these credentials. A token counts only once its signature checks out,
    /// so neither a second token nor garbage buys a fresh budget. On the admin listener only
    /// the server token is a caller of its own.
    pub fn caller(&self, admin: bool, p: Presented<'_>) -> Caller {
        match p.token.map(|t| verify(t, &self.secret, false)) {
            Some(Ok(Identity::Server)) => Caller::Server,
            Some(Ok(Identity::User(claims))) if !admin => Caller::User(claims.user_id),
            None if !admin
                && p.auth_type
                    .is_some_and(|t| t.eq_ignore_ascii_case("anonymous"))
                && p.api_key == Some(self.api_key.as_str()) =>
            {
                Caller::Anonymous(p.peer)
            }
            // A user token on the admin listener is refused there; it still counts against
            // its user's guard (a new token buys nothing).
            Some(Ok(Identity::User(claims))) => {
                Caller::Unverified(format!("user:{}", claims.user_id))
            }
            _ => Caller::Unverified(address_key(p.peer)),
        }
    }

    /// Counts one request of `caller` to `endpoint` (`None`: a route Stream has no name
    /// for) from `platform`. `guard` says whether the per-caller guard counts it too
    /// (everything but `/connect`, which has its own per-address limits).
    pub fn admit(
        &self,
        caller: &Caller,
        platform: Platform,
        endpoint: Option<Endpoint>,
        guard: bool,
    ) -> Verdict {
        let now = now_secs();
        let mut verdict = Verdict {
            shown: None,
            refused: false,
        };
        if guard {
            let key = Key {
                scope: Scope::Caller(caller.guard_key().into()),
                of: None,
            };
            if self.count(&mut verdict, &key, self.per_caller, None, now) {
                return verdict;
            }
        }
        let Some(endpoint) = endpoint.filter(|_| self.enabled) else {
            return verdict;
        };
        let of = Some((platform, endpoint));
        let user_scope = match caller {
            Caller::Server | Caller::Unverified(_) => None,
            // A user's open connections are bounded by the per-user connection limit (code
            // 71); counting a user's connects per minute would refuse the reconnects of many
            // tabs and devices on a flaky network, so only the app's Connect budget applies.
            Caller::User(_) if endpoint == Endpoint::CONNECT => None,
            Caller::User(id) => Some(Scope::User(id.as_str().into())),
            // Anonymous connects and guest creations have per-address limits of their own
            // in `[limits]` (tuned for a crowd behind one NAT, a refilling guest quota).
            Caller::Anonymous(_)
                if endpoint == Endpoint::CONNECT || endpoint == Endpoint::CREATE_GUEST =>
            {
                None
            }
            Caller::Anonymous(Some(ip)) => Some(Scope::Address(*ip)),
            Caller::Anonymous(None) => Some(Scope::Caller("ip:unknown".into())),
        };
        if let Some(scope) = user_scope {
            let key = Key { scope, of };
            if self.count(&mut verdict, &key, self.user_per_minute, None, now) {
                return verdict;
            }
        }
        if matches!(caller, Caller::Unverified(_)) {
            return verdict;
        }
        let limit = self.limit_of(endpoint);
        let per_second =
            (self.per_second_divisor > 0).then(|| (limit / self.per_second_divisor).max(1));
        let key = Key {
            scope: Scope::App,
            of,
        };
        self.count(&mut verdict, &key, limit, per_second, now);
        verdict
    }

    /// Counts against one bucket and folds the result into `verdict`; true when refused.
    fn count(
        &self,
        verdict: &mut Verdict,
        key: &Key,
        limit: u32,
        per_second: Option<u32>,
        now: u64,
    ) -> bool {
        let Some(count) = self.buckets.hit(key, limit, per_second, now) else {
            return false;
        };
        if count.exceeded {
            verdict.shown = Some(count);
            verdict.refused = true;
            return true;
        }
        let tighter = verdict
            .shown
            .is_none_or(|s| (count.remaining, count.limit) < (s.remaining, s.limit));
        if tighter {
            verdict.shown = Some(count);
        }
        false
    }

    /// The app's budget for `endpoint` on `platform` now, without counting a request.
    pub fn app_count(&self, platform: Platform, endpoint: Endpoint) -> Count {
        let now = now_secs();
        let key = Key {
            scope: Scope::App,
            of: Some((platform, endpoint)),
        };
        let limit = self.limit_of(endpoint);
        let used = self.buckets.used(&key, now);
        Count {
            limit,
            remaining: limit.saturating_sub(used),
            reset: (now / 60 + 1) * 60,
            exceeded: used > limit,
        }
    }

    /// Buckets held now (for tests and metrics).
    pub fn buckets_held(&self) -> usize {
        self.buckets.len()
    }
}

impl Caller {
    /// The key of the per-caller guard: the server, a user, or an address.
    fn guard_key(&self) -> String {
        match self {
            Caller::Server => "server".to_owned(),
            Caller::User(id) => format!("user:{id}"),
            Caller::Anonymous(peer) => address_key(*peer),
            Caller::Unverified(key) => key.clone(),
        }
    }
}

fn address_key(peer: Option<IpAddr>) -> String {
    match peer {
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-thirty-two-bytes";

    fn limits(tweak: impl FnOnce(&mut Config)) -> RateLimits {
        let mut config = Config::defaults();
        tweak(&mut config);
        RateLimits::new(&config, "key", Secret::new(SECRET))
    }

    fn presented<'a>(token: Option<&'a str>, auth: &'a str, key: &'a str) -> Presented<'a> {
        Presented {
            token,
            auth_type: Some(auth),
            api_key: Some(key),
            peer: Some(IpAddr::from([10, 0, 0, 1])),
        }
    }

    #[test]
    fn callers_are_told_apart_by_verified_credentials() {
        let l = limits(|_| {});
        let secret = Secret::new(SECRET);
        let server = crate::auth::server_token(&secret);
        let alice = crate::auth::user_token("alice", None, &secret);
        let address = || Caller::Unverified("ip:10.0.0.1".into());
        let cases = [
            (true, presented(Some(&server), "jwt", "key"), Caller::Server),
            (
                false,
                presented(Some(&alice), "jwt", "key"),
                Caller::User("alice".into()),
            ),
            (
                true,
                presented(Some(&alice), "jwt", "key"),
                Caller::Unverified("user:alice".into()),
            ),
            (
                false,
                presented(None, "anonymous", "key"),
                Caller::Anonymous(Some(IpAddr::from([10, 0, 0, 1]))),
            ),
            (true, presented(None, "anonymous", "key"), address()),
            (false, presented(None, "anonymous", "other"), address()),
            (false, presented(Some("garbage"), "jwt", "key"), address()),
        ];
        for (admin, p, want) in cases {
            assert_eq!(l.caller(admin, p), want, "{p:?} admin={admin}");
        }
    }

    #[test]
    fn refused_requests_and_bad_credentials_leave_the_apps_budget_alone() {
        let l = limits(|c| {
            c.rate_limits.user_per_minute = 1;
            c.rate_limits.endpoints.insert("query_users".into(), 5);
        });
        let query = Endpoint::by_name("QueryUsers");
        let alice = Caller::User("alice".into());
        assert!(!l.admit(&alice, Platform::Web, query, true).refused);
        let second = l.admit(&alice, Platform::Web, query, true);
        assert!(second.refused);
        assert_eq!(second.shown.map(|c| c.limit), Some(1));
        let stranger = Caller::Unverified("ip:10.0.0.9".into());
        for _ in 0..10 {
            assert!(!l.admit(&stranger, Platform::Web, query, true).refused);
        }
        let app = l.app_count(Platform::Web, query.unwrap());
        assert_eq!((app.limit, app.remaining), (5, 4));
        assert_eq!(l.app_count(Platform::Ios, query.unwrap()).remaining, 5);
    }

    #[test]
    fn disabled_leaves_only_the_per_caller_guard() {
        let l = limits(|c| {
            c.rate_limits.enabled = false;
            c.limits.requests_per_minute = 2;
        });
        let query = Endpoint::by_name("QueryUsers");
        for _ in 0..2 {
            let v = l.admit(&Caller::Server, Platform::ServerSide, query, true);
            assert!(!v.refused);
            assert_eq!(v.shown.map(|c| c.limit), Some(2));
        }
        assert!(
            l.admit(&Caller::Server, Platform::ServerSide, query, true)
                .refused
        );
        let app = l.app_count(Platform::ServerSide, query.unwrap());
        assert_eq!(app.remaining, app.limit);
    }

    #[test]
    fn configuration_names_endpoints_in_snake_case() {
        let mut config = Config::defaults();
        assert!(validate(&config.rate_limits).is_ok());
        config.rate_limits.endpoints.insert("QueryUsers".into(), 5);
        assert!(validate(&config.rate_limits).is_err());
        config.rate_limits.endpoints.remove("QueryUsers");
        config.rate_limits.endpoints.insert("query_users".into(), 0);
        assert!(validate(&config.rate_limits).is_err());
    }
}
