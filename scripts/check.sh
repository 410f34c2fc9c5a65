#!/usr/bin/env bash
# The whole check, as CI runs it: lint, types, fresh stubs, then the test suite.
# Run from the repository root inside the project's virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== generated stubs are fresh"
python scripts/gen_proto.py --check
echo "== pytest: unit and integration tests"
python -m pytest tests "$@"
echo "== pytest: tritonclient against the gateway (a process of its own, see tests/conftest.py)"
python -m pytest tests/triton "$@"
