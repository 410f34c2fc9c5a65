"""``driftgate.feedback.v1.Feedback`` on the gateway: labels buffered and forwarded.

Production applications send ground-truth labels by request id to the address they already
call; the gateway holds them in a bounded buffer and the reporter forwards them to the
monitor, which joins them with the prediction records.
"""

from __future__ import annotations

from typing import Any

import grpc

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core.auth import Credentials, Role
from driftgate.core.errors import FailedPrecondition
from driftgate.core.rpc import authorize
from driftgate.gateway.reporter import LabelBuffer

__all__ = ["FeedbackServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class FeedbackServicer(fb_grpc.FeedbackServicer):  # type: ignore[misc]
    def __init__(self, labels: LabelBuffer | None, credentials: Credentials | None = None) -> None:
        self._labels = labels
        self._credentials = credentials or Credentials()

    async def SendLabels(self, request: Any, context: Context) -> Any:
        authorize(self._credentials, Role.INGEST, context)
        if self._labels is None:
            raise FailedPrecondition(
                "this gateway forwards labels only when a monitor is configured (--monitor); "
                "send them to the monitor's Feedback service instead"
            )
        # The buffer checks the whole batch first (count, ids, values, sizes: check_labels).
        accepted = self._labels.add(request.labels)
        return fb.SendLabelsResponse(accepted=accepted)
