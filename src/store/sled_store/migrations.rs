//! The stored schema version of a sled data dir and the numbered migrations that bring an
//! older one up to [`SCHEMA_VERSION`] before the store serves.
//!
//! Tree: `meta`: `schema_version` → u32 big-endian.

use super::{indexes, names, sled_error};
use crate::store::StoreError;

/// The schema version this code writes. Migrations, numbered by the version they produce:
/// - 2: the username index is rebuilt, its keys being normal forms and normalisation having
///   changed (NFKC first; see [`crate::model::username::normalise`]).
/// - 3: the username index becomes one key per holder plus a count per name
///   (`namekey_userid`, `namekey_count`) instead of one JSON list of holders per name
///   (`username_userids`, dropped). Rebuilt from the users, so it subsumes 2.
/// - 4: the query indexes (`field_value_userid`) are built from the users and their activity
///   records.
/// - 5: the username index is rebuilt without guests, who hold no names any more.
/// - 6: the query indexes are rebuilt, `last_active` entries being kept by the hour.
pub const SCHEMA_VERSION: u32 = 6;

/// The tree of the username index up to schema 2: name key → JSON list of holder ids.
pub const LEGACY_NAMES_TREE: &str = "username_userids";

/// Reads the stored version, runs the migrations it lacks and records the new version.
/// A fresh data dir is stamped with [`SCHEMA_VERSION`].
pub fn migrate(db: &sled::Db) -> Result<(), StoreError> {
    let meta = db.open_tree("meta").map_err(sled_error)?;
    let found = match meta.get("schema_version").map_err(sled_error)? {
        // No version: a fresh data dir (every version so far writes one at creation).
        None => SCHEMA_VERSION,
        Some(v) => u32::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("schema_version".into()))?,
        ),
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "data dir has schema version {found}, this build knows {SCHEMA_VERSION}"
        )));
    }
    if found < 3 {
        names::rebuild(db)?;
        db.drop_tree(LEGACY_NAMES_TREE).map_err(sled_error)?;
        tracing::info!(from = found, "username index migrated (schema 3)");
    }
    if found < 4 {
        indexes::rebuild(db)?;
        tracing::info!(from = found, "query indexes built (schema 4)");
    } else if found < 6 {
        indexes::rebuild(db)?;
        tracing::info!(
            from = found,
            "query indexes rebuilt, last_active by the hour (schema 6)"
        );
    }
    if (3..5).contains(&found) {
        names::rebuild(db)?;
        tracing::info!(
            from = found,
            "username index rebuilt without guests (schema 5)"
        );
    }
    // Written after the migrations; the caller's flush makes both durable, and sled
    // recovers writes in order, so a crash redoes an unfinished migration (each is
    // idempotent: it rebuilds from the users).
    meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
        .map_err(sled_error)?;
    Ok(())
}

/// The stored schema version (for tests and audits).
pub fn stored_version(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    let meta = db.open_tree("meta").map_err(sled_error)?;
    Ok(meta
        .get("schema_version")
        .map_err(sled_error)?
        .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes)))
}
