#!/usr/bin/env bash
# The whole check, as CI runs it: lint, types, fresh stubs, then the test suite.
# Run from the repository root inside the project's virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (on the namespace as the build maps it)"
stage=$(bash scripts/namespace.sh)
(cd "$stage" && mypy --config-file ../../pyproject.toml --cache-dir ../../.mypy_cache)
echo "== import-linter: the layers of DESIGN.md (pyproject.toml [tool.importlinter])"
(cd "$stage" && lint-imports --no-logo --no-cache ../../pyproject.toml)
echo "== generated stubs are fresh"
python scripts/gen_proto.py --check
echo "== deploy: Dockerfile lint, Prometheus config and rules, Kubernetes manifests"
hadolint --config .hadolint.yaml Dockerfile
if command -v promtool >/dev/null; then
    promtool check config deploy/prometheus/prometheus.yml
    promtool check rules deploy/prometheus/alerts.yml
    (cd deploy/prometheus && promtool test rules alerts_test.yml)
elif [ -n "${CI:-}" ]; then
    echo "promtool is missing: .ci/run installs Debian's prometheus package" >&2
    exit 1
else
    echo "skipped promtool checks: promtool is not installed (apt-get install prometheus)"
fi
# Core resources against the Kubernetes schemas shipped in the package (offline, strict); the
# KServe and Prometheus Operator resources have no schema there: tests/test_deploy.py checks them.
kubernetes-validate --strict --quiet deploy/kubernetes/configmap.yaml \
    deploy/kubernetes/deployment.yaml deploy/kubernetes/pvc.yaml deploy/kubernetes/service.yaml \
    deploy/kubernetes/secret.yaml deploy/kubernetes/postgres.yaml
echo "== pytest: unit and integration tests"
python -m pytest tests --durations=25 "$@"
echo "== pytest: tritonclient against the gateway (a process of its own, see tests/conftest.py)"
python -m pytest tests/triton --durations=10 "$@"
