"""benchmarks/text_statistics.py runs end to end (quick mode) and reports every text measure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_text_statistics_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "text.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "text_statistics.py"), "--quick",
               "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for size in results["cost_us_per_document"].values():
        assert set(size) == {"categorical only", "with text measures"}
        assert all(value > 0 for value in size.values())
    for key in ("false_alarms", "detected_10pct_new_words"):
        block = results[key]
        for measure in ("doc.tokens", "doc.chars", "doc.oov"):
            assert 0 <= block[measure] <= block["windows"]
