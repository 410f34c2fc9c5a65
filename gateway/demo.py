"""``driftgate demo``: the whole path on embedded defaults, in about half a minute.

Trains a logistic regression on data made with scikit-learn, converts it (parity check,
reference profile), serves it from a gateway on a free local port, sends it traffic over
gRPC, then converts a random forest as version 2 and shows the gateway swapping to it under
load without failing a request. Nothing is downloaded; everything lands in a work directory.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["register"]

MODEL = "credit-risk"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train, convert, serve and hot-swap a model on this machine (about 30 s)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the model repository goes (default: a new temporary directory)",
    )
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="seconds of traffic in each phase"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="driftgate-demo-"))
    return asyncio.run(_demo(workdir, args.seconds, args.concurrency))


def _data(rows: int = 4000, features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(rows, features, n_informative=5, class_sep=0.8, random_state=7)
    return x.astype(np.float32), y


def _convert(estimator: Any, x: np.ndarray, y: np.ndarray, repository: Path) -> int:
    from converter import convert

    result = convert(estimator.fit(x, y), x, MODEL, repository, labels=y)
    print(f"  wrote {MODEL} version {result.version}: {result.parity.format()}")
    return result.version


@dataclass
class _Traffic:
    latencies: list[float] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def summary(self, seconds: float) -> str:
        ms = np.asarray(self.latencies) * 1000
        answered = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items()))
        return (
            f"  {len(ms)} requests in {seconds:.1f} s ({len(ms) / seconds:.0f}/s), "
            f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms; "
            f"answered by {answered}; failed: {sum(self.failures.values())}"
        )


async def _send(address: str, x: np.ndarray, stop: asyncio.Event, concurrency: int) -> _Traffic:
    import grpc

    from gateway._proto.inference import grpc_service_pb2 as pb
    from gateway._proto.inference import grpc_service_pb2_grpc as pb_grpc

    traffic = _Traffic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def worker(offset: int) -> None:
            i = offset
            while not stop.is_set():
                row = x[i % len(x) : i % len(x) + 1]
                request = pb.ModelInferRequest(
                    model_name=MODEL,
                    id=f"demo-{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, x.shape[1]]}],
                    raw_input_contents=[row.tobytes()],
                )
                start = time.perf_counter()
                try:
                    response = await stub.ModelInfer(request)
                except grpc.aio.AioRpcError as exc:
                    traffic.failures[exc.code().name] += 1
                else:
                    traffic.latencies.append(time.perf_counter() - start)
                    traffic.versions[response.model_version] += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return traffic


async def _until_served(server: Any, version: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not server.manager.is_ready(MODEL, str(version)):
        await asyncio.sleep(0.05)


async def _demo(workdir: Path, seconds: float, concurrency: int) -> int:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from gateway.server import GatewayServer
    from gateway.settings import GatewaySettings

    repository = workdir / "models"
    print(f"driftgate demo — model repository in {repository}")
    x, y = _data()
    print("1. train a logistic regression and convert it to ONNX (parity-checked)")
    _convert(LogisticRegression(max_iter=1000), x, y, repository)

    settings = GatewaySettings(
        repository=repository,
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        poll_interval=0.5,
    )
    server = GatewayServer(settings)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    print(f"2. gateway serving on {address} (metrics on :{server.metrics_port}/metrics)")
    loop = asyncio.get_running_loop()
    try:
        stop = asyncio.Event()
        loop.call_later(seconds, stop.set)
        traffic = await _send(address, x, stop, concurrency)
        print(traffic.summary(seconds))
        print("3. train a random forest and convert it as version 2 while traffic flows")
        started = time.perf_counter()
        stop = asyncio.Event()
        sending = asyncio.create_task(_send(address, x, stop, concurrency))
        await asyncio.sleep(seconds * 0.25)
        forest = RandomForestClassifier(100, max_depth=8, random_state=0)
        version = await loop.run_in_executor(None, _convert, forest, x, y, repository)
        await _until_served(server, version, timeout=30.0)
        await asyncio.sleep(seconds * 0.5)  # traffic on the new version
        stop.set()
        swap = await sending
        print(swap.summary(time.perf_counter() - started))
        failed = sum(traffic.failures.values()) + sum(swap.failures.values())
        print(
            "4. done: "
            + (
                "no request failed during the hot swap"
                if failed == 0
                else f"{failed} requests failed"
            )
        )
        print(f"   try: driftgate serve --repository {repository}")
        return 0 if failed == 0 and "2" in swap.versions else 1
    finally:
        await server.stop(grace=2.0)
