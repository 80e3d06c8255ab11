"""Bans through the Python SDK, sync and async (see ``api``): ban with a reason and a
timeout, shadow bans, unban, query_banned_users, and refusals."""

import asyncio


async def test_ban_query_and_unban(api, uid):
    target, moderator = uid("target"), uid("mod")
    await api("upsert_users", [{"id": target}, {"id": moderator}])
    await api("ban_user", target, reason="spam", banned_by_id=moderator)
    user = await api.find(target)
    assert user["banned"] is True
    resp = await api("query_banned_users", {"filter_conditions": {"user_id": target}})
    assert len(resp["bans"]) == 1
    assert resp["bans"][0]["reason"] == "spam"
    assert resp["bans"][0]["banned_by"]["id"] == moderator
    await api("unban_user", target)
    assert (await api.find(target))["banned"] is False


async def test_a_short_ban_ends(api, uid):
    target = uid("target")
    await api("upsert_user", {"id": target})
    await api("ban_user", target, timeout=0.03)
    assert (await api.find(target))["banned"] is True
    await asyncio.sleep(2.5)
    assert (await api.find(target))["banned"] is False


async def test_shadow_ban(api, uid):
    target = uid("target")
    await api("upsert_user", {"id": target})
    await api("shadow_ban", target)
    found = await api("query_users", {"id": target, "shadow_banned": True})
    assert [u["id"] for u in found["users"]] == [target]
    assert found["users"][0]["banned"] is False
    await api("remove_shadow_ban", target)
    found = await api("query_users", {"id": target, "shadow_banned": True})
    assert found["users"] == []


async def test_bad_bans(api, uid):
    err = await api.fails("ban_user", "")
    assert (err.error_code, err.status_code) == (4, 400)
    err = await api.fails("ban_user", uid("nobody"))
    assert (err.error_code, err.status_code) == (16, 404)
