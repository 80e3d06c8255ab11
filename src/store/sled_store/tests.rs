//! Tests of the sled store's own layout: migrations from data dirs written by earlier schemas,
//! and what the conformance suite cannot see (trees left behind).

use super::*;
use crate::store::sled_store::migrations::{stored_version, LEGACY_NAMES_TREE};

fn create(user: User, check_names: Vec<NameScope>) -> UserChange {
    UserChange::Put {
        user,
        expect: Expect::Absent,
        check_names,
        tombstone: false,
    }
}

fn named(id: &str, name: &str, teams: &[&str]) -> User {
    let mut u = User::new(id, Timestamp::now());
    u.name = Some(name.into());
    u.teams = teams.iter().map(|t| (*t).to_owned()).collect();
    u
}

/// The username index key of schema 1 and 2 (`a\0<norm>` / `t\0<team>\0<norm>`).
fn legacy_key(team: Option<&str>, norm: &str) -> Vec<u8> {
    match team {
        None => format!("a\0{norm}").into_bytes(),
        Some(t) => format!("t\0{t}\0{norm}").into_bytes(),
    }
}

/// Turns a data dir written by this build into one of an earlier schema: the current
/// username index trees dropped, `legacy` written as the JSON-list index, the version set.
fn downgrade(store: SledStore, version: u32, legacy: &[(Vec<u8>, &[&str])]) {
    let db = store.inner.db.clone();
    drop(store);
    db.drop_tree(names::HOLDERS_TREE).unwrap();
    db.drop_tree(names::COUNTS_TREE).unwrap();
    let old = db.open_tree(LEGACY_NAMES_TREE).unwrap();
    for (key, ids) in legacy {
        old.insert(key.as_slice(), serde_json::to_vec(ids).unwrap())
            .unwrap();
    }
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", &version.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
}

fn tree_names(store: &SledStore) -> Vec<String> {
    store
        .inner
        .db
        .tree_names()
        .into_iter()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

#[tokio::test]
async fn upgrading_from_schema_1_rebuilds_the_username_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SledStore::open(&path).unwrap();
    // Decomposed: "e" + combining acute; schema 1 keyed it as "jose".
    let u = named("u1", "Jose\u{301}", &["red"]);
    store
        .apply_user_batch(vec![create(u, vec![])])
        .await
        .unwrap();
    downgrade(
        store,
        1,
        &[
            (legacy_key(None, "jose"), &["u1"]),
            (legacy_key(Some("red"), "jose"), &["u1"]),
        ],
    );
    let store = SledStore::open(&path).expect("a dropped store releases its data dir at once");
    let precomposed = "Jos\u{e9}";
    let app = store
        .name_holders(precomposed, &NameScope::App)
        .await
        .unwrap();
    assert_eq!(app, ["u1"]);
    let team = NameScope::Team("red".into());
    assert_eq!(
        store.name_holders(precomposed, &team).await.unwrap(),
        ["u1"]
    );
    assert_eq!(store.inner.name_holders.len(), 2);
    assert!(!tree_names(&store).iter().any(|n| n == LEGACY_NAMES_TREE));
    assert_eq!(
        stored_version(&store.inner.db).unwrap(),
        Some(SCHEMA_VERSION)
    );
}

#[tokio::test]
async fn upgrading_from_schema_2_moves_the_username_index_to_one_key_per_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SledStore::open(&path).unwrap();
    let mut batch = Vec::new();
    let guests: Vec<String> = (0..5).map(|i| format!("guest-{i}")).collect();
    for id in &guests {
        batch.push(create(named(id, "Guest", &["red"]), vec![]));
    }
    batch.push(create(named("bob", "Bob", &["blue", "red"]), vec![]));
    store.apply_user_batch(batch).await.unwrap();
    let guest_ids: Vec<&str> = guests.iter().map(String::as_str).collect();
    downgrade(
        store,
        2,
        &[
            (legacy_key(None, "guest"), &guest_ids),
            (legacy_key(Some("red"), "guest"), &guest_ids),
            (legacy_key(None, "bob"), &["bob"]),
            (legacy_key(Some("blue"), "bob"), &["bob"]),
            (legacy_key(Some("red"), "bob"), &["bob"]),
        ],
    );

    let store = SledStore::open(&path).unwrap();
    assert_eq!(
        stored_version(&store.inner.db).unwrap(),
        Some(SCHEMA_VERSION)
    );
    assert!(!tree_names(&store).iter().any(|n| n == LEGACY_NAMES_TREE));
    let mut app = store.name_holders("GUEST", &NameScope::App).await.unwrap();
    app.sort();
    assert_eq!(app, guests);
    let blue = NameScope::Team("blue".into());
    assert_eq!(store.name_holders("bob", &blue).await.unwrap(), ["bob"]);
    // The counts the checks read came across too.
    let taken = store
        .apply_user_batch(vec![create(
            named("carol", "guest", &[]),
            vec![NameScope::App],
        )])
        .await;
    assert!(
        matches!(taken, Err(StoreError::NameTaken { .. })),
        "{taken:?}"
    );
    let taken = store
        .apply_user_batch(vec![create(
            named("dave", "B.O.B", &["blue"]),
            vec![NameScope::Team("blue".into())],
        )])
        .await;
    assert!(
        matches!(taken, Err(StoreError::NameTaken { team: Some(ref t), .. }) if t == "blue"),
        "{taken:?}"
    );
    // Once every holder lets go, the name is free and its count gone.
    let mut erase = Vec::new();
    for id in &guests {
        let version = store.get_user(id).await.unwrap().unwrap().version;
        erase.push(UserChange::Erase {
            id: id.clone(),
            expect: Expect::Version(version),
            deleted_at: Timestamp::now(),
        });
    }
    store.apply_user_batch(erase).await.unwrap();
    store
        .apply_user_batch(vec![create(
            named("carol", "guest", &[]),
            vec![NameScope::App],
        )])
        .await
        .unwrap();
    assert_eq!(
        store.name_holders("guest", &NameScope::App).await.unwrap(),
        ["carol"]
    );
    let red = NameScope::Team("red".into());
    assert!(store.name_holders("guest", &red).await.unwrap().is_empty());
    assert!(store
        .inner
        .name_counts
        .get(name_key(&red, "guest"))
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_name_shared_by_many_is_one_key_per_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    for batch in 0..3 {
        let users = (0..100)
            .map(|i| create(named(&format!("g{batch}-{i}"), "Guest", &[]), vec![]))
            .collect();
        store.apply_user_batch(users).await.unwrap();
    }
    let key = name_key(&NameScope::App, "guest");
    let count = store.inner.name_counts.get(&key).unwrap().unwrap();
    assert_eq!(count.as_ref(), 300u64.to_be_bytes());
    // No value grows with the number of holders.
    let largest = store
        .inner
        .name_holders
        .iter()
        .map(|kv| kv.unwrap().1.len())
        .max();
    assert_eq!(largest, Some(0));
}

#[tokio::test]
async fn a_hard_delete_erases_the_activity_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let created = create(User::new("gone", Timestamp::now()), vec![]);
    store.apply_user_batch(vec![created]).await.unwrap();
    store
        .touch_last_active("gone", Timestamp::now())
        .await
        .unwrap();
    assert!(store.inner.last_active.contains_key("gone").unwrap());
    let version = store.get_user("gone").await.unwrap().unwrap().version;
    let erase = UserChange::Erase {
        id: "gone".into(),
        expect: Expect::Version(version),
        deleted_at: Timestamp::now(),
    };
    store.apply_user_batch(vec![erase]).await.unwrap();
    assert!(!store.inner.last_active.contains_key("gone").unwrap());
    // A late disconnect of the erased user records nothing.
    store
        .touch_last_active("gone", Timestamp::now())
        .await
        .unwrap();
    assert!(!store.inner.last_active.contains_key("gone").unwrap());
    assert!(store.inner.last_active.is_empty());
}
