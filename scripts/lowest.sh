#!/usr/bin/env bash
# The unit tests on the lowest versions pyproject.toml declares: every direct dependency (with
# every extra) at its floor, its own dependencies as new as those floors allow. A floor that
# this fails on is a floor the code does not work with: raise it in pyproject.toml.
#
# The environment is a fresh virtualenv in a temporary directory, removed on exit; the project
# is installed into it editable, so the tests run on this checkout. Needs uv (in the dev lock).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

lowest=$(mktemp -d "${TMPDIR:-/tmp}/driftgate-lowest.XXXXXX")
trap 'rm -rf "$lowest"' EXIT
uv venv --quiet --python python3 "$lowest/venv"
py="$lowest/venv/bin/python"
# Resolved for the virtualenv's own interpreter, so the floors are those that install there.
uv pip compile pyproject.toml --all-extras --resolution lowest-direct --python "$py" \
    --quiet -o "$lowest/requirements.txt"
uv pip install --quiet --python "$py" -r "$lowest/requirements.txt"
uv pip install --quiet --python "$py" --no-deps -e .
echo "== pytest: unit tests on the lowest declared versions"
grep -E '^[A-Za-z0-9_.-]+==' "$lowest/requirements.txt" | tr '\n' ' ' | fold -s -w 100
echo
# Warnings about the future (a deprecation, a default that will change) are what an old release
# says about its successors, not a sign that the floor fails: they are shown, not raised, here.
# The locked run keeps them errors, so a deprecation is still seen the day it appears.
"$py" -m pytest tests -m "not integration and not statistical" -q -p no:cacheprovider \
    -W default::DeprecationWarning -W default::PendingDeprecationWarning \
    -W default::FutureWarning "$@"
