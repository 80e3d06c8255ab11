"""Plain helpers shared by the Python SDK tests."""

import re
import time
from datetime import datetime

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
UUID4 = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


def now() -> int:
    return int(time.time())


def assert_timestamp(value, what: str = "timestamp") -> None:
    assert isinstance(value, str), f"{what} should be a string, got {value!r}"
    assert RFC3339_UTC.match(value), f"{what} should be RFC 3339 UTC with Z: {value}"


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with any number of fraction digits."""
    head, _, frac = value.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{frac}+00:00")
