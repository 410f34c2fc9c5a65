"""`driftgate demo`, the README's first command: the whole loop in real processes.

Drift alarm and accuracy drop, a retrain to version 2 deployed as a canary, analysed and
promoted; a bad version 3 rolled back; every process stopped at the end.

It runs from a user's directory holding its own ``gateway.py``, ``monitor/`` and
``converter.py``: ``python -m driftgate`` puts that directory first on ``sys.path`` for the
command, the gateway and monitor it starts and the retraining worker, and none of them may
import those (the one demo run of the suite checks this too; see ``tests/processes.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import shadowed_imports, shadowing_directory

pytestmark = pytest.mark.integration


def test_demo_closes_the_loop(tmp_path: Path) -> None:
    user = shadowing_directory(tmp_path / "user")
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "driftgate", "demo", "--workdir", str(workdir), "--fast"],
        cwd=user,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert shadowed_imports(user) == []
    out = result.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    kinds = summary["events"]
    for kind in (
        "drift_alarm",
        "accuracy_drop",
        "retrain_started",
        "retrain_succeeded",
        "canary_started",
        "canary_step",
        "promotion",
        "canary_check_failed",
        "rollback",
    ):
        assert kind in kinds, out
    assert kinds.index("retrain_succeeded") < kinds.index("promotion") < kinds.index("rollback")
    # Final deployment: the retrained version 2 is stable, no canary (3 was rolled back).
    assert summary["stable"] == 2 and summary["canary"] == 0
    deployment = json.loads((workdir / "models" / "credit-risk" / "deployment.json").read_text())
    assert deployment["stable"] == 2 and not deployment.get("canary")
    history = (workdir / "models" / "credit-risk" / "history.jsonl").read_text()
    actions = [json.loads(line)["action"] for line in history.splitlines()]
    assert actions.count("Promote") == 1 and actions.count("Rollback") == 1
    versions = sorted(p.name for p in (workdir / "models" / "credit-risk").iterdir())
    assert [v for v in versions if v.isdigit()] == ["1", "2", "3"]
    assert "requests failed: 0" in out
    assert "Summary" in out and "Where to look" in out
