//! Unique usernames across nodes (issue 10, behaviour 2): writers on different nodes racing
//! for one name in `app` and `team` mode get exactly one winner, round after round, and names
//! held before enforcement was switched on stay legal duplicates on every node.
//!
//! The mode is set through every node: how a settings change made on one node reaches the
//! others is an event-path matter, tested with the cross-node events.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::common::{assert_error, Api, Reply};
use crate::harness::Cluster;
use crate::ws::uid;
use crate::{fetch, ids_among, partial, query_users, set_mode, upsert, upsert_ok};

const WRITERS: usize = 8;
const ROUNDS: usize = 50;

async fn set_mode_everywhere(cluster: &Cluster, mode: &str) {
    for node in cluster.nodes() {
        set_mode(node, mode).await;
    }
}

/// Spellings of one name that all normalise to `round<r>name`.
fn spelling(round: usize, writer: usize) -> String {
    match writer % 8 {
        0 => format!("Round {round} Name"),
        1 => format!("round-{round}-name"),
        2 => format!("ROUND {round} NAME"),
        3 => format!("round.{round}.name"),
        4 => format!("  Round {round}   Name!"),
        5 => format!("Round_{round}_Name"),
        6 => format!("round {round} name"),
        _ => format!("RoUnD-{round}-NaMe"),
    }
}

/// The lowercase letters and digits of a name (the form names are compared in, for ASCII).
fn ascii_normal(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Splits a round's replies into winners and checks every loser was refused for the name.
#[track_caller]
fn winners(replies: &[Reply], round: usize) -> Vec<usize> {
    let mut won = Vec::new();
    for (w, reply) in replies.iter().enumerate() {
        if reply.0 == 200 {
            won.push(w);
        } else {
            assert_error(reply, 400, 6, None);
            let message = reply.2["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("already exists"),
                "round {round}, writer {w}: {message}"
            );
        }
    }
    won
}

/// Each round, eight writers spread over three nodes give a user the same name (in eight
/// spellings) at once — by creating a user, by renaming their own by partial update, or in a
/// two-user batch — and exactly one wins. Every node then shows exactly one holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_mode_racing_writers_on_three_nodes_have_one_winner() {
    let cluster = Cluster::start(3).await;
    set_mode_everywhere(&cluster, "app").await;
    let tag = uid("app");
    let racers: Vec<String> = (0..WRITERS).map(|w| format!("{tag}-racer{w}")).collect();
    let standing: Vec<Value> = racers
        .iter()
        .enumerate()
        .map(|(w, id)| json!({"id": id, "name": format!("{tag} base {w}")}))
        .collect();
    upsert_ok(cluster.node(0), &standing).await;

    for round in 0..ROUNDS {
        let kind = round % 3;
        let writes = (0..WRITERS).map(|w| {
            let cluster = &cluster;
            let (name, racer) = (spelling(round, w), racers[w].clone());
            let created = format!("{tag}-r{round}-w{w}");
            let partner = format!("{tag}-r{round}-w{w}-partner");
            let free = format!("{tag} free {round} {w}");
            async move {
                let node: &Api = cluster.node(w % 3);
                match kind {
                    0 => upsert(node, &[json!({"id": created, "name": name})]).await,
                    1 => partial(node, json!([{"id": racer, "set": {"name": name}}])).await,
                    _ => {
                        // A batch: a user with a free name, then the contested one.
                        upsert(
                            node,
                            &[
                                json!({"id": partner, "name": free}),
                                json!({"id": created, "name": name}),
                            ],
                        )
                        .await
                    }
                }
            }
        });
        let replies = join_all(writes).await;
        let won = winners(&replies, round);
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");

        // Every node agrees on who holds the name now.
        let reader = cluster.node(round % 3);
        let normal = format!("round{round}name");
        match kind {
            1 => {
                let holders: Vec<String> = query_users(
                    reader,
                    json!({"filter_conditions": {"id": {"$in": racers}}, "limit": 100}),
                )
                .await
                .iter()
                .filter(|u| ascii_normal(u["name"].as_str().unwrap_or_default()) == normal)
                .map(|u| u["id"].as_str().unwrap().to_owned())
                .collect();
                assert_eq!(holders, [racers[won[0]].clone()], "round {round}");
            }
            _ => {
                let mut created: Vec<String> = (0..WRITERS)
                    .flat_map(|w| {
                        [
                            format!("{tag}-r{round}-w{w}"),
                            format!("{tag}-r{round}-w{w}-partner"),
                        ]
                    })
                    .collect();
                created.sort();
                let mut expected = vec![format!("{tag}-r{round}-w{}", won[0])];
                if kind == 2 {
                    // The losers' batches left nothing, not even their free-named partner.
                    expected.push(format!("{tag}-r{round}-w{}-partner", won[0]));
                }
                expected.sort();
                assert_eq!(ids_among(reader, &created).await, expected, "round {round}");
            }
        }
    }
}

/// Team mode: five writers race for a name in team red and three in team blue (one of them
/// also in green), spread over three nodes; a ninth writer without teams takes the same name
/// each time. One winner per team, every round; the teamless writer always succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_mode_racing_writers_on_three_nodes_have_one_winner_per_team() {
    let cluster = Cluster::start(3).await;
    set_mode_everywhere(&cluster, "team").await;
    let tag = uid("team");
    let teams_of = |w: usize| -> Value {
        match w {
            0..=4 => json!(["red"]),
            5 | 6 => json!(["blue"]),
            _ => json!(["green", "blue"]),
        }
    };
    for round in 0..ROUNDS {
        let writes = (0..=WRITERS).map(|w| {
            let cluster = &cluster;
            let name = spelling(round, w);
            let id = format!("{tag}-r{round}-w{w}");
            let teams = if w == WRITERS {
                None
            } else {
                Some(teams_of(w))
            };
            async move {
                let node: &Api = cluster.node(w % 3);
                let user = match teams {
                    Some(teams) => json!({"id": id, "name": name, "teams": teams}),
                    None => json!({"id": id, "name": name}),
                };
                if round % 2 == 0 {
                    upsert(node, &[user]).await
                } else {
                    // In a batch behind a user with a free name: a loser's batch leaves
                    // neither.
                    let free = format!("{id}-free");
                    upsert(node, &[json!({"id": free, "name": free}), user]).await
                }
            }
        });
        let replies = join_all(writes).await;
        let (teamless, racing) = replies.split_last().expect("replies");
        assert_eq!(teamless.0, 200, "round {round}: {}", teamless.2);
        let won = winners(racing, round);
        let red: Vec<usize> = won.iter().copied().filter(|w| *w <= 4).collect();
        let blue: Vec<usize> = won.iter().copied().filter(|w| *w > 4).collect();
        assert_eq!(red.len(), 1, "round {round}: red winners {red:?}");
        assert_eq!(blue.len(), 1, "round {round}: blue winners {blue:?}");
        for reply in racing.iter().filter(|r| r.0 != 200) {
            let message = reply.2["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("in team 'red'") || message.contains("in team 'blue'"),
                "round {round}: {message}"
            );
        }
        let id = |w: usize| format!("{tag}-r{round}-w{w}");
        let mut ids: Vec<String> = (0..=WRITERS).map(id).collect();
        let mut expected = vec![id(red[0]), id(blue[0]), id(WRITERS)];
        if round % 2 == 1 {
            ids.extend((0..=WRITERS).map(|w| format!("{}-free", id(w))));
            expected.extend([red[0], blue[0], WRITERS].map(|w| format!("{}-free", id(w))));
        }
        ids.sort();
        expected.sort();
        assert_eq!(
            ids_among(cluster.node((round + 1) % 3), &ids).await,
            expected,
            "round {round}"
        );
    }
}

/// Names shared before enforcement was switched on stay where they are: every node shows
/// them, their holders keep updating them from any node (at the same time too), nobody new
/// may join them, and the name frees up only once the last holder leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_held_before_enforcement_stay_legal_duplicates_on_every_node() {
    let cluster = Cluster::start(3).await;
    let tag = uid("dup");
    let holders: Vec<String> = (0..3).map(|i| format!("{tag}-holder{i}")).collect();
    let spellings = ["Dup Name", "dup.name", "DUP NAME"];
    for i in 0..3 {
        upsert_ok(
            cluster.node(i),
            &[json!({"id": holders[i], "name": spellings[i]})],
        )
        .await;
    }
    let teammates = [format!("{tag}-mate0"), format!("{tag}-mate1")];
    upsert_ok(
        cluster.node(1),
        &[json!({"id": teammates[0], "name": "Team Dup", "teams": ["red"]})],
    )
    .await;
    upsert_ok(
        cluster.node(2),
        &[json!({"id": teammates[1], "name": "team-dup", "teams": ["red", "blue"]})],
    )
    .await;
    set_mode_everywhere(&cluster, "app").await;

    for node in cluster.nodes() {
        for (i, id) in holders.iter().enumerate() {
            assert_eq!(fetch(node, id).await.expect("kept")["name"], spellings[i]);
        }
    }
    // The holders update at once, each from another node: unrelated fields by upsert (name
    // kept) and by partial update.
    let updates = (0..3).map(|i| {
        let cluster = &cluster;
        let (id, name) = (holders[i].clone(), spellings[i]);
        async move {
            let node = cluster.node((i + 1) % 3);
            let a = upsert(node, &[json!({"id": id, "name": name, "n": i})]).await;
            let b = partial(node, json!([{"id": id, "set": {"m": i}}])).await;
            [a, b]
        }
    });
    for (i, replies) in join_all(updates).await.into_iter().enumerate() {
        for reply in replies {
            assert_eq!(reply.0, 200, "holder {i}: {}", reply.2);
        }
    }
    // Nobody new joins them, through any node.
    for node in cluster.nodes() {
        let newcomer = format!("{tag}-new{}", node.index);
        assert_error(
            &upsert(node, &[json!({"id": newcomer, "name": "dup_name"})]).await,
            400,
            6,
            None,
        );
    }
    // The name is held until its last holder leaves it; coming back is a new claim.
    rename(cluster.node(0), &holders[0], "Elsewhere 0").await;
    rename(cluster.node(1), &holders[1], "Elsewhere 1").await;
    assert_error(
        &partial(
            cluster.node(2),
            json!([{"id": holders[0], "set": {"name": "Dup Name"}}]),
        )
        .await,
        400,
        6,
        None,
    );
    assert_error(
        &upsert(
            cluster.node(0),
            &[json!({"id": format!("{tag}-late"), "name": "dup name"})],
        )
        .await,
        400,
        6,
        None,
    );
    rename(cluster.node(2), &holders[2], "Elsewhere 2").await;
    upsert_ok(
        cluster.node(1),
        &[json!({"id": format!("{tag}-late"), "name": "dup name"})],
    )
    .await;

    // Team mode: the two teammates sharing a name in red keep it; nobody new joins them in
    // red or blue, through any node; another team is free.
    set_mode_everywhere(&cluster, "team").await;
    for (i, id) in teammates.iter().enumerate() {
        let node = cluster.node(i);
        let (status, _, body) = partial(node, json!([{"id": id, "set": {"k": i}}])).await;
        assert_eq!(status, 200, "{body}");
    }
    upsert_ok(
        cluster.node(2),
        &[json!({"id": teammates[0], "name": "Team Dup", "teams": ["red"], "again": true})],
    )
    .await;
    for node in cluster.nodes() {
        for team in ["red", "blue"] {
            let reply = upsert(
                node,
                &[json!({"id": format!("{tag}-t{}", node.index), "name": "TEAM DUP", "teams": [team]})],
            )
            .await;
            assert_error(&reply, 400, 6, None);
        }
    }
    upsert_ok(
        cluster.node(0),
        &[json!({"id": format!("{tag}-green"), "name": "team dup", "teams": ["green"]})],
    )
    .await;
}

async fn rename(api: &Api, id: &str, name: &str) {
    let (status, _, body) = partial(api, json!([{"id": id, "set": {"name": name}}])).await;
    assert_eq!(status, 200, "renaming {id}: {body}");
}
