"""benchmarks/request_cost.py runs end to end and reports a request's CPU and collections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_request_cost_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "request_cost.py"),
               "--requests", "3200", "--rounds", "1", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["settings"] for r in results] == ["start-up settings", "gc defaults"]
    for figures in results:
        assert figures["cpu_us_per_request"] > 0
        # The request path leaves no cyclic garbage behind: thousands of requests through
        # the servicer trigger (almost) no collection, frozen or not.
        assert figures["gen0_per_1000"] < 1, figures
        assert figures["gen2_per_1000"] == 0, figures
