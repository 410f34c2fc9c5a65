"""``driftgate serve --workers 2``: the parent's merged ``/metrics`` through a canary rollout.

Two worker processes share one gRPC port (SO_REUSEPORT spreads connections between them), each
watches ``deployment.json`` and serves its own metrics on a loopback port; the parent merges
them at scrape time. A command reaches one worker through Control, the other converges within
a poll interval; the merged figures must then describe one deployment: counters summed over
both workers, roles and weights agreeing, and no series left behind by a retired role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from driftgate.gateway.router import Route, threshold
from tests.integration.control_client import control, control_stub, infer_call, infer_request
from tests.processes import DriftgateProcess, start_gateway
from tests.triton.helpers import logistic_model, scrape, write_deployment, write_version

pytestmark = pytest.mark.integration

MODEL = "m"
TOKEN = "workers-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
#: a channel of its own (not the process-wide subchannel pool): a connection of its own,
#: which SO_REUSEPORT hands to one of the workers
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
X = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)
CANARY_WEIGHT = 30

Series = dict[tuple[str, str], float]  # (version, role) -> value


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    root = tmp_path_factory.mktemp("workers")
    repo = root / "models"
    for version, seed in ((1, 0), (2, 7), (3, 3)):
        write_version(repo, MODEL, version, logistic_model(seed).onnx, driftgate=True)
    write_deployment(repo, MODEL, {"stable": 1})
    token = root / "token"
    token.write_text(TOKEN)
    process = start_gateway(repo, root, "--workers", "2", "--control-token-file", str(token))
    yield process
    assert process.terminate() == 0, process.log


class Traffic:
    """Requests sent on fresh connections, with the version that answered each."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.answers: dict[str, str] = {}  # request id -> model_version

    def batch(self, prefix: str, channels: int, per_channel: int) -> list[tuple[int, int]]:
        """``per_channel`` requests on each of ``channels`` new connections; returns, for each
        connection, how many requests the worker that holds it had answered by then, and how
        many all workers had."""
        seen = []
        for c in range(channels):
            with grpc.insecure_channel(self.address, options=OWN_CONNECTION) as channel:
                call = infer_call(channel)
                for i in range(per_channel):
                    rid = f"{prefix}-{c}-{i}"
                    answer = call(infer_request(MODEL, X, rid), timeout=10)
                    assert answer.id == rid
                    self.answers[rid] = answer.model_version
                status = control_stub(channel).GetStatus(
                    control.GetStatusRequest(model=MODEL), timeout=10
                )
                answered = sum(v.requests for v in status.models[0].versions)
                seen.append((answered, len(self.answers)))
        return seen

    def count(self, version: str) -> int:
        return sum(1 for v in self.answers.values() if v == version)


def merged(gateway: DriftgateProcess) -> list[Any]:
    return scrape(gateway.metrics_port)


def series(samples: list[Any], name: str, **labels: str) -> Series:
    """``name``'s samples for the model, by (version, role); role "" where it has none."""
    found: Series = {}
    for sample_name, sample_labels, value in samples:
        if sample_name != name or sample_labels.get("model") != MODEL:
            continue
        if not labels.items() <= sample_labels.items():
            continue
        key = (sample_labels["version"], sample_labels.get("role", ""))
        assert key not in found, f"{name}{labels}: two samples for {key}"
        found[key] = value
    return found


def requests_ok(samples: list[Any]) -> dict[str, float]:
    counts = series(samples, "driftgate_inference_requests_total", status="OK")
    return {version: value for (version, _), value in counts.items()}


def wait_for(
    gateway: DriftgateProcess, condition: Callable[[list[Any]], bool], what: str, timeout: float
) -> list[Any]:
    """Scrape the merged metrics until ``condition`` holds; returns the samples that passed."""
    deadline = time.monotonic() + timeout
    samples: list[Any] = []
    while time.monotonic() < deadline:
        samples = merged(gateway)
        if condition(samples):
            return samples
        time.sleep(0.1)
    loaded = series(samples, "driftgate_model_loaded")
    weights = series(samples, "driftgate_traffic_ratio")
    raise AssertionError(f"{what} within {timeout} s: loaded {loaded}, weights {weights}")


def values(samples: list[Any], name: str) -> list[float]:
    """``name``'s values for the model, for families without a version label."""
    return [value for n, lab, value in samples if n == name and lab.get("model") == MODEL]


#: the families of a loaded version: read live (``ServingCollector``) or removed once it is
#: released (its load duration): a retired version must leave none of them behind
SERVING_FAMILIES = (
    "driftgate_model_load_duration_seconds",
    "driftgate_inference_",
    "driftgate_batch_size",
    "driftgate_executions",
    "driftgate_queue_depth",
    "driftgate_model_loaded",
    "driftgate_traffic_ratio",
)


def serving_versions(samples: list[Any]) -> set[str]:
    return {
        lab["version"]
        for name, lab, _ in samples
        if name.startswith(SERVING_FAMILIES) and lab.get("model") == MODEL
    }


def test_merged_metrics_follow_a_canary_rollout_on_both_workers(
    gateway: DriftgateProcess,
) -> None:
    traffic = Traffic(gateway.address)
    channel = grpc.insecure_channel(gateway.address)
    stub = control_stub(channel)

    # Traffic until both workers have answered: SO_REUSEPORT picks one per connection.
    seen: list[tuple[int, int]] = []
    for round_ in range(16):
        seen += traffic.batch(f"warm{round_}", channels=2, per_channel=20)
        if any(0 < worker < everyone for worker, everyone in seen):
            break  # a worker that had answered some, but not all, of the requests so far
    else:
        pytest.fail(f"every connection reached the same worker: {seen}")
    total = len(traffic.answers)
    assert traffic.count("1") == total
    samples = merged(gateway)
    assert requests_ok(samples) == {"1": total}  # both workers' counters, summed
    assert series(samples, "driftgate_model_loaded") == {("1", "stable"): 1}
    assert series(samples, "driftgate_traffic_ratio") == {("1", "stable"): 1.0}

    # Canary: one worker takes the command, the other follows deployment.json.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Deploy(
            control.DeployRequest(model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=5)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stub.Deploy(
        control.DeployRequest(
            model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=CANARY_WEIGHT
        ),
        metadata=AUTH,
        timeout=30,
    )
    canary_loaded = {("1", "stable"): 1, ("2", "canary"): 1}
    canary_weights = {
        ("1", "stable"): (100 - CANARY_WEIGHT) / 100,
        ("2", "canary"): CANARY_WEIGHT / 100,
    }
    # Weights merge by maximum: a worker still at stable 100 would show here.
    wait_for(
        gateway,
        lambda s: (
            series(s, "driftgate_model_loaded") == canary_loaded
            and series(s, "driftgate_traffic_ratio") == canary_weights
        ),
        "both workers serving the canary at its weight",
        timeout=20,
    )
    before = dict(traffic.answers)
    traffic.batch("canary", channels=6, per_channel=50)
    route = Route("1", "2", threshold(CANARY_WEIGHT))
    split = {rid: v for rid, v in traffic.answers.items() if rid not in before}
    assert split == {rid: route.pick(rid) for rid in split}  # both workers route alike
    assert 0 < traffic.count("2") < len(split)
    samples = merged(gateway)
    assert requests_ok(samples) == {"1": traffic.count("1"), "2": traffic.count("2")}
    assert sum(requests_ok(samples).values()) == len(traffic.answers)
    assert series(samples, "driftgate_model_loaded") == canary_loaded
    assert series(samples, "driftgate_traffic_ratio") == canary_weights
    assert values(samples, "driftgate_deployment_revision") == [1]

    # Promote: 2 is stable everywhere, 1 a warm standby without a weight, no canary series.
    stub.Promote(control.PromoteRequest(model=MODEL, reason="healthy"), metadata=AUTH, timeout=30)
    samples = wait_for(
        gateway,
        lambda s: (
            series(s, "driftgate_model_loaded") == {("1", "standby"): 1, ("2", "stable"): 1}
            and series(s, "driftgate_traffic_ratio") == {("2", "stable"): 1.0}
        ),
        "both workers serving the promoted version",
        timeout=20,
    )
    assert not [lab for n, lab, _ in samples if lab.get("role") == "canary"]
    assert requests_ok(samples) == {"1": traffic.count("1"), "2": traffic.count("2")}
    traffic.batch("promoted", channels=4, per_channel=10)
    assert traffic.count("2") == len(traffic.answers) - traffic.count("1")
    assert requests_ok(merged(gateway)) == {"1": traffic.count("1"), "2": traffic.count("2")}

    # Roll back to the previous stable: 1 again, 2 retired, every series of 2 gone.
    stub.Rollback(
        control.RollbackRequest(model=MODEL, reason="accuracy drop"), metadata=AUTH, timeout=30
    )
    samples = wait_for(
        gateway,
        lambda s: (
            series(s, "driftgate_model_loaded") == {("1", "stable"): 1}
            and series(s, "driftgate_traffic_ratio") == {("1", "stable"): 1.0}
            and serving_versions(s) == {"1"}
        ),
        "both workers back on version 1 with version 2 retired",
        timeout=20,
    )
    assert not [lab for _, lab, _ in samples if lab.get("role") in {"canary", "standby"}]
    assert requests_ok(samples) == {"1": traffic.count("1")}  # 1 kept its counts as a standby
    rollbacks = values(samples, "driftgate_rollbacks_total")
    assert rollbacks == [1.0]  # counted once, by the worker that took the command

    # Roll back to a named version that neither worker has loaded: both load it.
    stub.Rollback(
        control.RollbackRequest(model=MODEL, version=3, reason="known good"),
        metadata=AUTH,
        timeout=30,
    )
    wait_for(
        gateway,
        lambda s: (
            series(s, "driftgate_model_loaded") == {("3", "stable"): 1}
            and series(s, "driftgate_traffic_ratio") == {("3", "stable"): 1.0}
            and serving_versions(s) == {"3"}
        ),
        "both workers serving version 3 alone",
        timeout=30,
    )
    start = len(traffic.answers)
    traffic.batch("named", channels=4, per_channel=10)
    assert set(list(traffic.answers.values())[start:]) == {"3"}
    assert requests_ok(merged(gateway)) == {"3": len(traffic.answers) - start}
    channel.close()
