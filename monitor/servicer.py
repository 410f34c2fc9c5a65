"""``driftgate.monitor.v1.Monitor``: protobuf in, ``monitor.service.Monitor`` out, protobuf back.

Store work runs on one worker thread so the event loop never waits on the database. What a
report or a label batch must be to be stored is ``monitor.validation``'s; a refusal is
INVALID_ARGUMENT, counted (``result="invalid"``) and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.auth import Credentials, Role
from driftgate.core.errors import FailedPrecondition, InvalidInput, ModelNotFound, quote
from driftgate.core.profile import Bins, CategoricalBins, NumericBins
from driftgate.core.rpc import authorize
from driftgate.monitor.drift import FeatureDrift, QualityDrift
from driftgate.monitor.service import Monitor, Window
from driftgate.monitor.store import Distribution, LabelIn, PredictionIn, Report, VersionCounts
from driftgate.monitor.validation import (
    MAX_DISTRIBUTIONS,
    MAX_LABELS,
    MAX_RECORDS,
    MAX_VERSIONS,
    bounded,
    check_model_name,
)

__all__ = ["MonitorServicer"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class MonitorServicer(pb_grpc.MonitorServicer):  # type: ignore[misc]
    """The Monitor service; SendLabels also serves ``driftgate.feedback.v1.Feedback``."""

    def __init__(
        self,
        monitor: Monitor,
        executor: ThreadPoolExecutor,
        retrain: Callable[[str, str], None] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.monitor = monitor
        #: Report and SendLabels need the ingest credential, Retrain the operator's
        self._credentials = credentials or Credentials()
        self._executor = executor
        self._retrain = retrain

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def Report(self, request: pb.ReportRequest, context: Any) -> pb.ReportResponse:
        authorize(self._credentials, Role.INGEST, context)
        try:
            report = _report(request)
            sent = _seconds(request.sent_time) if request.HasField("sent_time") else None
            committed = await self._run(self.monitor.ingest, report, sent)
        except InvalidInput as exc:
            self.monitor.metrics.reports.labels("invalid").inc()
            log.warning("refused a report of %s: %s", quote(request.instance_id), exc.message)
            raise
        return pb.ReportResponse(committed_sequence=committed)

    async def SendLabels(
        self, request: fpb.SendLabelsRequest, context: Any
    ) -> fpb.SendLabelsResponse:
        authorize(self._credentials, Role.INGEST, context)
        try:
            bounded("labels", len(request.labels), MAX_LABELS)
            labels = [_label(i, label) for i, label in enumerate(request.labels)]
            outcome = await self._run(self.monitor.add_labels, labels)
        except InvalidInput as exc:
            self.monitor.metrics.labels.labels("invalid").inc(len(request.labels))
            log.warning("refused %d labels: %s", len(request.labels), exc.message)
            raise
        # The wire has no ambiguous count: a label naming no model whose id several models
        # answered is reported as unknown (and counted as ambiguous in the metrics).
        return fpb.SendLabelsResponse(
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            unknown=outcome.unknown + outcome.ambiguous,
        )

    async def GetDrift(self, request: pb.GetDriftRequest, context: Any) -> pb.GetDriftResponse:
        version, window = await self._resolve(request)
        result = await self._run(self.monitor.drift, request.model, version, window)
        profile = await self._run(self.monitor.profile, request.model, version)
        bins = {f.name: f.bins for f in profile.features}
        response = pb.GetDriftResponse(
            model=request.model,
            version=version,
            window_end=_timestamp(window.end),
            rows=result.rows,
            features=[_feature(f, bins.get(f.name)) for f in result.features],
            dataset_drift_share=result.share,
            dataset_verdict=pb.DriftVerdict.Name(int(result.verdict)),
        )
        if window.start is not None:
            response.window_start.CopyFrom(_timestamp(window.start))
        if result.prediction is not None:
            response.prediction.CopyFrom(_feature(result.prediction, profile.prediction))
        return response

    async def GetAccuracy(
        self, request: pb.GetAccuracyRequest, context: Any
    ) -> pb.GetAccuracyResponse:
        version, window = await self._resolve(request)
        a = await self._run(self.monitor.accuracy, request.model, version, window)
        response = pb.GetAccuracyResponse(
            model=request.model,
            version=version,
            window_end=_timestamp(window.end),
            label_count=a.label_count,
            prediction_count=a.prediction_count,
            coverage=a.coverage,
            accuracy=a.accuracy,
            f1=a.f1,
            log_loss=a.log_loss,
            mae=a.mae,
            rmse=a.rmse,
            recall=a.recall,
            estimated_accuracy=a.estimated_accuracy,
            estimated_accuracy_labelled=a.estimated_accuracy_labelled,
            estimate_calibrated=a.estimate_calibrated,
            confusion=_cells(a.confusion),
            expected_confusion=_cells(a.expected_confusion),
            expected_confusion_labelled=_cells(a.expected_confusion_labelled),
        )
        if window.start is not None:
            response.window_start.CopyFrom(_timestamp(window.start))
        lags = a.label_lag_seconds
        for field, name in (
            ("label_lag", "p50"),
            ("label_lag_p90", "p90"),
            ("label_lag_p99", "p99"),
        ):
            if name in lags:
                getattr(response, field).CopyFrom(_duration(lags[name]))
        return response

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Any
    ) -> pb.ListEventsResponse:
        limit = request.limit or 100
        found = await self._run(self.monitor.store.events, request.model, limit)
        return pb.ListEventsResponse(
            events=[
                pb.Event(
                    id=e.id, time=_timestamp(e.time), kind=e.kind, model=e.model,
                    version=e.version, reason=e.reason, figures_json=json.dumps(e.figures),
                )
                for e in found
            ]
        )  # fmt: skip

    async def Retrain(self, request: pb.RetrainRequest, context: Any) -> pb.RetrainResponse:
        authorize(self._credentials, Role.OPERATOR, context)
        if not request.model:
            raise InvalidInput("model is empty")
        if self._retrain is None:
            raise FailedPrecondition("this monitor runs without its scheduler; retraining is off")
        versions = await self._run(self.monitor.repository.versions, request.model)
        if not versions:
            raise ModelNotFound(f"model {request.model!r} has no version in the repository")
        reason = request.reason or "requested with driftgate retrain"
        await self._run(self._retrain, request.model, reason)
        return pb.RetrainResponse(
            job_id=f"{request.model}:retrain-now",
            message=f"retraining of {request.model} queued; follow it with "
            f"`driftgate events {request.model}`",
        )

    async def _resolve(self, request: Any) -> tuple[int, Window]:
        if not request.model:
            raise InvalidInput("model is empty")
        version = request.version if request.HasField("version") else None
        resolved = await self._run(self.monitor.resolve_version, request.model, version)
        seconds = (
            request.window.ToTimedelta().total_seconds() if request.HasField("window") else None
        )
        end = _seconds(request.end_time) if request.HasField("end_time") else None
        return resolved, self.monitor.window(seconds, end)


def _report(request: pb.ReportRequest) -> Report:
    """The report's dataclasses; repeated scalars stay protobuf containers (no copy), and the
    number of objects built is bounded before building them. ``monitor.validation`` checks the
    rest on the store thread."""
    bounded("versions", len(request.versions), MAX_VERSIONS)
    bounded("records", len(request.records), MAX_RECORDS)
    distributions = sum(len(v.features) + 1 for v in request.versions)
    bounded("versions[].features", distributions, MAX_DISTRIBUTIONS)
    start = request.window_start if request.HasField("window_start") else request.sent_time
    return Report(
        instance_id=request.instance_id,
        sequence=request.sequence,
        time=_seconds(start) if start.seconds or start.nanos else _now(),
        versions=[_version(v) for v in request.versions],
        records=[_record(r) for r in request.records],
    )


def _version(v: pb.VersionStats) -> VersionCounts:
    distributions = [_distribution(f, False) for f in v.features]
    if v.HasField("predictions"):
        distributions.append(_distribution(v.predictions, True))
    return VersionCounts(
        model=v.model,
        version=v.version,
        distributions=distributions,
        requests=v.requests,
        errors=v.errors,
        rows=v.rows,
        latency_bounds=v.latency.upper_bounds_seconds,
        latency_counts=v.latency.counts,
        latency_sum=v.latency.sum_seconds,
    )


def _distribution(b: pb.BinCounts, prediction: bool) -> Distribution:
    specials = (b.nan_count, b.inf_count, b.out_of_range_count)
    return Distribution(b.name, b.counts, *specials, prediction)


def _record(r: pb.PredictionRecord) -> PredictionIn:
    p = r.prediction
    kind = p.WhichOneof("value")
    value: str | int | float = "" if kind is None else getattr(p, kind)
    return PredictionIn(
        request_id=r.request_id,
        time=_seconds(r.time) if r.HasField("time") else _now(),
        model=r.model,
        version=r.version,
        numeric=r.numeric_values,
        categorical=r.categorical_values,
        value=value,
        probabilities=p.probabilities,
    )


def _label(index: int, label: fpb.Label) -> LabelIn:
    kind = label.WhichOneof("value")
    if kind is None:
        raise InvalidInput(
            f"labels[{index}]: no value, expected string_value, int64_value or double_value"
        )
    # Optional: without it, the request id must identify one model's record (Store.add_labels).
    if label.model:
        check_model_name(f"labels[{index}].model", label.model)
    when = _seconds(label.time) if label.HasField("time") else _now()
    return LabelIn(label.request_id, getattr(label, kind), when, label.model)


def _feature(f: FeatureDrift, bins: Bins | None) -> pb.FeatureDrift:
    d = f.distances
    return pb.FeatureDrift(
        bin_edges=bins.edges if isinstance(bins, NumericBins) else (),
        categories=bins.categories if isinstance(bins, CategoricalBins) else (),
        reference_counts=f.reference_counts,
        window_counts=f.window_counts,
        name=f.name,
        categorical=f.categorical,
        rows=f.rows,
        psi=d.get("psi", 0.0),
        js_distance=d.get("js_distance", 0.0),
        ks_statistic=d.get("ks_statistic"),
        chi_square=d.get("chi_square"),
        l_infinity=d.get("l_infinity", 0.0),
        statistic=f.statistic,
        critical_value=0.0 if math.isnan(f.critical_value) else f.critical_value,
        verdict=pb.DriftVerdict.Name(int(f.verdict)),
        effect_size_floor=f.floor,
        quality=[_quality(q) for q in f.quality],
        distribution_verdict=pb.DriftVerdict.Name(int(f.distribution_verdict)),
        test=f.test,
        effect_statistic=f.effect or f.statistic,
        reference_rows=f.reference_rows,
        alpha=0.0 if math.isnan(f.alpha) else f.alpha,
    )


def _quality(q: QualityDrift) -> pb.DataQuality:
    return pb.DataQuality(
        kind=q.kind,
        test=q.test,
        count=q.window,
        rows=q.rows,
        reference_count=q.reference,
        reference_rows=q.reference_rows,
        rate=0.0 if math.isnan(q.rate) else q.rate,
        reference_rate=0.0 if math.isnan(q.reference_rate) else q.reference_rate,
        p_value=1.0 if math.isnan(q.p_value) else q.p_value,
        alpha=q.alpha,
        effect_size_floor=q.floor,
        verdict=pb.DriftVerdict.Name(int(q.verdict)),
    )


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _cells(matrix: Mapping[tuple[str, str], float]) -> list[pb.ConfusionCell]:
    """A confusion matrix as cells, in a stable order."""
    return [
        pb.ConfusionCell(actual=a, predicted=p, count=n) for (a, p), n in sorted(matrix.items())
    ]


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _now() -> float:
    return time.time()
