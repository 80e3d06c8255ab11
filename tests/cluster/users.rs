//! Users across nodes (issue 10, behaviour 1): a write on any node is what every node reads,
//! a batch is all or nothing whichever node looks, and a deleted id stays deleted whichever
//! node is asked to bring it back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, Api};
use crate::harness::Cluster;
use crate::ws::{self, uid};
use crate::{fetch, ids_among, partial, query_users, upsert, upsert_ok};

/// A user as every node should show it, presence left out: `online`, and `last_active`,
/// which a disconnect sets a moment after the socket closes (presence.rs covers both).
fn stored_form(mut user: Value) -> Value {
    if let Some(m) = user.as_object_mut() {
        m.remove("online");
        m.remove("last_active");
    }
    user
}

/// Asserts that every node shows `id` the same way; returns that form (`None`: not visible).
async fn same_everywhere(cluster: &Cluster, id: &str) -> Option<Value> {
    let first = fetch(cluster.node(0), id).await.map(stored_form);
    for node in &cluster.nodes()[1..] {
        let here = fetch(node, id).await.map(stored_form);
        assert_eq!(
            here, first,
            "node {} disagrees with node 0 about {id}",
            node.index
        );
    }
    first
}

#[tokio::test]
async fn users_written_on_any_node_are_read_on_every_node() {
    let cluster = Cluster::start(3).await;
    let ids: Vec<String> = (0..3).map(|i| uid(&format!("from{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        let written = upsert_ok(
            cluster.node(i),
            &[json!({"id": id, "name": format!("User {i}"), "teams": ["red"], "written_on": i})],
        )
        .await;
        assert_eq!(written[id.as_str()]["written_on"], i);
    }
    for node in cluster.nodes() {
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(ids_among(node, &ids).await, expected, "node {}", node.index);
    }
    for (i, id) in ids.iter().enumerate() {
        let user = same_everywhere(&cluster, id).await.expect("visible");
        assert_eq!(user["written_on"], i);
        assert_eq!(user["name"], format!("User {i}"));
        assert_eq!(user["teams"], json!(["red"]));
    }

    // A partial update on node 1 of a user node 0 wrote, read on node 2.
    let (status, _, body) = partial(
        cluster.node(1),
        json!([{"id": ids[0], "set": {"mood": "sunny", "prefs.theme": "dark"}, "unset": ["written_on"]}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let user = same_everywhere(&cluster, &ids[0]).await.expect("visible");
    assert_eq!(user["mood"], "sunny");
    assert_eq!(user["prefs"], json!({"theme": "dark"}));
    assert_eq!(user.get("written_on"), None);

    // A connect creates and merges users too: created through node 2's public listener,
    // read on node 0; and a user node 2 wrote connects on node 0 with its stored fields.
    let fresh = uid("connected");
    let (sock, first) = ws::connect_user(
        cluster.node(2),
        &fresh,
        json!({"id": fresh, "name": "Fresh", "color": "teal"}),
    )
    .await;
    assert_eq!(first["me"]["color"], "teal");
    drop(sock);
    let user = same_everywhere(&cluster, &fresh).await.expect("visible");
    assert_eq!(user["name"], "Fresh");
    assert_eq!(user["color"], "teal");
    let (sock, first) = cluster.node(0).connect(&ids[2]).await;
    assert_eq!(first["me"]["written_on"], 2, "{first}");
    assert_eq!(first["me"]["name"], "User 2");
    drop(sock);

    // Deactivate on node 0, seen on node 2; reactivate on node 1, seen on node 0.
    cluster
        .node(0)
        .admin_ok(
            Method::POST,
            &format!("/users/{}/deactivate", ids[1]),
            Some(json!({})),
        )
        .await;
    let user = same_everywhere(&cluster, &ids[1]).await.expect("visible");
    assert!(user["deactivated_at"].is_string(), "{user}");
    let token = cluster.node(2).user_token(&ids[1]);
    let url = ws::connect_url(cluster.node(2), &ids[1], json!({}), &token, "jwt");
    ws::expect_refusal(&url, 17).await;
    cluster
        .node(1)
        .admin_ok(
            Method::POST,
            &format!("/users/{}/reactivate", ids[1]),
            Some(json!({})),
        )
        .await;
    let user = same_everywhere(&cluster, &ids[1]).await.expect("visible");
    assert_eq!(user.get("deactivated_at"), None);

    // Soft delete on node 2 hides the user on every node; restore on node 1 brings it back.
    cluster
        .node(2)
        .admin_ok(Method::DELETE, &format!("/users/{}", ids[2]), None)
        .await;
    assert_eq!(same_everywhere(&cluster, &ids[2]).await, None);
    cluster
        .node(1)
        .admin_ok(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": [ids[2]]})),
        )
        .await;
    let user = same_everywhere(&cluster, &ids[2]).await.expect("restored");
    assert_eq!(user["written_on"], 2);

    // Written through node 2's admin WebSocket, read through node 0's REST.
    let by_socket = uid("socket");
    let mut admin = cluster.node(2).admin_socket().await;
    ws::send(
        &mut admin,
        json!({"id": "1", "op": "upsertUsers", "body": {"users": {by_socket.clone(): {"id": by_socket, "via": "ws"}}}}),
    )
    .await;
    match ws::next(&mut admin, Duration::from_secs(10)).await {
        ws::Next::Frame(f) => assert!(f["result"]["users"].is_object(), "{f}"),
        other => panic!("upsertUsers over the admin socket: {other:?}"),
    }
    let user = same_everywhere(&cluster, &by_socket)
        .await
        .expect("visible");
    assert_eq!(user["via"], "ws");

    // A guest made on node 0 is a user on node 1.
    let guest = uid("guest");
    cluster
        .node(0)
        .admin_ok(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": guest, "name": "Visitor"}})),
        )
        .await;
    let user = same_everywhere(&cluster, &guest).await.expect("visible");
    assert_eq!(user["role"], "guest");
}

#[tokio::test]
async fn a_refused_batch_leaves_nothing_on_any_node() {
    let cluster = Cluster::start(3).await;
    let (keep, fresh, gone) = (uid("keep"), uid("fresh"), uid("gone"));
    upsert_ok(
        cluster.node(0),
        &[json!({"id": keep, "name": "Before"}), json!({"id": gone})],
    )
    .await;
    cluster
        .node(0)
        .admin_ok(
            Method::DELETE,
            &format!("/users/{gone}?hard_delete=true"),
            None,
        )
        .await;
    // Node 1 sends a batch whose last user was erased through node 0.
    let reply = upsert(
        cluster.node(1),
        &[
            json!({"id": keep, "name": "After"}),
            json!({"id": fresh}),
            json!({"id": gone}),
        ],
    )
    .await;
    assert_error(&reply, 404, 16, None);
    // The same as a partial update through node 2.
    let reply = partial(
        cluster.node(2),
        json!([{"id": keep, "set": {"name": "After"}}, {"id": gone, "set": {"x": 1}}]),
    )
    .await;
    assert_error(&reply, 404, 16, None);
    for node in cluster.nodes() {
        assert_eq!(
            fetch(node, &keep).await.expect("kept")["name"],
            "Before",
            "node {}",
            node.index
        );
        assert_eq!(fetch(node, &fresh).await, None, "node {}", node.index);
    }
}

/// Three writers, one per node, replace the same ten users again and again; every third
/// batch of each also names an erased id and must be refused whole. Readers on every node
/// query the ten users meanwhile: each answer must show one batch entirely (one writer, one
/// round) and never a refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batches_are_seen_whole_on_every_node() {
    const USERS: usize = 10;
    const ROUNDS: usize = 20;
    let cluster = Cluster::start(3).await;
    let ids: Vec<String> = (0..USERS).map(|i| format!("{}-{i:02}", uid("b"))).collect();
    let gone = uid("gone");
    let first: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "writer": "init", "round": 0}))
        .collect();
    upsert_ok(cluster.node(0), &first).await;
    upsert_ok(cluster.node(0), &[json!({"id": gone})]).await;
    cluster
        .node(0)
        .admin_ok(
            Method::DELETE,
            &format!("/users/{gone}?hard_delete=true"),
            None,
        )
        .await;

    let refused: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..cluster.len() {
        // Tasks get the nodes' clients, not the cluster: it stays with the test, which
        // prints the nodes' logs if it fails.
        let (api, ids, refused, done) = (
            Api::clone(cluster.node(r)),
            ids.clone(),
            refused.clone(),
            done.clone(),
        );
        readers.push(tokio::spawn(async move {
            let node = &api;
            let payload = json!({"filter_conditions": {"id": {"$in": ids}}, "limit": 100});
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                let users = query_users(node, payload.clone()).await;
                assert_eq!(users.len(), USERS, "node {r} lost users: {users:?}");
                let stamp = |u: &Value| (u["writer"].clone(), u["round"].clone());
                let seen = stamp(&users[0]);
                for u in &users {
                    assert_eq!(stamp(u), seen, "node {r} read a mix of batches: {users:?}");
                }
                if let (Some(w), Some(round)) = (seen.0.as_u64(), seen.1.as_u64()) {
                    let pair = (w as usize, round as usize);
                    assert!(
                        !refused.lock().unwrap().contains(&pair),
                        "node {r} read the refused batch {pair:?}"
                    );
                }
                reads += 1;
            }
            reads
        }));
    }
    let mut writers = Vec::new();
    for w in 0..cluster.len() {
        let (api, ids, gone, refused) = (
            Api::clone(cluster.node(w)),
            ids.clone(),
            gone.clone(),
            refused.clone(),
        );
        writers.push(tokio::spawn(async move {
            let node = &api;
            for round in 1..=ROUNDS {
                let mut batch: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"id": id, "writer": w, "round": round}))
                    .collect();
                let poisoned = round % 3 == 0;
                if poisoned {
                    // Recorded before it is sent: a reader that saw it would be caught even
                    // while the answer is on its way.
                    refused.lock().unwrap().push((w, round));
                    batch.push(json!({"id": gone, "writer": w, "round": round}));
                }
                let reply = upsert(node, &batch).await;
                if poisoned {
                    assert_error(&reply, 404, 16, None);
                } else {
                    assert_eq!(reply.0, 200, "writer {w} round {round}: {}", reply.2);
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        let reads = r.await.expect("reader");
        assert!(reads > 0);
    }
    // Every node agrees on the last batch.
    let payload = json!({"filter_conditions": {"id": {"$in": ids}}, "sort": [{"field": "id", "direction": 1}]});
    let last: Vec<Value> = query_users(cluster.node(0), payload.clone())
        .await
        .into_iter()
        .map(stored_form)
        .collect();
    assert_ne!(last[0]["writer"], "init", "no batch was applied");
    for node in &cluster.nodes()[1..] {
        let here: Vec<Value> = query_users(node, payload.clone())
            .await
            .into_iter()
            .map(stored_form)
            .collect();
        assert_eq!(here, last, "node {}", node.index);
    }
}

/// Every way of bringing an id back, on every node, after a hard delete on one of them.
async fn refused_everywhere(cluster: &Cluster, id: &str) {
    for node in cluster.nodes() {
        let n = node.index;
        assert_eq!(fetch(node, id).await, None, "node {n} still shows {id}");
        assert_error(&upsert(node, &[json!({"id": id})]).await, 404, 16, None);
        assert_error(
            &partial(node, json!([{"id": id, "set": {"back": true}}])).await,
            404,
            16,
            None,
        );
        let reply = node
            .admin(Method::POST, "/guest", Some(json!({"user": {"id": id}})))
            .await;
        assert_error(&reply, 404, 16, None);
        let reply = node
            .admin(
                Method::POST,
                "/users/restore",
                Some(json!({"user_ids": [id]})),
            )
            .await;
        assert_error(&reply, 404, 16, None);
        let (status, _, _) = node
            .admin(Method::GET, &format!("/users/{id}/export"), None)
            .await;
        assert_eq!(status, 404, "node {n} exports an erased user");
        ws::expect_refusal(&node.connect_url(id), 16).await;
    }
}

#[tokio::test]
async fn a_deleted_id_is_never_reusable_from_any_node() {
    let cluster = Cluster::start(3).await;
    let erased = uid("erased");
    upsert_ok(cluster.node(0), &[json!({"id": erased, "name": "E"})]).await;
    cluster
        .node(1)
        .admin_ok(
            Method::DELETE,
            &format!("/users/{erased}?hard_delete=true"),
            None,
        )
        .await;
    refused_everywhere(&cluster, &erased).await;

    // A soft-deleted id is not free either, and is restored for every node at once.
    let soft = uid("soft");
    upsert_ok(cluster.node(2), &[json!({"id": soft, "color": "red"})]).await;
    cluster
        .node(2)
        .admin_ok(Method::DELETE, &format!("/users/{soft}"), None)
        .await;
    for node in cluster.nodes() {
        let reply = upsert(node, &[json!({"id": soft})]).await;
        let message = format!("UpdateUsers failed with error: \"the user {soft} was deleted\"");
        assert_error(&reply, 404, 16, Some(&message));
    }
    cluster
        .node(0)
        .admin_ok(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": [soft]})),
        )
        .await;
    for node in cluster.nodes() {
        assert_eq!(fetch(node, &soft).await.expect("restored")["color"], "red");
    }
}

/// Writers on two nodes keep replacing and patching a user while a third node erases it.
/// Once the erase is answered, no write from any node may bring the id back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_hard_delete_never_resurrect_the_id() {
    const ROUNDS: usize = 30;
    let cluster = Cluster::start(3).await;
    for round in 0..ROUNDS {
        let id = uid(&format!("r{round}"));
        upsert_ok(cluster.node(round % 3), &[json!({"id": id})]).await;
        let deleter = (round + 1) % 3;
        let erased_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..3 {
            if w == deleter {
                continue;
            }
            let (api, id, erased_at) = (Api::clone(cluster.node(w)), id.clone(), erased_at.clone());
            writers.push(tokio::spawn(async move {
                let node = &api;
                let mut i = 0;
                loop {
                    let sent = Instant::now();
                    let reply = if i % 2 == 0 {
                        upsert(node, &[json!({"id": id, "n": i})]).await
                    } else {
                        partial(node, json!([{"id": id, "set": {"n": i}}])).await
                    };
                    let after_erase = erased_at.lock().unwrap().is_some_and(|t| sent > t);
                    match reply.0 {
                        200 => assert!(
                            !after_erase,
                            "node {w} wrote {id} after its erase was answered"
                        ),
                        _ => {
                            assert_error(&reply, 404, 16, None);
                            return;
                        }
                    }
                    i += 1;
                    assert!(i < 10_000, "the erase never reached node {w}");
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis((round % 5) as u64 * 3)).await;
        let (status, _, body) = cluster
            .node(deleter)
            .admin(
                Method::DELETE,
                &format!("/users/{id}?hard_delete=true"),
                None,
            )
            .await;
        assert_eq!(status, 200, "round {round}: {body}");
        *erased_at.lock().unwrap() = Some(Instant::now());
        for w in writers {
            w.await.expect("writer");
        }
        for node in cluster.nodes() {
            assert_eq!(
                fetch(node, &id).await,
                None,
                "round {round}, node {}",
                node.index
            );
            assert_error(&upsert(node, &[json!({"id": id})]).await, 404, 16, None);
        }
    }
}

/// A node killed in the middle of a stream of batches: every batch it acknowledged is read
/// whole on the other nodes (committed before the answer), none is read in part, and the
/// node restarted on the same addresses reads them too. A node paused for a moment holds
/// nobody up, and reads on resuming what was written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_outlive_a_killed_node() {
    let mut cluster = Cluster::start(3).await;
    let tag = uid("k");
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let writer = {
        let (api, tag, acked) = ((**cluster.node(1)).clone(), tag.clone(), acked.clone());
        tokio::spawn(async move {
            for b in 0.. {
                let batch: Vec<Value> = (0..5)
                    .map(|i| json!({"id": format!("{tag}-{b}-{i}"), "batch": b}))
                    .collect();
                let mut map = serde_json::Map::new();
                for u in &batch {
                    map.insert(u["id"].as_str().unwrap().to_owned(), u.clone());
                }
                let sent = api
                    .http
                    .post(format!("{}/users?api_key={}", api.admin_url, api.api_key))
                    .header("Authorization", &api.server_token)
                    .header("stream-auth-type", "jwt")
                    .json(&json!({ "users": map }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(b),
                    // The node died under this request.
                    _ => return b,
                }
            }
            unreachable!()
        })
    };
    while acked.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.node_mut(1).kill().await;
    assert!(!cluster.node_mut(1).is_running());
    let cut = writer.await.expect("writer");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20 && !acked.contains(&cut));
    for n in [0, 2] {
        check_batches(cluster.node(n), &tag, &acked, cut).await;
    }

    cluster.node_mut(1).restart().await;
    check_batches(cluster.node(1), &tag, &acked, cut).await;

    // Paused for a moment (well within any lease): the others go on without it.
    cluster.node(2).pause();
    let during = uid("during");
    upsert_ok(cluster.node(0), &[json!({"id": during, "n": 1})]).await;
    let (status, _, body) =
        partial(cluster.node(1), json!([{"id": during, "set": {"n": 2}}])).await;
    assert_eq!(status, 200, "{body}");
    cluster.node(2).resume();
    assert_eq!(
        fetch(cluster.node(2), &during).await.expect("written")["n"],
        2
    );

    // A graceful stop and a start on the same addresses.
    let status = cluster.node_mut(0).terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}");
    cluster.node_mut(0).restart().await;
    assert_eq!(
        fetch(cluster.node(0), &during).await.expect("written")["n"],
        2
    );
}

/// Asserts that `node` reads every acknowledged batch whole, and batch `cut` whole or not at
/// all.
async fn check_batches(node: &crate::harness::Node, tag: &str, acked: &[usize], cut: usize) {
    let ids: Vec<String> = (0..=cut)
        .flat_map(|b| (0..5).map(move |i| format!("{tag}-{b}-{i}")))
        .collect();
    let mut found = std::collections::BTreeMap::<u64, usize>::new();
    for chunk in ids.chunks(100) {
        let payload = json!({"filter_conditions": {"id": {"$in": chunk}}, "limit": 100});
        for u in query_users(node, payload).await {
            *found.entry(u["batch"].as_u64().unwrap()).or_default() += 1;
        }
    }
    let n = node.index;
    for b in acked {
        assert_eq!(found.get(&(*b as u64)), Some(&5), "node {n}, batch {b}");
    }
    assert!(
        matches!(found.get(&(cut as u64)), None | Some(5)),
        "node {n}: batch {cut} in part"
    );
}
