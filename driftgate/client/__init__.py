"""driftgate's Python client: inference, labels, deployments and monitoring over gRPC.

Blocking classes and their asyncio twins (``Async...``), all context managers::

    import numpy as np
    from driftgate.client import Control, Gateway, Monitor

    with Gateway("localhost:8001") as gateway:
        answer = gateway.infer("churn", np.array([[0.1, 2.0, 3.5]]), request_id="order-42")
        gateway.send_labels({"order-42": 1}, model="churn")
    with Control("localhost:8001", token_file="control-token") as control:
        control.deploy("churn", 2, canary=10)
    with Monitor("localhost:8003") as monitor:
        print(monitor.accuracy("churn", window=0).accuracy)

Every class takes ``tls=ClientTLS(ca=..., cert=..., key=...)`` for TLS (``ClientTLS()``
trusts the system's CAs), ``token`` or ``token_file`` for the bearer token its calls need,
and ``timeout`` in seconds. Every failed call raises a ``ClientError`` subclass carrying the
gRPC status (``code``) and the server's message (``details``).
"""

from __future__ import annotations

from driftgate.client._tensors import TensorSpec
from driftgate.client.control import (
    AsyncControl,
    Control,
    Deployment,
    HistoryEntry,
    ModelStatus,
    VersionStatus,
)
from driftgate.client.errors import (
    ClientError,
    Conflict,
    InvalidArgument,
    NotFound,
    Overloaded,
    Refused,
    ServerError,
    Unauthenticated,
    Unreachable,
    Unsupported,
)
from driftgate.client.inference import AsyncGateway, Gateway, ModelMetadata, Prediction
from driftgate.client.labels import Label, LabelReceipt
from driftgate.client.monitor import (
    RETRAIN_OUTCOMES,
    Accuracy,
    AsyncMonitor,
    Drift,
    Event,
    FeatureDrift,
    Monitor,
    RetrainQueued,
)
from driftgate.core.tls import ClientTLS

__all__ = [
    "RETRAIN_OUTCOMES",
    "Accuracy",
    "AsyncControl",
    "AsyncGateway",
    "AsyncMonitor",
    "ClientError",
    "ClientTLS",
    "Conflict",
    "Control",
    "Deployment",
    "Drift",
    "Event",
    "FeatureDrift",
    "Gateway",
    "HistoryEntry",
    "InvalidArgument",
    "Label",
    "LabelReceipt",
    "ModelMetadata",
    "ModelStatus",
    "Monitor",
    "NotFound",
    "Overloaded",
    "Prediction",
    "Refused",
    "RetrainQueued",
    "ServerError",
    "TensorSpec",
    "Unauthenticated",
    "Unreachable",
    "Unsupported",
    "VersionStatus",
]
