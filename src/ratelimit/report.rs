//! `GET /rate_limits`: the app's budgets per platform and endpoint, as Stream's SDKs read them
//! (`{"server_side": {"QueryUsers": {"limit", "remaining", "reset"}, ...}, "android": ...}`).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{Endpoint, Platform, RateLimits};
use crate::protocol::ApiError;

/// The answer for the query parameters of a `GET /rate_limits`: `server_side`, `android`,
/// `ios`, `web` (`true` selects a platform; none selected means all four) and `endpoints`
/// (comma-separated names; absent means every endpoint served here). Names of endpoints the
/// gateway does not serve are left out. The request being answered has been counted.
pub fn rate_limits(
    limits: &RateLimits,
    params: &HashMap<String, String>,
) -> Result<Map<String, Value>, ApiError> {
    let mut chosen = Vec::new();
    for platform in Platform::ALL {
        let selected = match params.get(platform.key()).map(String::as_str) {
            None | Some("" | "false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(ApiError::input(format!(
                    "{} must be true or false, not {other:?}",
                    platform.key()
                )))
            }
        };
        if selected {
            chosen.push(platform);
        }
    }
    if chosen.is_empty() {
        chosen = Platform::ALL.to_vec();
    }
    let endpoints: Vec<Endpoint> = match params.get("endpoints").filter(|e| !e.trim().is_empty()) {
        Some(list) => {
            let mut named: Vec<Endpoint> = list.split(',').filter_map(Endpoint::by_name).collect();
            named.sort();
            named.dedup();
            named
        }
        None => Endpoint::all().collect(),
    };
    let mut out = Map::new();
    for platform in chosen {
        let mut map = Map::new();
        for &endpoint in &endpoints {
            let count = limits.app_count(platform, endpoint);
            map.insert(
                endpoint.name().to_owned(),
                json!({"limit": count.limit, "remaining": count.remaining, "reset": count.reset}),
            );
        }
        out.insert(platform.key().to_owned(), Value::Object(map));
    }
    Ok(out)
}
