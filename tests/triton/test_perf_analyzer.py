"""Triton's own load generator, perf_analyzer 2.40 over gRPC, against a real gateway.

perf_analyzer reads ServerMetadata, ModelMetadata and ModelConfig to build its requests, then
ModelStatistics before and after each measurement window and checks the figures as it merges
them: it aborts ("Server side statistics compute counts must be the same.") unless the
compute_input, compute_infer and compute_output counts move together. So this test holds the
gateway to what Triton's tools expect of the statistics extension, not only to the protocol.

The binary comes from ``scripts/install_perf_analyzer.sh`` (which ``.ci/run`` calls): the
test is skipped without it, except under CI, where its absence is a failure.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, DriftgateProcess
from tests.triton.helpers import logistic_model, run_gateway, write_version

pytestmark = pytest.mark.integration

PERF_ANALYZER = Path(
    os.environ.get("PERF_ANALYZER", ROOT / ".cache" / "perf_analyzer" / "bin" / "perf_analyzer")
)
MODEL = "lr_perf"
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def perf_analyzer() -> Path:
    if not os.access(PERF_ANALYZER, os.X_OK):
        reason = (
            f"perf_analyzer is missing at {PERF_ANALYZER}: run scripts/install_perf_analyzer.sh"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return PERF_ANALYZER


@pytest.fixture(scope="module")
def perf_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    """A gateway with default flags serving one converted scikit-learn logistic regression."""
    repo = tmp_path_factory.mktemp("perf_repository")
    write_version(repo, MODEL, 1, logistic_model(0).onnx)
    yield from run_gateway(repo, tmp_path_factory.mktemp("perf_gateway"))


def _count(label: str, text: str) -> int:
    """The integer after ``label:`` in perf_analyzer's report (the first such line)."""
    match = re.search(rf"^\s*{re.escape(label)}: (\d+)\s*$", text, re.MULTILINE)
    assert match, f"no '{label}' line in perf_analyzer's report:\n{text}"
    return int(match.group(1))


# 256: that many calls at once wait in gRPC's accept queue, and perf_analyzer stops at the
# first one dropped there; the default --max-queued-calls keeps its soft bound (256) above it
# (at 128, perf_analyzer exited 99).
@pytest.mark.parametrize("concurrency", [1, 16, 256])
def test_perf_analyzer_measures_the_gateway(
    perf_analyzer: Path, perf_gateway: DriftgateProcess, tmp_path: Path, concurrency: int
) -> None:
    csv_path = tmp_path / "perf.csv"
    command = [
        str(perf_analyzer),
        "-i", "grpc",
        "-u", perf_gateway.address,
        "-m", MODEL,
        "-b", "1",
        "--shape", "X:4",
        "--concurrency-range", str(concurrency),
        "--measurement-mode", "count_windows",
        "--measurement-request-count", "200",
        "--max-trials", "10",
        # Any three windows count as stable: this checks the protocol, not the machine's
        # steadiness, and a loaded CI machine would otherwise fail with "unstable".
        "--stability-percentage", "1000",
        "-f", str(csv_path),
    ]  # fmt: skip
    try:
        run = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        # The output of a run cut short is bytes even with text=True.
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        pytest.fail(f"perf_analyzer ran over {TIMEOUT_S} s: {' '.join(command)}\n{partial}")
    report = f"$ {' '.join(command)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, report

    # The CSV: one row, for the concurrency asked, with a throughput.
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["Concurrency"]) for row in rows] == [concurrency], report
    assert float(rows[0]["Inferences/Second"]) > 0, report

    # perf_analyzer reports the server's side only when ServerMetadata lists "statistics".
    client, _, server = run.stdout.partition("  Server: \n")
    assert server, f"no server-side statistics in the report:\n{report}"
    requests = _count("Request count", client)
    successes = _count("Successful request count", server)
    inferences = _count("Inference count", server)
    executions = _count("Execution count", server)
    assert requests > 0, report
    # Both sides count the same windows, the client by response time and the server between
    # two ModelStatistics calls: only requests in flight at the two outer edges may differ.
    slack = 2 * concurrency + requests // 20
    assert abs(successes - requests) <= slack, report
    assert abs(inferences - successes) <= slack, report  # batch size 1: one inference a request
    assert 0 < executions <= inferences, report  # an execution runs one or more requests
    assert "cache hit/miss latency is non-zero" not in run.stderr, report
