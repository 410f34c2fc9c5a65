"""``Monitor`` and ``AsyncMonitor``: drift, accuracy, events and retraining from the monitor.

::

    from driftgate.client import Monitor

    with Monitor("localhost:8003") as monitor:
        drift = monitor.drift("churn", window=3600)          # the last hour
        print(drift.verdict, [f.name for f in drift.features if f.verdict == "drift"])
        print(monitor.accuracy("churn", window=0).accuracy)  # 0: the whole history
        asked = monitor.retrain("churn", reason="new labels")  # needs the control token
        outcome = monitor.wait_for_retrain("churn", asked.after_event, progress=print)

``window`` is in seconds (or a ``timedelta``): None is the monitor's default window, 0 the
version's whole history. ``version`` None means the current stable version.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftgate.client._base import AsyncClient, Client
from driftgate.client._call import Call, from_timestamp
from driftgate.client.labels import Label, LabelReceipt, LabelValue, label_requests, receipt
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc

__all__ = [
    "RETRAIN_OUTCOMES",
    "Accuracy",
    "AsyncMonitor",
    "Drift",
    "Event",
    "FeatureDrift",
    "Monitor",
    "RetrainQueued",
]

Window = float | dt.timedelta | None
#: the event kinds that end a retrain
RETRAIN_OUTCOMES = frozenset({"retrain_succeeded", "retrain_failed", "retrain_rejected"})
_VERDICTS = {0: "", 1: "insufficient_data", 2: "no_drift", 3: "drift"}


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the predictions') drift: ``statistic`` names the distance the
    verdict compares with ``critical_value`` ("ks_statistic", "chi_square"...)."""

    name: str
    categorical: bool
    rows: int
    #: "drift", "no_drift" or "insufficient_data"
    verdict: str
    statistic: str
    value: float
    critical_value: float
    psi: float
    js_distance: float
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Drift:
    """Drift of one model version over a window against its reference profile."""

    model: str
    version: int
    rows: int
    #: the whole dataset's verdict ("drift", "no_drift", "insufficient_data")
    verdict: str
    dataset_drift_share: float
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Accuracy:
    """Figures of the labelled predictions of a window; None where they do not apply to the
    model's task or no label arrived."""

    model: str
    version: int
    prediction_count: int
    label_count: int
    coverage: float
    accuracy: float | None
    f1: float | None
    log_loss: float | None
    mae: float | None
    rmse: float | None
    #: the label-free estimate over every prediction of the window (classifiers)
    estimated_accuracy: float | None
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Event:
    """A recorded decision (drift alarm, retrain, promotion, rollback) with its figures."""

    id: int
    time: dt.datetime | None
    kind: str
    model: str
    version: int
    reason: str
    figures: dict[str, Any]
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RetrainQueued:
    """A retrain was queued; ``after_event`` is the newest event id before it, for
    ``wait_for_retrain``."""

    job_id: str
    message: str
    after_event: int


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def _feature(f: Any) -> FeatureDrift:
    return FeatureDrift(
        name=f.name, categorical=f.categorical, rows=f.rows, verdict=_VERDICTS[f.verdict],
        statistic=f.statistic, value=float(getattr(f, f.statistic, 0.0) or 0.0),
        critical_value=f.critical_value, psi=f.psi, js_distance=f.js_distance, message=f,
    )  # fmt: skip


def _drift(r: Any) -> Drift:
    return Drift(
        model=r.model, version=r.version, rows=r.rows, verdict=_VERDICTS[r.dataset_verdict],
        dataset_drift_share=r.dataset_drift_share,
        features=tuple(_feature(f) for f in r.features),
        prediction=_feature(r.prediction) if r.HasField("prediction") else None,
        window_start=from_timestamp(r.window_start), window_end=from_timestamp(r.window_end),
        message=r,
    )  # fmt: skip


def _accuracy(r: Any) -> Accuracy:
    metrics = {n: _optional(r, n) for n in ("accuracy", "f1", "log_loss", "mae", "rmse")}
    return Accuracy(
        model=r.model, version=r.version, prediction_count=r.prediction_count,
        label_count=r.label_count, coverage=r.coverage,
        estimated_accuracy=_optional(r, "estimated_accuracy"), message=r, **metrics,
    )  # fmt: skip


def _event(e: Any) -> Event:
    figures = json.loads(e.figures_json) if e.figures_json else {}
    return Event(
        id=e.id, time=from_timestamp(e.time), kind=e.kind, model=e.model, version=e.version,
        reason=e.reason, figures=figures, message=e,
    )  # fmt: skip


def _window(request: Any, model: str, version: int | None, window: Window) -> Any:
    message = request(model=model, version=version)
    if window is not None:
        seconds = window.total_seconds() if isinstance(window, dt.timedelta) else window
        message.window.FromNanoseconds(int(seconds * 1e9))
    return message


class _Calls:
    @staticmethod
    def drift(model: str, version: int | None, window: Window) -> Call[Drift]:
        return Call("GetDrift", _window(pb.GetDriftRequest, model, version, window), _drift)

    @staticmethod
    def accuracy(model: str, version: int | None, window: Window) -> Call[Accuracy]:
        request = _window(pb.GetAccuracyRequest, model, version, window)
        return Call("GetAccuracy", request, _accuracy)

    @staticmethod
    def events(model: str, limit: int) -> Call[list[Event]]:
        request = pb.ListEventsRequest(model=model, limit=max(limit, 0))
        return Call("ListEvents", request, lambda r: [_event(e) for e in r.events])

    @staticmethod
    def retrain(model: str, reason: str, after: int) -> Call[RetrainQueued]:
        request = pb.RetrainRequest(model=model, reason=reason)
        return Call("Retrain", request, lambda r: RetrainQueued(r.job_id, r.message, after))


def _new(events: list[Event], after: int) -> list[Event]:
    return sorted((e for e in events if e.id > after), key=lambda e: e.id)


class Monitor(Client):
    """The monitor's queries and retraining, blocking calls. ``token``/``token_file``: the
    control token for ``retrain`` (or the ingest token, for ``send_labels``)."""

    DEFAULT_ADDRESS = "localhost:8003"
    _stub_class = pb_grpc.MonitorStub

    def drift(self, model: str, *, version: int | None = None, window: Window = None) -> Drift:
        """Drift of ``model`` (its stable version unless ``version``) over ``window``."""
        return self._run(_Calls.drift(model, version, window))

    def accuracy(
        self, model: str, *, version: int | None = None, window: Window = None
    ) -> Accuracy:
        """Accuracy from the labels joined to the window's predictions."""
        return self._run(_Calls.accuracy(model, version, window))

    def events(self, model: str = "", limit: int = 50) -> list[Event]:
        """Recorded decisions, newest first (of every model when ``model`` is empty)."""
        return self._run(_Calls.events(model, limit))

    def retrain(self, model: str, *, reason: str = "") -> RetrainQueued:
        """Queue a retrain of ``model`` now; its outcome is an event."""
        events = self.events(model, 1)
        return self._run(_Calls.retrain(model, reason, events[0].id if events else 0))

    def wait_for_retrain(
        self,
        model: str,
        after_event: int,
        *,
        timeout: float = 900.0,
        poll: float = 1.0,
        progress: Callable[[Event], None] | None = None,
    ) -> Event:
        """Follow the model's events after ``after_event`` until a retrain ends; returns its
        last event (``kind`` in ``RETRAIN_OUTCOMES``). ``progress`` sees every new event.
        TimeoutError after ``timeout`` seconds without an outcome."""
        deadline = time.monotonic() + timeout
        while True:
            for event in _new(self.events(model, 100), after_event):
                after_event = event.id
                if progress is not None:
                    progress(event)
                if event.kind in RETRAIN_OUTCOMES:
                    return event
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no retrain outcome of model {model!r} in {timeout:g} s")
            time.sleep(poll)

    def send_labels(
        self, labels: Mapping[str, LabelValue] | Iterable[Label], *, model: str = ""
    ) -> LabelReceipt:
        """Send labels straight to the monitor (``Gateway.send_labels`` forwards them)."""
        total = LabelReceipt()
        for request in label_requests(labels, model):
            total += receipt(self._connection.call(self._stub.SendLabels, request, None))
        return total


class AsyncMonitor(AsyncClient):
    """``Monitor`` for asyncio: the same calls, awaited. Make it inside the running loop."""

    DEFAULT_ADDRESS = "localhost:8003"
    _stub_class = pb_grpc.MonitorStub

    async def drift(
        self, model: str, *, version: int | None = None, window: Window = None
    ) -> Drift:
        return await self._run(_Calls.drift(model, version, window))

    async def accuracy(
        self, model: str, *, version: int | None = None, window: Window = None
    ) -> Accuracy:
        return await self._run(_Calls.accuracy(model, version, window))

    async def events(self, model: str = "", limit: int = 50) -> list[Event]:
        return await self._run(_Calls.events(model, limit))

    async def retrain(self, model: str, *, reason: str = "") -> RetrainQueued:
        events = await self.events(model, 1)
        return await self._run(_Calls.retrain(model, reason, events[0].id if events else 0))

    async def wait_for_retrain(
        self,
        model: str,
        after_event: int,
        *,
        timeout: float = 900.0,
        poll: float = 1.0,
        progress: Callable[[Event], None] | None = None,
    ) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for event in _new(await self.events(model, 100), after_event):
                    after_event = event.id
                    if progress is not None:
                        progress(event)
                    if event.kind in RETRAIN_OUTCOMES:
                        return event
                await asyncio.sleep(poll)

    async def send_labels(
        self, labels: Mapping[str, LabelValue] | Iterable[Label], *, model: str = ""
    ) -> LabelReceipt:
        total = LabelReceipt()
        for request in label_requests(labels, model):
            answer = await self._connection.call(self._stub.SendLabels, request, None)
            total += receipt(answer)
        return total
