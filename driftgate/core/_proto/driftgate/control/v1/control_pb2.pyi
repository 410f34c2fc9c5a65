import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_STABLE: _ClassVar[Role]
    ROLE_CANARY: _ClassVar[Role]
    ROLE_SHADOW: _ClassVar[Role]
    ROLE_STANDBY: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_STABLE: Role
ROLE_CANARY: Role
ROLE_SHADOW: Role
ROLE_STANDBY: Role

class Canary(_message.Message):
    __slots__ = ("version", "weight")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    version: int
    weight: float
    def __init__(self, version: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class DeploymentState(_message.Message):
    __slots__ = ("model", "stable", "canary", "shadow", "revision", "updated_at", "updated_by", "previous")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    model: str
    stable: int
    canary: Canary
    shadow: int
    revision: int
    updated_at: _timestamp_pb2.Timestamp
    updated_by: str
    previous: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., stable: _Optional[int] = ..., canary: _Optional[_Union[Canary, _Mapping]] = ..., shadow: _Optional[int] = ..., revision: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ..., previous: _Optional[_Iterable[int]] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("model", "version", "role", "canary_weight", "expected_revision", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    role: Role
    canary_weight: float
    expected_revision: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ..., canary_weight: _Optional[float] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ...) -> None: ...

class SetTrafficRequest(_message.Message):
    __slots__ = ("model", "canary_weight", "expected_revision", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    canary_weight: float
    expected_revision: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., canary_weight: _Optional[float] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SetTrafficResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ...) -> None: ...

class StartShadowRequest(_message.Message):
    __slots__ = ("model", "version", "expected_revision", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    expected_revision: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StartShadowResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ...) -> None: ...

class StopShadowRequest(_message.Message):
    __slots__ = ("model", "version", "expected_revision", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    expected_revision: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StopShadowResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("model", "expected_revision", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    expected_revision: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class PromoteResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model", "version", "expected_revision", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    expected_revision: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "role", "ready", "requests", "errors", "latency_p50_ms", "latency_p99_ms", "loaded_at", "weight", "shadow_compared", "shadow_agreement", "shadow_dropped")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    version: int
    role: Role
    ready: bool
    requests: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    loaded_at: _timestamp_pb2.Timestamp
    weight: float
    shadow_compared: int
    shadow_agreement: float
    shadow_dropped: int
    def __init__(self, version: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ..., ready: _Optional[bool] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., weight: _Optional[float] = ..., shadow_compared: _Optional[int] = ..., shadow_agreement: _Optional[float] = ..., shadow_dropped: _Optional[int] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("state", "versions", "failed")
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    failed: _containers.RepeatedCompositeFieldContainer[FailedVersion]
    def __init__(self, state: _Optional[_Union[DeploymentState, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., failed: _Optional[_Iterable[_Union[FailedVersion, _Mapping]]] = ...) -> None: ...

class FailedVersion(_message.Message):
    __slots__ = ("version", "reason", "quarantined")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    version: int
    reason: str
    quarantined: bool
    def __init__(self, version: _Optional[int] = ..., reason: _Optional[str] = ..., quarantined: _Optional[bool] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("model", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    limit: int
    def __init__(self, model: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("time", "actor", "reason", "action", "before", "after", "revision")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    actor: str
    reason: str
    action: str
    before: DeploymentState
    after: DeploymentState
    revision: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., action: _Optional[str] = ..., before: _Optional[_Union[DeploymentState, _Mapping]] = ..., after: _Optional[_Union[DeploymentState, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...
