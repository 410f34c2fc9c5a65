import datetime

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as _feedback_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_VERDICT_UNSPECIFIED: _ClassVar[DriftVerdict]
    INSUFFICIENT_DATA: _ClassVar[DriftVerdict]
    NO_DRIFT: _ClassVar[DriftVerdict]
    DRIFT: _ClassVar[DriftVerdict]
DRIFT_VERDICT_UNSPECIFIED: DriftVerdict
INSUFFICIENT_DATA: DriftVerdict
NO_DRIFT: DriftVerdict
DRIFT: DriftVerdict

class ReportRequest(_message.Message):
    __slots__ = ("instance_id", "sequence", "sent_time", "window_start", "window_end", "versions", "records")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    sequence: int
    sent_time: _timestamp_pb2.Timestamp
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    versions: _containers.RepeatedCompositeFieldContainer[VersionStats]
    records: _containers.RepeatedCompositeFieldContainer[PredictionRecord]
    def __init__(self, instance_id: _Optional[str] = ..., sequence: _Optional[int] = ..., sent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionStats, _Mapping]]] = ..., records: _Optional[_Iterable[_Union[PredictionRecord, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("committed_sequence",)
    COMMITTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    committed_sequence: int
    def __init__(self, committed_sequence: _Optional[int] = ...) -> None: ...

class BinCounts(_message.Message):
    __slots__ = ("name", "counts", "nan_count", "inf_count", "out_of_range_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    NAN_COUNT_FIELD_NUMBER: _ClassVar[int]
    INF_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_RANGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    counts: _containers.RepeatedScalarFieldContainer[int]
    nan_count: int
    inf_count: int
    out_of_range_count: int
    def __init__(self, name: _Optional[str] = ..., counts: _Optional[_Iterable[int]] = ..., nan_count: _Optional[int] = ..., inf_count: _Optional[int] = ..., out_of_range_count: _Optional[int] = ...) -> None: ...

class LatencyHistogram(_message.Message):
    __slots__ = ("upper_bounds_seconds", "counts", "sum_seconds")
    UPPER_BOUNDS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    upper_bounds_seconds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum_seconds: float
    def __init__(self, upper_bounds_seconds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., sum_seconds: _Optional[float] = ...) -> None: ...

class VersionStats(_message.Message):
    __slots__ = ("model", "version", "features", "predictions", "requests", "errors", "rows", "latency")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    features: _containers.RepeatedCompositeFieldContainer[BinCounts]
    predictions: BinCounts
    requests: int
    errors: int
    rows: int
    latency: LatencyHistogram
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., features: _Optional[_Iterable[_Union[BinCounts, _Mapping]]] = ..., predictions: _Optional[_Union[BinCounts, _Mapping]] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., rows: _Optional[int] = ..., latency: _Optional[_Union[LatencyHistogram, _Mapping]] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("string_value", "int64_value", "double_value", "probabilities")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int64_value: int
    double_value: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, string_value: _Optional[str] = ..., int64_value: _Optional[int] = ..., double_value: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictionRecord(_message.Message):
    __slots__ = ("request_id", "time", "model", "version", "numeric_values", "categorical_values", "prediction")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_VALUES_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_VALUES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    time: _timestamp_pb2.Timestamp
    model: str
    version: int
    numeric_values: _containers.RepeatedScalarFieldContainer[float]
    categorical_values: _containers.RepeatedScalarFieldContainer[str]
    prediction: Prediction
    def __init__(self, request_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., numeric_values: _Optional[_Iterable[float]] = ..., categorical_values: _Optional[_Iterable[str]] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("model", "version", "window", "end_time")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    window: _duration_pb2.Duration
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("name", "categorical", "rows", "psi", "js_distance", "ks_statistic", "chi_square", "l_infinity", "statistic", "critical_value", "verdict", "effect_size_floor", "quality", "distribution_verdict", "test", "effect_statistic", "reference_rows", "alpha", "bin_edges", "categories", "reference_counts", "window_counts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    JS_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    L_INFINITY_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    EFFECT_SIZE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_VERDICT_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    EFFECT_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_COUNTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    categorical: bool
    rows: int
    psi: float
    js_distance: float
    ks_statistic: float
    chi_square: float
    l_infinity: float
    statistic: str
    critical_value: float
    verdict: DriftVerdict
    effect_size_floor: float
    quality: _containers.RepeatedCompositeFieldContainer[DataQuality]
    distribution_verdict: DriftVerdict
    test: str
    effect_statistic: str
    reference_rows: int
    alpha: float
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    categories: _containers.RepeatedScalarFieldContainer[str]
    reference_counts: _containers.RepeatedScalarFieldContainer[int]
    window_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., categorical: _Optional[bool] = ..., rows: _Optional[int] = ..., psi: _Optional[float] = ..., js_distance: _Optional[float] = ..., ks_statistic: _Optional[float] = ..., chi_square: _Optional[float] = ..., l_infinity: _Optional[float] = ..., statistic: _Optional[str] = ..., critical_value: _Optional[float] = ..., verdict: _Optional[_Union[DriftVerdict, str]] = ..., effect_size_floor: _Optional[float] = ..., quality: _Optional[_Iterable[_Union[DataQuality, _Mapping]]] = ..., distribution_verdict: _Optional[_Union[DriftVerdict, str]] = ..., test: _Optional[str] = ..., effect_statistic: _Optional[str] = ..., reference_rows: _Optional[int] = ..., alpha: _Optional[float] = ..., bin_edges: _Optional[_Iterable[float]] = ..., categories: _Optional[_Iterable[str]] = ..., reference_counts: _Optional[_Iterable[int]] = ..., window_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class DataQuality(_message.Message):
    __slots__ = ("kind", "test", "count", "rows", "reference_count", "reference_rows", "rate", "reference_rate", "p_value", "alpha", "effect_size_floor", "verdict")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_RATE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    EFFECT_SIZE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    test: str
    count: int
    rows: int
    reference_count: int
    reference_rows: int
    rate: float
    reference_rate: float
    p_value: float
    alpha: float
    effect_size_floor: float
    verdict: DriftVerdict
    def __init__(self, kind: _Optional[str] = ..., test: _Optional[str] = ..., count: _Optional[int] = ..., rows: _Optional[int] = ..., reference_count: _Optional[int] = ..., reference_rows: _Optional[int] = ..., rate: _Optional[float] = ..., reference_rate: _Optional[float] = ..., p_value: _Optional[float] = ..., alpha: _Optional[float] = ..., effect_size_floor: _Optional[float] = ..., verdict: _Optional[_Union[DriftVerdict, str]] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("model", "version", "window_start", "window_end", "rows", "features", "prediction", "dataset_drift_share", "dataset_verdict")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    DATASET_DRIFT_SHARE_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERDICT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    rows: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    prediction: FeatureDrift
    dataset_drift_share: float
    dataset_verdict: DriftVerdict
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., prediction: _Optional[_Union[FeatureDrift, _Mapping]] = ..., dataset_drift_share: _Optional[float] = ..., dataset_verdict: _Optional[_Union[DriftVerdict, str]] = ...) -> None: ...

class GetAccuracyRequest(_message.Message):
    __slots__ = ("model", "version", "window", "end_time")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    window: _duration_pb2.Duration
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetAccuracyResponse(_message.Message):
    __slots__ = ("model", "version", "window_start", "window_end", "label_count", "prediction_count", "coverage", "accuracy", "f1", "log_loss", "mae", "rmse", "label_lag", "recall", "estimated_accuracy", "label_lag_p90", "label_lag_p99", "estimated_accuracy_labelled", "estimate_calibrated", "confusion", "expected_confusion", "expected_confusion_labelled")
    class RecallEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    RMSE_FIELD_NUMBER: _ClassVar[int]
    LABEL_LAG_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LABEL_LAG_P90_FIELD_NUMBER: _ClassVar[int]
    LABEL_LAG_P99_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_LABELLED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_CALIBRATED_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CONFUSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CONFUSION_LABELLED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    label_count: int
    prediction_count: int
    coverage: float
    accuracy: float
    f1: float
    log_loss: float
    mae: float
    rmse: float
    label_lag: _duration_pb2.Duration
    recall: _containers.ScalarMap[str, float]
    estimated_accuracy: float
    label_lag_p90: _duration_pb2.Duration
    label_lag_p99: _duration_pb2.Duration
    estimated_accuracy_labelled: float
    estimate_calibrated: bool
    confusion: _containers.RepeatedCompositeFieldContainer[ConfusionCell]
    expected_confusion: _containers.RepeatedCompositeFieldContainer[ConfusionCell]
    expected_confusion_labelled: _containers.RepeatedCompositeFieldContainer[ConfusionCell]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., label_count: _Optional[int] = ..., prediction_count: _Optional[int] = ..., coverage: _Optional[float] = ..., accuracy: _Optional[float] = ..., f1: _Optional[float] = ..., log_loss: _Optional[float] = ..., mae: _Optional[float] = ..., rmse: _Optional[float] = ..., label_lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., recall: _Optional[_Mapping[str, float]] = ..., estimated_accuracy: _Optional[float] = ..., label_lag_p90: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., label_lag_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., estimated_accuracy_labelled: _Optional[float] = ..., estimate_calibrated: _Optional[bool] = ..., confusion: _Optional[_Iterable[_Union[ConfusionCell, _Mapping]]] = ..., expected_confusion: _Optional[_Iterable[_Union[ConfusionCell, _Mapping]]] = ..., expected_confusion_labelled: _Optional[_Iterable[_Union[ConfusionCell, _Mapping]]] = ...) -> None: ...

class ConfusionCell(_message.Message):
    __slots__ = ("actual", "predicted", "count")
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    actual: str
    predicted: str
    count: float
    def __init__(self, actual: _Optional[str] = ..., predicted: _Optional[str] = ..., count: _Optional[float] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("model", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    limit: int
    def __init__(self, model: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "time", "kind", "model", "version", "reason", "figures_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIGURES_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    kind: str
    model: str
    version: int
    reason: str
    figures_json: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[str] = ..., figures_json: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RetrainRequest(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RetrainResponse(_message.Message):
    __slots__ = ("job_id", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    message: str
    def __init__(self, job_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
