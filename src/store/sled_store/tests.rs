//! Tests of the sled store's own layout: migrations from data dirs written by earlier schemas,
//! and what the conformance suite cannot see (trees left behind).

use super::*;
use crate::model::query::UserQuery;
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

fn query(payload: serde_json::Value) -> UserQuery {
    UserQuery::parse(&payload).unwrap()
}

async fn query_ids(store: &SledStore, payload: serde_json::Value) -> Vec<String> {
    let users = store.query_users(&query(payload)).await.unwrap();
    users.into_iter().map(|u| u.id).collect()
}

#[tokio::test]
async fn upgrading_from_schema_3_builds_the_query_indexes() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SledStore::open(&path).unwrap();
    store
        .apply_user_batch(vec![
            create(named("ann", "Ann Lee", &["red"]), vec![]),
            create(named("ben", "Ben Lee", &["blue"]), vec![]),
        ])
        .await
        .unwrap();
    let at = Timestamp::parse("2030-01-01T00:00:00Z").unwrap();
    store.touch_last_active("ben", at).await.unwrap();
    // A schema-3 data dir has no query index.
    let db = store.inner.db.clone();
    drop(store);
    db.drop_tree(indexes::TREE).unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", &3u32.to_be_bytes()).unwrap();
    db.flush().unwrap();
    drop((db, meta));

    let store = SledStore::open(&path).unwrap();
    assert_eq!(
        stored_version(&store.inner.db).unwrap(),
        Some(SCHEMA_VERSION)
    );
    assert!(!store.inner.index.is_empty());
    let red = json!({"filter_conditions": {"teams": {"$contains": "red"}}});
    assert_eq!(query_ids(&store, red).await, ["ann"]);
    let lee = json!({"filter_conditions": {"name": {"$autocomplete": "le"}}});
    assert_eq!(query_ids(&store, lee).await, ["ben", "ann"]);
    let active = json!({"filter_conditions": {"last_active": {"$gte": "2030-01-01T00:00:00Z"}}});
    assert_eq!(query_ids(&store, active).await, ["ben"]);
    let plan = planner::plan(
        &query(json!({"filter_conditions": {"last_active": {"$gte": "2030-01-01T00:00:00Z"}}})),
        &store.inner.index,
        PlannerLimits::default(),
    )
    .unwrap();
    assert_eq!(plan, planner::Plan::Candidates(["ben".to_owned()].into()));
}

#[tokio::test]
async fn the_planner_uses_the_most_selective_index_and_falls_back_to_a_scan() {
    use planner::Plan;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let mut batch = Vec::new();
    for i in 0..20 {
        let team = if i == 7 { "rare" } else { "common" };
        batch.push(create(named(&format!("p{i:02}"), "Pat", &[team]), vec![]));
    }
    store.apply_user_batch(batch).await.unwrap();
    let plan = |payload: serde_json::Value, limits: PlannerLimits| {
        planner::plan(&query(payload), &store.inner.index, limits).unwrap()
    };
    let default = PlannerLimits::default();
    let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        plan(
            json!({"filter_conditions": {"id": {"$in": ["p01", "zz"]}}}),
            default
        ),
        Plan::Candidates(ids(&["p01", "zz"]))
    );
    let both = json!({"filter_conditions": {"teams": "common", "$or": [{"teams": "rare"}]}});
    assert_eq!(plan(both, default), Plan::Candidates(ids(&["p07"])));
    let walk_all = Plan::Walk {
        descending: true,
        ids_descending: true,
        only: None,
    };
    assert_eq!(plan(json!({}), default), walk_all);
    let unserved = json!({"filter_conditions": {"role": {"$ne": "admin"}}});
    assert_eq!(plan(unserved.clone(), default), walk_all);
    let custom_sort = json!({"filter_conditions": {"role": {"$ne": "admin"}},
                             "sort": [{"field": "name", "direction": 1}]});
    assert_eq!(plan(custom_sort, default), Plan::Scan);
    // Too many candidates: the condition is left to the check; many: walked.
    let tight = PlannerLimits {
        max_candidates: 10,
        walk_above: 3,
    };
    assert_eq!(
        plan(json!({"filter_conditions": {"teams": "common"}}), tight),
        walk_all
    );
    let Plan::Walk {
        only: Some(only), ..
    } = plan(
        json!({"filter_conditions": {"name": {"$autocomplete": "pa"}}}),
        PlannerLimits {
            max_candidates: 100,
            walk_above: 3,
        },
    )
    else {
        panic!("a walk over the candidates");
    };
    assert_eq!(only.len(), 20);
}

fn index_keys(store: &SledStore) -> Vec<Vec<u8>> {
    store
        .inner
        .index
        .iter()
        .map(|kv| kv.unwrap().0.to_vec())
        .collect()
}

#[tokio::test]
async fn touches_keep_the_index_equal_to_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let t = |s: &str| Timestamp::parse(s).unwrap();
    let mut own = named("own", "Own Activity", &[]);
    own.last_active = Some(t("2031-01-01T00:00:00Z"));
    let mut gone = named("gone", "Soft Deleted", &[]);
    gone.deleted_at = Some(t("2020-01-01T00:00:00Z"));
    store
        .apply_user_batch(vec![
            create(named("ann", "Ann", &[]), vec![]),
            create(own, vec![]),
            create(gone, vec![]),
        ])
        .await
        .unwrap();
    let touches = [
        ("ann", "2030-01-01T00:00:00.123456789Z"),
        ("ann", "2030-06-01T00:00:00Z"),
        // The last touch is the record, even an earlier one: the entry moves back.
        ("ann", "2029-01-01T00:00:00Z"),
        // Older, then newer than the user's own `last_active`.
        ("own", "2030-01-01T00:00:00Z"),
        ("own", "2032-01-01T00:00:00Z"),
        ("gone", "2030-01-01T00:00:00Z"),
        ("nobody", "2030-01-01T00:00:00Z"),
    ];
    for (id, at) in touches {
        store.touch_last_active(id, t(at)).await.unwrap();
    }
    let touched = index_keys(&store);
    indexes::rebuild(&store.inner.db).unwrap();
    assert_eq!(touched, index_keys(&store));
    let late = serde_json::json!({
        "filter_conditions": {"last_active": {"$gte": "2030-06-01T00:00:00Z"}},
        "sort": [{"field": "last_active", "direction": -1}]
    });
    assert_eq!(query_ids(&store, late).await, ["own"]);
    let since_2029 = serde_json::json!({
        "filter_conditions": {"last_active": {"$gte": "2029-01-01T00:00:00Z"}},
        "sort": [{"field": "last_active", "direction": -1}]
    });
    assert_eq!(query_ids(&store, since_2029).await, ["own", "ann"]);
}
