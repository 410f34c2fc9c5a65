"""`driftgate demo`, the README's first command, runs end to end and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_converts_serves_and_hot_swaps_without_failures(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--workdir",
            str(tmp_path),
            "--seconds",
            "1.5",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "wrote credit-risk version 1: parity passed" in out
    assert "wrote credit-risk version 2: parity passed" in out
    assert "no request failed during the hot swap" in out
    assert "v2:" in out.split("3. train a random forest")[1]
    versions = tmp_path / "models" / "credit-risk"
    assert sorted(p.name for p in versions.iterdir() if p.name.isdigit()) == ["1", "2"]
