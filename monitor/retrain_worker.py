"""One retraining, out of process: ``python -m driftgate.monitor.retrain_worker JOB RESULT``.

Reads a ``monitor.retrain.RetrainJob``, runs ``monitor.retrain.execute`` and writes the
``RetrainResult`` as JSON; an exception is written as a failed result (exit 1).
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from driftgate.monitor.retrain import RetrainJob, RetrainResult, execute


def main(argv: list[str]) -> int:
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = RetrainJob(**json.loads(job_path.read_text(encoding="utf-8")))
    code = 0
    try:
        result = execute(job)
    except Exception as exc:  # the monitor records why; the traceback goes to stderr
        traceback.print_exc()
        result = RetrainResult("failed", f"{type(exc).__name__}: {exc}")
        code = 1
    result_path.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
