//! The writers: each worker owns its user ids (so the writes to one user are sequential and
//! the ledger is exact), and competes with the others only for the contested pool names. A
//! worker stops at the first request that gets no answer: that write's outcome is unknown
//! until the restarted gateway is inspected.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{encode, Admin, Outcome};
use crate::model::{
    patch_fields, pool_name, Fields, InFlight, Ledger, Slot, CONTROLLED, POOL_SIZE,
};

/// Counters of one worker (summed into the report).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Acknowledged `POST /users` batches, and the users in them.
    pub batches_acked: u64,
    /// Users in acknowledged batches.
    pub batch_users_acked: u64,
    /// Acknowledged `PATCH /users` requests.
    pub patches_acked: u64,
    /// Users in acknowledged partial updates.
    pub patch_users_acked: u64,
    /// Acknowledged `DELETE /users/{id}?hard_delete=true`.
    pub deletes_acked: u64,
    /// Acknowledged `POST /users/delete` (hard) tasks.
    pub batch_deletes_acked: u64,
    /// Users in them.
    pub batch_delete_users_acked: u64,
    /// Writes refused with code 6 (a contested name was taken).
    pub refused_duplicate_name: u64,
    /// Batches refused with code 16 because one id in them was hard-deleted.
    pub refused_tombstoned: u64,
    /// Lost writes found applied after the restart.
    pub lost_applied: u64,
    /// Lost writes found not applied.
    pub lost_not_applied: u64,
}

impl Stats {
    /// Writes acknowledged, of every kind.
    pub fn acked_writes(&self) -> u64 {
        self.batches_acked + self.patches_acked + self.deletes_acked + self.batch_deletes_acked
    }
}

/// One writer.
pub struct Worker {
    /// Its number; its ids are `w<idx>-u<n>`.
    pub idx: usize,
    next_id: u64,
    next_write: u64,
    /// What it knows.
    pub ledger: Ledger,
    /// Its counters.
    pub stats: Stats,
    /// Rule violations it saw live (unexpected refusals, accepted poisoned batches).
    pub violations: Vec<String>,
    rng: StdRng,
    max_live: usize,
    batch_size: usize,
}

/// Why a worker's loop ended.
enum Step {
    Continue,
    Lost,
}

impl Worker {
    /// A worker with its own random stream, writing batches of `batch_size` users (at least 2).
    pub fn new(idx: usize, seed: u64, max_live: usize, batch_size: usize) -> Self {
        Self {
            idx,
            next_id: 0,
            next_write: 0,
            ledger: Ledger::default(),
            stats: Stats::default(),
            violations: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ (idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            max_live,
            batch_size: batch_size.max(2),
        }
    }

    /// Writes until `stop` is set or a request is lost; counts each acknowledged write in
    /// `acked`.
    pub async fn run(mut self, admin: Admin, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> Self {
        while !stop.load(Ordering::Relaxed) {
            let before = self.stats.acked_writes();
            let roll = self.rng.random_range(0..100);
            let step = match roll {
                0..35 => self.batch_upsert(&admin, false).await,
                35..40 => self.batch_upsert(&admin, true).await,
                40..75 => self.patch(&admin).await,
                75..85 => self.delete_one(&admin).await,
                85..93 => self.delete_batch(&admin).await,
                _ => self.recreate_tomb(&admin).await,
            };
            acked.fetch_add(self.stats.acked_writes() - before, Ordering::Relaxed);
            if let Step::Lost = step {
                break;
            }
        }
        self
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("w{}-u{}", self.idx, self.next_id)
    }

    fn write_no(&mut self) -> u64 {
        self.next_write += 1;
        self.next_write
    }

    fn pick(&mut self, from: &[String], n: usize) -> Vec<String> {
        let n = n.min(from.len());
        rand::seq::index::sample(&mut self.rng, from.len(), n)
            .into_iter()
            .map(|i| from[i].clone())
            .collect()
    }

    fn name_for(&mut self, id: &str, write: u64, contested: bool) -> String {
        if contested {
            let j = self.rng.random_range(0..POOL_SIZE);
            let v = self.rng.random_range(0..4);
            pool_name(j, v)
        } else {
            format!("{id} r{write}")
        }
    }

    /// Classifies an answer; returns whether the write was acknowledged.
    fn settle(
        &mut self,
        what: String,
        outcome: Outcome,
        changes: Vec<(String, Slot)>,
        may_refuse: &[i64],
    ) -> Result<bool, Step> {
        match outcome {
            Outcome::Acked(_) => {
                self.ledger.apply(changes);
                Ok(true)
            }
            Outcome::Refused { code, .. } if may_refuse.contains(&code) => {
                match code {
                    6 => self.stats.refused_duplicate_name += 1,
                    _ => self.stats.refused_tombstoned += 1,
                }
                Ok(false)
            }
            Outcome::Refused { status, code, body } => {
                self.violations.push(format!(
                    "{what}: unexpected refusal {status} code {code}: {body}"
                ));
                Ok(false)
            }
            Outcome::Lost(_) => {
                self.ledger.in_flight = Some(InFlight { what, changes });
                Err(Step::Lost)
            }
        }
    }

    /// `POST /users` with a batch of users (100 by default): live ones and new ones, all
    /// tagged with the batch. A poisoned batch also carries a hard-deleted id and must be
    /// refused whole (code 16).
    async fn batch_upsert(&mut self, admin: &Admin, poisoned: bool) -> Step {
        let live = self.ledger.live();
        let tombs = self.ledger.tombs();
        let poisoned = poisoned && !tombs.is_empty();
        let size = self.batch_size;
        let existing = if live.len() >= self.max_live {
            size
        } else {
            self.rng.random_range(0..=size * 7 / 10)
        };
        let mut ids = self.pick(&live, existing);
        while ids.len() < size {
            let id = self.fresh_id();
            self.ledger.users.entry(id.clone()).or_insert(Slot::Absent);
            ids.push(id);
        }
        if poisoned {
            // Still `size` users: a hard-deleted id takes the last one's place.
            ids.truncate(size - 1);
        }
        let write = self.write_no();
        let tag = format!("b-w{}-{write}", self.idx);
        let mut users = Map::new();
        let mut changes = Vec::new();
        // One batch in ten carries one contested name, which may be refused (code 6).
        let contested = self.rng.random_bool(0.1);
        let pool_at = self.rng.random_range(0..ids.len());
        for (seq, id) in ids.iter().enumerate() {
            let pool = contested && seq == pool_at;
            let mut fields = Fields::new();
            fields.insert("name".into(), json!(self.name_for(id, write, pool)));
            fields.insert("batch".into(), json!(tag));
            fields.insert("seq".into(), json!(seq));
            if self.rng.random_bool(0.3) {
                fields.insert("note".into(), json!(format!("note {write}")));
            }
            let mut body = fields.clone();
            body.insert("id".into(), json!(id));
            users.insert(id.clone(), Value::Object(body));
            changes.push((id.clone(), Slot::Live(fields)));
        }
        let mut may_refuse = vec![];
        if contested {
            may_refuse.push(6);
        }
        if poisoned {
            let victim = self.pick(&tombs, 1).remove(0);
            users.insert(victim.clone(), json!({"id": victim, "batch": tag}));
            // Refused whole, or a rule is broken: nothing of it may ever show up.
            changes.clear();
            may_refuse.push(16);
        }
        let body = json!({ "users": users });
        let outcome = admin.call(Method::POST, "/users", Some(&body)).await;
        let n = users.len() as u64;
        match self.settle(format!("batch {tag}"), outcome, changes, &may_refuse) {
            Ok(true) if poisoned => {
                self.violations
                    .push(format!("batch {tag} with a hard-deleted id was accepted"));
                Step::Continue
            }
            Ok(true) => {
                self.stats.batches_acked += 1;
                self.stats.batch_users_acked += n;
                Step::Continue
            }
            Ok(false) => Step::Continue,
            Err(step) => step,
        }
    }

    /// `PATCH /users` on 1..=10 live users: tag, counter, a nested key, sometimes a name,
    /// sometimes an unset.
    async fn patch(&mut self, admin: &Admin) -> Step {
        let live = self.ledger.live();
        if live.is_empty() {
            return self.batch_upsert(admin, false).await;
        }
        let k = self.rng.random_range(1..=10);
        let ids = self.pick(&live, k);
        let write = self.write_no();
        let tag = format!("p-w{}-{write}", self.idx);
        let mut entries = Vec::new();
        let mut changes = Vec::new();
        let mut contested = false;
        for id in &ids {
            let mut set = Map::new();
            set.insert("batch".into(), json!(tag));
            set.insert("counter".into(), json!(write));
            set.insert(format!("nested.k{}", write % 4), json!(write));
            if self.rng.random_bool(0.15) {
                let pool = self.rng.random_bool(0.3);
                contested |= pool;
                set.insert("name".into(), json!(self.name_for(id, write, pool)));
            }
            let unset: Vec<String> = if self.rng.random_bool(0.2) {
                vec!["note".into()]
            } else {
                vec![]
            };
            let mut fields = self.ledger.fields(id).cloned().unwrap_or_default();
            patch_fields(&mut fields, &set, &unset);
            fields.retain(|k, _| CONTROLLED.contains(&k.as_str()));
            entries.push(json!({"id": id, "set": set, "unset": unset}));
            changes.push((id.clone(), Slot::Live(fields)));
        }
        let body = json!({ "users": entries });
        let outcome = admin.call(Method::PATCH, "/users", Some(&body)).await;
        let may_refuse: &[i64] = if contested { &[6] } else { &[] };
        match self.settle(format!("patch {tag}"), outcome, changes, may_refuse) {
            Ok(true) => {
                self.stats.patches_acked += 1;
                self.stats.patch_users_acked += ids.len() as u64;
                Step::Continue
            }
            Ok(false) => Step::Continue,
            Err(step) => step,
        }
    }

    /// `DELETE /users/{id}?hard_delete=true`.
    async fn delete_one(&mut self, admin: &Admin) -> Step {
        let live = self.ledger.live();
        let Some(id) = self.pick(&live, 1).pop() else {
            return self.batch_upsert(admin, false).await;
        };
        let path = format!("/users/{}?hard_delete=true", encode(&id));
        let outcome = admin.call(Method::DELETE, &path, None).await;
        let changes = vec![(id.clone(), Slot::Tomb)];
        match self.settle(format!("delete {id}"), outcome, changes, &[]) {
            Ok(true) => {
                self.stats.deletes_acked += 1;
                Step::Continue
            }
            Ok(false) => Step::Continue,
            Err(step) => step,
        }
    }

    /// `POST /users/delete` with `user: hard` on 1..=20 live users.
    async fn delete_batch(&mut self, admin: &Admin) -> Step {
        let live = self.ledger.live();
        if live.is_empty() {
            return self.batch_upsert(admin, false).await;
        }
        let k = self.rng.random_range(1..=20);
        let ids = self.pick(&live, k);
        let body = json!({"user_ids": ids, "user": "hard"});
        let outcome = admin.call(Method::POST, "/users/delete", Some(&body)).await;
        let changes = ids.iter().map(|id| (id.clone(), Slot::Tomb)).collect();
        let what = format!("delete batch of {} from {}", ids.len(), ids[0]);
        match self.settle(what, outcome, changes, &[]) {
            Ok(true) => {
                self.stats.batch_deletes_acked += 1;
                self.stats.batch_delete_users_acked += ids.len() as u64;
                Step::Continue
            }
            Ok(false) => Step::Continue,
            Err(step) => step,
        }
    }

    /// Tries to bring back a hard-deleted id; must be refused with code 16.
    async fn recreate_tomb(&mut self, admin: &Admin) -> Step {
        let tombs = self.ledger.tombs();
        let Some(id) = self.pick(&tombs, 1).pop() else {
            return self.patch(admin).await;
        };
        let body = json!({"users": {id.clone(): {"id": id, "name": format!("{id} zombie")}}});
        let outcome = admin.call(Method::POST, "/users", Some(&body)).await;
        // Nothing may change: a lost answer resolves against the tombstone alone.
        match self.settle(format!("re-create {id}"), outcome, vec![], &[16]) {
            Ok(true) => {
                self.violations
                    .push(format!("hard-deleted id {id} was created again"));
                Step::Continue
            }
            Ok(false) => Step::Continue,
            Err(step) => step,
        }
    }
}
