#!/usr/bin/env bash
# Regenerates both lock files from pyproject.toml in one resolution, with hashes.
#
# The dev lock is compiled first, with every extra, and the runtime lock is then compiled with
# the dev lock as its constraints. The runtime requirements are a subset of the dev ones, so the
# dev resolution is always a valid answer for them: the runtime lock comes out as a subset of
# the dev lock with identical pins, and CI tests exactly what users install. The other way
# round (runtime first, dev constrained by it) fails whenever a dev tool caps a shared
# dependency below the newest release (tritonclient held ml-dtypes below onnx's choice).
#
# Existing pins are kept unless a requirement changed (uv prefers the pins of the output
# file); pass --upgrade (or --upgrade-package NAME) to move them. Extra arguments go to both
# compilations. Run from anywhere, inside the project's virtualenv (uv is in the dev lock).
set -euo pipefail
cd "$(dirname "$0")/.."

common=(--universal --python-version 3.11 --generate-hashes --quiet)
uv pip compile pyproject.toml --all-extras "${common[@]}" "$@" -o requirements-dev.lock
uv pip compile pyproject.toml -c requirements-dev.lock "${common[@]}" "$@" -o requirements.lock
echo "wrote requirements-dev.lock and requirements.lock"
