"""``Control`` and ``AsyncControl``: a gateway's deployments (deploy, traffic, shadow,
promote, rollback, status, history).

::

    from driftgate.client import Control

    with Control("localhost:8001", token_file="secrets/control-token") as control:
        state = control.deploy("churn", 2, canary=10, reason="new training data")
        control.traffic("churn", 50, expected_revision=state.revision)
        control.promote("churn", reason="healthy")

Changes need the control token (``token`` or ``token_file``); ``status`` and ``history``
need none. Every change returns the new ``Deployment``; a stale ``expected_revision`` raises
``Conflict``, an unknown model or version ``NotFound``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from driftgate.client._base import AsyncClient, Client
from driftgate.client._call import Call, from_timestamp
from driftgate.core._proto.driftgate.control.v1 import control_pb2 as pb
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as pb_grpc

__all__ = ["AsyncControl", "Control", "Deployment", "HistoryEntry", "ModelStatus", "VersionStatus"]

_ROLES = {1: "stable", 2: "canary", 3: "shadow", 4: "standby"}


@dataclass(frozen=True)
class Deployment:
    """What a model serves: ``deployment.json`` as the gateway holds it."""

    model: str
    #: incremented by every change; pass it back as ``expected_revision``
    revision: int
    #: the stable version; None before the first one
    stable: int | None
    #: the canary version and its share of traffic in percent (None and 0 without one)
    canary: int | None
    canary_weight: float
    #: the version receiving a copy of traffic, if any
    shadow: int | None
    #: earlier stable versions, most recent first (the rollback targets)
    previous: tuple[int, ...]
    updated_at: dt.datetime | None
    updated_by: str
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class VersionStatus:
    """Live figures of one loaded version, since it was loaded."""

    version: int
    #: "stable", "canary", "shadow", "standby" or "" (warming up or draining)
    role: str
    ready: bool
    #: percent of traffic (stable and canary)
    weight: float
    requests: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    #: shadow only: compared requests and the share whose first output agreed
    shadow_compared: int
    shadow_agreement: float


@dataclass(frozen=True)
class ModelStatus:
    deployment: Deployment
    versions: tuple[VersionStatus, ...]
    message: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class HistoryEntry:
    """One change of a deployment."""

    revision: int
    time: dt.datetime | None
    #: the call that made it: "Deploy", "SetTraffic", "StartShadow", "StopShadow", ...
    action: str
    actor: str
    reason: str
    before: Deployment
    after: Deployment
    message: Any = field(default=None, repr=False, compare=False)


def deployment(state: Any) -> Deployment:
    canary = state.canary if state.HasField("canary") else None
    return Deployment(
        model=state.model,
        revision=state.revision,
        stable=state.stable or None,
        canary=canary.version if canary is not None else None,
        canary_weight=canary.weight if canary is not None else 0.0,
        shadow=state.shadow or None,
        previous=tuple(state.previous),
        updated_at=from_timestamp(state.updated_at),
        updated_by=state.updated_by,
        message=state,
    )


def _model_status(model: Any) -> ModelStatus:
    versions = tuple(
        VersionStatus(
            version=v.version, role=_ROLES.get(v.role, ""), ready=v.ready, weight=v.weight,
            requests=v.requests, errors=v.errors, latency_p50_ms=v.latency_p50_ms,
            latency_p99_ms=v.latency_p99_ms, shadow_compared=v.shadow_compared,
            shadow_agreement=v.shadow_agreement,
        )
        for v in model.versions
    )  # fmt: skip
    return ModelStatus(deployment(model.state), versions, model)


def _entry(e: Any) -> HistoryEntry:
    return HistoryEntry(
        revision=e.revision, time=from_timestamp(e.time), action=e.action, actor=e.actor,
        reason=e.reason, before=deployment(e.before), after=deployment(e.after), message=e,
    )  # fmt: skip


def _change(method: str, request: Any) -> Call[Deployment]:
    return Call(method, request, lambda response: deployment(response.state))


def _fields(reason: str, expected_revision: int | None, **values: Any) -> dict[str, Any]:
    if expected_revision is not None:
        values["expected_revision"] = expected_revision
    return values | {"reason": reason}


class _Calls:
    """The requests of every Control call, for both clients."""

    @staticmethod
    def deploy(model: str, version: int, canary: float | None, **common: Any) -> Call[Deployment]:
        if canary is None:
            fields = _fields(model=model, version=version, role=pb.ROLE_STABLE, **common)
        else:
            fields = _fields(
                model=model, version=version, role=pb.ROLE_CANARY, canary_weight=canary, **common
            )
        return _change("Deploy", pb.DeployRequest(**fields))

    @staticmethod
    def traffic(model: str, canary: float, **common: Any) -> Call[Deployment]:
        fields = _fields(model=model, canary_weight=canary, **common)
        return _change("SetTraffic", pb.SetTrafficRequest(**fields))

    @staticmethod
    def shadow(model: str, version: int | None, **common: Any) -> Call[Deployment]:
        if version is None:
            return _change("StopShadow", pb.StopShadowRequest(**_fields(model=model, **common)))
        fields = _fields(model=model, version=version, **common)
        return _change("StartShadow", pb.StartShadowRequest(**fields))

    @staticmethod
    def promote(model: str, **common: Any) -> Call[Deployment]:
        return _change("Promote", pb.PromoteRequest(**_fields(model=model, **common)))

    @staticmethod
    def rollback(model: str, to: int | None, **common: Any) -> Call[Deployment]:
        values: dict[str, Any] = {"model": model} | ({"version": to} if to is not None else {})
        return _change("Rollback", pb.RollbackRequest(**_fields(**values, **common)))

    @staticmethod
    def status(model: str) -> Call[list[ModelStatus]]:
        request = pb.GetStatusRequest(model=model)
        return Call("GetStatus", request, lambda r: [_model_status(m) for m in r.models])

    @staticmethod
    def history(model: str, limit: int) -> Call[list[HistoryEntry]]:
        request = pb.GetHistoryRequest(model=model, limit=max(limit, 0))
        return Call("GetHistory", request, lambda r: [_entry(e) for e in r.entries])


class Control(Client):
    """A gateway's Control service, blocking calls. ``timeout`` is the default of every
    call, in seconds; ``token``/``token_file`` the control token (a file is re-read when it
    changes); ``tls`` the CA (and client certificate) to reach a TLS gateway."""

    _stub_class = pb_grpc.ControlStub

    def deploy(
        self,
        model: str,
        version: int,
        *,
        canary: float | None = None,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> Deployment:
        """Serve ``version`` as the stable version, or as a canary with ``canary`` percent."""
        common = {"reason": reason, "expected_revision": expected_revision}
        return self._run(_Calls.deploy(model, version, canary, **common))

    def traffic(
        self, model: str, canary: float, *, reason: str = "", expected_revision: int | None = None
    ) -> Deployment:
        """Give the canary ``canary`` percent of traffic."""
        common = {"reason": reason, "expected_revision": expected_revision}
        return self._run(_Calls.traffic(model, canary, **common))

    def shadow(
        self,
        model: str,
        version: int | None,
        *,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> Deployment:
        """Mirror traffic to ``version``; None stops mirroring."""
        common = {"reason": reason, "expected_revision": expected_revision}
        return self._run(_Calls.shadow(model, version, **common))

    def promote(
        self, model: str, *, reason: str = "", expected_revision: int | None = None
    ) -> Deployment:
        """Make the canary the stable version."""
        return self._run(_Calls.promote(model, reason=reason, expected_revision=expected_revision))

    def rollback(
        self,
        model: str,
        *,
        to: int | None = None,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> Deployment:
        """Drop the canary, else return to the previous stable version (or to ``to``)."""
        common = {"reason": reason, "expected_revision": expected_revision}
        return self._run(_Calls.rollback(model, to, **common))

    def status(self, model: str = "") -> list[ModelStatus]:
        """Deployments and live figures of ``model`` (all models when empty)."""
        return self._run(_Calls.status(model))

    def history(self, model: str, limit: int = 20) -> list[HistoryEntry]:
        """The deployment's changes, newest first."""
        return self._run(_Calls.history(model, limit))


class AsyncControl(AsyncClient):
    """``Control`` for asyncio: the same calls, awaited. Make it inside the running loop."""

    _stub_class = pb_grpc.ControlStub

    async def deploy(
        self,
        model: str,
        version: int,
        *,
        canary: float | None = None,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> Deployment:
        common = {"reason": reason, "expected_revision": expected_revision}
        return await self._run(_Calls.deploy(model, version, canary, **common))

    async def traffic(
        self, model: str, canary: float, *, reason: str = "", expected_revision: int | None = None
    ) -> Deployment:
        common = {"reason": reason, "expected_revision": expected_revision}
        return await self._run(_Calls.traffic(model, canary, **common))

    async def shadow(
        self,
        model: str,
        version: int | None,
        *,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> Deployment:
        common = {"reason": reason, "expected_revision": expected_revision}
        return await self._run(_Calls.shadow(model, version, **common))

    async def promote(
        self, model: str, *, reason: str = "", expected_revision: int | None = None
    ) -> Deployment:
        common = {"reason": reason, "expected_revision": expected_revision}
        return await self._run(_Calls.promote(model, **common))

    async def rollback(
        self,
        model: str,
        *,
        to: int | None = None,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> Deployment:
        common = {"reason": reason, "expected_revision": expected_revision}
        return await self._run(_Calls.rollback(model, to, **common))

    async def status(self, model: str = "") -> list[ModelStatus]:
        return await self._run(_Calls.status(model))

    async def history(self, model: str, limit: int = 20) -> list[HistoryEntry]:
        return await self._run(_Calls.history(model, limit))
