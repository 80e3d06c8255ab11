"""Custom user events through the Python SDK, sync and async (see ``api``): delivered to
every connection of the user, refused in Stream's envelope when bad."""

import asyncio
import json
import urllib.parse

import aiohttp
import pytest

from helpers import assert_timestamp


async def _connect(session: aiohttp.ClientSession, gateway, tokens, user_id: str):
    """Opens a /connect socket for ``user_id`` as the JS SDK would; returns it after the
    first ``health.check``."""
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
    ws = await session.ws_connect(url)
    first = json.loads((await ws.receive(timeout=5)).data)
    assert first["type"] == "health.check", first
    return ws


async def _next_of(ws, kind: str, timeout: float = 5.0):
    """The next frame of type ``kind`` (None when none arrives in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return None
        try:
            msg = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            return None
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        frame = json.loads(msg.data)
        if frame.get("type") == kind:
            return frame


async def test_send_user_custom_event_reaches_every_connection(api, gateway, tokens, uid):
    target, other = uid("target"), uid("other")
    await api("upsert_users", [{"id": target}, {"id": other}])
    async with aiohttp.ClientSession() as session:
        mine = [await _connect(session, gateway, tokens, target) for _ in range(3)]
        theirs = await _connect(session, gateway, tokens, other)
        event = {"type": "order_shipped", "order": {"id": 42, "items": ["a", "b"]}}
        resp = await api("send_user_custom_event", target, event)
        assert resp.is_ok()
        for ws in mine:
            got = await _next_of(ws, "order_shipped")
            assert got is not None, "a connection of the user missed the event"
            assert got["order"] == {"id": 42, "items": ["a", "b"]}
            assert_timestamp(got["created_at"], "created_at")
        assert await _next_of(theirs, "order_shipped", timeout=0.3) is None
        for ws in mine + [theirs]:
            await ws.close()


@pytest.mark.parametrize(
    "event, code, status",
    [
        ({"type": "user.updated"}, 4, 400),
        ({"type": "message.new", "text": "x"}, 4, 400),
        ({"text": "no type"}, 4, 400),
        ({"type": "big", "blob": "x" * 5120}, 22, 413),
    ],
)
async def test_bad_custom_events_are_refused(api, uid, event, code, status):
    user_id = uid()
    await api("upsert_user", {"id": user_id})
    err = await api.fails("send_user_custom_event", user_id, event)
    assert err.error_code == code
    assert err.status_code == status
    assert err.error_message.startswith("SendUserCustomEvent failed with error: ")


async def test_custom_event_for_an_unknown_user_is_16(api, uid):
    err = await api.fails("send_user_custom_event", uid("nobody"), {"type": "poke"})
    assert err.error_code == 16
    assert err.status_code == 404
