//! The username index: which active users hold which normal form of a name, app-wide and per
//! team, kept one key per holder so that a write touches a constant number of keys however
//! many users share a name.
//!
//! Trees and key layouts (a *name key* is `a` ‖ normal form for the app scope, or
//! `t` ‖ team length (u32 big-endian) ‖ team ‖ normal form for a team scope; a normal form is
//! letters and digits only, so it never holds a `0x00`):
//! - `namekey_userid`: name key ‖ `0x00` ‖ user id → empty. One key per holder.
//! - `namekey_count`: name key → number of holders, u64 big-endian; absent when zero. Sled
//!   transactions cannot scan, so the collision check reads this count (and whether the
//!   writer itself is a holder) instead of listing the holders.
//!
//! Kept for every user whatever the enforcement setting, so switching enforcement on is
//! instant.

use sled::transaction::TransactionalTree;

use super::{abort, sled_error, TxResult};
use crate::model::user::User;
use crate::model::username::normalise;
use crate::store::{NameScope, StoreError, StoredUser};

/// Tree of one key per holder.
pub const HOLDERS_TREE: &str = "namekey_userid";
/// Tree of the holder count per name key.
pub const COUNTS_TREE: &str = "namekey_count";

/// The name key of a normal form in a scope.
pub fn name_key(scope: &NameScope, norm: &str) -> Vec<u8> {
    match scope {
        NameScope::App => {
            let mut k = Vec::with_capacity(1 + norm.len());
            k.push(b'a');
            k.extend_from_slice(norm.as_bytes());
            k
        }
        NameScope::Team(team) => {
            let mut k = Vec::with_capacity(5 + team.len() + norm.len());
            k.push(b't');
            k.extend_from_slice(&(team.len() as u32).to_be_bytes());
            k.extend_from_slice(team.as_bytes());
            k.extend_from_slice(norm.as_bytes());
            k
        }
    }
}

/// The prefix of every holder key of a name key.
fn holders_prefix(name_key: &[u8]) -> Vec<u8> {
    let mut k = name_key.to_vec();
    k.push(0);
    k
}

fn holder_key(name_key: &[u8], id: &str) -> Vec<u8> {
    let mut k = holders_prefix(name_key);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The name keys a user holds: none for an inactive user, a guest (guests hold no names) or a
/// name whose normal form is empty.
pub fn held_name_keys(user: &User) -> Vec<Vec<u8>> {
    if !user.holds_name() {
        return Vec::new();
    }
    name_keys(user)
}

/// The name keys an active user could hold, whatever its role: what a write releases (a guest
/// written before guests stopped holding names may still hold them).
pub fn name_keys(user: &User) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if !user.is_active() {
        return keys;
    }
    let Some(norm) = user.name.as_deref().map(normalise) else {
        return keys;
    };
    if norm.is_empty() {
        return keys;
    }
    keys.push(name_key(&NameScope::App, &norm));
    for team in &user.teams {
        keys.push(name_key(&NameScope::Team(team.clone()), &norm));
    }
    keys
}

fn decode_count(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("username index count".into()))
}

/// The username index inside a transaction.
pub struct NamesTx<'a> {
    /// `namekey_userid`.
    pub holders: &'a TransactionalTree,
    /// `namekey_count`.
    pub counts: &'a TransactionalTree,
}

impl NamesTx<'_> {
    fn count(&self, key: &[u8]) -> TxResult<u64> {
        match self.counts.get(key)? {
            None => Ok(0),
            Some(v) => decode_count(&v).or_else(abort),
        }
    }

    fn set_count(&self, key: &[u8], n: u64) -> TxResult<()> {
        if n == 0 {
            self.counts.remove(key)?;
        } else {
            self.counts.insert(key, &n.to_be_bytes())?;
        }
        Ok(())
    }

    /// Whether a user other than `id` holds the name key.
    pub fn held_by_other(&self, key: &[u8], id: &str) -> TxResult<bool> {
        let mine = u64::from(self.holders.get(holder_key(key, id))?.is_some());
        Ok(self.count(key)? > mine)
    }

    /// Records `id` as a holder of the name key (idempotent).
    pub fn add(&self, key: &[u8], id: &str) -> TxResult<()> {
        if self.holders.insert(holder_key(key, id), &[])?.is_none() {
            self.set_count(key, self.count(key)? + 1)?;
        }
        Ok(())
    }

    /// Removes `id` from the holders of the name key (idempotent).
    pub fn remove(&self, key: &[u8], id: &str) -> TxResult<()> {
        if self.holders.remove(holder_key(key, id))?.is_some() {
            self.set_count(key, self.count(key)?.saturating_sub(1))?;
        }
        Ok(())
    }
}

/// The ids holding a name key (outside any transaction).
pub fn holders(tree: &sled::Tree, key: &[u8]) -> Result<Vec<String>, StoreError> {
    let prefix = holders_prefix(key);
    tree.scan_prefix(&prefix)
        .keys()
        .map(|k| {
            let k = k.map_err(sled_error)?;
            String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|_| StoreError::Corrupt("username index key".into()))
        })
        .collect()
}

/// Rebuilds both trees from `userid_user`. Idempotent (it starts by clearing them); run
/// before the store serves, so plain (non-transactional) writes suffice.
pub fn rebuild(db: &sled::Db) -> Result<(), StoreError> {
    let users = db.open_tree("userid_user").map_err(sled_error)?;
    let holders = db.open_tree(HOLDERS_TREE).map_err(sled_error)?;
    let counts = db.open_tree(COUNTS_TREE).map_err(sled_error)?;
    holders.clear().map_err(sled_error)?;
    counts.clear().map_err(sled_error)?;
    for item in users.iter() {
        let (_, bytes) = item.map_err(sled_error)?;
        let stored: StoredUser =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for key in held_name_keys(&stored.user) {
            let fresh = holders
                .insert(holder_key(&key, &stored.user.id), &[])
                .map_err(sled_error)?
                .is_none();
            if fresh {
                let n = match counts.get(&key).map_err(sled_error)? {
                    None => 0,
                    Some(v) => decode_count(&v)?,
                };
                counts
                    .insert(&key, &(n + 1).to_be_bytes())
                    .map_err(sled_error)?;
            }
        }
    }
    tracing::info!(
        holders = holders.len(),
        names = counts.len(),
        "username index rebuilt"
    );
    Ok(())
}
