"""``driftgate.control.v1.Control``: protobuf in, the deployment state and the manager, out.

A mutating call checks the bearer token (when one is configured), applies one transition
through the ``DeploymentStore`` on a worker thread (file lock, compare-and-set, history),
then reconciles the model at once, so the change serves on this replica when the call
returns; other replicas pick it up from ``deployment.json`` on their next poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from driftgate.core._proto.driftgate.control.v1 import control_pb2 as pb
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as pb_grpc
from driftgate.core.auth import Credentials, Role
from driftgate.core.deployment import (
    Deployment,
    DeploymentStore,
    HistoryEntry,
    deploy,
    promote,
    rollback,
    set_traffic,
    start_shadow,
    stop_shadow,
)
from driftgate.core.errors import InvalidInput, ModelNotFound
from driftgate.core.repository import validate_model_name
from driftgate.core.rpc import authorize, name_worker
from driftgate.core.telemetry import CAUSE_METADATA
from driftgate.gateway.manager import ModelManager, ModelState
from driftgate.gateway.metrics import GatewayMetrics, cause_label, latency_quantiles
from driftgate.gateway.shadow import ShadowMirror

__all__ = ["ACTOR_METADATA", "ControlServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

#: metadata key a client may set to name the person or job behind a call (for the history)
ACTOR_METADATA = "driftgate-actor"

#: the actions counted by cause on driftgate_promotions_total and driftgate_rollbacks_total
_COUNTED = ("Promote", "Rollback")
_ROLES = {
    "stable": pb.ROLE_STABLE,
    "canary": pb.ROLE_CANARY,
    "shadow": pb.ROLE_SHADOW,
    "standby": pb.ROLE_STANDBY,
}


class ControlServicer(pb_grpc.ControlServicer):  # type: ignore[misc]
    def __init__(
        self,
        manager: ModelManager,
        store: DeploymentStore,
        metrics: GatewayMetrics,
        mirror: ShadowMirror,
        credentials: Credentials | None = None,
    ) -> None:
        self._manager = manager
        self._store = store
        self._metrics = metrics
        self._mirror = mirror
        self._credentials = credentials or Credentials()

    # -- mutating calls ------------------------------------------------------------------

    async def Deploy(self, request: pb.DeployRequest, context: Context) -> Any:
        self._authorize(context)  # before anything about the request is said
        if request.role == pb.ROLE_CANARY:
            weight: float | None = request.canary_weight
        elif request.role in (pb.ROLE_STABLE, pb.ROLE_UNSPECIFIED):
            weight = None
        else:
            raise InvalidInput("Deploy: role must be ROLE_STABLE or ROLE_CANARY")
        version = _version(request.version)
        await self._manager.preload(validate_model_name(request.model), version)
        state = await self._change(request, context, "Deploy", lambda d: deploy(d, version, weight))
        return pb.DeployResponse(state=state)

    async def SetTraffic(self, request: pb.SetTrafficRequest, context: Context) -> Any:
        weight = request.canary_weight
        state = await self._change(request, context, "SetTraffic", lambda d: set_traffic(d, weight))
        return pb.SetTrafficResponse(state=state)

    async def StartShadow(self, request: pb.StartShadowRequest, context: Context) -> Any:
        self._authorize(context)
        version = _version(request.version)
        await self._manager.preload(validate_model_name(request.model), version)
        state = await self._change(
            request, context, "StartShadow", lambda d: start_shadow(d, version)
        )
        return pb.StartShadowResponse(state=state)

    async def StopShadow(self, request: pb.StopShadowRequest, context: Context) -> Any:
        version = request.version
        state = await self._change(
            request, context, "StopShadow", lambda d: stop_shadow(d, version)
        )
        return pb.StopShadowResponse(state=state)

    async def Promote(self, request: pb.PromoteRequest, context: Context) -> Any:
        state = await self._change(request, context, "Promote", promote)
        return pb.PromoteResponse(state=state)

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> Any:
        self._authorize(context)
        target = _version(request.version) if request.HasField("version") else None
        if target is not None:
            await self._manager.preload(validate_model_name(request.model), target)
        state = await self._change(request, context, "Rollback", lambda d: rollback(d, target))
        return pb.RollbackResponse(state=state)

    async def _change(
        self,
        request: Any,
        context: Context,
        action: str,
        transition: Callable[[Deployment], Deployment],
    ) -> pb.DeploymentState:
        self._authorize(context)
        model = validate_model_name(request.model)
        cause = (
            cause_label(action, _metadata(context, CAUSE_METADATA)) if action in _COUNTED else ""
        )
        expected = request.expected_revision if request.HasField("expected_revision") else None
        state, changed = await asyncio.to_thread(
            self._store.change,
            model,
            action,
            transition,
            expected_revision=expected,
            actor=_actor(context),
            reason=request.reason,
        )
        if changed:
            if action == "Promote":
                self._metrics.promotions.labels(model, cause).inc()
            elif action == "Rollback":
                self._metrics.rollbacks.labels(model, cause).inc()
            await self._manager.refresh_model(model)
        return _state(state)

    def _authorize(self, context: Context) -> None:
        authorize(self._credentials, Role.OPERATOR, context)

    # -- reading calls -------------------------------------------------------------------

    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> Any:
        await name_worker(context, self._manager.settings.worker)
        if request.model:
            found = self._manager.state(validate_model_name(request.model))
            if found is None:
                raise ModelNotFound(f"model '{request.model}' is not in the repository")
            states = [found]
        else:
            states = self._manager.states()
        return pb.GetStatusResponse(models=[self._model_status(s) for s in states])

    async def GetHistory(self, request: pb.GetHistoryRequest, context: Context) -> Any:
        model = validate_model_name(request.model)
        if request.limit < 0:
            raise InvalidInput(f"GetHistory: limit must be >= 0, got {request.limit}")
        entries = await asyncio.to_thread(self._store.history, model, request.limit or 100)
        return pb.GetHistoryResponse(entries=[_entry(e) for e in entries])

    def _model_status(self, state: ModelState) -> pb.ModelStatus:
        deployment = state.deployment or Deployment(state.name)
        if not deployment.stable and state.stable is not None:
            deployment = replace(deployment, stable=state.stable.version)
        versions = []
        for number, role in sorted(state.roles.items()):
            loaded = state.loaded.get(number)
            if loaded is None:
                continue
            record = loaded.record
            p50, p99 = latency_quantiles(record)
            status = pb.VersionStatus(
                version=number,
                role=_ROLES.get(role, pb.ROLE_UNSPECIFIED),
                ready=True,
                requests=record.requests,
                errors=record.fail.count,
                latency_p50_ms=p50 * 1000,
                latency_p99_ms=p99 * 1000,
                loaded_at=_timestamp(loaded.loaded_at),
                weight=state.traffic.get((str(number), role), 0.0),
            )
            figures = self._mirror.figures.get((state.name, number))
            if role == "shadow" and figures is not None:
                status.shadow_compared = figures.compared
                status.shadow_agreement = figures.agreement
                status.shadow_dropped = figures.dropped
            versions.append(status)
        failed = [
            pb.FailedVersion(version=v, reason=f.reason, quarantined=f.quarantined)
            for v, f in sorted(state.failures.items())
        ]
        return pb.ModelStatus(state=_state(deployment), versions=versions, failed=failed)


def _version(version: int) -> int:
    if version < 1:
        raise InvalidInput(f"version must be an integer >= 1, got {version}")
    return version


def _actor(context: Context) -> str:
    peer = context.peer() or "unknown"
    name = _metadata(context, ACTOR_METADATA)
    return peer if name is None else f"{name[:64]} ({peer})"


def _metadata(context: Context, wanted: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == wanted:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _state(state: Deployment) -> pb.DeploymentState:
    message = pb.DeploymentState(
        model=state.model,
        stable=state.stable,
        shadow=state.shadow,
        revision=state.revision,
        updated_by=state.updated_by,
        previous=state.previous,
    )
    if state.canary is not None:
        message.canary.version = state.canary.version
        message.canary.weight = state.canary.weight
    if state.updated_at:
        message.updated_at.CopyFrom(_timestamp(state.updated_at))
    return message


def _entry(entry: HistoryEntry) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        time=_timestamp(entry.time or time.time()),
        actor=entry.actor,
        reason=entry.reason,
        action=entry.action,
        before=_state(entry.before),
        after=_state(entry.after),
        revision=entry.revision or entry.after.revision,
    )
