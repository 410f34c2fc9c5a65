"""``driftgate demo``: the whole loop in real processes, on this machine, in about a minute.

1. Train a random forest on data made with scikit-learn and convert it as version 1.
2. Start a monitor and a gateway (``driftgate monitor`` and ``driftgate serve``, as
   ``driftgate up`` does) on free ports, with fast policy intervals (``policy.toml``).
3. Send traffic with ids and delayed ground-truth labels.
4. Shift the inputs and the concept: the monitor raises a drift alarm and an accuracy drop,
   retrains version 2 out of process, deploys it as a canary, analyses and promotes it.
5. Deploy a deliberately bad version 3 as a canary: the analysis rolls it back.
6. Print a summary and where to look. Every process started is stopped, also on Ctrl-C.

Nothing is downloaded; everything lands in a work directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from driftgate.monitor.up import LocalStack, StackSettings

__all__ = ["register", "run"]

MODEL = "credit-risk"

POLICY = """\
# Fast intervals for the demo; the defaults suit production (see the README).
[drift]
interval = 1
window = 8
min_rows = 100

[canary]
interval = {interval}
steps = [20, 50]
deadline = 40
min_requests = 20

[canary.checks]
min_labels = 15
max_accuracy_drop = 0.1
max_prediction_drift = 0.5
min_prediction_rows = 30
latency_p99_slack_ms = 50

[retrain]
drift_evaluations = 2
# The flipped concept costs v1 about 85 points; 0.5 waits for a window wholly after the shift,
# so the retrain (at the same time as the second drifted window) has shifted rows to judge on.
accuracy_drop = 0.5
min_labels = 150
window = "10m"
min_rows = 200
holdout_fraction = 0.35
# A wide margin: the judge needs about 260 holdout rows to show that a candidate disagreeing
# with v1 on 80% of the rows is no more than 15 points worse (0.02 would need about 15,000).
tolerance = 0.15
timeout = 120
cooldown = "10m"
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole loop: serve, drift, retrain, canary, promote, roll back (about 1 min)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the repository, store and logs go (default: a new temporary directory)",
    )
    parser.add_argument(
        "--rate", type=float, default=120.0, help="requests per second to send (default 120)"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="shorter phases and canary rounds (for tests; the story is the same)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="driftgate-demo-"))
    demo = Demo(workdir.resolve(), args.rate, args.fast)
    try:
        return asyncio.run(demo.run())
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the gateway and the monitor")
        return 130
    finally:
        demo.stop()


@dataclass
class _Tally:
    """Client-side truth: answers by (phase, version) and whether they were right."""

    right: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    total: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    failed: int = 0

    def accuracy(self, phase: str, version: str) -> str:
        n = self.total[(phase, version)]
        return f"{self.right[(phase, version)] / n:.2f} ({n})" if n else "-"


class Demo:
    def __init__(self, workdir: Path, rate: float, fast: bool) -> None:
        self.workdir = workdir
        self.repository = workdir / "models"
        self.rate = rate
        self.fast = fast
        self.token = secrets.token_hex(16)
        self.stack: LocalStack | None = None
        self.started = time.monotonic()
        self.tally = _Tally()
        self.phase = "before"
        self.seen_events: set[int] = set()
        self.events: list[Any] = []

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    # -- data -----------------------------------------------------------------------------

    def _data(self) -> None:
        from sklearn.datasets import make_classification

        x, y = make_classification(
            8000, 6, n_informative=4, n_redundant=0, class_sep=1.2, random_state=7
        )
        # Unrounded values: the converter rounds tree thresholds down to float32 on the copy it
        # exports (converter.export.served_estimator), so a retrained forest passes parity.
        self.x_train, self.y_train = x[:3000].astype(np.float32), y[:3000]
        self.x_live, self.y_live = x[3000:].astype(np.float32), y[3000:]

    def _row(self, i: int) -> tuple[np.ndarray, int]:
        k = i % len(self.x_live)
        row, label = self.x_live[k].copy(), int(self.y_live[k])
        if self.phase != "before":
            row[:2] += 4.0  # covariate shift of two informative features
            label = 1 - label  # and the concept: the same inputs now mean the other class
        return row, label

    def _convert(self, estimator: Any, x: np.ndarray, y: np.ndarray) -> int:
        from driftgate import converter

        result = converter.convert(
            estimator.fit(x, y),
            x,
            MODEL,
            self.repository,
            labels=y,
            settings=converter.ConverterSettings(sample_rows=2000),
        )
        return result.version

    # -- traffic --------------------------------------------------------------------------

    async def _traffic(self, stop: asyncio.Event) -> None:
        import grpc

        from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
        from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
        from driftgate.core._proto.inference import grpc_service_pb2 as pb
        from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc

        assert self.stack is not None
        pending: list[tuple[float, Any]] = []
        counter = iter(range(10**9))
        async with grpc.aio.insecure_channel(self.stack.gateway) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel)
            feedback = fb_grpc.FeedbackStub(channel)

            async def one() -> None:
                i = next(counter)
                row, label = self._row(i)
                phase = self.phase
                request = pb.ModelInferRequest(
                    model_name=MODEL,
                    id=f"demo-{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, row.size]}],
                    raw_input_contents=[row.astype(np.float32).tobytes()],
                )
                try:
                    response = await infer.ModelInfer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    self.tally.failed += 1
                    return
                answer = int(np.frombuffer(response.raw_output_contents[0], "<i8")[0])
                key = (phase, response.model_version)
                self.tally.total[key] += 1
                self.tally.right[key] += int(answer == label)
                # The truth arrives a second later, as it would from a real application.
                pending.append(
                    (time.monotonic() + 1.0, fb.Label(request_id=response.id, int64_value=label))
                )

            async def labels() -> None:
                while not stop.is_set() or pending:
                    now = time.monotonic()
                    due = [item for item in pending if item[0] <= now]
                    if due:
                        for item in due:
                            pending.remove(item)
                        request = fb.SendLabelsRequest(labels=[label for _, label in due])
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await feedback.SendLabels(request, timeout=10)
                    await asyncio.sleep(0.25)

            sender = asyncio.create_task(labels())
            interval = 1.0 / self.rate
            tasks: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not stop.is_set():
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(next_at - time.monotonic(), 0.0))
            await asyncio.gather(*tasks)
            await sender

    # -- the monitor and the gateway ------------------------------------------------------

    def _monitor_stub(self) -> Any:
        import grpc

        from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc

        assert self.stack is not None
        return mpb_grpc.MonitorStub(grpc.insecure_channel(self.stack.monitor))

    def _control(self) -> Any:
        from driftgate.core.auth import TokenSource
        from driftgate.monitor.control_client import GatewayControl

        assert self.stack is not None
        return GatewayControl(self.stack.gateway, TokenSource(self.token))

    def _poll_events(self) -> list[Any]:
        from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb

        response = self._monitor_stub().ListEvents(
            mpb.ListEventsRequest(model=MODEL, limit=500), timeout=10
        )
        new = [e for e in reversed(response.events) if e.id not in self.seen_events]
        for event in new:
            self.seen_events.add(event.id)
            self.events.append(event)
            self.say(f"  event {event.kind} (v{event.version}): {event.reason}")
        return new

    async def _until_event(self, kind: str, version: int | None, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.to_thread(self._poll_events)
            for event in self.events:
                if event.kind == kind and (version is None or event.version == version):
                    return event
            await asyncio.sleep(0.5)
        raise TimeoutError(f"no {kind} event for version {version} within {timeout:g} s")

    # -- the story ------------------------------------------------------------------------

    async def run(self) -> int:
        from sklearn.ensemble import RandomForestClassifier

        self.started = time.monotonic()
        interval = 3 if self.fast else 5
        normal_seconds = 6.0 if self.fast else 10.0
        self.say(f"driftgate demo: everything goes to {self.workdir}")
        self._data()
        self.say("1. train a random forest on 3000 rows and convert it to ONNX as version 1")
        forest = RandomForestClassifier(40, max_depth=10, random_state=0)
        version = await asyncio.to_thread(self._convert, forest, self.x_train, self.y_train)
        (self.repository / MODEL / "policy.toml").write_text(POLICY.format(interval=interval))
        self.say(f"   wrote {MODEL} version {version} and a policy file (fast intervals)")
        self.say("2. start the monitor and the gateway (subprocesses of `driftgate`)")
        self.stack = LocalStack(
            StackSettings(
                repository=self.repository,
                data_dir=self.workdir / "driftgate-data",
                grpc_port=0,
                metrics_port=0,
                monitor_grpc_port=0,
                monitor_metrics_port=0,
                control_token=self.token,
                # every prediction recorded: the story needs each delayed label joined
                gateway_args=(
                    "--report-interval",
                    "0.5",
                    "--report-bucket-seconds",
                    "1",
                    "--poll-interval",
                    "0.2",
                    "--record-max-per-second",
                    "0",
                ),  # fmt: skip
                monitor_args=(
                    "--bucket-seconds",
                    "1",
                    "--policy-sync-interval",
                    "1",
                    "--evaluate-interval",
                    "2",
                ),  # fmt: skip
                logs=self.workdir / "logs",
            )
        )
        await asyncio.to_thread(self.stack.start)
        ports = self.stack.ports
        self.say(f"   gateway {self.stack.gateway}, monitor {self.stack.monitor}")
        stop = asyncio.Event()
        traffic = asyncio.create_task(self._traffic(stop))
        try:
            return await self._story(normal_seconds)
        finally:
            stop.set()
            await traffic
            self._summary(ports)

    async def _story(self, normal_seconds: float) -> int:
        from sklearn.ensemble import RandomForestClassifier

        self.say(f"3. traffic at {self.rate:g} requests/s with labels a second later")
        await asyncio.sleep(normal_seconds)
        self.say(f"   accuracy of v1 so far: {self.tally.accuracy('before', '1')}")
        self.say("4. shift: two inputs move by +4 and the concept flips")
        self.phase = "shifted"
        self.say("   waiting for the monitor: drift alarm, accuracy drop, retrain...")
        await self._until_event("drift_alarm", 1, 60)
        succeeded = await self._until_event("retrain_succeeded", None, 90)
        v2 = succeeded.version
        self.say(f"5. version {v2} retrained and deployed as a canary; analysis runs")
        await self._until_event("promotion", v2, 90)
        self.phase = "after"
        before, after = self.tally.accuracy("shifted", "1"), self.tally.accuracy("shifted", str(v2))
        self.say(f"   version {v2} promoted; shifted-traffic accuracy v1 {before}, v{v2} {after}")
        self.say("6. a deliberately bad version: a forest trained on labels that are mostly 0")
        rng = np.random.default_rng(0)
        bad_labels = (rng.random(len(self.y_train)) < 0.03).astype(int)
        x_shifted = self.x_train.copy()
        x_shifted[:, :2] += 4.0
        bad = RandomForestClassifier(20, max_depth=6, random_state=0)
        v3 = await asyncio.to_thread(self._convert, bad, x_shifted, bad_labels)
        control = self._control()
        try:
            await asyncio.to_thread(
                control.deploy_canary, MODEL, v3, 20.0, "demo: a deliberately bad model"
            )
        finally:
            control.close()
        self.say(f"   version {v3} deployed as a canary at 20%")
        await self._until_event("rollback", v3, 90)
        self.say(f"   version {v3} rolled back automatically")
        await asyncio.sleep(1.0)
        return 0 if self.tally.failed == 0 else 1

    def _summary(self, ports: dict[str, int]) -> None:
        if self.stack is None:
            return
        from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
        from driftgate.monitor._cli import events_table

        try:
            self._poll_events()
            control = self._control()
            status = control.status(MODEL)
            control.close()
        except Exception as exc:  # the summary must not hide the story's own error
            self.say(f"summary unavailable: {exc}")
            return
        stub = self._monitor_stub()
        print("\nSummary")
        print(
            f"{'VERSION':>7}  {'ROLE':<8} {'TRAFFIC':>7}  {'ACC BEFORE SHIFT':>16}  "
            f"{'ACC SHIFTED':>12}  {'ACC PROMOTED':>12}  {'DRIFT SHARE':>11}"
        )
        versions = sorted({int(v) for _, v in self.tally.total} | {status.stable})
        for v in versions:
            if v == status.stable:
                role, share = "stable", 100.0 - status.canary_weight
            elif v == status.canary:
                role, share = "canary", status.canary_weight
            else:
                role, share = "retired", 0.0
            try:
                drift = stub.GetDrift(mpb.GetDriftRequest(model=MODEL, version=v), timeout=10)
                drift_share = f"{drift.dataset_drift_share:.0%}"
            except Exception:
                drift_share = "-"
            t = self.tally
            print(
                f"{v:>7}  {role:<8} {share:>6.0f}%  {t.accuracy('before', str(v)):>16}  "
                f"{t.accuracy('shifted', str(v)):>12}  {t.accuracy('after', str(v)):>12}  "
                f"{drift_share:>11}"
            )
        print(f"requests failed: {self.tally.failed}")
        print("\nEvents")
        print(events_table(self.events))
        summary = {
            "stable": status.stable,
            "canary": status.canary,
            "events": [e.kind for e in self.events],
        }
        (self.workdir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        print(
            "\nWhere to look (the processes stop when the demo exits; `driftgate up` keeps "
            "them running):\n"
            f"  repository     {self.repository}/{MODEL} (versions, policy.toml, "
            "deployment.json, history.jsonl)\n"
            f"  logs           {self.workdir / 'logs'}\n"
            f"  metrics        http://127.0.0.1:{ports['metrics']}/metrics (gateway), "
            f"http://127.0.0.1:{ports['monitor_metrics']}/metrics (monitor)\n"
            f"  run it again   driftgate up --repository {self.repository} "
            f"--data-dir {self.workdir / 'driftgate-data'}\n"
            f"  then           driftgate events {MODEL}; driftgate history {MODEL}; "
            f"driftgate drift {MODEL}; driftgate accuracy {MODEL}; driftgate retrain {MODEL}"
        )
