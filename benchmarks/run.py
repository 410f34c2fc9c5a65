"""Run the driftgate benchmark: one command, results as JSON, Markdown and a PNG plot.

    .venv/bin/python benchmarks/run.py [--duration 10] [--concurrency 1,16,64]
        [--targets floor,ort,driftgate,mlserver] [--models lr,forest,heavy]
        [--scenario bench|hotswap|bulk|scaling|overload|all] [--out benchmarks/results]

The transport floor is always measured first, as the calibration of the load generator on
this machine; see benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import bulk  # noqa: E402
import hotswap  # noqa: E402
import loadgen  # noqa: E402
import models  # noqa: E402
import overload  # noqa: E402
import report  # noqa: E402
import scaling  # noqa: E402
import servers  # noqa: E402


@dataclass(frozen=True)
class Target:
    key: str
    group: str  # the --targets name that selects it
    label: str
    start: Callable[[Path, Path, dict[str, models.ModelInfo]], servers.Server] | None = None


def _targets(batch: tuple[int, float]) -> list[Target]:
    def driftgate(batching: str) -> Callable[..., servers.Server]:
        def start(workdir: Path, repo: Path, infos: dict[str, models.ModelInfo]) -> servers.Server:
            return servers.start_driftgate(
                f"driftgate-{batching}", repo, list(infos), workdir, batching
            )

        return start

    def mlserver(
        key: str, workers: int | None, batching: tuple[int, float] | None
    ) -> Callable[..., servers.Server]:
        def start(workdir: Path, repo: Path, infos: dict[str, models.ModelInfo]) -> servers.Server:
            pairs = [(name, info.path) for name, info in infos.items()]
            return servers.start_mlserver(key, pairs, workdir, workers, batching)

        return start

    size, delay = batch
    adaptive = f"adaptive batching {size} rows / {delay * 1e3:g} ms"
    floor: Callable[..., servers.Server] = lambda w, r, i: servers.start_floor(w)  # noqa: E731
    mlserver_configs = [
        ("mlserver-default", "MLServer 1.7 default (1 worker)", None, None),
        ("mlserver-default-batch", f"MLServer default, {adaptive}", None, batch),
        ("mlserver-pw0", "MLServer parallel_workers 0", 0, None),
        ("mlserver-pw0-batch", f"MLServer parallel_workers 0, {adaptive}", 0, batch),
    ]
    return [
        Target("floor", "floor", "transport floor (bare grpc.aio)", floor),
        Target("ort", "ort", "onnxruntime in-process (c rows per call)"),
        Target("driftgate-off", "driftgate", "driftgate, batching off", driftgate("off")),
        Target("driftgate-on", "driftgate", "driftgate, batching on", driftgate("on")),
        Target(
            "driftgate-monitored",
            "monitored",
            "driftgate, batching on, reporting to the monitor (default records)",
            lambda w, r, i: servers.start_monitored_driftgate("driftgate-monitored", r, list(i), w),
        ),
        Target(
            "driftgate-statistics",
            "monitored",
            "driftgate, batching on, reporting statistics only (no records)",
            lambda w, r, i: servers.start_monitored_driftgate(
                "driftgate-statistics", r, list(i), w, record_rate=0.0
            ),
        ),
        *(Target(k, "mlserver", label, mlserver(k, w, b)) for k, label, w, b in mlserver_configs),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ints = lambda text: [int(v) for v in text.split(",") if v.strip()]  # noqa: E731
    names = lambda text: [v.strip() for v in text.split(",") if v.strip()]  # noqa: E731
    parser = argparse.ArgumentParser(description="driftgate benchmark", epilog=__doc__)
    add = parser.add_argument
    add("--duration", type=float, default=10.0, help="measured seconds per point (default 10)")
    add("--warmup", type=float, default=2.0, help="warm-up seconds before each point")
    add("--concurrency", type=ints, default=[1, 16, 64], help="requests in flight (1,16,64)")
    add("--heavy-concurrency", type=ints, default=[64], help="concurrency for the heavy model")
    add(
        "--targets",
        type=names,
        default=["floor", "ort", "driftgate", "monitored", "mlserver"],
        help="floor, ort, driftgate, monitored (driftgate reporting to a monitor), mlserver",
    )
    add("--models", type=names, default=list(models.MODEL_NAMES))
    add(
        "--scenario",
        choices=("bench", "hotswap", "bulk", "scaling", "overload", "all"),
        default="bench",
    )
    add("--processes", type=int, default=2, help="client processes (default 2)")
    add("--mlserver-batch", default="32,0.001", help="MLServer max_batch_size,max_batch_time")
    add("--hotswap-swaps", type=int, default=1000)
    add("--hotswap-interval", type=float, default=0.1, help="seconds between swaps")
    add("--hotswap-steady", type=float, default=10.0, help="seconds of steady-state load")
    add("--hotswap-poll", type=float, default=0.1, help="the gateway's --poll-interval")
    add("--hotswap-concurrency", type=int, default=16)
    add("--bulk-rows", type=ints, default=[1024, 4096], help="rows a bulk request (1024,4096)")
    add("--bulk-concurrency", type=int, default=2, help="bulk requests in flight (default 2)")
    add("--scaling-workers", type=ints, default=[1, 2], help="--workers values (1,2)")
    add("--scaling-concurrency", type=int, default=32, help="perf_analyzer's concurrency")
    add("--overload-seconds", type=float, default=30.0, help="seconds per overload phase")
    add(
        "--overload-multiples",
        type=lambda text: tuple(float(v) for v in text.split(",") if v.strip()),
        default=(0.8, 1.5, 3.0),
        help="offered load as multiples of capacity (0.8,1.5,3); the first again at the end",
    )
    add("--overload-capacity-seconds", type=float, default=10.0, help="closed-loop c16 seconds")
    add("--overload-deadline", type=float, default=1.0, help="each open-loop request's deadline")
    add("--overload-recovery", type=float, default=2.0, help="seconds after the drop reported")
    add(
        "--overload-mlserver",
        choices=(*overload.MLSERVER_CONFIGS, "none"),
        default="pw0-batch",
        help="the MLServer configuration beside driftgate (pw0-batch: parallel_workers 0 and "
        "adaptive batching, the bench's best)",
    )
    add(
        "--overload-gateway-flags",
        type=shlex.split,
        default=[],
        help="more driftgate serve flags for the overload scenario, e.g. '--max-pending-infers 64'",
    )
    add("--overload-rows", type=int, default=1, help="rows a request in the overload scenario")
    add(
        "--overload-client",
        choices=("native", "python"),
        default="native",
        help="the overload scenario's open-loop client: the C++ one "
        "(scripts/install_openloop_client.sh; the Python one when it is missing) or the Python one",
    )
    add(
        "--overload-shared-cpus",
        action="store_true",
        help="let the overload scenario's server and clients share every CPU (by default the "
        "server runs on half of them and the clients on the other half)",
    )
    add("--retries", type=int, default=2, help="re-measure a noisy point up to N times")
    add(
        "--alternated-rounds",
        type=int,
        default=3,
        help="rounds of forest on the floor and the gateways measured back to back, which the "
        "per-request and monitoring targets are judged on (0: on the main table's points)",
    )
    add("--noise", type=float, default=0.15, help="cores of other work that make a point noisy")
    add("--out", type=Path, default=HERE / "results")
    add("--workdir", type=Path, help="keep repositories and server logs here (default: temp)")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def running(start: Callable[[], servers.Server]) -> Iterator[servers.Server]:
    server = start()
    try:
        yield server
    finally:
        server.stop()


def measure_server(
    args: argparse.Namespace,
    load: loadgen.LoadGenerator,
    key: str,
    start: Callable[[], servers.Server],
    points: list[tuple[str, int]],
    requests: dict[str, bytes],
    label: str = "",
) -> tuple[list[dict[str, Any]], str | None]:
    """Start a server, measure it at each (model, concurrency) point, and stop it.

    Returns a row per point and the error that stopped the server, if one did; the points it
    left unmeasured carry that error.
    """
    measured: list[dict[str, Any]] = []
    try:
        with running(start) as server:
            for name, c in points:
                job = loadgen.Job(server.port, requests[name], c, args.duration, args.warmup)
                summary = loadgen.measure_quietly(
                    load, server.pid, job, args.retries, args.noise, say
                )
                say(f"{label}{key} {name} c={c}: " + _brief(summary))
                measured.append({"target": key, "model": name, "concurrency": c} | summary)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        say(f"{label}{key} failed: {error}")
        done = {(r["model"], r["concurrency"]) for r in measured}
        measured += [
            {"target": key, "model": name, "concurrency": c, "error": error}
            for name, c in points
            if (name, c) not in done
        ]
        return measured, error
    return measured, None


def run_bench(
    args: argparse.Namespace,
    workdir: Path,
    load: loadgen.LoadGenerator,
    targets: list[Target],
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, models.ModelInfo]]:
    repo = workdir / "repository"
    infos: dict[str, models.ModelInfo] = {}
    for name in args.models:
        say(f"building model {name}")
        infos[name] = models.write_model(repo, name)
    row = models.sample_row()
    requests = {n: loadgen.build_request(n, i.input_name, row) for n, i in infos.items()}
    points = [
        (name, c)
        for name in infos
        for c in (args.heavy_concurrency if name == "heavy" else args.concurrency)
    ]
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for target in targets:
        if target.start is None:  # onnxruntime in this process, always with one-row calls too
            for name, c in sorted(set(points) | {(name, 1) for name in infos}):
                say(f"ort {name} rows={c}")
                raw = models.measure_ort(infos[name], c, args.duration)
                summary = loadgen.summarize(raw["latencies"], raw["requests"], raw["elapsed"], {})
                rows.append({"target": "ort", "model": name, "concurrency": c} | summary)
            continue
        say(f"starting {target.key}")
        start = partial(target.start, workdir, repo, infos)
        measured, error = measure_server(args, load, target.key, start, points, requests)
        if error is not None:
            failures.append({"target": target.key, "error": error})
        rows += measured
    return rows, failures, infos


#: the servers measured in the alternated rounds, and at which concurrencies (with the floor's
#: second point, the rounds' control)
ROUND_POINTS = {
    "floor": (16, 1),
    report.FLOOR_AGAIN: (16, 1),
    "driftgate-on": (16, 1),
    "driftgate-off": (16, 1),
    "driftgate-monitored": (16,),
    "driftgate-statistics": (16,),
}


def run_alternated_rounds(
    args: argparse.Namespace,
    workdir: Path,
    load: loadgen.LoadGenerator,
    targets: list[Target],
    infos: dict[str, models.ModelInfo],
) -> dict[str, Any] | None:
    """Forest on the floor and the gateways the per-request and monitoring targets compare,
    back to back, ``--alternated-rounds`` times.

    Those targets ask for a few percent, and the machine drifts by more than that between
    points measured minutes apart: one run measured monitoring at 1.14x unmonitored
    throughput, the next at 0.87x, and a run whose gateway points met other work while its
    floor did not judged the gateway on that work. Here each round measures every server
    within a minute, so each ratio pairs points of one round, and a target takes the median
    over the rounds. Each round starts one server further along the list, so that no server
    is always measured first.

    The floor is measured twice a round, halfway round the list from itself: how far the two
    drift apart is what a ratio between two servers of one round can move with nothing
    changed between them, the resolution of the targets judged here.
    """
    chosen = [t for t in targets if t.key in ROUND_POINTS and t.start is not None]
    if args.alternated_rounds < 1 or "forest" not in infos or 16 not in args.concurrency:
        return None
    if not {"floor", "driftgate-on"} <= {t.key for t in chosen}:
        return None
    floor = next(t for t in chosen if t.key == "floor")
    again = Target(report.FLOOR_AGAIN, floor.group, report.FLOOR_AGAIN_LABEL, floor.start)
    chosen.insert((len(chosen) + 1) // 2, again)
    info = infos["forest"]
    requests = {"forest": loadgen.build_request("forest", info.input_name, models.sample_row())}
    repo = workdir / "repository"
    rounds: list[list[dict[str, Any]]] = []
    for index in range(args.alternated_rounds):
        shift = index % len(chosen)
        measured: list[dict[str, Any]] = []
        for target in chosen[shift:] + chosen[:shift]:
            assert target.start is not None
            points = [("forest", c) for c in ROUND_POINTS[target.key] if c in args.concurrency]
            start = partial(target.start, workdir, repo, {"forest": info})
            label = f"round {index + 1}: "
            measured += measure_server(args, load, target.key, start, points, requests, label)[0]
        rounds.append(measured)
    return {"model": "forest", "rounds": rounds}


def _brief(summary: dict[str, Any]) -> str:
    p50, p99 = (float("nan") if summary[k] is None else summary[k] for k in ("p50_ms", "p99_ms"))
    return (
        f"{summary['throughput']:.0f} req/s, p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
        f"errors {summary['errors']}"
    )


def _run_bulk_and_scaling(
    args: argparse.Namespace, workdir: Path, load: loadgen.LoadGenerator
) -> dict[str, Any]:
    """The bulk, scaling and overload scenarios, as asked by ``--scenario``; a failure is
    reported."""
    bulk_config = bulk.BulkConfig(
        tuple(args.bulk_rows), args.bulk_concurrency, args.duration, args.warmup, "forest",
        args.retries, args.noise,
    )  # fmt: skip
    scaling_config = scaling.ScalingConfig(
        tuple(args.scaling_workers), args.scaling_concurrency, args.duration
    )
    size, delay = args.mlserver_batch.split(",")
    overload_config = overload.OverloadConfig(
        args.overload_seconds, args.overload_multiples, args.warmup,
        args.overload_capacity_seconds, 16, args.overload_deadline, args.overload_recovery,
        "forest", args.overload_mlserver, (int(size), float(delay)), args.processes,
        tuple(args.overload_gateway_flags), not args.overload_shared_cpus, args.overload_rows,
        args.overload_client,
    )  # fmt: skip
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "bulk": lambda: bulk.run(bulk_config, workdir, load, say),
        "scaling": lambda: scaling.run(scaling_config, workdir, say),
        "overload": lambda: overload.run(overload_config, workdir, load, say),
    }
    done: dict[str, Any] = {}
    for name, start in scenarios.items():
        if args.scenario not in (name, "all"):
            continue
        say(f"scenario {name}")
        try:
            done[name] = start()
        except Exception as exc:
            say(f"{name} failed: {exc}")
            done[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return done


def metadata(args: argparse.Namespace, mlserver: bool) -> dict[str, Any]:
    import grpc
    import onnxruntime

    version = None
    python = servers.MLSERVER_VENV / "bin" / "python"
    if mlserver and python.exists():
        probe = [str(python), "-c", "import mlserver; print(mlserver.__version__)"]
        done = subprocess.run(probe, capture_output=True, text=True)
        version = done.stdout.strip() or None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "onnxruntime": onnxruntime.__version__,
        "mlserver": version,
        "duration": args.duration,
        "warmup": args.warmup,
        "processes": args.processes,
        "argv": sys.argv[1:],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size, delay = args.mlserver_batch.split(",")
    all_targets = _targets((int(size), float(delay)))
    unknown = set(args.targets) - {t.group for t in all_targets}
    if unknown or set(args.models) - set(models.MODEL_NAMES):
        raise SystemExit(f"unknown targets or models: {sorted(unknown)} {args.models}")
    # The floor always runs first: it calibrates the load generator on this machine.
    chosen = [t for t in all_targets if t.group == "floor" or t.group in args.targets]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="driftgate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"work directory {workdir}")
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    infos: dict[str, models.ModelInfo] = {}
    swap: dict[str, Any] | None = None
    alternated: dict[str, Any] | None = None
    with loadgen.LoadGenerator(args.processes) as load:
        if args.scenario in ("bench", "all"):
            rows, failures, infos = run_bench(args, workdir, load, chosen)
            alternated = run_alternated_rounds(args, workdir, load, chosen, infos)
        if args.scenario in ("hotswap", "all"):
            config = hotswap.HotswapConfig(
                swaps=args.hotswap_swaps,
                interval=args.hotswap_interval,
                steady=args.hotswap_steady,
                concurrency=args.hotswap_concurrency,
                poll_interval=args.hotswap_poll,
                warmup=args.warmup,
            )
            say(f"hot swap: {config}")
            try:
                swap = hotswap.run(config, workdir, load, say)
            except Exception as exc:
                say(f"hot swap failed: {exc}")
                swap = {"error": f"{type(exc).__name__}: {exc}"}
        extra = _run_bulk_and_scaling(args, workdir, load)
    served = [r["target"] for r in rows] + list((extra.get("overload") or {}).get("servers", {}))
    results = {
        "meta": metadata(args, any(k.startswith("mlserver") for k in served)),
        "models": {n: models.DESCRIPTIONS[n] for n in infos or args.models},
        "labels": {t.key: t.label for t in chosen}
        | ({report.FLOOR_AGAIN: report.FLOOR_AGAIN_LABEL} if alternated else {}),
        "rows": rows,
        "hotswap": swap,
        "alternated": alternated,
        "failures": failures,
    } | extra
    results["targets"] = report.targets(
        rows, swap, extra.get("bulk"), extra.get("scaling"), extra.get("overload"), alternated
    )
    text = report.write(results, args.out)
    print(text)
    say(f"wrote {args.out}/results.json, results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
