"""The benchmark runs end to end: a few seconds of load against the floor, onnxruntime and
driftgate, and a JSON file whose every row has throughput and no errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"),
        "--duration", "1", "--warmup", "0.5", "--concurrency", "1,4",
        "--targets", "floor,ort,driftgate", "--models", "lr", "--retries", "0",
        "--out", str(out), "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    measured = {(r["target"], r["concurrency"]) for r in rows}
    expected = {(t, c) for t in ("floor", "ort", "driftgate-off", "driftgate-on") for c in (1, 4)}
    assert measured == expected, results.get("failures")
    for row in rows:
        assert "error" not in row, row
        assert row["throughput"] > 0, row
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    assert (out / "results.md").read_text().startswith("# driftgate benchmark")
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "results.png").stat().st_size > 0


def test_drift_statistics_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "drift.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "drift_statistics.py"), "--quick"]
    done = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["false_alarms"]) == {"500", "5000", "50000", "1000000"}
    assert set(report["alarm_events"]) == {"5000", "200000"}
    assert set(report["detection"]) == {"x1", "price", "city"}
    assert "targets:" in done.stdout and report["cost"]["query_warm_ms"] > 0
