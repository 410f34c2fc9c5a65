#!/usr/bin/env bash
# The open-loop client in C++ (benchmarks/openloop_client.cc) for benchmarks/openloop.py. The
# Python grpc.aio client spends about 300 µs of CPU a call, so on a 2-core machine it cannot
# offer three times what the gateway under test takes; this one sends the same prebuilt request
# bytes through gRPC's generic API. It is compiled against Debian's gRPC (libgrpc++-dev, 1.51 on
# bookworm) into .cache/openloop/ (git-ignored). Idempotent: it recompiles only when the
# source's sha256 differs from the one recorded beside the binary.
# Prints the binary's path on stdout, and nothing else there.
set -euo pipefail
cd "$(dirname "$0")/.."

source=benchmarks/openloop_client.cc
cache=$PWD/.cache/openloop
binary=$cache/bin/openloop-client
stamp=$cache/bin/openloop-client.sha256

missing=()
for package in libgrpc++-dev g++ pkg-config; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -q --no-install-recommends "${missing[@]}")
    { "${install[@]}" || { apt-get update -q && "${install[@]}"; }; } >&2
fi

want=$(sha256sum "$source" | cut -d' ' -f1)
if [ ! -x "$binary" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    mkdir -p "$cache/bin"
    rm -f "$stamp"
    # The stamp goes first and the binary is compiled under another name, then moved: an
    # interrupted build leaves neither a truncated binary nor a stamp vouching for an old one.
    # shellcheck disable=SC2046  # pkg-config's flags are meant to split into words
    g++ -O2 -std=c++17 -Wall -Wextra -o "$binary.tmp" "$source" \
        $(pkg-config --cflags --libs grpc++) -pthread >&2
    mv "$binary.tmp" "$binary"
    echo "$want" > "$stamp"
fi

echo "$binary"
