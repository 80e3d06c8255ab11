//! The checks run on a freshly restarted gateway, with no writer running: every id's state
//! against the ledger (resolving the lost writes, all or nothing), tombstones, and the
//! username index in both directions.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{encode, Admin, Outcome};
use crate::model::{is_pool, normalise, pool_name, variant, Slot, POOL_SIZE};
use crate::workload::Worker;

/// What one verification did.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    /// Ids compared with the ledger.
    pub ids: u64,
    /// Tombstone probes (create of a hard-deleted id refused with 16).
    pub tomb_probes: u64,
    /// Duplicate-name probes refused with 6.
    pub name_blocks: u64,
    /// Free contested names a new user could take.
    pub names_free: u64,
    /// Live users seen.
    pub live: u64,
    /// Hard-deleted ids known.
    pub tombs: u64,
}

/// Reads every id of every ledger in pages of 100 (`id $in`).
async fn observe(
    admin: &Admin,
    ids: &[String],
) -> Result<HashMap<String, Map<String, Value>>, String> {
    let mut seen = HashMap::new();
    for chunk in ids.chunks(100) {
        let payload = json!({
            "filter_conditions": {"id": {"$in": chunk}},
            "limit": 100,
            "include_deactivated_users": true,
        });
        for user in admin.query(&payload).await? {
            let Value::Object(u) = user else {
                return Err("query returned a non-object user".into());
            };
            let id = u["id"].as_str().unwrap_or_default().to_owned();
            if u.contains_key("deleted_at") || u.contains_key("deactivated_at") {
                return Err(format!(
                    "{id}: the harness never soft-deletes nor deactivates"
                ));
            }
            seen.insert(id, u);
        }
    }
    Ok(seen)
}

/// Compares each ledger with what the gateway holds and resolves its lost write.
fn resolve(
    worker: &mut Worker,
    seen: &HashMap<String, Map<String, Value>>,
    violations: &mut Vec<String>,
) {
    let in_flight = worker.ledger.in_flight.take();
    let candidates: BTreeMap<&str, &Slot> = in_flight
        .iter()
        .flat_map(|f| f.changes.iter().map(|(id, s)| (id.as_str(), s)))
        .collect();
    let mut applied = Vec::new();
    for (id, confirmed) in &worker.ledger.users {
        let observed = seen.get(id);
        let as_confirmed = confirmed.matches(observed);
        let candidate = candidates.get(id.as_str()).copied();
        let as_candidate = candidate.is_some_and(|c| c.matches(observed));
        if !as_confirmed && !as_candidate {
            violations.push(format!(
                "{id}: expected {confirmed:?}{}, found {}",
                candidate
                    .map(|c| format!(" or (lost write) {c:?}"))
                    .unwrap_or_default(),
                observed.map_or("nothing".into(), |o| Value::Object(o.clone()).to_string()),
            ));
        }
        if candidate.is_some_and(|c| c != confirmed) && as_confirmed != as_candidate {
            applied.push(as_candidate);
        }
    }
    let Some(flight) = in_flight else { return };
    let all = applied.iter().all(|a| *a);
    let none = applied.iter().all(|a| !*a);
    if !all && !none {
        let n = applied.iter().filter(|a| **a).count();
        violations.push(format!(
            "{}: partially applied ({n} of {} users)",
            flight.what,
            applied.len()
        ));
    }
    if all && !applied.is_empty() {
        worker.stats.lost_applied += 1;
        worker.ledger.apply(flight.changes);
    } else {
        worker.stats.lost_not_applied += 1;
    }
}

/// Upserts one probe user; the outcome.
async fn probe(admin: &Admin, id: &str, name: Option<&str>) -> Outcome {
    let mut user = json!({"id": id});
    if let Some(n) = name {
        user["name"] = json!(n);
    }
    admin
        .call(Method::POST, "/users", Some(&json!({"users": {id: user}})))
        .await
}

/// Hard-deletes a probe that got created; it joins the probe tombstones.
async fn discard(admin: &Admin, id: &str, probes: &mut Vec<String>) -> Result<(), String> {
    let path = format!("/users/{}?hard_delete=true", encode(id));
    match admin.call(Method::DELETE, &path, None).await {
        Outcome::Acked(_) => {
            probes.push(id.to_owned());
            Ok(())
        }
        other => Err(format!("could not delete probe {id}: {other:?}")),
    }
}

fn sample(rng: &mut StdRng, from: &[String], n: usize) -> Vec<String> {
    rand::seq::index::sample(rng, from.len(), n.min(from.len()))
        .into_iter()
        .map(|i| from[i].clone())
        .collect()
}

/// Runs every check; rule violations go to `violations`, harness failures are `Err`.
pub async fn verify(
    admin: &Admin,
    workers: &mut [Worker],
    probes: &mut Vec<String>,
    round: usize,
    rng: &mut StdRng,
    violations: &mut Vec<String>,
) -> Result<Checked, String> {
    let mut checked = Checked::default();
    match admin.call(Method::GET, "/app", None).await {
        Outcome::Acked(body) if body["app"]["enforce_unique_usernames"] == "app" => {}
        other => violations.push(format!(
            "enforce_unique_usernames is no longer app: {other:?}"
        )),
    }

    let ids: Vec<String> = workers
        .iter()
        .flat_map(|w| w.ledger.users.keys().cloned())
        .collect();
    checked.ids = ids.len() as u64;
    let seen = observe(admin, &ids).await?;
    for w in workers.iter_mut() {
        resolve(w, &seen, violations);
    }

    // Tombstones: every id hard-deleted since the last check, and a sample of older ones.
    let mut tomb_ids: Vec<String> = Vec::new();
    let mut older: Vec<String> = probes.clone();
    for w in workers.iter_mut() {
        let fresh = std::mem::take(&mut w.ledger.fresh_tombs);
        let tombs = w.ledger.tombs();
        checked.tombs += tombs.len() as u64;
        older.extend(tombs.into_iter().filter(|t| !fresh.contains(t)));
        tomb_ids.extend(fresh);
    }
    tomb_ids.extend(sample(rng, &older, 100));
    for id in &tomb_ids {
        match probe(admin, id, None).await {
            Outcome::Refused {
                status: 404,
                code: 16,
                ..
            } => checked.tomb_probes += 1,
            Outcome::Lost(e) => return Err(format!("tombstone probe of {id}: {e}")),
            other => violations.push(format!("hard-deleted {id} accepted a create: {other:?}")),
        }
    }

    // The username index against the users: no two live users share a normal form ...
    let mut holders: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (id, u) in &seen {
        if let Some(name) = u.get("name").and_then(Value::as_str) {
            let norm = normalise(name);
            if !norm.is_empty() {
                holders
                    .entry(norm)
                    .or_default()
                    .push((id.clone(), name.to_owned()));
            }
        }
    }
    checked.live = seen.len() as u64;
    for (norm, users) in &holders {
        if users.len() > 1 {
            violations.push(format!("normal form {norm} is held by {users:?}"));
        }
    }
    // ... every held name still blocks a duplicate (all contested ones, a sample of others) ...
    let mut held: Vec<String> = Vec::new();
    let mut unique: Vec<String> = Vec::new();
    for users in holders.values() {
        let name = users[0].1.clone();
        if is_pool(&name) {
            held.push(name);
        } else {
            unique.push(name);
        }
    }
    held.extend(sample(rng, &unique, 40));
    for (k, name) in held.iter().enumerate() {
        let id = format!("probe-r{round}-d{k}");
        match probe(admin, &id, Some(&variant(name))).await {
            Outcome::Refused {
                status: 400,
                code: 6,
                ..
            } => checked.name_blocks += 1,
            Outcome::Lost(e) => return Err(format!("name probe {id}: {e}")),
            Outcome::Acked(_) => {
                violations.push(format!("the name {name:?} no longer blocks a duplicate"));
                discard(admin, &id, probes).await?;
            }
            other => violations.push(format!("name probe {id} for {name:?}: {other:?}")),
        }
    }
    // ... and a contested name nobody holds is free (no stale index entry).
    for j in 0..POOL_SIZE {
        let name = pool_name(j, rng.random_range(0..4));
        if holders.contains_key(&normalise(&name)) {
            continue;
        }
        let id = format!("probe-r{round}-f{j}");
        match probe(admin, &id, Some(&name)).await {
            Outcome::Acked(_) => {
                checked.names_free += 1;
                discard(admin, &id, probes).await?;
            }
            Outcome::Lost(e) => return Err(format!("name probe {id}: {e}")),
            other => violations.push(format!(
                "{name:?} is held by no user but cannot be taken: {other:?}"
            )),
        }
    }
    Ok(checked)
}
