"""Mutes and blocks through the Python SDK, sync and async (see ``api``): a back end mutes,
unmutes, blocks and unblocks for the user it names; both appear in that user's ``me`` on
connect; bad calls get Stream's envelope."""

import asyncio
import json
import urllib.parse

import aiohttp

from helpers import assert_timestamp


async def _me(gateway, tokens, user_id: str):
    """The ``me`` of a fresh /connect of ``user_id``."""
    payload = json.dumps({"user_id": user_id, "user_details": {"id": user_id}})
    query = urllib.parse.urlencode(
        {
            "json": payload,
            "api_key": gateway.api_key,
            "authorization": tokens.create_token(user_id),
            "stream-auth-type": "jwt",
        }
    )
    url = gateway.public_url.replace("http", "ws", 1) + "/connect?" + query
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            first = json.loads((await ws.receive(timeout=5)).data)
    assert first["type"] == "health.check", first
    return first["me"]


def _muted(me):
    return sorted(m["target"]["id"] for m in me["mutes"])


async def test_mute_and_unmute_for_a_user(api, gateway, tokens, uid):
    me, a, b = uid("me"), uid("a"), uid("b")
    await api("upsert_users", [{"id": me}, {"id": a}, {"id": b}])
    resp = await api("mute_user", a, me)
    assert resp["mute"]["user"]["id"] == me
    assert resp["mute"]["target"]["id"] == a
    assert_timestamp(resp["mute"]["created_at"], "mute.created_at")
    resp = await api("mute_users", [a, b], me, timeout=60)
    assert len(resp["mutes"]) == 2
    assert_timestamp(resp["mutes"][0]["expires"], "mute.expires")
    assert _muted(await _me(gateway, tokens, me)) == sorted([a, b])
    await api("unmute_user", a, me)
    assert _muted(await _me(gateway, tokens, me)) == [b]


async def test_a_short_mute_expires(api, gateway, tokens, uid):
    me, a = uid("me"), uid("a")
    await api("upsert_users", [{"id": me}, {"id": a}])
    await api("mute_user", a, me, timeout=0.03)
    assert _muted(await _me(gateway, tokens, me)) == [a]
    await asyncio.sleep(2.5)
    assert _muted(await _me(gateway, tokens, me)) == []


async def test_bad_mutes_get_streams_codes(api, uid):
    me = uid("me")
    await api("upsert_user", {"id": me})
    err = await api.fails("mute_user", me, me)
    assert (err.error_code, err.status_code) == (4, 400)
    assert err.error_message.startswith("MuteUser failed with error: ")
    err = await api.fails("mute_user", uid("nobody"), me)
    assert (err.error_code, err.status_code) == (16, 404)
    err = await api.fails("mute_user", me, uid("nobody"))
    assert (err.error_code, err.status_code) == (16, 404)


async def test_block_list_and_unblock_for_a_user(api, gateway, tokens, uid):
    me, troll = uid("me"), uid("troll")
    await api("upsert_users", [{"id": me}, {"id": troll}])
    resp = await api("block_user", troll, me)
    assert resp["blocked_by_user_id"] == me
    assert resp["blocked_user_id"] == troll
    assert_timestamp(resp["blocked_at"], "blocked_at")
    blocks = (await api("get_blocked_users", me))["blocks"]
    assert [b["blocked_user_id"] for b in blocks] == [troll]
    assert blocks[0]["blocked_user"]["id"] == troll
    assert (await _me(gateway, tokens, me))["blocked_user_ids"] == [troll]
    await api("unblock_user", troll, me)
    assert (await api("get_blocked_users", me))["blocks"] == []
    err = await api.fails("block_user", me, me)
    assert (err.error_code, err.status_code) == (4, 400)
    err = await api.fails("block_user", uid("nobody"), me)
    assert (err.error_code, err.status_code) == (16, 404)
