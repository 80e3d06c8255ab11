"""Every user operation of spec §4.2 through the Python SDK, sync and async (see ``api``)."""

import json
import urllib.request
from urllib.parse import urljoin

from helpers import UUID4, assert_timestamp


# --- upsert -------------------------------------------------------------------------------


async def test_upsert_users_returns_users_keyed_by_id(api, uid):
    bob, carol = uid("bob"), uid("carol")
    resp = await api(
        "upsert_users",
        [
            {"id": bob, "name": f"Bob {bob}", "favorite_color": "blue"},
            {"id": carol, "role": "admin", "teams": ["red"], "nested": {"a": [1]}},
        ],
    )
    assert resp.is_ok()
    assert sorted(resp["users"]) == sorted([bob, carol])
    assert isinstance(resp["duration"], str)
    b, c = resp["users"][bob], resp["users"][carol]
    assert b["role"] == "user"
    assert b["teams"] == []
    assert b["favorite_color"] == "blue"
    assert_timestamp(b["created_at"], "created_at")
    assert_timestamp(b["updated_at"], "updated_at")
    assert c["role"] == "admin"
    assert c["teams"] == ["red"]
    assert c["nested"] == {"a": [1]}


async def test_upsert_replaces_but_keeps_created_at(api, uid):
    user_id = uid()
    first = await api(
        "upsert_user", {"id": user_id, "role": "admin", "teams": ["t"], "color": "x"}
    )
    second = await api("upsert_user", {"id": user_id, "name": "Only name"})
    user = second["users"][user_id]
    assert "color" not in user
    assert user["role"] == "user"
    assert user["teams"] == []
    assert user["created_at"] == first["users"][user_id]["created_at"]


async def test_upsert_invalid_id_is_code_4_and_atomic(api, uid):
    good = uid("good")
    err = await api.fails("upsert_users", [{"id": good}, {"id": "no spaces allowed"}])
    assert err.error_code == 4
    assert err.status_code == 400
    assert "is not a valid user id" in err.error_message
    assert err.error_message.startswith("UpdateUsers failed with error: ")
    body = json.loads(err.response_text)
    assert body["StatusCode"] == 400
    assert isinstance(body["details"], list)
    assert await api.find(good) is None


async def test_upsert_101_users_is_code_4(api, uid):
    prefix = uid("many")
    err = await api.fails("upsert_users", [{"id": f"{prefix}-{i}"} for i in range(101)])
    assert (err.error_code, err.status_code) == (4, 400)


async def test_upsert_big_custom_data_is_413_code_22(api, uid):
    user_id = uid("big")
    err = await api.fails("upsert_user", {"id": user_id, "blob": "x" * 6000})
    assert (err.error_code, err.status_code) == (22, 413)
    assert await api.find(user_id) is None


async def test_upsert_deleted_or_deactivated_is_16(api, uid):
    deleted, asleep = uid("gone"), uid("asleep")
    await api("upsert_users", [{"id": deleted}, {"id": asleep}])
    await api("delete_user", deleted)
    await api("deactivate_user", asleep)

    err = await api.fails("upsert_user", {"id": deleted})
    assert (err.error_code, err.status_code) == (16, 404)
    assert f"the user {deleted} was deleted" in err.error_message
    err = await api.fails("upsert_user", {"id": asleep})
    assert (err.error_code, err.status_code) == (16, 404)
    assert f"the user {asleep} was deactivated" in err.error_message


# --- partial update -----------------------------------------------------------------------


async def test_partial_update_set_dotted_and_unset(api, uid):
    user_id = uid()
    await api("upsert_user", {"id": user_id, "color": "red", "keep": 1})
    resp = await api(
        "update_user_partial",
        {"id": user_id, "set": {"name": "A", "a.b": 1}, "unset": ["color"]},
    )
    user = resp["users"][user_id]
    assert user["name"] == "A"
    assert user["a"] == {"b": 1}
    assert "color" not in user
    assert user["keep"] == 1

    resp = await api("update_users_partial", [{"id": user_id, "unset": ["a.b"]}])
    assert resp["users"][user_id]["a"] == {}


async def test_partial_update_bad_paths_are_code_4(api, uid):
    user_id = uid()
    await api("upsert_user", {"id": user_id, "x": 0})
    for update in (
        {"set": {"a..b": 1}},
        {"set": {"a\tb": 1}},
        {"set": {".a": 1}},
        {"unset": ["a."]},
        {"set": {"x": 1}, "unset": ["x"]},
        {"set": {"p.q": 1}, "unset": ["p"]},
        {"set": {"id": "other"}},
        {"unset": ["created_at"]},
    ):
        err = await api.fails("update_user_partial", {"id": user_id, **update})
        assert (err.error_code, err.status_code) == (4, 400), update
        assert err.error_message.startswith("UpdateUsersPartial failed with error: ")
    assert (await api.find(user_id))["x"] == 0


# --- delete / restore ---------------------------------------------------------------------


async def test_delete_user_soft_then_restore(api, uid):
    user_id = uid()
    await api("upsert_user", {"id": user_id, "color": "teal"})
    resp = await api("delete_user", user_id, mark_messages_deleted=False)
    assert resp["user"]["id"] == user_id
    assert_timestamp(resp["user"]["deleted_at"], "deleted_at")
    assert await api.find(user_id) is None

    resp = await api("restore_users", [user_id])
    assert resp.is_ok()
    restored = await api.find(user_id)
    assert restored["color"] == "teal"
    assert "deleted_at" not in restored or restored["deleted_at"] is None


async def test_hard_delete_leaves_a_tombstone(api, uid):
    user_id = uid()
    await api("upsert_user", {"id": user_id})
    await api("delete_user", user_id, hard_delete=True, mark_messages_deleted=True)
    err = await api.fails("upsert_user", {"id": user_id})
    assert (err.error_code, err.status_code) == (16, 404)


async def test_raw_path_ids(api, uid):
    """Python sends path ids unencoded; '@' is a valid id character."""
    user_id = f"{uid('mail')}@example"
    await api("upsert_user", {"id": user_id, "name": "At"})
    assert (await api("export_user", user_id))["user"]["id"] == user_id
    assert (await api("deactivate_user", user_id))["user"]["id"] == user_id
    assert (await api("reactivate_user", user_id))["user"]["id"] == user_id
    assert (await api("delete_user", user_id))["user"]["id"] == user_id


async def test_delete_users_task(api, uid):
    a, b = uid("da"), uid("db")
    await api("upsert_users", [{"id": a}, {"id": b}])
    resp = await api("delete_users", [a, b], "soft", messages="soft")
    task_id = resp["task_id"]
    assert UUID4.match(task_id) and len(task_id) == 36
    assert await api.find(a) is None, "marked before the task id is returned"

    task = await api.wait_task(task_id)
    assert task["task_id"] == task_id
    assert task["status"] == "completed"
    assert_timestamp(task["created_at"], "created_at")
    assert_timestamp(task["updated_at"], "updated_at")
    assert task["result"][a] == {"status": "ok"}
    assert task["result"][b] == {"status": "ok"}


async def test_delete_users_hard_and_pruning(api, uid):
    hard, pruned = uid("hard"), uid("prune")
    await api("upsert_users", [{"id": hard}, {"id": pruned, "name": "P"}])
    t1 = await api("delete_users", [hard], "hard", messages="hard", conversations="hard")
    t2 = await api("delete_users", [pruned], "pruning")
    assert (await api.wait_task(t1["task_id"]))["status"] == "completed"
    assert (await api.wait_task(t2["task_id"]))["status"] == "completed"
    for user_id in (hard, pruned):
        err = await api.fails("upsert_user", {"id": user_id})
        assert err.error_code == 16


async def test_delete_users_validates_options(api, uid):
    user_id = uid()
    await api("upsert_user", {"id": user_id})
    err = await api.fails(
        "delete_users", [user_id], "hard", messages="soft", conversations="hard"
    )
    assert (err.error_code, err.status_code) == (4, 400)
    assert await api.find(user_id) is not None


# --- deactivate / reactivate --------------------------------------------------------------


async def test_deactivate_and_reactivate_user(api, uid):
    admin, user_id = uid("admin"), uid()
    await api("upsert_users", [{"id": admin, "role": "admin"}, {"id": user_id}])
    resp = await api(
        "deactivate_user", user_id, mark_messages_deleted=True, created_by_id=admin
    )
    assert_timestamp(resp["user"]["deactivated_at"], "deactivated_at")
    hidden = await api("query_users", {"id": user_id})
    assert hidden["users"] == []

    resp = await api(
        "reactivate_user",
        user_id,
        restore_messages=True,
        name="Back again",
        created_by_id=admin,
    )
    assert resp["user"]["name"] == "Back again"
    assert resp["user"].get("deactivated_at") is None

    err = await api.fails("reactivate_user", user_id)
    assert (err.error_code, err.status_code) == (4, 400)
    assert "is not deactivated" in err.error_message


async def test_deactivate_users_and_reactivate_users_tasks(api, uid):
    a, b = uid("ta"), uid("tb")
    await api("upsert_users", [{"id": a}, {"id": b}])
    resp = await api("deactivate_users", [a, b])
    assert UUID4.match(resp["task_id"])
    task = await api.wait_task(resp["task_id"])
    assert task["status"] == "completed"
    users = task["result"]["users"]
    assert sorted(u["id"] for u in users) == sorted([a, b])
    for user in users:
        assert_timestamp(user["deactivated_at"], "deactivated_at")

    # The SDK has no reactivate_users helper; its generic post reaches the same route.
    resp = await api("post", "users/reactivate", data={"user_ids": [a, b]})
    assert UUID4.match(resp["task_id"])
    assert (await api.wait_task(resp["task_id"]))["status"] == "completed"
    found = await api("query_users", {"id": {"$in": [a, b]}})
    assert len(found["users"]) == 2


# --- query --------------------------------------------------------------------------------


async def test_query_users_filters_sort_paging(api, uid):
    tag = uid("q").replace("-", "")
    names = ["Ann Smith", "Ben Jones", "Cat Smithers", "Dan Brown"]
    await api(
        "upsert_users",
        [
            {"id": f"{tag}-{i}", "tag": tag, "score": (i + 1) * 10, "name": name}
            for i, name in enumerate(names)
        ],
    )

    async def ids(filters, sort=None, **options):
        resp = await api("query_users", {"tag": tag, **filters}, sort, **options)
        return [u["id"].rsplit("-", 1)[1] for u in resp["users"]]

    score_asc = [{"field": "score", "direction": 1}]
    assert await ids({"score": {"$gte": 20}}, score_asc) == ["1", "2", "3"]
    assert await ids({"score": {"$in": [10, 40]}}, {"score": -1}) == ["3", "0"]
    assert await ids({"name": {"$autocomplete": "smi"}}, score_asc) == ["0", "2"]
    assert await ids({"$or": [{"score": 10}, {"score": 30}]}, score_asc) == ["0", "2"]
    assert await ids({}, score_asc, limit=2, offset=1) == ["1", "2"]

    err = await api.fails("query_users", {"tag": tag}, None, limit=101)
    assert (err.error_code, err.status_code) == (4, 400)


# --- export -------------------------------------------------------------------------------


async def test_export_user(api, uid):
    user_id = uid()
    await api("upsert_user", {"id": user_id, "color": "plum"})
    resp = await api("export_user", user_id)
    assert resp["user"]["id"] == user_id
    assert resp["user"]["color"] == "plum"
    assert resp["messages"] == []
    assert resp["reactions"] == []


async def test_export_users_task_and_url(api, uid, gateway):
    a, b = uid("xa"), uid("xb")
    await api("upsert_users", [{"id": a}, {"id": b}])
    resp = await api("export_users", [a, b])
    task = await api.wait_task(resp["task_id"])
    assert task["status"] == "completed"
    url = task["result"]["url"]
    assert "/exports/users/" in url
    with urllib.request.urlopen(urljoin(gateway.admin_url + "/", url), timeout=10) as res:
        assert res.status == 200
        body = res.read().decode()
    assert a in body and b in body

    err = await api.fails("export_users", [f"{a}-{i}" for i in range(26)])
    assert (err.error_code, err.status_code) == (4, 400)


# --- guests (server auth) -----------------------------------------------------------------


async def test_set_guest_user_with_server_auth(api, uid):
    user_id = uid("guest")
    resp = await api("set_guest_user", {"id": user_id, "name": "Guesty"})
    assert resp["user"]["id"] == user_id
    assert resp["user"]["role"] == "guest"
    assert isinstance(resp["access_token"], str)
    assert (await api.find(user_id))["role"] == "guest"

    taken = uid("owner")
    await api("upsert_user", {"id": taken})
    err = await api.fails("set_guest_user", {"id": taken})
    assert (err.error_code, err.status_code) == (4, 400)
