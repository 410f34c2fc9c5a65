"""The overload scenario: open-loop arrivals at multiples of the measured capacity.

For each server (driftgate with batching on, the default, and one MLServer configuration):
capacity is the throughput of a closed loop at ``concurrency`` 16 (the most the server answered
with 16 requests always waiting); then one open-loop job offers a warm-up at 0.8x, then 0.8x,
1.5x and 3x capacity for ``seconds`` each, then 0.8x again, back to back, so the last phase
shows how the server recovers the moment the load drops. The server's CPU and resident memory
are read at the end of every phase. The server runs on half the CPUs and the clients on the
other half (``pin``), so a client working harder above capacity does not take the server's CPU.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loadgen
import models
import openloop
import procfs
import servers

#: MLServer configurations by name: (parallel_workers, adaptive batching on)
MLSERVER_CONFIGS = {
    "pw0-batch": (0, True),
    "pw0": (0, False),
    "default-batch": (None, True),
    "default": (None, False),
}


@dataclass(frozen=True)
class OverloadConfig:
    seconds: float = 30.0  # each measured phase
    multiples: tuple[float, ...] = (0.8, 1.5, 3.0)  # of capacity, then the first one again
    warmup: float = 2.0
    capacity_seconds: float = 10.0  # the closed-loop capacity measurement
    concurrency: int = 16  # of the capacity measurement
    deadline: float = 1.0  # seconds a request may take before the client gives up
    recovery: float = 2.0  # seconds after the load drops whose p99 is reported apart
    model: str = "forest"
    mlserver: str = "pw0-batch"  # a MLSERVER_CONFIGS key, or "none"
    mlserver_batch: tuple[int, float] = (32, 0.001)
    processes: int = 2  # open-loop client processes of the Python client
    gateway_flags: tuple[str, ...] = ()  # more `driftgate serve` flags (e.g. the shedding bound)
    pin: bool = True  # the server on half the CPUs, the clients on the other half
    rows: int = 1  # rows a request
    client: str = "native"  # the C++ client, or "python" (the native one falls back to it)


def run(
    config: OverloadConfig,
    workdir: Path,
    load: loadgen.LoadGenerator,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    repository = workdir / "overload-repository"
    info = models.write_model(repository, config.model)
    rows = models.sample_row() if config.rows == 1 else models.training_data(1, config.rows)[0]
    request = loadgen.build_request(config.model, info.input_name, rows)
    starts: dict[str, Callable[[], servers.Server]] = {
        "driftgate-on": lambda: servers.start_driftgate(
            "driftgate-overload",
            repository,
            [config.model],
            workdir,
            "on",
            ("--metrics-port", "0", *config.gateway_flags),
        )
    }
    if config.mlserver != "none":
        workers, batching = MLSERVER_CONFIGS[config.mlserver]
        starts[f"mlserver-{config.mlserver}"] = lambda: servers.start_mlserver(
            f"mlserver-overload-{config.mlserver}", [(config.model, info.path)], workdir,
            workers, config.mlserver_batch if batching else None,
        )  # fmt: skip
    results: dict[str, Any] = {}
    clients: openloop.OpenLoop | openloop.NativeOpenLoop
    client = config.client
    if client == "native" and (missing := openloop.native_missing()):
        say(f"overload: the Python client, as {missing}")
        client = f"python ({missing})"
    if client == "native":
        clients = openloop.NativeOpenLoop()
    else:
        clients = openloop.OpenLoop(config.processes)
    with clients:
        for key, start in starts.items():
            say(f"overload: {key}")
            try:
                server = start()
                try:
                    pids = [*load.pids, *clients.pids]
                    placement = _placement(server.pid, pids) if config.pin else {}
                    if isinstance(clients, openloop.NativeOpenLoop) and placement:
                        clients.cpus = set(os.sched_getaffinity(0)) - placement[server.pid]
                    with procfs.pinned(placement):
                        results[key] = _measure(config, server, request, load, clients, say)
                    if key.startswith("driftgate"):
                        ready = workdir / "driftgate-overload.ready.json"
                        results[key]["dropped"] = _dropped(ready)
                finally:
                    server.stop()
            except Exception as exc:
                say(f"overload {key} failed: {exc}")
                results[key] = {"error": f"{type(exc).__name__}: {exc}"}
    summary = config.__dict__ | {"client": client}
    return {"model": config.model, "config": summary, "servers": results}


def _placement(server: int, clients: list[int]) -> dict[int, set[int]]:
    """The server on the first half of this process's CPUs, the clients on the rest.

    Above capacity the open-loop clients need more CPU than at capacity while the server needs
    all it can get; sharing the CPUs, the two fight, and the client falls behind its schedule
    exactly when it matters. Apart, the server has a fixed share and the client the rest.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {}  # nothing to split
    half = len(cpus) // 2
    return {server: set(cpus[:half])} | {pid: set(cpus[half:]) for pid in clients}


def _measure(
    config: OverloadConfig,
    server: servers.Server,
    request: bytes,
    load: loadgen.LoadGenerator,
    clients: openloop.OpenLoop | openloop.NativeOpenLoop,
    say: Callable[[str], None],
) -> dict[str, Any]:
    job = loadgen.Job(server.port, request, config.concurrency, config.capacity_seconds, 1.0)
    capacity = loadgen.measure(load, server.pid, job)
    rate = capacity["throughput"]
    say(f"  capacity (closed loop c{config.concurrency}): {rate:.0f} req/s")
    multiples = (*config.multiples, config.multiples[0])
    phases = ((multiples[0] * rate, config.warmup),) + tuple(
        (m * rate, config.seconds) for m in multiples
    )
    open_job = openloop.OpenLoopJob(server.port, request, phases, config.deadline)
    samples: list[tuple[float, int]] = []

    def sample(start: float) -> None:  # CPU and RSS at the end of each phase
        bounds = [config.warmup + i * config.seconds for i in range(len(multiples) + 1)]
        for bound in bounds:
            time.sleep(max(0.0, start + bound - time.time()))
            samples.append((procfs.cpu_seconds(server.pid), procfs.rss_bytes(server.pid)))

    done = clients.run(open_job, sample)
    points = []
    for index, multiple in enumerate(multiples):
        summary = done.phase(index + 1).summary()
        cpu = (samples[index + 1][0] - samples[index][0]) / config.seconds
        point = {"multiple": multiple, "offered_per_second": multiple * rate} | summary
        point |= {"server_cpu": round(cpu, 2), "rss_bytes": samples[index + 1][1]}
        points.append(point)
        say(f"  {multiple:g}x: " + _brief(point))
    recovery = done.phase(len(multiples), config.recovery).summary()
    points[-1]["recovery_p99_ms"] = recovery["admitted_p99_ms"]
    points[-1]["recovery_failed"] = recovery["failed"] + sum(
        recovery["codes"].get(code, 0) for code in openloop.REFUSALS
    )
    return {"capacity": capacity, "points": points, "client_cpu": done.client_cpu}


def _dropped(ready_file: Path) -> dict[str, float]:
    """The gateway's own count of calls it dropped or refused, from its /metrics."""
    port = json.loads(ready_file.read_text())["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("driftgate_expired_requests_total"):
            counts["deadline passed"] = float(line.split()[-1])
        elif line.startswith("driftgate_admission_refusals_total"):
            limit = line.split('limit="', 1)[1].split('"', 1)[0]
            counts[f"refused ({limit})"] = float(line.split()[-1])
    return counts


def _brief(point: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        return "–" if point[key] is None else f"{point[key]:.1f}"

    return (
        f"offered {point['offered_per_second']:.0f}/s, admitted {point['admitted_per_second']:.0f}"
        f"/s (p99 {ms('admitted_p99_ms')} ms), rejected {point['rejected_per_second']:.0f}/s "
        f"(max {ms('rejected_max_ms')} ms), failed {point['failed']}, late "
        f"{point['late_share']:.1%}, RSS {point['rss_bytes'] / 2**20:.0f} MiB"
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown(overload: dict[str, Any] | None, labels: dict[str, str]) -> list[str]:
    """The scenario's table for results.md, a block of rows per server."""
    if not overload:
        return []
    if "error" in overload:
        return ["## Overload", "", f"not measured: `{overload['error'][:300]}`", ""]
    config = overload["config"]
    lines = [
        "## Overload",
        "",
        f"{overload['model']}, one row a request; capacity is the closed-loop throughput at "
        f"concurrency {config['concurrency']}; then Poisson arrivals at each multiple of it for "
        f"{config['seconds']:g} s, back to back, each request with a {config['deadline']:g} s "
        f"deadline; the last phase's first {config['recovery']:g} s are the recovery. Late: "
        f"share of requests the client sent more than {openloop.LATE_SECONDS * 1e3:g} ms after "
        "they were due (its p99 in ms): a client that falls behind offers less than asked. "
        "Rejected: answered RESOURCE_EXHAUSTED by the server's code, or CANCELLED by gRPC's "
        "core, which drops a call unread when the server's accept queue is full. Client: "
        + (
            "the C++ open-loop client (`openloop_client.cc`)."
            if config.get("client", "native") == "native"
            else f"Python's grpc.aio, {config.get('processes')} processes: {config.get('client')}."
        ),
        "",
        "| server | capacity | offered/s | sent/s | admitted/s | p50 ms | p99 ms | rejected/s "
        "| rejected p99 / max ms | failed | late (p99 ms) | server CPU | RSS MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    for key, result in overload["servers"].items():
        name = labels.get(key, key)
        if "error" in result:
            lines.append(f"| {name} | {result['error'][:120]} |" + " |" * 11)
            continue
        capacity = result["capacity"]["throughput"]
        for p in result["points"]:
            failed = ", ".join(
                f"{c} {n}" for c, n in p["codes"].items() if c not in ("OK", *openloop.REFUSALS)
            )
            refused = ", ".join(
                f"{c} {p['codes'][c]}" for c in openloop.REFUSALS if p["codes"].get(c)
            )
            p99 = _ms(p["admitted_p99_ms"])
            if "recovery_p99_ms" in p:
                p99 += f" (first {config['recovery']:g} s: {_ms(p['recovery_p99_ms'])})"
            lines.append(
                f"| {name} | {capacity:.0f} | {p['multiple']:g}x = {p['offered_per_second']:.0f} "
                f"| {p['sent_per_second']:.0f} | {p['admitted_per_second']:.0f} "
                f"| {_ms(p['admitted_p50_ms'])} | {p99} | {p['rejected_per_second']:.0f}"
                f"{f' ({refused})' if refused else ''} "
                f"| {_ms(p['rejected_p99_ms'])} / {_ms(p['rejected_max_ms'])} | {failed or 0} "
                f"| {p['late_share']:.1%} ({_ms(p['late_p99_ms'])}) | {p['server_cpu']} "
                f"| {p['rss_bytes'] / 2**20:.1f} |"
            )
    notes = [
        f"{labels.get(key, key)} counted, over the whole scenario: "
        + ", ".join(f"{what} {count:.0f}" for what, count in result["dropped"].items())
        for key, result in overload["servers"].items()
        if result.get("dropped")
    ]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return [*lines, ""]


def _number(value: float | None) -> float:
    return float("nan") if value is None else value


def plot(overload: dict[str, Any] | None, labels: dict[str, str], path: Path) -> bool:
    """Admitted throughput and p99 against offered load, one line per server."""
    servers_run = {
        k: r for k, r in ((overload or {}).get("servers") or {}).items() if "error" not in r
    }
    if not servers_run:
        return False
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    panels = (("admitted_per_second", "admitted (req/s)"), ("admitted_p99_ms", "p99 admitted (ms)"))
    for index, (key, result) in enumerate(servers_run.items()):
        points = result["points"][:-1]  # the rising load; the recovery is marked apart
        offered = [p["offered_per_second"] for p in points]
        for axis, (field, ylabel) in zip(axes, panels, strict=True):
            axis.plot(
                offered,
                [_number(p[field]) for p in points],
                "-o",
                color=f"C{index}",
                label=labels.get(key, key),
            )
            last = result["points"][-1]
            axis.plot(
                [last["offered_per_second"]],
                [_number(last[field])],
                "x",
                color=f"C{index}",
                markersize=9,
            )
            axis.set_xlabel("offered load (req/s); x: after the overload")
            axis.set_ylabel(ylabel)
            axis.grid(True, alpha=0.3)
    top = max(p["offered_per_second"] for r in servers_run.values() for p in r["points"])
    axes[0].plot([0, top], [0, top], ":", color="grey", label="admitted = offered")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    model = (overload or {}).get("model")
    figure.suptitle(f"{model}: open-loop load at multiples of capacity", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
