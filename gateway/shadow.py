"""Shadow traffic: a copy of each routed request goes to the shadow version, off the reply path.

``ShadowMirror.submit`` is called after the primary answer is ready and only schedules a
task (fire and forget); with ``limit`` copies already in flight the copy is dropped and
counted. The task runs the request through the shadow version (recorded in its statistics
like any request, but kept out of the monitor's), and compares the shadow's
first output (the label of a classifier, the value of a regressor) with the primary's:
exactly for integers and strings, within a float32 tolerance for floats. Its answer is
never returned, and its errors are counted, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftgate.gateway.dataplane.version import VersionRuntime
from driftgate.gateway.metrics import GatewayMetrics

__all__ = ["ShadowFigures", "ShadowMirror", "outputs_agree"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ShadowFigures:
    """Cumulative figures of one shadow version in this process."""

    compared: int = 0
    agreed: int = 0
    errors: int = 0
    dropped: int = 0

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0


def outputs_agree(primary: np.ndarray, shadow: np.ndarray) -> bool:
    if primary.shape != shadow.shape:
        return False
    if primary.dtype.kind == "f" and shadow.dtype.kind == "f":
        return bool(np.allclose(primary, shadow, rtol=1e-4, atol=1e-6, equal_nan=True))
    return bool(np.array_equal(primary, shadow))


class ShadowMirror:
    """Runs request copies against shadow versions with at most ``limit`` in flight."""

    def __init__(self, metrics: GatewayMetrics, limit: int) -> None:
        self._metrics = metrics
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self.figures: dict[tuple[str, int], ShadowFigures] = {}

    def _figures(self, version: VersionRuntime) -> ShadowFigures:
        key = (version.model, version.version)
        found = self.figures.get(key)
        if found is None:
            found = self.figures[key] = ShadowFigures()
        return found

    def submit(self, shadow: VersionRuntime, request: Any, primary: np.ndarray) -> None:
        if len(self._tasks) >= self._limit:
            self._figures(shadow).dropped += 1
            self._outcome(shadow, "dropped")
            return
        task = asyncio.get_running_loop().create_task(self._run(shadow, request, primary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, shadow: VersionRuntime, request: Any, primary: np.ndarray) -> None:
        figures = self._figures(shadow)
        started = time.perf_counter()
        try:
            answer = await shadow.infer(request, "", observe=False)
        except Exception as exc:
            figures.errors += 1
            self._outcome(shadow, "error")
            log.debug("shadow %s version %d failed: %s", shadow.model, shadow.version, exc)
            return
        labels = (shadow.model, str(shadow.version))
        self._metrics.shadow_seconds.labels(*labels).observe(time.perf_counter() - started)
        agree = outputs_agree(primary, answer.outputs[0])
        figures.compared += 1
        figures.agreed += agree
        self._outcome(shadow, "agree" if agree else "disagree")
        self._metrics.shadow_agreement.labels(*labels).set(figures.agreement)

    def _outcome(self, shadow: VersionRuntime, outcome: str) -> None:
        self._metrics.shadow_requests.labels(shadow.model, str(shadow.version), outcome).inc()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
