//! The `Store` conformance suite: every rule a backend must keep, written once as generic
//! functions over `S: Store` and run against each implementation (today sled, bare and behind
//! the data volume guard the gateway runs it with; a PostgreSQL store adds one `backend!`
//! line). A backend CI does not run is a backend that rots.
//!
//! PostgreSQL runs on `CHAT_GATEWAY_TEST_PG_URL`, or on a throwaway server started from the
//! installed binaries (see `common/pg.rs`), with a fresh database per test.

#[path = "common/pg.rs"]
mod pg;

use std::future::Future;

use chat_gateway::model::moderation::{Ban, Block, Mute};
use chat_gateway::model::query::UserQuery;
use chat_gateway::model::user::User;
use chat_gateway::protocol::Timestamp;
use chat_gateway::store::{
    Expect, GuardedStore, NameScope, PgOptions, PostgresStore, SledStore, SpaceGuard, Store,
    StoreError, StoredSettings, StoredUser, Task, UserChange,
};
use serde_json::{json, Map, Value};

// ---- helpers ----------------------------------------------------------------------------

fn user(id: &str, name: Option<&str>, teams: &[&str]) -> User {
    let mut u = User::new(id, Timestamp::now());
    u.name = name.map(str::to_owned);
    u.teams = teams.iter().map(|t| (*t).to_owned()).collect();
    u
}

fn put(user: User, expect: Expect, check_names: Vec<NameScope>) -> UserChange {
    UserChange::Put {
        user,
        expect,
        check_names,
        tombstone: false,
    }
}

fn create(user: User) -> UserChange {
    put(user, Expect::Absent, Vec::new())
}

async fn stored<S: Store>(store: &S, id: &str) -> StoredUser {
    store
        .get_user(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("user {id} is stored"))
}

async fn holders<S: Store>(store: &S, name: &str, scope: NameScope) -> Vec<String> {
    let mut ids = store.name_holders(name, &scope).await.unwrap();
    ids.sort();
    ids
}

fn team(t: &str) -> NameScope {
    NameScope::Team(t.to_owned())
}

fn all_users() -> UserQuery {
    UserQuery::parse(&json!({"filter_conditions": {}, "limit": 100,
                             "include_deactivated_users": true,
                             "sort": [{"field": "id", "direction": 1}]}))
    .unwrap()
}

async fn ids<S: Store>(store: &S, query: &UserQuery) -> Vec<String> {
    store
        .query_users(query)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect()
}

fn task(id: &str) -> Task {
    let now = Timestamp::now();
    let mut result = Map::new();
    result.insert("alice".into(), json!({"status": "ok"}));
    Task {
        task_id: id.to_owned(),
        status: "completed".into(),
        created_at: now,
        updated_at: now,
        result,
        error: None,
    }
}

// ---- the suite --------------------------------------------------------------------------

/// `Expect::Absent` creates; a second create, a wrong version or a version of nothing is
/// a `Conflict`; each write bumps the version by one.
async fn create_and_expect_semantics<S: Store>(store: &S) {
    assert!(store.get_user("alice").await.unwrap().is_none());
    store
        .apply_user_batch(vec![create(user("alice", Some("Alice"), &[]))])
        .await
        .unwrap();
    let first = stored(store, "alice").await;
    assert_eq!(first.user.name.as_deref(), Some("Alice"));

    let again = store
        .apply_user_batch(vec![create(user("alice", None, &[]))])
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict(ref id)) if id == "alice"),
        "{again:?}"
    );

    let mut next = first.user.clone();
    next.name = Some("Alice 2".into());
    let stale = store
        .apply_user_batch(vec![put(
            next.clone(),
            Expect::Version(first.version + 1),
            vec![],
        )])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let ghost = store
        .apply_user_batch(vec![put(
            user("ghost", None, &[]),
            Expect::Version(1),
            vec![],
        )])
        .await;
    assert!(matches!(ghost, Err(StoreError::Conflict(_))), "{ghost:?}");
    assert!(store.get_user("ghost").await.unwrap().is_none());

    store
        .apply_user_batch(vec![put(next, Expect::Version(first.version), vec![])])
        .await
        .unwrap();
    let second = stored(store, "alice").await;
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.user.name.as_deref(), Some("Alice 2"));
    // The old version can't be written against any more.
    let late = store
        .apply_user_batch(vec![put(
            first.user.clone(),
            Expect::Version(first.version),
            vec![],
        )])
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    assert_eq!(stored(store, "alice").await, second);
    // An empty batch is a no-op.
    store.apply_user_batch(Vec::new()).await.unwrap();
}

/// The stored user is exactly the user written, custom data and all.
async fn users_roundtrip<S: Store>(store: &S) {
    let mut u = user("rich", Some("Rich"), &["red", "blue"]);
    u.role = "admin".into();
    u.custom
        .insert("nested".into(), json!({"a": [1, "two", null]}));
    u.revoke_tokens_issued_before = Timestamp::parse("2024-01-01T00:00:00Z");
    u.invisible = true;
    let at = Timestamp::parse("2024-02-01T10:00:00.123456Z").unwrap();
    u.mutes = vec![
        Mute {
            target_id: "bore".into(),
            created_at: at,
            updated_at: at,
            expires: None,
        },
        Mute {
            target_id: "noisy".into(),
            created_at: at,
            updated_at: at,
            expires: Timestamp::parse("2024-02-01T11:00:00Z"),
        },
    ];
    u.blocks = vec![Block {
        blocked_user_id: "troll".into(),
        created_at: at,
    }];
    store
        .apply_user_batch(vec![create(u.clone())])
        .await
        .unwrap();
    assert_eq!(stored(store, "rich").await.user, u);
    // Mutes and blocks change with a versioned write like any other field, and go with the
    // user on a hard delete.
    let mut next = u.clone();
    next.mutes.remove(0);
    next.blocks.clear();
    let version = stored(store, "rich").await.version;
    store
        .apply_user_batch(vec![put(
            next.clone(),
            Expect::Version(version),
            Vec::new(),
        )])
        .await
        .unwrap();
    assert_eq!(stored(store, "rich").await.user, next);
    let version = stored(store, "rich").await.version;
    store
        .apply_user_batch(vec![UserChange::Erase {
            id: "rich".into(),
            expect: Expect::Version(version),
            deleted_at: Timestamp::now(),
        }])
        .await
        .unwrap();
    assert!(store.get_user("rich").await.unwrap().is_none());
}

/// A hard delete leaves only a tombstone, and no create of that id ever succeeds again;
/// a pruning delete keeps the (nulled) user and a tombstone.
async fn tombstones_are_forever<S: Store>(store: &S) {
    store
        .apply_user_batch(vec![
            create(user("gone", Some("Gone"), &["red"])),
            create(user("pruned", Some("Pruned"), &[])),
        ])
        .await
        .unwrap();
    assert!(!store.is_tombstoned("gone").await.unwrap());
    let version = stored(store, "gone").await.version;
    store
        .apply_user_batch(vec![UserChange::Erase {
            id: "gone".into(),
            expect: Expect::Version(version),
            deleted_at: Timestamp::now(),
        }])
        .await
        .unwrap();
    assert!(store.get_user("gone").await.unwrap().is_none());
    assert!(store.is_tombstoned("gone").await.unwrap());
    assert!(holders(store, "Gone", NameScope::App).await.is_empty());
    assert!(holders(store, "Gone", team("red")).await.is_empty());
    for _ in 0..2 {
        let again = store
            .apply_user_batch(vec![create(user("gone", None, &[]))])
            .await;
        assert!(
            matches!(again, Err(StoreError::Tombstoned(ref id)) if id == "gone"),
            "{again:?}"
        );
    }
    // Erasing it again finds nothing to erase.
    let twice = store
        .apply_user_batch(vec![UserChange::Erase {
            id: "gone".into(),
            expect: Expect::Version(version),
            deleted_at: Timestamp::now(),
        }])
        .await;
    assert!(twice.is_err());

    let mut p = stored(store, "pruned").await;
    p.user.deleted_at = Some(Timestamp::now());
    p.user.name = None;
    store
        .apply_user_batch(vec![UserChange::Put {
            user: p.user.clone(),
            expect: Expect::Version(p.version),
            check_names: vec![],
            tombstone: true,
        }])
        .await
        .unwrap();
    assert!(store.is_tombstoned("pruned").await.unwrap());
    assert_eq!(stored(store, "pruned").await.user, p.user);
    assert!(holders(store, "Pruned", NameScope::App).await.is_empty());
}

/// The name index holds exactly the active users with a name, per app and per team, under
/// the normal form; renames, team changes, deactivation and deletion release entries.
async fn name_index_is_maintained<S: Store>(store: &S) {
    store
        .apply_user_batch(vec![
            create(user("a", Some("John Doe"), &["red", "blue"])),
            create(user("b", Some("john.doe"), &["blue"])),
            create(user("c", Some("..."), &["red"])),
            create(user("d", None, &["red"])),
        ])
        .await
        .unwrap();
    assert_eq!(holders(store, "JOHN-DOE", NameScope::App).await, ["a", "b"]);
    assert_eq!(holders(store, "john doe", team("blue")).await, ["a", "b"]);
    assert_eq!(holders(store, "johndoe", team("red")).await, ["a"]);
    assert!(holders(store, "johndoe", team("green")).await.is_empty());
    assert!(
        holders(store, "...", NameScope::App).await.is_empty(),
        "empty forms aren't held"
    );

    // Rename b: it leaves "johndoe" and takes "bee".
    let mut b = stored(store, "b").await;
    b.user.name = Some("Bee".into());
    store
        .apply_user_batch(vec![put(
            b.user.clone(),
            Expect::Version(b.version),
            vec![],
        )])
        .await
        .unwrap();
    assert_eq!(holders(store, "john doe", NameScope::App).await, ["a"]);
    assert_eq!(holders(store, "john doe", team("blue")).await, ["a"]);
    assert_eq!(holders(store, "bee", NameScope::App).await, ["b"]);

    // a leaves team red.
    let mut a = stored(store, "a").await;
    a.user.teams = vec!["blue".into()];
    store
        .apply_user_batch(vec![put(
            a.user.clone(),
            Expect::Version(a.version),
            vec![],
        )])
        .await
        .unwrap();
    assert!(holders(store, "john doe", team("red")).await.is_empty());
    assert_eq!(holders(store, "john doe", team("blue")).await, ["a"]);

    // Deactivating releases; reactivating takes it back.
    let mut a = stored(store, "a").await;
    a.user.deactivated_at = Some(Timestamp::now());
    store
        .apply_user_batch(vec![put(
            a.user.clone(),
            Expect::Version(a.version),
            vec![],
        )])
        .await
        .unwrap();
    assert!(holders(store, "john doe", NameScope::App).await.is_empty());
    assert!(holders(store, "john doe", team("blue")).await.is_empty());
    let mut a = stored(store, "a").await;
    a.user.deactivated_at = None;
    store
        .apply_user_batch(vec![put(
            a.user.clone(),
            Expect::Version(a.version),
            vec![],
        )])
        .await
        .unwrap();
    assert_eq!(holders(store, "john doe", NameScope::App).await, ["a"]);

    // A soft delete releases too.
    let mut a = stored(store, "a").await;
    a.user.deleted_at = Some(Timestamp::now());
    store
        .apply_user_batch(vec![put(
            a.user.clone(),
            Expect::Version(a.version),
            vec![],
        )])
        .await
        .unwrap();
    assert!(holders(store, "john doe", NameScope::App).await.is_empty());
    assert!(holders(store, "john doe", team("blue")).await.is_empty());
}

/// A name check fails when another active user holds the normal form in that scope, and
/// passes when the only holder is the user itself or the holder is inactive.
async fn name_checks_are_enforced<S: Store>(store: &S) {
    store
        .apply_user_batch(vec![
            create(user("holder", Some("Ann Lee"), &["red"])),
            create(user("blue-ann", Some("ann lee"), &["blue"])),
        ])
        .await
        .unwrap();
    let app = store
        .apply_user_batch(vec![put(
            user("new", Some("ANN-LEE"), &[]),
            Expect::Absent,
            vec![NameScope::App],
        )])
        .await;
    match app {
        Err(StoreError::NameTaken { name, team }) => {
            assert_eq!(name, "ANN-LEE");
            assert_eq!(team, None);
        }
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert!(store.get_user("new").await.unwrap().is_none());

    let in_team = store
        .apply_user_batch(vec![put(
            user("new", Some("ann.lee"), &["green", "red"]),
            Expect::Absent,
            vec![team("green"), team("red")],
        )])
        .await;
    match in_team {
        Err(StoreError::NameTaken { name, team }) => {
            assert_eq!(name, "ann.lee");
            assert_eq!(team.as_deref(), Some("red"));
        }
        other => panic!("expected NameTaken, got {other:?}"),
    }
    // Only the scopes asked for are checked.
    store
        .apply_user_batch(vec![put(
            user("new", Some("ann.lee"), &["green", "red"]),
            Expect::Absent,
            vec![team("green")],
        )])
        .await
        .unwrap();
    // Moving into a team where another user holds the name fails.
    let h = stored(store, "holder").await;
    let mut again = h.user.clone();
    again.name = Some("ann lee".into());
    again.teams = vec!["blue".into()];
    let shared = store
        .apply_user_batch(vec![put(
            again.clone(),
            Expect::Version(h.version),
            vec![team("blue")],
        )])
        .await;
    assert!(
        matches!(shared, Err(StoreError::NameTaken { .. })),
        "{shared:?}"
    );
    // A user re-checking a name only it holds passes.
    let solo = user("solo", Some("Unique Name"), &[]);
    store.apply_user_batch(vec![create(solo)]).await.unwrap();
    let s = stored(store, "solo").await;
    store
        .apply_user_batch(vec![put(
            s.user.clone(),
            Expect::Version(s.version),
            vec![NameScope::App],
        )])
        .await
        .unwrap();
    // An inactive holder does not block.
    let mut s = stored(store, "solo").await;
    s.user.deactivated_at = Some(Timestamp::now());
    store
        .apply_user_batch(vec![put(
            s.user.clone(),
            Expect::Version(s.version),
            vec![],
        )])
        .await
        .unwrap();
    store
        .apply_user_batch(vec![put(
            user("solo2", Some("unique-name"), &[]),
            Expect::Absent,
            vec![NameScope::App],
        )])
        .await
        .unwrap();
    // An inactive user being written is never checked (it holds nothing).
    let mut s = stored(store, "solo").await;
    s.user.custom.insert("k".into(), json!(1));
    store
        .apply_user_batch(vec![put(
            s.user.clone(),
            Expect::Version(s.version),
            vec![NameScope::App],
        )])
        .await
        .unwrap();
    // A name with an empty normal form never collides.
    store
        .apply_user_batch(vec![
            put(
                user("e1", Some("!!"), &[]),
                Expect::Absent,
                vec![NameScope::App],
            ),
            put(
                user("e2", Some("..."), &[]),
                Expect::Absent,
                vec![NameScope::App],
            ),
        ])
        .await
        .unwrap();
}

/// Changes are checked in order against the earlier changes of the same batch: two users
/// taking one name in one batch fail, and so the whole batch does.
async fn duplicates_inside_a_batch_fail<S: Store>(store: &S) {
    let batch = store
        .apply_user_batch(vec![
            put(
                user("x1", Some("Twin"), &["red"]),
                Expect::Absent,
                vec![NameScope::App],
            ),
            put(
                user("x2", Some("twin"), &["red"]),
                Expect::Absent,
                vec![NameScope::App],
            ),
        ])
        .await;
    assert!(
        matches!(batch, Err(StoreError::NameTaken { ref name, .. }) if name == "twin"),
        "{batch:?}"
    );
    let batch = store
        .apply_user_batch(vec![
            put(
                user("x1", Some("Twin"), &["red"]),
                Expect::Absent,
                vec![team("red")],
            ),
            put(
                user("x2", Some("twin"), &["red"]),
                Expect::Absent,
                vec![team("red")],
            ),
        ])
        .await;
    assert!(
        matches!(batch, Err(StoreError::NameTaken { team: Some(ref t), .. }) if t == "red"),
        "{batch:?}"
    );
    assert!(store.get_user("x1").await.unwrap().is_none());
    assert!(holders(store, "twin", NameScope::App).await.is_empty());
    // A rename earlier in the batch frees the name for a later change.
    store
        .apply_user_batch(vec![create(user("y1", Some("Spot"), &[]))])
        .await
        .unwrap();
    let y1 = stored(store, "y1").await;
    let mut moved = y1.user.clone();
    moved.name = Some("Elsewhere".into());
    store
        .apply_user_batch(vec![
            put(moved, Expect::Version(y1.version), vec![NameScope::App]),
            put(
                user("y2", Some("spot"), &[]),
                Expect::Absent,
                vec![NameScope::App],
            ),
        ])
        .await
        .unwrap();
    assert_eq!(holders(store, "spot", NameScope::App).await, ["y2"]);
}

/// Recognises the error a failing change must produce.
type ExpectedFailure = fn(&Result<(), StoreError>) -> bool;

/// A batch whose last change fails leaves no trace of the earlier ones: users, versions,
/// name index entries and tombstones are as before.
async fn batches_are_atomic<S: Store>(store: &S) {
    store
        .apply_user_batch(vec![
            create(user("keep", Some("Keep"), &["red"])),
            create(user("erase-me", Some("Erase"), &[])),
        ])
        .await
        .unwrap();
    let keep = stored(store, "keep").await;
    let erase = stored(store, "erase-me").await;
    let mut renamed = keep.user.clone();
    renamed.name = Some("Renamed".into());

    let failures: Vec<(UserChange, ExpectedFailure)> = vec![
        (create(user("keep", None, &[])), |r| {
            matches!(r, Err(StoreError::Conflict(_)))
        }),
        // The name `fresh` took earlier in this same batch.
        (
            put(
                user("late", Some("FRESH"), &[]),
                Expect::Absent,
                vec![NameScope::App],
            ),
            |r| matches!(r, Err(StoreError::NameTaken { .. })),
        ),
    ];
    for (failing, is_expected) in failures {
        let result = store
            .apply_user_batch(vec![
                put(renamed.clone(), Expect::Version(keep.version), vec![]),
                create(user("fresh", Some("Fresh"), &["red"])),
                UserChange::Erase {
                    id: "erase-me".into(),
                    expect: Expect::Version(erase.version),
                    deleted_at: Timestamp::now(),
                },
                failing,
            ])
            .await;
        assert!(is_expected(&result), "{result:?}");
        assert_eq!(stored(store, "keep").await, keep);
        assert_eq!(stored(store, "erase-me").await, erase);
        assert!(store.get_user("fresh").await.unwrap().is_none());
        assert!(store.get_user("late").await.unwrap().is_none());
        assert!(!store.is_tombstoned("erase-me").await.unwrap());
        assert_eq!(holders(store, "keep", NameScope::App).await, ["keep"]);
        assert_eq!(holders(store, "keep", team("red")).await, ["keep"]);
        assert!(holders(store, "renamed", NameScope::App).await.is_empty());
        assert!(holders(store, "fresh", NameScope::App).await.is_empty());
        assert!(holders(store, "fresh", team("red")).await.is_empty());
        assert_eq!(holders(store, "erase", NameScope::App).await, ["erase-me"]);
    }
    // A tombstoned id in the batch fails it too.
    store
        .apply_user_batch(vec![UserChange::Erase {
            id: "erase-me".into(),
            expect: Expect::Version(erase.version),
            deleted_at: Timestamp::now(),
        }])
        .await
        .unwrap();
    let result = store
        .apply_user_batch(vec![
            create(user("fresh", None, &[])),
            create(user("erase-me", None, &[])),
        ])
        .await;
    assert!(
        matches!(result, Err(StoreError::Tombstoned(_))),
        "{result:?}"
    );
    assert!(store.get_user("fresh").await.unwrap().is_none());
}

/// Writers racing for one name in separate concurrent batches: exactly one wins.
async fn racing_name_claims_have_one_winner<S: Store>(store: &S) {
    let claims = (0..20).map(|i| {
        store.apply_user_batch(vec![put(
            user(&format!("racer{i}"), Some("The Prize"), &["red"]),
            Expect::Absent,
            vec![NameScope::App],
        )])
    });
    let results = futures_util::future::join_all(claims).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for r in &results {
        assert!(
            matches!(r, Ok(()) | Err(StoreError::NameTaken { .. })),
            "{r:?}"
        );
    }
    assert_eq!(holders(store, "the prize", NameScope::App).await.len(), 1);
    assert_eq!(holders(store, "the prize", team("red")).await.len(), 1);
}

/// Queries never return soft-deleted users, deactivated ones only when asked, and page.
async fn queries_see_the_right_users<S: Store>(store: &S) {
    let mut deleted = user("q-deleted", None, &[]);
    deleted.deleted_at = Some(Timestamp::now());
    let mut inactive = user("q-inactive", None, &[]);
    inactive.deactivated_at = Some(Timestamp::now());
    store
        .apply_user_batch(vec![
            create(user("q-a", None, &[])),
            create(user("q-b", None, &[])),
            create(deleted),
            create(inactive),
        ])
        .await
        .unwrap();
    assert_eq!(ids(store, &all_users()).await, ["q-a", "q-b", "q-inactive"]);
    let active = UserQuery::parse(&json!({"sort": [{"field": "id", "direction": -1}]})).unwrap();
    assert_eq!(ids(store, &active).await, ["q-b", "q-a"]);
    let page = UserQuery::parse(
        &json!({"limit": 1, "offset": 1, "include_deactivated_users": true,
                                        "sort": [{"field": "id", "direction": 1}]}),
    )
    .unwrap();
    assert_eq!(ids(store, &page).await, ["q-b"]);
}

/// `touch_last_active` shows in the user read back, without bumping its version.
async fn last_active_is_recorded<S: Store>(store: &S) {
    store
        .apply_user_batch(vec![create(user("la", None, &[]))])
        .await
        .unwrap();
    let before = stored(store, "la").await;
    let at = Timestamp::parse("2030-05-05T05:05:05.123456Z").unwrap();
    store.touch_last_active("la", at).await.unwrap();
    let after = stored(store, "la").await;
    assert_eq!(after.user.last_active, Some(at));
    assert_eq!(after.version, before.version);
    // A conditional write at the same version still succeeds.
    store
        .apply_user_batch(vec![put(
            after.user.clone(),
            Expect::Version(before.version),
            vec![],
        )])
        .await
        .unwrap();
}

/// Guests hold no names: a guest's name is checked when given, but it reserves nothing, so
/// a later user may take it; a guest taken over by the back end holds its name from then on.
async fn guests_hold_no_names<S: Store>(store: &S) {
    let mut guest = user("g1", Some("Support"), &["red"]);
    guest.role = "guest".into();
    store
        .apply_user_batch(vec![put(
            guest.clone(),
            Expect::Absent,
            vec![NameScope::App],
        )])
        .await
        .unwrap();
    assert!(holders(store, "support", NameScope::App).await.is_empty());
    assert!(holders(store, "support", team("red")).await.is_empty());
    let real = user("u1", Some("support"), &["red"]);
    store
        .apply_user_batch(vec![put(
            real,
            Expect::Absent,
            vec![NameScope::App, team("red")],
        )])
        .await
        .unwrap();
    assert_eq!(holders(store, "support", NameScope::App).await, ["u1"]);
    // A guest cannot take a name a user holds.
    let mut second = user("g2", Some("SUPPORT"), &[]);
    second.role = "guest".into();
    let taken = store
        .apply_user_batch(vec![put(second, Expect::Absent, vec![NameScope::App])])
        .await;
    assert!(
        matches!(taken, Err(StoreError::NameTaken { .. })),
        "{taken:?}"
    );
    // Taken over (role user), the former guest holds its new name.
    let v = stored(store, "g1").await.version;
    let mut owned = guest;
    owned.role = "user".into();
    owned.name = Some("Helpdesk".into());
    store
        .apply_user_batch(vec![put(owned, Expect::Version(v), vec![NameScope::App])])
        .await
        .unwrap();
    assert_eq!(holders(store, "helpdesk", NameScope::App).await, ["g1"]);
}

/// Settings, tasks and exports read back exactly as written; absent ones are `None`/empty.
/// Settings saves are conditional on the version read: a stale one is refused.
async fn settings_tasks_exports_roundtrip<S: Store>(store: &S) {
    let empty = store.app_settings().await.unwrap();
    assert!(empty.settings.is_empty());
    assert_eq!(empty.version, 0);
    let settings = json!({"enforce_unique_usernames": "team", "event_hooks": [{"z": 1, "a": 2}],
                          "custom": {"nested": [1, 2]}});
    let settings = settings.as_object().unwrap().clone();
    let v1 = store.save_app_settings(&settings, 0).await.unwrap();
    assert!(v1 > 0);
    let read = store.app_settings().await.unwrap();
    assert_eq!((read.version, &read.settings), (v1, &settings));
    // Replaced, not merged, at this level.
    let mut smaller = Map::new();
    smaller.insert("only".into(), Value::Bool(true));
    let v2 = store.save_app_settings(&smaller, v1).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(store.app_settings().await.unwrap().settings, smaller);
    // A writer still holding version v1 lost the race: refused, nothing overwritten.
    let stale = store.save_app_settings(&settings, v1).await;
    assert!(
        matches!(stale, Err(StoreError::SettingsChanged)),
        "{stale:?}"
    );
    assert_eq!(
        store.app_settings().await.unwrap(),
        StoredSettings {
            version: v2,
            settings: smaller
        }
    );

    assert_eq!(store.get_task("nope").await.unwrap(), None);
    let mut t = task("4f0e2a52-7a5b-4c1b-9f0e-2a527a5b4c1b");
    t.status = "pending".into();
    store.put_task(&t).await.unwrap();
    assert_eq!(store.get_task(&t.task_id).await.unwrap(), Some(t.clone()));
    t.status = "failed".into();
    t.error = Some(json!({"message": "boom"}));
    store.put_task(&t).await.unwrap();
    assert_eq!(store.get_task(&t.task_id).await.unwrap(), Some(t));

    assert_eq!(store.get_export("nope").await.unwrap(), None);
    let doc = json!({"users": [{"user": {"id": "alice"}, "messages": [], "reactions": []}]});
    store.put_export("e1", &doc).await.unwrap();
    assert_eq!(store.get_export("e1").await.unwrap(), Some(doc));
}

/// Everything written is there after the store is closed and opened again.
async fn everything_survives_reopening<S, F, Fut>(open: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let written = {
        let store = open().await;
        store
            .apply_user_batch(vec![
                create(user("p1", Some("Persisted"), &["red"])),
                create(user("p2", None, &[])),
            ])
            .await
            .unwrap();
        let p2 = stored(&store, "p2").await;
        store
            .apply_user_batch(vec![UserChange::Erase {
                id: "p2".into(),
                expect: Expect::Version(p2.version),
                deleted_at: Timestamp::now(),
            }])
            .await
            .unwrap();
        let mut settings = Map::new();
        settings.insert("enforce_unique_usernames".into(), json!("app"));
        store.save_app_settings(&settings, 0).await.unwrap();
        store.put_task(&task("t-1")).await.unwrap();
        store
            .put_export("x-1", &json!({"users": []}))
            .await
            .unwrap();
        store.flush().await.unwrap();
        (stored(&store, "p1").await, settings)
    };
    let store = open().await;
    assert_eq!(stored(&store, "p1").await, written.0);
    assert!(store.get_user("p2").await.unwrap().is_none());
    assert!(store.is_tombstoned("p2").await.unwrap());
    let again = store
        .apply_user_batch(vec![create(user("p2", None, &[]))])
        .await;
    assert!(matches!(again, Err(StoreError::Tombstoned(_))), "{again:?}");
    assert_eq!(holders(&store, "persisted", NameScope::App).await, ["p1"]);
    assert_eq!(holders(&store, "persisted", team("red")).await, ["p1"]);
    assert_eq!(store.app_settings().await.unwrap().settings, written.1);
    assert_eq!(
        store.get_task("t-1").await.unwrap(),
        Some(task_like("t-1", &store).await)
    );
    assert_eq!(
        store.get_export("x-1").await.unwrap(),
        Some(json!({"users": []}))
    );
}

/// The stored task `id`, checked to have the shape `task()` writes (timestamps differ).
async fn task_like<S: Store>(id: &str, store: &S) -> Task {
    let t = store.get_task(id).await.unwrap().expect("task stored");
    assert_eq!(t.status, "completed");
    assert_eq!(t.result, task(id).result);
    t
}

/// A user created at a given instant (seconds past a fixed epoch), for ties and order.
fn user_at(id: &str, secs: i64, name: Option<&str>, teams: &[&str]) -> User {
    let mut u = user(id, name, teams);
    let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    u.created_at = Timestamp(at.0 + time::Duration::seconds(secs));
    u.updated_at = u.created_at;
    u
}

fn query(payload: Value) -> UserQuery {
    UserQuery::parse(&payload).unwrap()
}

/// Without `sort`, newest first and ties by id descending; pages follow on from each other;
/// an explicit `created_at` sort breaks ties by id ascending.
async fn default_order_and_paging<S: Store>(store: &S) {
    let mut batch = Vec::new();
    for (i, id) in ["d-a", "d-b", "d-c", "d-d", "d-e"].iter().enumerate() {
        // d-b, d-c and d-d share an instant.
        let secs = match i {
            0 => 1,
            1..=3 => 2,
            _ => 3,
        };
        batch.push(create(user_at(id, secs, None, &[])));
    }
    store.apply_user_batch(batch).await.unwrap();
    let newest = ["d-e", "d-d", "d-c", "d-b", "d-a"];
    assert_eq!(ids(store, &query(json!({}))).await, newest);
    let mut paged = Vec::new();
    for offset in 0..5 {
        let page = query(json!({"limit": 1, "offset": offset}));
        paged.extend(ids(store, &page).await);
    }
    assert_eq!(paged, newest);
    let two = query(json!({"limit": 2, "offset": 2}));
    assert_eq!(ids(store, &two).await, ["d-c", "d-b"]);
    let past = query(json!({"limit": 2, "offset": 5}));
    assert!(ids(store, &past).await.is_empty());
    let explicit = query(json!({"sort": [{"field": "created_at", "direction": -1}]}));
    assert_eq!(
        ids(store, &explicit).await,
        ["d-e", "d-b", "d-c", "d-d", "d-a"]
    );
    let oldest = query(json!({"sort": [{"field": "created_at", "direction": 1},
                                       {"field": "id", "direction": -1}]}));
    assert_eq!(
        ids(store, &oldest).await,
        ["d-a", "d-d", "d-c", "d-b", "d-e"]
    );
}

/// Lookups by id and `$in` of ids, some of them missing or deleted, name autocomplete and
/// equality, team filters and `last_active` after an activity record.
async fn indexed_filters<S: Store>(store: &S) {
    let mut gone = user_at("f-gone", 5, Some("Alice Gone"), &["red"]);
    gone.deleted_at = Some(Timestamp::now());
    let mut off = user_at("f-off", 6, Some("Alice Off"), &["red"]);
    off.deactivated_at = Some(Timestamp::now());
    store
        .apply_user_batch(vec![
            create(user_at("f-alice", 1, Some("Alice Smith"), &["red", "blue"])),
            create(user_at("f-bob", 2, Some("bob SMITHERS"), &["blue"])),
            create(user_at("f-carl", 3, Some("Çarl"), &[])),
            create(user_at("f-dora", 4, Some("  Dora-Explorer"), &["green"])),
            create(gone),
            create(off),
        ])
        .await
        .unwrap();
    let find = |f: Value| query(json!({ "filter_conditions": f }));
    assert_eq!(ids(store, &find(json!({"id": "f-bob"}))).await, ["f-bob"]);
    assert!(ids(store, &find(json!({"id": "f-nobody"})))
        .await
        .is_empty());
    let some = find(json!({"id": {"$in": ["f-carl", "f-nobody", "f-gone", "f-off", "f-alice"]}}));
    assert_eq!(ids(store, &some).await, ["f-carl", "f-alice"]);
    let with_off = query(
        json!({"filter_conditions": {"id": {"$in": ["f-off", "f-nobody"]}},
                                "include_deactivated_users": true}),
    );
    assert_eq!(ids(store, &with_off).await, ["f-off"]);
    let smi = find(json!({"name": {"$autocomplete": "smi"}}));
    assert_eq!(ids(store, &smi).await, ["f-bob", "f-alice"]);
    let ali = find(json!({"name": {"$autocomplete": "ALI"}}));
    assert_eq!(ids(store, &ali).await, ["f-alice"]);
    let cedilla = find(json!({"name": {"$autocomplete": "ç"}}));
    assert_eq!(ids(store, &cedilla).await, ["f-carl"]);
    let explorer = find(json!({"name": {"$autocomplete": "expl"}}));
    assert_eq!(ids(store, &explorer).await, ["f-dora"]);
    let leading = find(json!({"name": {"$autocomplete": "  do"}}));
    assert_eq!(ids(store, &leading).await, ["f-dora"]);
    let exact = find(json!({"name": "bob SMITHERS"}));
    assert_eq!(ids(store, &exact).await, ["f-bob"]);
    assert!(ids(store, &find(json!({"name": "Bob Smithers"})))
        .await
        .is_empty());
    let blue = find(json!({"teams": {"$contains": "blue"}}));
    assert_eq!(ids(store, &blue).await, ["f-bob", "f-alice"]);
    let red = find(json!({"teams": "red"}));
    assert_eq!(ids(store, &red).await, ["f-alice"]);
    let either = find(json!({"teams": {"$in": ["green", "red"]}}));
    assert_eq!(ids(store, &either).await, ["f-dora", "f-alice"]);
    let both = find(json!({"$and": [{"teams": "red"}, {"teams": {"$contains": "blue"}}]}));
    assert_eq!(ids(store, &both).await, ["f-alice"]);
    let or = find(json!({"$or": [{"teams": "green"}, {"id": "f-carl"}]}));
    assert_eq!(ids(store, &or).await, ["f-dora", "f-carl"]);
    let not_blue = find(json!({"$nor": [{"teams": "blue"}]}));
    assert_eq!(ids(store, &not_blue).await, ["f-dora", "f-carl"]);
    let role = find(json!({"role": "user", "banned": false, "teams": "blue"}));
    assert_eq!(ids(store, &role).await, ["f-bob", "f-alice"]);

    let at = Timestamp::parse("2030-05-05T05:05:05.123456Z").unwrap();
    store.touch_last_active("f-carl", at).await.unwrap();
    let active = find(json!({"last_active": {"$gte": "2030-05-05T05:05:05.123456Z"}}));
    assert_eq!(ids(store, &active).await, ["f-carl"]);
    let later = Timestamp::parse("2030-06-01T00:00:00Z").unwrap();
    store.touch_last_active("f-carl", later).await.unwrap();
    let exactly = find(json!({"last_active": "2030-05-05T05:05:05.123456Z"}));
    assert!(ids(store, &exactly).await.is_empty());
    let since = find(json!({"last_active": {"$gt": "2030-05-30T00:00:00+02:00"}}));
    assert_eq!(ids(store, &since).await, ["f-carl"]);
    let by_activity = query(
        json!({"filter_conditions": {"last_active": {"$exists": true}},
                                   "sort": [{"field": "last_active", "direction": -1}]}),
    );
    assert_eq!(ids(store, &by_activity).await, ["f-carl"]);
    let created = find(json!({"created_at": {"$gt": "2026-01-01T00:00:02Z",
                                              "$lte": "2026-01-01T00:00:04.000000Z"}}));
    assert_eq!(ids(store, &created).await, ["f-dora", "f-carl"]);
}

/// Random users, activity records, updates and deletes, then random queries: every answer
/// is the one sorting and paging all the stored users in memory gives (a full scan).
async fn queries_agree_with_a_full_scan<S: Store>(store: &S) {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(12);
    const NAMES: [&str; 8] = [
        "Guest",
        "guest",
        "Alice Smith",
        "Bob",
        "bob smithers",
        "Zoë Ängström",
        "",
        "Al",
    ];
    const TEAMS: [&str; 4] = ["red", "blue", "green", "a\0b"];
    const ROLES: [&str; 3] = ["user", "admin", "guest"];
    let pick = |rng: &mut StdRng, list: &[&'static str]| list[rng.random_range(0..list.len())];
    let mut all_ids = Vec::new();
    for batch in 0..6 {
        let mut changes = Vec::new();
        for i in 0..50 {
            let id = format!("r{batch:02}-{i:02}");
            let secs = rng.random_range(0..40);
            let name = (rng.random_bool(0.8)).then(|| pick(&mut rng, &NAMES));
            let mut u = user_at(&id, secs, name, &[]);
            u.teams = TEAMS
                .iter()
                .filter(|_| rng.random_bool(0.3))
                .map(|t| (*t).to_owned())
                .collect();
            u.role = pick(&mut rng, &ROLES).to_owned();
            if rng.random_bool(0.1) {
                u.ban = Some(Ban {
                    created_at: Timestamp::now(),
                    expires: None,
                    reason: None,
                    shadow: rng.random_bool(0.3),
                    banned_by_id: None,
                });
            }
            u.updated_at =
                Timestamp(u.created_at.0 + time::Duration::seconds(rng.random_range(0..9)));
            if rng.random_bool(0.3) {
                u.last_active = Some(Timestamp(u.created_at.0 + time::Duration::seconds(5)));
            }
            if rng.random_bool(0.1) {
                u.deactivated_at = Some(u.updated_at);
            }
            if rng.random_bool(0.05) {
                u.deleted_at = Some(u.updated_at);
            }
            if rng.random_bool(0.5) {
                u.custom
                    .insert("level".into(), json!(rng.random_range(0..5)));
            }
            all_ids.push(id);
            changes.push(create(u));
        }
        store.apply_user_batch(changes).await.unwrap();
    }
    // Activity records, renames and moves between teams, erasures.
    for id in all_ids.iter().step_by(3) {
        let at = Timestamp::parse("2026-01-01T00:00:30Z").unwrap();
        let at = Timestamp(at.0 + time::Duration::seconds(rng.random_range(0..20)));
        store.touch_last_active(id, at).await.unwrap();
    }
    for id in all_ids.iter().step_by(7) {
        let mut s = stored(store, id).await;
        if rng.random_bool(0.2) {
            let erase = UserChange::Erase {
                id: id.clone(),
                expect: Expect::Version(s.version),
                deleted_at: Timestamp::now(),
            };
            store.apply_user_batch(vec![erase]).await.unwrap();
            continue;
        }
        s.user.name = Some(pick(&mut rng, &NAMES).to_owned());
        s.user.teams = vec![pick(&mut rng, &TEAMS).to_owned()];
        s.user.deactivated_at = None;
        let change = put(s.user, Expect::Version(s.version), vec![]);
        store.apply_user_batch(vec![change]).await.unwrap();
    }
    let mut users = Vec::new();
    for id in &all_ids {
        if let Some(s) = store.get_user(id).await.unwrap() {
            users.push(s.user);
        }
    }

    let time = |rng: &mut StdRng| {
        let at = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        Timestamp(at.0 + time::Duration::seconds(rng.random_range(0..50))).to_wire()
    };
    let condition = |rng: &mut StdRng| -> Value {
        match rng.random_range(0..16) {
            0 => json!({"id": all_ids[rng.random_range(0..all_ids.len())]}),
            1 => {
                let some: Vec<_> = (0..rng.random_range(0..12))
                    .map(|i| {
                        if i % 4 == 3 {
                            "r-missing".to_owned()
                        } else {
                            all_ids[rng.random_range(0..all_ids.len())].clone()
                        }
                    })
                    .collect();
                json!({"id": {"$in": some}})
            }
            2 => json!({"teams": {"$contains": pick(rng, &TEAMS)}}),
            3 => json!({"teams": {"$in": [pick(rng, &TEAMS), pick(rng, &TEAMS)]}}),
            4 => json!({"role": pick(rng, &ROLES)}),
            5 => json!({"banned": rng.random_bool(0.5)}),
            6 => json!({"name": pick(rng, &NAMES)}),
            7 => {
                let prefixes = ["g", "GU", "smi", "al", "ä", "zo", "bob s", ""];
                json!({"name": {"$autocomplete": pick(rng, &prefixes)}})
            }
            8 => {
                let field = pick(
                    rng,
                    &["created_at", "updated_at", "last_active", "deactivated_at"],
                );
                let op = pick(rng, &["$gt", "$gte", "$lt", "$lte", "$eq"]);
                json!({ field: { op: time(rng) } })
            }
            9 => json!({"deactivated_at": {"$exists": rng.random_bool(0.5)}}),
            10 => json!({"level": {"$gte": rng.random_range(0..5)}}),
            11 => json!({"role": {"$ne": "user"}}),
            12 => json!({"teams": {"$nin": [pick(rng, &TEAMS)]}}),
            13 => json!({"last_active": {"$exists": true}}),
            14 => json!({"deleted_at": {"$exists": true}}),
            _ => json!({"created_at": {"$gte": time(rng)}, "role": pick(rng, &ROLES)}),
        }
    };
    for _ in 0..300 {
        let filter = match rng.random_range(0..5) {
            0 => json!({}),
            1 | 2 => condition(&mut rng),
            3 => json!({"$and": [condition(&mut rng), condition(&mut rng)]}),
            _ => json!({"$or": [condition(&mut rng), condition(&mut rng)]}),
        };
        let sorts = [
            json!(null),
            json!([{"field": "created_at", "direction": -1}]),
            json!([{"field": "created_at", "direction": 1}]),
            json!([{"field": "created_at", "direction": 1}, {"field": "id", "direction": -1}]),
            json!([{"field": "last_active", "direction": -1}]),
            json!([{"field": "name", "direction": 1}, {"field": "level", "direction": -1}]),
            json!([{"field": "id", "direction": 1}]),
        ];
        let offset = [0, 0, 3, 17, 60][rng.random_range(0..5)];
        let payload = json!({
            "filter_conditions": filter,
            "sort": sorts[rng.random_range(0..sorts.len())],
            "limit": rng.random_range(1..40),
            "offset": offset,
            "include_deactivated_users": rng.random_bool(0.5),
        });
        let q = query(payload.clone());
        let expected: Vec<String> = q
            .sort_and_page(users.clone())
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids(store, &q).await, expected, "{payload}");
    }
}

// ---- backends ---------------------------------------------------------------------------

/// Runs every suite function against one backend: `$setup` is an expression evaluated once
/// per test (in an async context) giving what the store lives in — a temporary directory, a
/// fresh database — kept until the test ends; `$open` is an async expression, evaluated where
/// `$env` is a reference to it, that opens the store there (twice in the reopening test).
macro_rules! backend {
    ($backend:ident, setup: $setup:expr, |$env:ident| $open:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let env = $setup;
                        let $env = &env;
                        let store = $open.await;
                        super::$name(&store).await;
                        drop(store);
                    }
                };
            }

            case!(create_and_expect_semantics);
            case!(users_roundtrip);
            case!(tombstones_are_forever);
            case!(name_index_is_maintained);
            case!(name_checks_are_enforced);
            case!(duplicates_inside_a_batch_fail);
            case!(batches_are_atomic);
            case!(racing_name_claims_have_one_winner);
            case!(queries_see_the_right_users);
            case!(last_active_is_recorded);
            case!(default_order_and_paging);
            case!(indexed_filters);
            case!(queries_agree_with_a_full_scan);
            case!(guests_hold_no_names);
            case!(settings_tasks_exports_roundtrip);

            #[tokio::test]
            async fn everything_survives_reopening() {
                let env = $setup;
                let $env = &env;
                super::everything_survives_reopening(|| async move { $open.await }).await;
            }
        }
    };
}

async fn open_sled(dir: std::path::PathBuf) -> SledStore {
    // A reopen follows a drop at once: the old instance must have released the directory.
    SledStore::open(&dir.join("db")).expect("sled opens (a dropped store releases its data dir)")
}

backend!(sled, setup: tempfile::tempdir().unwrap(), |tmp| open_sled(tmp.path().to_owned()));

async fn open_sled_small_plans(dir: std::path::PathBuf) -> SledStore {
    // Thresholds a few users exceed, so every query takes the planner's other paths:
    // conditions too broad to serve, and walks over many candidates.
    let limits = chat_gateway::store::sled_store::PlannerLimits {
        max_candidates: 12,
        walk_above: 3,
    };
    SledStore::open_with_limits(&dir.join("db"), limits).expect("sled opens")
}

backend!(sled_small_plans, setup: tempfile::tempdir().unwrap(), |tmp| {
    open_sled_small_plans(tmp.path().to_owned())
});

async fn open_guarded(dir: std::path::PathBuf) -> GuardedStore {
    let db = dir.join("db");
    let opener: chat_gateway::store::guarded::Opener =
        std::sync::Arc::new(move || Ok(std::sync::Arc::new(SledStore::open(&db)?)));
    // The smallest real reserve: the suite checks the guard passes everything through.
    let space = SpaceGuard::new(&dir, 1, std::time::Duration::from_millis(250));
    let ballast = chat_gateway::store::Ballast::new(&dir, 0);
    GuardedStore::open(opener, space, ballast).expect("guarded sled opens")
}

backend!(guarded_sled, setup: tempfile::tempdir().unwrap(), |tmp| open_guarded(
    tmp.path().to_owned()
));

async fn open_postgres(db: &pg::TestDb) -> PostgresStore {
    PostgresStore::open(&PgOptions::new(db.url()))
        .await
        .expect("the PostgreSQL store opens")
}

backend!(postgres, setup: pg::TestDb::create().await, |db| open_postgres(db));

/// What only the PostgreSQL store has: a schema shared by nodes that start together, and a
/// server that can be away.
mod postgres_only {
    use super::*;
    use std::time::{Duration, Instant};

    async fn raw(db: &pg::TestDb) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// Eight nodes opening one empty database at once all succeed, and the schema is
    /// created once (a second creation would fail on the existing tables).
    #[tokio::test]
    async fn nodes_starting_together_migrate_once() {
        let db = pg::TestDb::create().await;
        let options = PgOptions::new(db.url());
        let opens = (0..8).map(|_| PostgresStore::open(&options));
        for opened in futures_util::future::join_all(opens).await {
            opened.expect("every node opens");
        }
        let version: i64 = raw(&db)
            .await
            .query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            version,
            chat_gateway::store::postgres::schema::SCHEMA_VERSION
        );
    }

    /// A database written by a newer build is refused with a clear error, untouched.
    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let db = pg::TestDb::create().await;
        drop(
            PostgresStore::open(&PgOptions::new(db.url()))
                .await
                .unwrap(),
        );
        raw(&db)
            .await
            .execute(
                "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
                &[],
            )
            .await
            .unwrap();
        let refused = PostgresStore::open(&PgOptions::new(db.url())).await;
        match refused {
            Err(StoreError::Backend(why)) => {
                assert!(why.contains("schema version 99"), "{why}");
                assert!(why.contains("newer"), "{why}");
            }
            Err(other) => panic!("expected a schema error, got {other:?}"),
            Ok(_) => panic!("a newer schema must be refused"),
        }
    }

    /// A server that accepts connections but never answers: opening fails with
    /// `Unavailable` within the deadline instead of hanging.
    #[tokio::test]
    async fn a_silent_server_is_an_error_not_a_hang() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        });
        let mut options = PgOptions::new(&format!("postgres://postgres@127.0.0.1:{port}/x"));
        options.connect_timeout = Duration::from_millis(300);
        options.call_timeout = Duration::from_millis(300);
        let start = Instant::now();
        let opened = PostgresStore::open(&options).await;
        assert!(
            matches!(opened, Err(StoreError::Unavailable(_))),
            "{:?}",
            opened.err()
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    /// The server ending the store's connections (a restart, a failover): calls fail with
    /// an error at worst, and the store serves again on new connections.
    #[tokio::test]
    async fn lost_connections_are_errors_then_replaced() {
        let db = pg::TestDb::create().await;
        let store = PostgresStore::open(&PgOptions::new(db.url()))
            .await
            .unwrap();
        store
            .apply_user_batch(vec![create(user("kept", None, &[]))])
            .await
            .unwrap();
        raw(&db)
            .await
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        let mut answered = false;
        for _ in 0..3 {
            match store.get_user("kept").await {
                Ok(found) => {
                    assert!(found.is_some());
                    answered = true;
                    break;
                }
                Err(e) => assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}"),
            }
        }
        assert!(
            answered,
            "the store serves again after its connections were ended"
        );
    }
}
