"""App settings, unique usernames, revocation, error envelope and rate-limit headers through
the Python SDK, sync and async. Tests that change app settings put them back."""

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone

from helpers import now, parse_ts


@contextlib.asynccontextmanager
async def app_settings(api, **settings):
    """Apply settings for the duration of the block, then restore the previous values."""
    before = (await api("get_app_settings"))["app"]
    restore = {key: before.get(key) for key in settings}
    await api("update_app_settings", **settings)
    try:
        yield
    finally:
        await api("update_app_settings", **restore)


# --- GET /app and the envelope -------------------------------------------------------------


async def test_get_app_shape(api):
    resp = await api("get_app_settings")
    assert resp.status_code() == 200
    assert list(resp.keys()) == ["app", "duration"]
    assert isinstance(resp["app"], dict)
    assert isinstance(resp["duration"], str)
    assert resp["app"]["enforce_unique_usernames"] == "no"


async def test_rate_limit_headers_on_responses(api, uid):
    for resp in (
        await api("get_app_settings"),
        await api("upsert_user", {"id": uid()}),
        await api("query_users", {"id": "nobody-at-all"}),
    ):
        info = resp.rate_limit()
        assert info is not None, "x-ratelimit-* headers are missing"
        assert info.limit > 0
        assert 0 <= info.remaining <= info.limit
        assert info.reset.tzinfo is not None
        assert abs(info.reset - datetime.now(timezone.utc)) < timedelta(hours=1)
        headers = {k.lower(): v for k, v in resp.headers().items()}
        assert int(headers["x-ratelimit-reset"]) > 0


async def test_get_rate_limits(api):
    """Stream's own SDK test of get_rate_limits, with an endpoint the gateway serves in place
    of SendMessage (endpoints it does not serve are left out of the answer)."""
    resp = await api("get_rate_limits")
    for platform in ("server_side", "android", "ios", "web"):
        assert platform in resp
        assert resp[platform]["QueryUsers"]["limit"] == 1000

    resp = await api("get_rate_limits", server_side=True, android=True)
    assert "server_side" in resp and "android" in resp
    assert "ios" not in resp and "web" not in resp

    resp = await api(
        "get_rate_limits",
        server_side=True,
        android=True,
        endpoints=["GetRateLimits", "QueryUsers"],
    )
    assert "ios" not in resp and "web" not in resp
    assert len(resp["android"]) == 2
    assert len(resp["server_side"]) == 2
    android = resp["android"]["GetRateLimits"]
    assert android["limit"] == android["remaining"]
    server_side = resp["server_side"]["GetRateLimits"]
    assert server_side["limit"] > server_side["remaining"]
    # The headers are this call's own server-side budget.
    info = resp.rate_limit()
    assert info.limit == server_side["limit"]
    assert info.remaining == server_side["remaining"]


async def test_error_codes_on_the_exception(api, uid):
    err = await api.fails("upsert_user", {"id": "bad id"})
    assert err.error_code == 4
    assert err.status_code == 400
    assert isinstance(err.error_message, str)

    err = await api.fails("delete_user", uid("nobody"))
    assert (err.error_code, err.status_code) == (16, 404)


async def test_update_app_settings_merges_unknown_keys(api, uid):
    k1 = "x_" + uid().replace("-", "_")
    k2 = "y_" + uid().replace("-", "_")
    resp = await api("update_app_settings", **{k1: {"nested": [1, "two"]}})
    assert resp.is_ok()
    await api("update_app_settings", **{k2: True})
    app = (await api("get_app_settings"))["app"]
    assert app[k1] == {"nested": [1, "two"]}
    assert app[k2] is True

    hooks = [{"hook_type": "webhook", "enabled": False, "event_types": ["user.updated"]}]
    async with app_settings(api, event_hooks=hooks):
        assert (await api("get_app_settings"))["app"]["event_hooks"] == hooks


async def test_bad_enforce_unique_usernames_is_code_4(api):
    err = await api.fails("update_app_settings", enforce_unique_usernames="always")
    assert (err.error_code, err.status_code) == (4, 400)
    assert "enforce_unique_usernames must be one of [no app team]" in err.error_message


# --- unique usernames -----------------------------------------------------------------------


async def test_unique_usernames_app(api, uid):
    name = f"John Doe {uid('n')[2:]}"
    a, b, c = uid("ua"), uid("ub"), uid("uc")
    async with app_settings(api, enforce_unique_usernames="app"):
        assert (await api("get_app_settings"))["app"]["enforce_unique_usernames"] == "app"
        await api("upsert_user", {"id": a, "name": name})

        err = await api.fails("upsert_user", {"id": b, "name": name.lower().replace(" ", ".")})
        assert (err.error_code, err.status_code) == (6, 400)
        assert "already exists" in err.error_message
        assert err.error_message.startswith("UpdateUsers failed with error: ")
        assert await api.find(b) is None

        await api("upsert_user", {"id": c, "name": f"Somebody {c}"})
        err = await api.fails(
            "update_user_partial", {"id": c, "set": {"name": name.upper()}}
        )
        assert (err.error_code, err.status_code) == (6, 400)

        err = await api.fails("set_guest_user", {"id": uid("g"), "name": name})
        assert err.error_code == 6


async def test_unique_usernames_team(api, uid):
    name = f"Jane Roe {uid('n')[2:]}"
    red, blue = uid("red"), uid("blue")
    async with app_settings(api, enforce_unique_usernames="team"):
        await api("upsert_user", {"id": uid("t1"), "name": name, "teams": [red]})
        err = await api.fails(
            "upsert_user", {"id": uid("t2"), "name": name, "teams": [red, blue]}
        )
        assert (err.error_code, err.status_code) == (6, 400)
        assert f"already exists in team '{red}'" in err.error_message
        ok = await api("upsert_user", {"id": uid("t3"), "name": name, "teams": [blue]})
        assert ok.is_ok()


async def test_unique_usernames_race_has_one_winner(api, uid, gateway):
    from stream_chat import StreamChat

    name = f"Racer {uid('n')[2:]}"
    ids = [uid("race") for _ in range(5)]

    def upsert_in_thread(user_id):
        # One sync client per thread: a requests.Session is not meant to be shared.
        client = StreamChat(
            api_key=gateway.api_key,
            api_secret=gateway.api_secret,
            base_url=gateway.admin_url,
            timeout=10,
        )
        return client.upsert_user({"id": user_id, "name": name})

    async with app_settings(api, enforce_unique_usernames="app"):
        if api.kind == "async":
            calls = [api("upsert_user", {"id": i, "name": name}) for i in ids]
        else:
            calls = [asyncio.to_thread(upsert_in_thread, i) for i in ids]
        results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(r.error_code == 6 for r in results if isinstance(r, Exception))


# --- revocation -----------------------------------------------------------------------------


async def test_revoke_user_token_with_datetimes(api, uid, tokens, public_get):
    """The SDK sends datetime.isoformat(): zone-less for naive, +00:00 for aware."""
    cutoff = datetime(2024, 1, 1, 0, 0, 0)
    cutoff_secs = int(cutoff.replace(tzinfo=timezone.utc).timestamp())
    for before in (cutoff, cutoff.replace(tzinfo=timezone.utc), "2024-01-01T00:00:00.000Z"):
        user_id = uid("rev")
        await api("upsert_user", {"id": user_id})
        resp = await api("revoke_user_token", user_id, before)
        stored = resp["users"][user_id]["revoke_tokens_issued_before"]
        assert parse_ts(stored) == cutoff.replace(tzinfo=timezone.utc), before

        payload = '{"filter_conditions":{"id":"%s"}}' % user_id
        old = tokens.create_token(user_id, iat=cutoff_secs - 60)
        status, body = public_get("/users", old, {"user_id": user_id, "payload": payload})
        assert (status, body.get("code")) == (401, 40), before
        assert body["message"] == "This token has been revoked, please generate a new token"

        fresh = tokens.create_token(user_id, iat=cutoff_secs + 60)
        status, body = public_get("/users", fresh, {"user_id": user_id, "payload": payload})
        assert status == 200, body
        assert [u["id"] for u in body["users"]] == [user_id]

        no_iat = tokens.create_token(user_id)
        status, body = public_get("/users", no_iat, {"user_id": user_id, "payload": payload})
        assert (status, body.get("code")) == (401, 40), "user-level revocation covers no-iat"

        await api("revoke_user_token", user_id, None)
        status, _ = public_get("/users", no_iat, {"user_id": user_id, "payload": payload})
        assert status == 200


async def test_revoke_tokens_app_level(api, uid, tokens, public_get):
    user_id = uid("apprev")
    await api("upsert_user", {"id": user_id})
    payload = '{"filter_conditions":{"id":"%s"}}' % user_id
    old = tokens.create_token(user_id, iat=now() - 60)
    no_iat = tokens.create_token(user_id)
    try:
        await api("revoke_tokens", datetime.now(timezone.utc) - timedelta(seconds=30))
        app = (await api("get_app_settings"))["app"]
        assert app["revoke_tokens_issued_before"] is not None
        for token in (old, no_iat):
            status, body = public_get("/users", token, {"user_id": user_id, "payload": payload})
            assert (status, body.get("code")) == (401, 40)
        fresh = tokens.create_token(user_id, iat=now())
        status, _ = public_get("/users", fresh, {"user_id": user_id, "payload": payload})
        assert status == 200
    finally:
        await api("revoke_tokens", None)
    assert (await api("get_app_settings"))["app"].get("revoke_tokens_issued_before") is None
    status, _ = public_get("/users", old, {"user_id": user_id, "payload": payload})
    assert status == 200


async def test_expired_and_bad_tokens_on_client_rest(uid, tokens, public_get, gateway):
    from stream_chat import StreamChat

    user_id = uid("tok")
    payload = '{"filter_conditions":{"id":"%s"}}' % user_id
    expired = tokens.create_token(user_id, exp=now() - 60)
    status, body = public_get("/users", expired, {"user_id": user_id, "payload": payload})
    assert (status, body.get("code")) == (401, 40)

    other = StreamChat(api_key=gateway.api_key, api_secret="not-the-secret-" + "x" * 32)
    forged = other.create_token(user_id)
    status, body = public_get("/users", forged, {"user_id": user_id, "payload": payload})
    assert (status, body.get("code")) == (401, 43)

    future = tokens.create_token(user_id, iat=now() + 3600)
    status, body = public_get("/users", future, {"user_id": user_id, "payload": payload})
    assert (status, body.get("code")) == (401, 42)
