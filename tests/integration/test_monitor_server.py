"""A real ``driftgate monitor`` process: reports, labels, queries, crash safety, metrics."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.profile import (
    ReferenceProfile,
)
from tests.monitor_profiles import churn_profile
from tests.processes import DriftgateProcess

pytestmark = pytest.mark.integration

MODEL = "churn"
TOTAL = Duration(seconds=0)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReferenceProfile]:
    root = tmp_path_factory.mktemp("models")
    profile = churn_profile()
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not read by the monitor")
    (version / "reference.json").write_text(json.dumps(profile.to_dict()))
    (version / "model.json").write_text(
        json.dumps({"task": "classification", "class_labels": ["no", "yes"]})
    )
    return root, profile


def _start(repository: Path, data_dir: Path, workdir: Path) -> DriftgateProcess:
    args = [
        "--repository", str(repository), "--data-dir", str(data_dir), "--host", "127.0.0.1",
        "--grpc-port", "0", "--metrics-port", "0", "--evaluate-interval", "0.3",
    ]  # fmt: skip
    return DriftgateProcess("monitor", args, workdir, {}).wait_ready()


@pytest.fixture(scope="module")
def monitor(
    repository: tuple[Path, ReferenceProfile], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    workdir = tmp_path_factory.mktemp("monitor")
    state: dict[str, object] = {"workdir": workdir, "data": workdir / "data"}
    state["process"] = _start(repository[0], workdir / "data", workdir)
    yield state
    process = state["process"]
    assert isinstance(process, DriftgateProcess)
    process.terminate()


def _stub(process: DriftgateProcess) -> pb_grpc.MonitorStub:
    return pb_grpc.MonitorStub(grpc.insecure_channel(process.address))


def _counts(profile: ReferenceProfile, scale: int) -> pb.VersionStats:
    age = np.asarray(profile.features[0].bins.counts) * scale
    spend = np.asarray(profile.features[1].bins.counts).copy()
    spend[1:3] *= 6  # far more mass in the low bins: drift
    plan = np.asarray(profile.features[2].bins.counts)
    prediction = np.asarray(profile.prediction.counts)  # type: ignore[union-attr]
    return pb.VersionStats(
        model=MODEL, version=1,
        features=[
            pb.BinCounts(name="age", counts=age.tolist()),
            pb.BinCounts(name="spend", counts=spend.tolist(), nan_count=3),
            pb.BinCounts(name="plan", counts=plan.tolist()),
        ],
        predictions=pb.BinCounts(name="label", counts=prediction.tolist()),
        requests=10, rows=int(age.sum()),
    )  # fmt: skip


def _report(profile: ReferenceProfile, sequence: int, ids: list[str]) -> pb.ReportRequest:
    request = pb.ReportRequest(
        instance_id="gateway-1", sequence=sequence, versions=[_counts(profile, 1)]
    )
    now = time.time()
    request.sent_time.FromNanoseconds(int(now * 1e9))
    request.window_start.FromNanoseconds(int(now * 1e9))
    for i, request_id in enumerate(ids):
        record = request.records.add(request_id=request_id, model=MODEL, version=1)
        record.time.FromNanoseconds(int((now - 5) * 1e9))
        record.numeric_values.extend([0.1, 0.2])
        record.categorical_values.append("a")
        record.prediction.string_value = "yes" if i % 2 else "no"
        record.prediction.probabilities.extend([0.2, 0.8] if i % 2 else [0.7, 0.3])
    return request


def _psi(a: np.ndarray, b: np.ndarray) -> float:
    eps, k = 1e-4, len(a)
    p = (a / a.sum() + eps) / (1 + k * eps)
    q = (b / b.sum() + eps) / (1 + k * eps)
    return float(np.sum((q - p) * np.log(q / p)))


def test_reports_are_committed_once_and_drift_is_answered(
    monitor: dict[str, object], repository: tuple[Path, ReferenceProfile]
) -> None:
    process = monitor["process"]
    assert isinstance(process, DriftgateProcess)
    profile = repository[1]
    stub = _stub(process)
    ids = [f"req-{i}" for i in range(10)]
    assert stub.Report(_report(profile, 1, ids)).committed_sequence == 1
    assert stub.Report(_report(profile, 1, ids)).committed_sequence == 1  # resent
    drift = stub.GetDrift(pb.GetDriftRequest(model=MODEL, window=TOTAL))
    assert drift.version == 1
    by_name = {f.name: f for f in drift.features}
    spend = np.asarray(profile.features[1].bins.counts)
    window = spend.copy()
    window[1:3] *= 6
    assert by_name["spend"].rows == window.sum()  # once, not twice
    assert by_name["spend"].psi == pytest.approx(_psi(spend, window), rel=1e-9)
    cdf = np.abs(np.cumsum(spend) / spend.sum() - np.cumsum(window) / window.sum())
    assert by_name["spend"].ks_statistic == pytest.approx(cdf.max(), rel=1e-9)
    assert by_name["spend"].verdict == pb.DRIFT
    assert by_name["age"].verdict == pb.NO_DRIFT and by_name["age"].psi == pytest.approx(
        0, abs=1e-9
    )
    assert by_name["plan"].HasField("chi_square") and not by_name["plan"].HasField("ks_statistic")
    assert drift.dataset_drift_share == pytest.approx(1 / 3)
    assert drift.dataset_verdict == pb.DRIFT
    assert drift.prediction.verdict == pb.NO_DRIFT


def test_labels_join_and_accuracy_matches_hand_computation(
    monitor: dict[str, object], repository: tuple[Path, ReferenceProfile]
) -> None:
    process = monitor["process"]
    assert isinstance(process, DriftgateProcess)
    stub = _stub(process)
    truth = {f"req-{i}": "yes" if i in (1, 3, 4) else "no" for i in range(8)}
    labels = [fpb.Label(request_id=k, string_value=v) for k, v in truth.items()]
    labels.append(fpb.Label(request_id="req-0", string_value="yes"))  # duplicate
    labels.append(fpb.Label(request_id="later", string_value="no"))  # before its record
    answer = stub.SendLabels(fpb.SendLabelsRequest(labels=labels))
    assert (answer.accepted, answer.duplicates, answer.unknown) == (8, 1, 1)
    stub.Report(_report(repository[1], 2, ["later"]))
    result = stub.GetAccuracy(pb.GetAccuracyRequest(model=MODEL, version=1, window=TOTAL))
    # Predictions: odd ids "yes", even "no". Labelled: req-0..7 plus "later" (predicted "no").
    predicted = {f"req-{i}": "yes" if i % 2 else "no" for i in range(8)} | {"later": "no"}
    truth["later"] = "no"
    correct = sum(predicted[k] == v for k, v in truth.items())
    assert result.label_count == 9 and result.prediction_count == 11
    assert result.coverage == pytest.approx(9 / 11)
    assert result.accuracy == pytest.approx(correct / 9)
    assert result.recall["yes"] == pytest.approx(2 / 3)  # req-1, req-3 right, req-4 wrong
    assert result.estimated_accuracy == pytest.approx((6 * 0.7 + 5 * 0.8) / 11)
    assert result.HasField("log_loss") and result.HasField("f1")
    with pytest.raises(grpc.RpcError) as error:
        stub.SendLabels(fpb.SendLabelsRequest(labels=[fpb.Label(request_id="x")]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sigkill_loses_no_acknowledged_report_and_double_counts_none(
    monitor: dict[str, object], repository: tuple[Path, ReferenceProfile]
) -> None:
    process = monitor["process"]
    assert isinstance(process, DriftgateProcess)
    stub = _stub(process)
    before = stub.GetDrift(pb.GetDriftRequest(model=MODEL, window=TOTAL))
    assert stub.Report(_report(repository[1], 3, [])).committed_sequence == 3
    process.process.send_signal(signal.SIGKILL)
    assert process.terminate() == -signal.SIGKILL  # waits and closes its log
    restarted = _start(repository[0], Path(str(monitor["data"])), Path(str(monitor["workdir"])))
    monitor["process"] = restarted
    stub = _stub(restarted)
    for sequence in (1, 2, 3):  # the gateway resends what it is unsure of
        assert stub.Report(_report(repository[1], sequence, [])).committed_sequence == 3
    after = stub.GetDrift(pb.GetDriftRequest(model=MODEL, window=TOTAL))
    for old, new in zip(before.features, after.features, strict=True):
        assert 2 * new.rows == 3 * old.rows  # sequences 1 and 2 before, 3 once since


VERDICT = "driftgate_monitor_drift_verdict"


def test_metrics_carry_the_documented_labels(monitor: dict[str, object]) -> None:
    process = monitor["process"]
    assert isinstance(process, DriftgateProcess)
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    deadline = time.monotonic() + 20
    expected = [
        f'driftgate_monitor_drift_psi{{feature="spend",model="{MODEL}",version="1"}}',
        # a state set: the state the window is in is 1, the others 0
        f'{VERDICT}{{{VERDICT}="drift",feature="spend",model="{MODEL}",version="1"}} 1.0',
        f'{VERDICT}{{{VERDICT}="no_drift",feature="spend",model="{MODEL}",version="1"}} 0.0',
        f'driftgate_monitor_dataset_drift_share{{model="{MODEL}",version="1"}}',
        f'driftgate_monitor_accuracy{{model="{MODEL}",version="1",window="total"}}',
        f'driftgate_monitor_accuracy_estimate{{model="{MODEL}",version="1",window="1h"}}',
        f'driftgate_monitor_label_coverage{{model="{MODEL}",version="1",window="total"}}',
        'driftgate_monitor_reports_total{result="duplicate"}',
        'driftgate_monitor_store_rows{table="predictions"} 11.0',
        "driftgate_monitor_store_bytes",
    ]
    # Until one evaluation of the restarted monitor has run to its end (the store size last).
    text, missing = "", expected
    while missing and time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        missing = [line for line in expected if line not in text]
        time.sleep(0.3)
    assert not missing, text
