//! What the harness knows: for every user id it ever wrote, the state the last acknowledged
//! write left (absent, live with these fields, or hard-deleted), and for each worker the one
//! write whose answer was lost when the gateway died.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The fields the harness writes and compares; everything else the gateway adds is ignored.
pub const CONTROLLED: &[&str] = &["name", "batch", "seq", "counter", "nested", "note"];

/// Contested names: every variant of pool name `j` shares one normal form.
pub const POOL_SIZE: usize = 8;

/// The controlled fields of a live user.
pub type Fields = Map<String, Value>;

/// One user id's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Never created (or created by a write that was refused or lost without effect).
    Absent,
    /// Exists and is active, with these controlled fields.
    Live(Fields),
    /// Hard-deleted: erased, and the id refuses every create with code 16.
    Tomb,
}

impl Slot {
    /// Whether what a query returned for the id (`None`: not returned) is this state.
    pub fn matches(&self, observed: Option<&Map<String, Value>>) -> bool {
        match (self, observed) {
            (Slot::Live(f), Some(o)) => CONTROLLED.iter().all(|k| f.get(*k) == o.get(*k)),
            (Slot::Absent | Slot::Tomb, None) => true,
            _ => false,
        }
    }
}

/// A write whose answer never arrived: the state each user it touched would have if it
/// was applied. Either all of them have it, or none.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// What the write was, for reports.
    pub what: String,
    /// User id and its state if applied.
    pub changes: Vec<(String, Slot)>,
}

/// One worker's knowledge of the ids it owns.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Confirmed state per id.
    pub users: BTreeMap<String, Slot>,
    /// The write lost when the gateway was killed, if any.
    pub in_flight: Option<InFlight>,
    /// Ids hard-deleted since the last verification (all get a tombstone probe).
    pub fresh_tombs: Vec<String>,
}

impl Ledger {
    /// Records an acknowledged write.
    pub fn apply(&mut self, changes: Vec<(String, Slot)>) {
        for (id, slot) in changes {
            if slot == Slot::Tomb {
                self.fresh_tombs.push(id.clone());
            }
            self.users.insert(id, slot);
        }
    }

    /// Ids currently live.
    pub fn live(&self) -> Vec<String> {
        self.ids_where(|s| matches!(s, Slot::Live(_)))
    }

    /// Ids hard-deleted.
    pub fn tombs(&self) -> Vec<String> {
        self.ids_where(|s| *s == Slot::Tomb)
    }

    fn ids_where(&self, f: impl Fn(&Slot) -> bool) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, s)| f(s))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The fields of a live id.
    pub fn fields(&self, id: &str) -> Option<&Fields> {
        match self.users.get(id) {
            Some(Slot::Live(f)) => Some(f),
            _ => None,
        }
    }
}

/// The spec's normal form: letters and digits only, lowercased.
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Variant `v` of pool name `j`; all variants of one `j` collide.
pub fn pool_name(j: usize, v: usize) -> String {
    match v % 4 {
        0 => format!("Pool {j}"),
        1 => format!("pool-{j}"),
        2 => format!("POOL.{j}"),
        _ => format!("p o o l {j}"),
    }
}

/// Whether a name is one of the contested pool names.
pub fn is_pool(name: &str) -> bool {
    normalise(name).starts_with("pool")
}

/// Another spelling of `name` with the same normal form (for duplicate probes).
pub fn variant(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().filter(|c| c.is_alphanumeric()).enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// Applies a partial update's `set` (dotted paths one level deep) and `unset` to fields.
pub fn patch_fields(fields: &mut Fields, set: &Map<String, Value>, unset: &[String]) {
    for (path, value) in set {
        match path.split_once('.') {
            None => {
                fields.insert(path.clone(), value.clone());
            }
            Some((head, rest)) => {
                let slot = fields
                    .entry(head.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(inner) = slot {
                    inner.insert(rest.to_owned(), value.clone());
                }
            }
        }
    }
    for path in unset {
        fields.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_variants_collide_and_unique_names_do_not() {
        let forms: Vec<String> = (0..4).map(|v| normalise(&pool_name(3, v))).collect();
        assert!(forms.iter().all(|f| f == "pool3"), "{forms:?}");
        assert_ne!(normalise("w1-u17 r5"), normalise("w11-u7 r5"));
        assert_eq!(normalise(&variant("w1-u17 r5")), normalise("w1-u17 r5"));
        assert!(is_pool("POOL.3") && !is_pool("w1-u2 r3"));
    }
}
