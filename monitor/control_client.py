"""The monitor's client of the gateway's ``driftgate.control.v1.Control`` service.

The monitor changes deployments only through this client (deploy a canary, set its weight,
promote, roll back), with the control token as a bearer token and ``driftgate-monitor`` as
the actor recorded in the gateway's history; a promotion or rollback also names its bounded
cause (``driftgate.core.telemetry``), the label the gateway counts it under. gRPC errors
become ``ControlError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from driftgate.core.auth import TokenSource
from driftgate.core.errors import DriftgateError, Status
from driftgate.core.rpc import channel
from driftgate.core.telemetry import CAUSE_METADATA
from driftgate.core.tls import ClientTLS

__all__ = ["ControlConflict", "ControlError", "DeploymentView", "GatewayControl"]

ACTOR = "driftgate-monitor"


class ControlError(DriftgateError):
    """The gateway refused a control call or could not be reached."""

    code = Status.UNAVAILABLE


class ControlConflict(ControlError):
    """The deployment moved since it was read (FAILED_PRECONDITION on ``expected_revision``):
    an operator, or another monitor, acted first. The caller backs off."""

    code = Status.FAILED_PRECONDITION


@dataclass(frozen=True)
class DeploymentView:
    """What the gateway serves for one model."""

    model: str
    stable: int
    canary: int  # 0 when there is none
    canary_weight: float
    revision: int


class GatewayControl:
    """Synchronous Control calls to the gateway at ``address``."""

    def __init__(
        self,
        address: str,
        token: TokenSource | None = None,
        timeout: float = 30.0,
        tls: ClientTLS | None = None,
    ) -> None:
        from driftgate.core._proto.driftgate.control.v1 import control_pb2, control_pb2_grpc

        self.address = address
        self._pb: Any = control_pb2
        self._channel = channel(address, tls)
        self._stub: Any = control_pb2_grpc.ControlStub(self._channel)
        self._token = token
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, cause: str = "") -> Any:
        metadata = [("driftgate-actor", ACTOR)]
        if cause:
            metadata.append((CAUSE_METADATA, cause))
        token = self._token.current() if self._token is not None else None
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            error = (
                ControlConflict
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                else ControlError
            )
            raise error(f"gateway {self.address} {method}: {code}: {exc.details()}") from exc

    def status(self, model: str) -> DeploymentView:
        response = self._call("GetStatus", self._pb.GetStatusRequest(model=model))
        for status in response.models:
            if status.state.model == model:
                return _view(status.state)
        raise ControlError(f"gateway {self.address} does not serve model {model!r}")

    def deploy_canary(
        self, model: str, version: int, weight: float, reason: str, revision: int | None = None
    ) -> DeploymentView:
        """Deploy ``version`` as the canary at ``weight``; with ``revision``, only if the
        deployment is still at that revision (else ``ControlConflict``)."""
        response = self._call(
            "Deploy",
            self._pb.DeployRequest(
                model=model,
                version=version,
                role=self._pb.ROLE_CANARY,
                canary_weight=weight,
                reason=reason,
                expected_revision=revision,
            ),
        )
        return _view(response.state)

    def pin_stable(
        self, model: str, version: int, reason: str, revision: int | None = None
    ) -> DeploymentView:
        """Deploy ``version`` as the stable (a no-op when it already is): a repository without
        a pinned stable serves its newest version, which a retrained version would become.
        With ``revision``, only if the deployment is still at it (else ``ControlConflict``)."""
        response = self._call(
            "Deploy",
            self._pb.DeployRequest(
                model=model,
                version=version,
                role=self._pb.ROLE_STABLE,
                reason=reason,
                expected_revision=revision,
            ),
        )
        return _view(response.state)

    def set_traffic(self, model: str, weight: float, reason: str, revision: int) -> None:
        self._call(
            "SetTraffic",
            self._pb.SetTrafficRequest(
                model=model, canary_weight=weight, reason=reason, expected_revision=revision
            ),
        )

    def promote(self, model: str, reason: str, revision: int, cause: str = "") -> None:
        self._call(
            "Promote",
            self._pb.PromoteRequest(model=model, reason=reason, expected_revision=revision),
            cause,
        )

    def rollback(self, model: str, reason: str, revision: int, cause: str = "") -> None:
        self._call(
            "Rollback",
            self._pb.RollbackRequest(model=model, reason=reason, expected_revision=revision),
            cause,
        )


def _view(state: Any) -> DeploymentView:
    canary = state.canary.version if state.HasField("canary") else 0
    weight = state.canary.weight if state.HasField("canary") else 0.0
    return DeploymentView(state.model, state.stable, canary, weight, state.revision)
