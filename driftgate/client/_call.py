"""A call described once and run by the blocking and the asyncio clients alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Call", "from_timestamp"]

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """The stub method to call, its request, and how its response becomes the result."""

    method: str
    request: Any
    parse: Callable[[Any], T]
    timeout: float | None = None


def from_timestamp(stamp: Any) -> dt.datetime | None:
    """A protobuf Timestamp as an aware UTC datetime; None when unset."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return dt.datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=dt.UTC)
