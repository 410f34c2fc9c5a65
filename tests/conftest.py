"""Suite-wide test configuration.

tritonclient bundles its own compiled copy of the inference protocol, and the protobuf
runtime refuses two files defining the same symbols in one process. The tests that drive the
gateway with tritonclient therefore live in ``tests/triton`` and run in a pytest process of
their own: ``pytest tests`` skips that directory, ``pytest tests/triton`` runs only it
(``scripts/check.sh`` runs both).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TRITON_TESTS = Path(__file__).parent / "triton"


def _asked_for_triton(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == TRITON_TESTS or TRITON_TESTS in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path == TRITON_TESTS and not _asked_for_triton(config):
        return True
    return None
