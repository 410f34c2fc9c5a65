#!/usr/bin/env bash
# Triton's perf_analyzer (2.40, the gRPC client of the Triton protocol) for
# tests/triton/test_perf_analyzer.py. It ships as a prebuilt binary inside the tritonclient
# wheel; it needs Debian's libb64 and the CUDA runtime library (loaded, never used: no GPU is
# touched with `-i grpc`), which comes from NVIDIA's PyPI wheel. Nothing is pip-installed:
# both wheels are downloaded into .cache/perf_analyzer/ (git-ignored) and unpacked there, and
# a wrapper sets LD_LIBRARY_PATH and runs the binary. Idempotent: a second run only checks.
# Prints the wrapper's path on stdout, and nothing else there.
set -euo pipefail
cd "$(dirname "$0")/.."

TRITONCLIENT_VERSION=2.40.0
CUDA_RUNTIME_VERSION=12.3.101 # nvidia-cuda-runtime-cu12: any 12.x provides libcudart.so.12

cache=$PWD/.cache/perf_analyzer
wrapper=$cache/bin/perf_analyzer
stamp=$cache/installed
want="tritonclient==$TRITONCLIENT_VERSION nvidia-cuda-runtime-cu12==$CUDA_RUNTIME_VERSION"

if [ "$(dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null || true)" != "install ok installed" ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends libb64-0d \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends libb64-0d; }; } >&2
fi

if [ ! -x "$wrapper" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$cache/libexec" "$cache/lib" "$cache/bin" "$stamp"
    mkdir -p "$cache/wheels" "$cache/libexec" "$cache/lib" "$cache/bin"
    # Exact files: the manylinux wheels (the py3-none-any tritonclient has no binary).
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
        --platform manylinux2014_x86_64 -d "$cache/wheels" \
        "tritonclient==$TRITONCLIENT_VERSION" "nvidia-cuda-runtime-cu12==$CUDA_RUNTIME_VERSION" >&2
    python3 - "$cache" "$TRITONCLIENT_VERSION" "$CUDA_RUNTIME_VERSION" <<'EOF'
import glob
import os
import shutil
import sys
import zipfile

cache, triton_version, cuda_version = sys.argv[1:]


def extract(pattern: str, member: str, target: str) -> None:
    [wheel] = glob.glob(os.path.join(cache, "wheels", pattern))
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(target, 0o755)


extract(
    f"tritonclient-{triton_version}-*manylinux*_x86_64.whl",
    f"tritonclient-{triton_version}.data/data/bin/perf_analyzer",
    os.path.join(cache, "libexec", "perf_analyzer"),
)
extract(
    f"nvidia_cuda_runtime_cu12-{cuda_version}-*.whl",
    "nvidia/cuda_runtime/lib/libcudart.so.12",
    os.path.join(cache, "lib", "libcudart.so.12"),
)
EOF
    cat > "$wrapper" <<'EOF'
#!/bin/sh
# perf_analyzer from the tritonclient wheel, with the CUDA runtime library unpacked beside it.
here=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/perf_analyzer" "$@"
EOF
    chmod +x "$wrapper"
    echo "$want" > "$stamp"
fi

# It loads (every shared library resolves) and is the version pinned above.
missing=$(LD_LIBRARY_PATH="$cache/lib" ldd "$cache/libexec/perf_analyzer" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "perf_analyzer cannot load: $missing" >&2
    exit 1
fi
version=$("$wrapper" --version 2>&1) || { echo "$wrapper --version failed: $version" >&2; exit 1; }
case $version in
    *"Version $TRITONCLIENT_VERSION"*) echo "$version" >&2 ;;
    *) echo "unexpected perf_analyzer version: $version" >&2; exit 1 ;;
esac
echo "$wrapper"
