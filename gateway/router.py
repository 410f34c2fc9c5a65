"""Weighted, sticky routing between a stable and a canary version, and version pinning.

A request goes to the canary when a hash of its request id falls below the canary's share,
so a retried request (same id) meets the same version, and the split over many ids matches
the weight. The hash is CRC-32 (``zlib.crc32``, in C, well under a microsecond), scaled to
``SCALE`` buckets by its high bits; weights are resolved to 1/10,000 of a percent.

``Route`` is generic over what it routes to, so the core is tested with plain values.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["SCALE", "Route", "bucket", "threshold"]

T = TypeVar("T")

#: hash buckets; a weight of w percent sends buckets [0, w * SCALE / 100) to the canary
SCALE = 1_000_000


def bucket(request_id: str) -> int:
    """The bucket of a request id, in [0, SCALE)."""
    return (zlib.crc32(request_id.encode()) * SCALE) >> 32


def threshold(weight: float) -> int:
    """Buckets below this go to the canary, for a weight in percent."""
    return round(min(max(weight, 0.0), 100.0) * SCALE / 100)


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """Where a model's traffic goes: stable, an optional canary with its share, a shadow."""

    stable: T
    canary: T | None = None
    canary_threshold: int = 0
    shadow: T | None = None

    def pick(self, request_id: str) -> T:
        canary = self.canary
        if canary is None or self.canary_threshold <= 0:
            return self.stable
        if self.canary_threshold >= SCALE:
            return canary
        if (zlib.crc32(request_id.encode()) * SCALE) >> 32 < self.canary_threshold:
            return canary
        return self.stable
