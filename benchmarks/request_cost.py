"""What one request costs the gateway's Python, in process: CPU µs and garbage collection.

Starts a ``GatewayServer`` in this process (the forest model, port 0, no /metrics), then sends
one-row ``ModelInferRequest``s through the inference servicer from ``--concurrency`` tasks,
without sockets: the CPU a request costs above what gRPC itself costs, measured with
``time.process_time`` (steadier than throughput on a shared machine). Garbage collection is
watched with ``gc.callbacks``: collections and the time spent in them per 1,000 requests.

    .venv/bin/python benchmarks/request_cost.py --requests 20000 --rounds 3
    .venv/bin/python benchmarks/request_cost.py --monitored   # with input statistics/records

Each round measures the gateway as its ``serve()`` leaves it (``gc.freeze()`` after
start-up) and, alternating, unfrozen, so both see the same load on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen
import models

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.gateway.server import GatewayServer, freeze_start_up
from driftgate.gateway.settings import GatewaySettings


class _NoDeadline:
    """What the servicer asks of a call's context on the inline path: its remaining time
    (None: the call has no deadline, as gRPC says of one sent without)."""

    def time_remaining(self) -> None:
        return None


_NO_DEADLINE = _NoDeadline()


class GcWatch:
    """Collections by generation and the seconds spent in them while installed."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.collections[info["generation"]] += 1
        self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def drive(server: GatewayServer, request: Any, requests: int, concurrency: int) -> None:
    per_task = requests // concurrency

    async def loop() -> None:
        for _ in range(per_task):
            await server.inference.ModelInfer(request, _NO_DEADLINE)

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def measure(
    server: GatewayServer, request: Any, requests: int, concurrency: int
) -> dict[str, float]:
    await drive(server, request, requests // 10, concurrency)  # warm
    with GcWatch() as watch:
        cpu = time.process_time()
        await drive(server, request, requests, concurrency)
        cpu = time.process_time() - cpu
    return {
        "cpu_us_per_request": cpu / requests * 1e6,
        "gc_us_per_request": watch.seconds / requests * 1e6,
        "gen0_per_1000": watch.collections[0] / requests * 1e3,
        "gen1_per_1000": watch.collections[1] / requests * 1e3,
        "gen2_per_1000": watch.collections[2] / requests * 1e3,
    }


def unfreeze() -> None:
    """Undo the gateway's start-up ``gc.freeze()``."""
    gc.unfreeze()


def refreeze() -> None:
    freeze_start_up()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "models"
        info = models.write_model(repository, "forest")
        settings = GatewaySettings(
            repository=repository,
            grpc_port=0,
            metrics_port=-1,
            # a monitor that is not there: the reporter's sends fail and are retried, the
            # request path's statistics and records are the same as with one
            monitor="127.0.0.1:9" if args.monitored else None,
        )
        server = GatewayServer(settings)
        await server.start()
        freeze_start_up()  # as the gateway's own serve() does
        request = pb.ModelInferRequest.FromString(
            loadgen.build_request("forest", info.input_name, models.sample_row())
        )
        results: list[dict[str, Any]] = []
        try:
            for round_ in range(args.rounds):
                frozen = await measure(server, request, args.requests, args.concurrency)
                unfreeze()
                default = await measure(server, request, args.requests, args.concurrency)
                refreeze()
                for label, figures in (("start-up settings", frozen), ("gc defaults", default)):
                    shown = "  ".join(f"{k} {v:.2f}" for k, v in figures.items())
                    print(f"round {round_}  {label:18}  {shown}", flush=True)
                    results.append({"round": round_, "settings": label, **figures})
        finally:
            await server.stop(0)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--monitored", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    asyncio.run(main(parser.parse_args()))
