"""``driftgate report``: the drift report of a model version as one self-contained HTML file."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from driftgate.client._channel import Connection
from driftgate.commands.output import connection, guarded, print_json
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    UsageError,
    add_command,
    client_flags,
    exit_codes,
    fail,
)
from driftgate.monitor._cli import parse_duration
from driftgate.monitor.report import gather, ordered, render

__all__ = ["register"]

_EPILOG = (
    exit_codes(
        refused="the monitor failed a query, or the file could not be written",
        unreachable="the monitor",
        usage="unknown model or version",
    )
    + """

The page needs no network to be viewed (inline CSS and SVG, no script); the monitor serves
the same page at http://HOST:METRICS_PORT/report/MODEL?version=V&window=W.
--json prints {"out", "model", "version", "rows", "dataset_verdict", "features"}, the
features by how far they moved, furthest first."""
)


class _GrpcSource:
    """The report's questions asked of a monitor over gRPC."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._stub = pb_grpc.MonitorStub(connection.channel)

    def drift(self, request: pb.GetDriftRequest) -> pb.GetDriftResponse:
        return self._connection.call(self._stub.GetDrift, request, None)  # type: ignore[no-any-return]

    def accuracy(self, request: pb.GetAccuracyRequest) -> pb.GetAccuracyResponse:
        return self._connection.call(self._stub.GetAccuracy, request, None)  # type: ignore[no-any-return]

    def events(self, request: pb.ListEventsRequest) -> pb.ListEventsResponse:
        return self._connection.call(self._stub.ListEvents, request, None)  # type: ignore[no-any-return]


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "report", "write a model version's drift report as one HTML file",
        description="Ask the monitor for a version's drift in a window, its accuracy in the "
        "windows before it and its events, and write them as one self-contained HTML page: "
        "per feature the reference and window distributions on the frozen bins, the verdict "
        "with its statistic, critical value, level and sample sizes, missing-value rates; the "
        "prediction distribution; labelled accuracy and the label-free estimate over time.",
        epilog=_EPILOG, parents=[client_flags("monitor")],
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="model name")
    p.add_argument("--version", type=int, help="model version (default: the stable one)")
    p.add_argument("--window", type=parse_duration, help="window ending now, e.g. 15m, 1h, "
                   "7d, or 'total' (default: the monitor's --window)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the HTML file to write ('-': standard output)")  # fmt: skip
    p.set_defaults(handler=guarded("monitor", _report))


def _report(args: argparse.Namespace) -> int:
    if args.out == "-" and args.json:
        raise UsageError("--json and --out - would share standard output: write to a file")
    link = Connection(**connection(args, "monitor"))
    try:
        data = gather(_GrpcSource(link), args.model, args.version, args.window)
    finally:
        link.close()
    page = render(data)
    if args.out == "-":
        sys.stdout.write(page)
    else:
        try:
            _write(Path(args.out), page)
        except OSError as exc:
            return fail(args, f"cannot write {args.out}: {exc.strerror or exc}", EXIT_REFUSED)
    if args.json:
        d = data.drift
        print_json({
            "out": args.out, "model": d.model, "version": d.version, "rows": d.rows,
            "dataset_verdict": pb.DriftVerdict.Name(d.dataset_verdict),
            "features": [f.name for f in ordered(d.features)],
        })  # fmt: skip
    elif args.out != "-":
        print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def _write(path: Path, page: str) -> None:
    """Written whole or not at all: a browser never opens half a page."""
    handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(page)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
