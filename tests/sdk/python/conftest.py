"""Fixtures for running the official Python SDK (sync and async) against chat-gateway.

Every scenario takes the ``api`` fixture, which is parametrised over the two clients, so
each operation is exercised through ``StreamChat`` and through ``StreamChatAsync``.
"""

import inspect
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Optional

import pytest
import pytest_asyncio
from stream_chat import StreamChat
from stream_chat.async_chat import StreamChatAsync
from stream_chat.base.exceptions import StreamAPIException


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(
            f"{name} is not set: run through scripts/sdk-tests.sh, or export "
            "GATEWAY_PUBLIC_URL, GATEWAY_ADMIN_URL, GATEWAY_API_KEY, GATEWAY_API_SECRET"
        )
    return value


class Gateway:
    """Where the gateway under test listens, and the app credentials."""

    def __init__(self) -> None:
        self.public_url = _env("GATEWAY_PUBLIC_URL").rstrip("/")
        self.admin_url = _env("GATEWAY_ADMIN_URL").rstrip("/")
        self.api_key = _env("GATEWAY_API_KEY")
        self.api_secret = _env("GATEWAY_API_SECRET")


@pytest.fixture(scope="session")
def gateway() -> Gateway:
    return Gateway()


class Api:
    """Calls one SDK client the same way whether its methods are sync or async."""

    def __init__(self, client: Any, kind: str) -> None:
        self.client = client
        self.kind = kind

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, method)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def fails(self, method: str, *args: Any, **kwargs: Any) -> StreamAPIException:
        """Call ``method`` expecting a StreamAPIException, and return it."""
        with pytest.raises(StreamAPIException) as info:
            await self(method, *args, **kwargs)
        return info.value

    async def find(self, user_id: str) -> Optional[Dict[str, Any]]:
        resp = await self(
            "query_users", {"id": user_id}, None, include_deactivated_users=True
        )
        return resp["users"][0] if resp["users"] else None

    async def wait_task(self, task_id: str, timeout: float = 15.0) -> Dict[str, Any]:
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            task = await self("get_task", task_id)
            if task["status"] not in ("pending", "running"):
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']}")
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(params=["sync", "async"])
async def api(request, gateway: Gateway):
    if request.param == "sync":
        client = StreamChat(
            api_key=gateway.api_key,
            api_secret=gateway.api_secret,
            base_url=gateway.admin_url,
            timeout=10,
        )
        yield Api(client, "sync")
        client.session.close()
    else:
        client = StreamChatAsync(
            api_key=gateway.api_key,
            api_secret=gateway.api_secret,
            base_url=gateway.admin_url,
            timeout=10,
        )
        try:
            yield Api(client, "async")
        finally:
            await client.close()


@pytest.fixture
def uid():
    """Unique user ids per test, so tests never share state."""

    def make(prefix: str = "py") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def tokens(gateway: Gateway):
    """Mints user tokens with the SDK's own helper."""
    return StreamChat(api_key=gateway.api_key, api_secret=gateway.api_secret)


@pytest.fixture
def public_get(gateway: Gateway):
    """GET on the public listener with a user token, outside the SDK (which has no
    client-side mode). Returns (status, body)."""

    def get(path: str, user_token: str, params: Dict[str, Any]):
        query = urllib.parse.urlencode({"api_key": gateway.api_key, **params})
        req = urllib.request.Request(
            f"{gateway.public_url}{path}?{query}",
            headers={"Authorization": user_token, "stream-auth-type": "jwt"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, json.loads(res.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    return get


def now() -> int:
    return int(time.time())
