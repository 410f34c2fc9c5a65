#!/usr/bin/env bash
# Assemble the installed namespace for static tools (mypy, import-linter): the build maps
# gateway/, converter/ and monitor/ to driftgate.gateway, driftgate.converter and
# driftgate.monitor, but those tools read folders, not the build configuration. The copy is
# made of hard links under build/namespace and printed; run tools from there.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=build/namespace
rm -rf "$stage"
mkdir -p "$stage"
cp -al driftgate "$stage/driftgate"
for component in gateway converter monitor; do
    cp -al "$component" "$stage/driftgate/$component"
done
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
echo "$stage"
